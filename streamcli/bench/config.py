"""What a bench run measures (BenchConfig) and the parsing of its list options."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

FRAME_MS = 10.0


SAMPLE_RATE = 16000


# T_proc p50 at the last position / at the first: at most this is "flat in N" (the claim the bench checks).
FLATNESS_TARGET = 1.1


# (label, completed, total): the CLI turns it into a progress bar; the library never prints.
ProgressFn = Callable[[str, int, int], None]


def no_progress(label: str, completed: int, total: int) -> None:
    return None


@dataclass(frozen=True)
class BenchConfig:
    """What to measure. ``windows``/``overlaps`` None = the model's own W/O (trained default or native)."""

    model: str | None  # folder or registry name; None = the shipped default model
    devices: tuple[str, ...] = ("auto",)
    threads: int = 0
    windows: tuple[int, ...] | None = None
    overlaps: tuple[int, ...] | None = None
    lengths_s: tuple[float, ...] = (10.0, 60.0, 600.0)
    windows_per_length: int = 40
    warmup_windows: int = 3
    streams: int = 1
    realtime_s: float = 10.0
    realtime_block_ms: float = 20.0
    second_pass_s: float = 30.0  # audio per stream, paced at 1x, through both passes for final latency
    refine: bool = True  # ... with refinements of the open utterances, as live and serve run by default
    audio: str | None = None
    data: str | None = None
    data_limit: int | None = None
    peer: str | None = None
    peer_seconds: float = 30.0
    full_context: bool = True
    full_context_reps: int = 3
    # After the first rep at a length, further reps only while that length's total stays under this.
    full_context_budget_s: float = 15.0
    # Full attention over N frames costs time and memory ~N^2: with the 4-layer d=144 encoder 600 s
    # took one 91 s call and ~11 GB (60 s: 1.3 s), so longer positions are opt-in.
    full_context_max_s: float = 120.0

    def __post_init__(self) -> None:
        if not self.devices:
            raise ValueError("--device: give at least one device (cpu, cuda, cuda:N, auto)")
        if self.threads < 0:
            raise ValueError(f"--threads must be >= 0 (0 = onnxruntime default), got {self.threads}")
        for name, values in (("--window", self.windows), ("--overlap", self.overlaps)):
            if values is not None and (not values or any(v < 0 for v in values)):
                raise ValueError(f"{name} needs non-negative frame counts, got {values}")
        if not self.lengths_s or any(not math.isfinite(s) or s <= 0 for s in self.lengths_s):
            raise ValueError(f"--lengths needs positive seconds, got {self.lengths_s}")
        if list(self.lengths_s) != sorted(set(self.lengths_s)):
            raise ValueError(f"--lengths must be increasing and distinct, got {self.lengths_s}")
        if self.windows_per_length < 1:
            raise ValueError(f"windows per length must be >= 1, got {self.windows_per_length}")
        if self.warmup_windows < 0:
            raise ValueError(f"warm-up windows must be >= 0, got {self.warmup_windows}")
        if self.streams < 1:
            raise ValueError(f"--streams must be >= 1, got {self.streams}")
        if self.realtime_s < 0 or self.realtime_block_ms <= 0:
            raise ValueError("--realtime-seconds must be >= 0 and the block length > 0")
        if self.peer is not None and self.peer != "sherpa-onnx":
            raise ValueError(f"--peer: only 'sherpa-onnx' is supported, got {self.peer!r}")
        if self.peer_seconds <= 0:
            raise ValueError(f"peer seconds must be > 0, got {self.peer_seconds}")
        if self.full_context_reps < 1:
            raise ValueError(f"full-context reps must be >= 1, got {self.full_context_reps}")
        if self.full_context_max_s <= 0:
            raise ValueError(f"--full-context-max-s must be > 0, got {self.full_context_max_s}")
        if self.data_limit is not None and self.data_limit < 1:
            raise ValueError(f"--data-limit must be >= 1, got {self.data_limit}")


def parse_int_list(text: str, option: str) -> tuple[int, ...]:
    """'50,100,200' -> (50, 100, 200); a clear ValueError naming the option otherwise."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"{option}: expected comma-separated whole numbers, got {text!r}") from None
    if not values:
        raise ValueError(f"{option}: expected at least one number, got {text!r}")
    return values


def parse_float_list(text: str, option: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"{option}: expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise ValueError(f"{option}: expected at least one number, got {text!r}")
    return values


def parse_devices(text: str) -> tuple[str, ...]:
    devices = tuple(part.strip() for part in text.split(",") if part.strip())
    if not devices:
        raise ValueError(f"--device: expected e.g. 'cpu' or 'cpu,cuda', got {text!r}")
    return devices
