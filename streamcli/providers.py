"""onnxruntime sessions: ``--device auto|cpu|cuda|cuda:N``, ``--threads``, the provider really used.

onnxruntime falls back to the CPU silently when the CUDA execution provider cannot be created (the
GPU wheel lists CUDAExecutionProvider as available even where the CUDA libraries are missing), so
the provider is read back from ``session.get_providers()`` after creation, never assumed.

- ``cpu``: CPU only.
- ``cuda`` / ``cuda:N``: CUDA on device N (0); if the session does not really run on CUDA it is a
  :class:`DeviceError` (one line).
- ``auto``: CUDA device 0 when it really works, else CPU plus a one-line notice for the caller to show.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from streamcli.errors import DeviceError, ModelError

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda)(?::(\d+))?$")


@dataclass(frozen=True)
class DeviceSpec:
    """A parsed ``--device`` value."""

    kind: str  # "auto" | "cpu" | "cuda"
    device_id: int = 0

    def __str__(self) -> str:
        return f"cuda:{self.device_id}" if self.kind == "cuda" else self.kind


def parse_device(device: str) -> DeviceSpec:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` -> DeviceSpec; anything else is a ValueError."""
    m = _DEVICE_RE.match(str(device).strip().lower())
    if not m or (m.group(2) is not None and m.group(1) != "cuda"):
        raise ValueError(f"invalid device {device!r}: use auto, cpu, cuda or cuda:N")
    return DeviceSpec(m.group(1), int(m.group(2) or 0))


def resolve_threads(threads: int) -> int:
    """0 means automatic: all cores up to 4 (more rarely helps a streaming chunk)."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ValueError(f"threads must be an integer >= 0 (0 = automatic), got {threads!r}")
    if threads == 0:
        return max(1, min(4, os.cpu_count() or 1))
    limit = max_threads()
    if threads > limit:
        raise ValueError(f"--threads {threads}: at most {limit} (4 x the {os.cpu_count() or 1} cores here)")
    return threads


def max_threads() -> int:
    """More onnxruntime threads than 4 per core only cost memory and time (each has its own arena)."""
    return 4 * (os.cpu_count() or 1)


def session_options(threads: int) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    # Idle pool threads sleep instead of spinning: the first pass and the second-pass worker run on
    # their own threads at once, and spinning threads took the cores the other needed (a 5-minute file:
    # 12.4 s -> 10.8 s of wall time on 2 cores).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def nvidia_gpu_present() -> bool:
    """Whether the NVIDIA driver shows a GPU (then a CUDA failure under --device auto is worth a note).
    STREAMCLI_ASSUME_GPU=1 forces the CUDA attempt (tests of the fallback path)."""
    if os.environ.get("STREAMCLI_ASSUME_GPU") == "1":
        return True
    gpus = Path("/proc/driver/nvidia/gpus")
    with contextlib.suppress(OSError):
        if gpus.is_dir() and any(gpus.iterdir()):
            return True
    return Path("/dev/nvidia0").exists()


def cuda_listed() -> bool:
    """True when the installed onnxruntime build has a CUDA provider (it may still fail to load)."""
    return CUDA in ort.get_available_providers()


@dataclass
class SessionResult:
    session: ort.InferenceSession
    provider: str  # the provider the session really runs on
    notice: str | None = None  # one-line fallback notice (device=auto fell back to CPU)


def _load(path: Path, providers: list, threads: int) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(str(path), sess_options=session_options(threads), providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types for bad files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"{path}: cannot load ONNX model ({first})") from None


def create_session(path: str | Path, device: str | DeviceSpec = "auto", threads: int = 0) -> SessionResult:
    """Creates an inference session on the requested device and reports the provider actually used."""
    spec = device if isinstance(device, DeviceSpec) else parse_device(device)
    threads = resolve_threads(threads)
    path = Path(path)
    if spec.kind == "cpu" or (spec.kind == "auto" and not nvidia_gpu_present()):
        # auto on a machine without an NVIDIA GPU: the CPU is simply the choice, nothing to note.
        sess = _load(path, [CPU], threads)
        return SessionResult(sess, sess.get_providers()[0])
    if not cuda_listed():
        reason = "this onnxruntime build has no CUDA execution provider (install onnxruntime-gpu)"
        if spec.kind == "cuda":
            raise DeviceError(f"--device {spec}: {reason}")
        sess = _load(path, [CPU], threads)
        return SessionResult(sess, sess.get_providers()[0], f"CUDA not available ({reason}); running on CPU")
    # The CUDA provider logs loader errors itself; keep them off the user's terminal.
    ort.set_default_logger_severity(4)
    try:
        sess = _load(path, [(CUDA, {"device_id": spec.device_id}), CPU], threads)
    finally:
        ort.set_default_logger_severity(3)
    used = sess.get_providers()[0]
    if used == CUDA:
        return SessionResult(sess, used)
    reason = (
        f"onnxruntime could not use CUDA device {spec.device_id} (missing CUDA/cuDNN libraries or no GPU)"
    )
    if spec.kind == "cuda":
        raise DeviceError(f"--device {spec}: {reason}")
    return SessionResult(sess, used, f"CUDA not available ({reason}); running on CPU")


def pick_model_file(folder: str | Path, role: str, prefer_int8: bool) -> Path:
    """The ``role`` (encoder/decoder/joiner) .onnx file of a model folder.

    Folders may hold an fp32 and an int8 (``*.int8.onnx``) variant: int8 is preferred on CPU, fp32 on
    CUDA (int8 kernels are CPU-oriented). With only one variant, that one is used.
    """
    folder = Path(folder)
    candidates = sorted(p for p in folder.glob(f"{role}*.onnx") if p.is_file())
    if not candidates:
        raise ModelError(f"{folder}: no {role}*.onnx file")
    int8 = [p for p in candidates if p.name.endswith(".int8.onnx")]
    fp32 = [p for p in candidates if not p.name.endswith(".int8.onnx")]
    first, second = (int8, fp32) if prefer_int8 else (fp32, int8)
    chosen = first or second
    if len(chosen) > 1:
        names = ", ".join(p.name for p in chosen)
        raise ModelError(f"{folder}: several {role} files ({names}); keep one per precision")
    return chosen[0]


def create_model_sessions(
    folder: str | Path,
    roles: list[str],
    device: str | DeviceSpec = "auto",
    threads: int = 0,
    small_roles_threads: int | None = 1,
) -> tuple[dict[str, ort.InferenceSession], dict[str, Path], str, str | None]:
    """Sessions for every role of a model folder on one provider.

    The first role (the encoder) decides the provider: tried on CUDA with the fp32 file when CUDA is
    requested or auto, and on CPU with the int8 file when it falls back. The other roles follow on the
    same provider. ``small_roles_threads`` caps threads for the other (tiny, per-token) roles, where a
    thread pool costs more than it gives. Returns (sessions, files, provider, notice).
    """
    spec = device if isinstance(device, DeviceSpec) else parse_device(device)
    threads = resolve_threads(threads)
    main_role = roles[0]
    want_cuda = spec.kind in ("cuda", "auto")
    path = pick_model_file(folder, main_role, prefer_int8=not want_cuda)
    res = create_session(path, spec, threads)
    provider, notice = res.provider, res.notice
    sessions = {main_role: res.session}
    files = {main_role: path}
    if provider != CUDA:
        cpu_path = pick_model_file(folder, main_role, prefer_int8=True)
        if cpu_path != path:  # fell back to CPU: use the int8 variant there
            sessions[main_role] = create_session(cpu_path, "cpu", threads).session
            files[main_role] = cpu_path
    role_spec = DeviceSpec("cuda", spec.device_id) if provider == CUDA else DeviceSpec("cpu")
    small_threads = threads if small_roles_threads is None else min(threads, small_roles_threads)
    for role in roles[1:]:
        p = pick_model_file(folder, role, prefer_int8=provider != CUDA)
        sessions[role] = create_session(p, role_spec, small_threads).session
        files[role] = p
    return sessions, files, provider, notice


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file without loading its weights (or needing ``onnx``).

    Walks the top-level protobuf fields of ModelProto and skips the graph by its length, so reading the
    metadata of a 250 MB encoder costs a few reads.
    """
    path = Path(path)
    meta: dict[str, str] = {}
    try:
        with path.open("rb") as f:
            size = path.stat().st_size
            while f.tell() < size:
                head = f.read(10)
                if not head:
                    break
                key, used = _varint(head, 0)
                field_no, wire = key >> 3, key & 7
                f.seek(f.tell() - len(head) + used)
                if wire == 0:
                    head = f.read(10)
                    _, used = _varint(head, 0)
                    f.seek(f.tell() - len(head) + used)
                elif wire == 2:
                    head = f.read(10)
                    length, used = _varint(head, 0)
                    f.seek(f.tell() - len(head) + used)
                    if f.tell() + length > size:
                        raise ModelError(
                            f"{path}: damaged ONNX file (truncated: a field of {length} bytes runs past the "
                            f"end of the {size}-byte file); download or export it again"
                        )
                    if field_no == 14:  # metadata_props: StringStringEntryProto {1: key, 2: value}
                        entry = f.read(length)
                        pos, k, v = 0, "", ""
                        while pos < len(entry):
                            ekey, pos = _varint(entry, pos)
                            n, pos = _varint(entry, pos)
                            text = entry[pos : pos + n].decode("utf-8", "replace")
                            pos += n
                            if ekey >> 3 == 1:
                                k = text
                            elif ekey >> 3 == 2:
                                v = text
                        meta[k] = v
                    else:
                        f.seek(length, 1)
                elif wire == 5:
                    f.seek(4, 1)
                elif wire == 1:
                    f.seek(8, 1)
                else:
                    raise ValueError(f"unexpected wire type {wire}")
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: not a readable ONNX file ({e})") from None
    return meta
