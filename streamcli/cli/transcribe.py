"""`streamcli transcribe`: files (or stdin) through the library's transcribe(), shown as they decode.

Views: PlainView prints finalized lines (pipes, files); LiveView shows the partial hypothesis and a
footer on a terminal. Inputs: globs, folders, --files-from; outputs checked before decoding.
"""

from __future__ import annotations

import contextlib
import glob
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console, Group
from rich.text import Text

from streamcli.cli.common import (
    BEAM_OPTION,
    DEBUG_OPTION,
    DEVICE_OPTION,
    ENDPOINT_OPTION,
    MAX_UTTERANCE_OPTION,
    MODEL_OPTION,
    OVERLAP_OPTION,
    REFINE_OPTION,
    RESCORE_OPTION,
    RULE1_SILENCE_OPTION,
    RULE2_SILENCE_OPTION,
    SILENCE_FROM_OPTION,
    THREADS_OPTION,
    WINDOW_OPTION,
    CliState,
    console,
    endpoint_config,
    err_console,
    fail,
    load_recognizer,
    partial_text,
    print_error,
    recognizer_config,
    report,
    run_command,
    safe_text,
)
from streamcli.errors import AudioError
from streamcli.formats import pick_format, timestamp
from streamcli.results import Result

if TYPE_CHECKING:
    from streamcli.recognizer import Recognizer
    from streamcli.results import Segment
    from streamcli.transcription import TranscriptionInfo


def segment_line(segment: Segment) -> str:
    start = timestamp(segment.start, digits=2, always_hours=False)
    end = timestamp(segment.end, digits=2, always_hours=False)
    return f"[{start} → {end}] {segment.text.strip()}"


def footer_line(stats: TranscriptionInfo) -> str:
    """One short status line (the file's name is printed once, above it): fits in 80 columns."""
    duration = stats.audio.duration_s if stats.audio is not None else None
    total = f"/{duration:.1f}" if duration is not None else ""
    provider = (stats.provider or "?").replace("ExecutionProvider", "")
    return (
        f"{stats.audio_s:.1f}{total} s · {stats.elapsed_s:.1f} s elapsed · RTF {stats.rtf:.3f} · "
        f"window p50/p95 {stats.chunk_ms_percentile(50):.1f}/{stats.chunk_ms_percentile(95):.1f} ms"
        f" · {provider}"
    )


class PlainView:
    """Not a terminal: finalized text, one line per segment, flushed as produced (pipes work)."""

    def __init__(self, show_lines: bool, header: bool) -> None:
        self.show_lines = show_lines
        self.header_lines = header

    def header(self, name: str) -> None:
        if self.show_lines and self.header_lines:
            sys.stdout.write(f"==> {safe_text(name)} <==\n")
            sys.stdout.flush()

    def start(self, name: str, stats: TranscriptionInfo) -> None:
        pass

    # Nothing shows partial text here, so none is built (a hypothesis' words cost time on every window).
    on_partial: Callable[[Result], None] | None = None

    def segment(self, segment: Segment) -> None:
        if self.show_lines:
            sys.stdout.write(segment.text.strip() + "\n")
            sys.stdout.flush()

    def finish(self, ok: bool) -> None:
        pass


class LiveView:
    """A terminal: the partial hypothesis updates in place above a footer; segments print above it."""

    _MIN_REFRESH_S = 0.05

    def __init__(self, out: Console, show_lines: bool) -> None:
        self.out = out
        self.show_lines = show_lines
        self._live = None
        self._partial = Result("")
        self._last_refresh = 0.0
        self.on_partial: Callable[[Result], None] | None = self.partial

    def start(self, name: str, stats: TranscriptionInfo) -> None:
        from rich.live import Live

        self.name = name
        self.stats = stats
        self._partial = Result("")
        self._live = Live(self._render(), console=self.out, auto_refresh=False, transient=True)
        self._live.start()

    def header(self, name: str) -> None:
        if self.show_lines:
            self.out.print(Text(safe_text(name), style="bold"))

    def _render(self) -> Group:
        return Group(
            partial_text(self._partial, "italic") if self._partial.text.strip() else Text("…", "italic"),
            Text(footer_line(self.stats), style="dim"),
        )

    def partial(self, result: Result) -> None:
        self._partial = result
        now = time.perf_counter()
        if self._live is not None and now - self._last_refresh >= self._MIN_REFRESH_S:
            self._last_refresh = now
            self._live.update(self._render(), refresh=True)

    def segment(self, segment: Segment) -> None:
        if self.show_lines and self._live is not None:
            self._live.console.print(Text(segment_line(segment)))
            self._live.update(self._render(), refresh=True)

    def finish(self, ok: bool) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        if ok:
            self.out.print(Text(footer_line(self.stats), style="dim"))


_GLOB_CHARS = set("*?[")


def expand_inputs(files: list[str], files_from: Path | None = None) -> list[str]:
    """Arguments -> input names: globs expanded (sorted), ``--files-from`` lines appended, ``-`` kept.

    A glob matching nothing is kept as is, so it is reported like any missing file.
    """
    names: list[str] = []
    for arg in files:
        if arg != "-" and _GLOB_CHARS & set(arg) and not Path(arg).exists():
            matches = sorted(glob.glob(arg, recursive=True))
            names.extend(matches or [arg])
        else:
            names.append(arg)
    if files_from is not None:
        names.extend(read_file_list(files_from))
    if len(names) > MAX_INPUTS:
        raise ValueError(f"too many inputs ({len(names)}); at most {MAX_INPUTS} per run")
    return names


MAX_INPUTS = 100_000


MAX_LIST_BYTES = 16 * 1024 * 1024


def read_file_list(path: Path) -> list[str]:
    """``--files-from``: one name per line, ``#`` comments. Names are bytes decoded as the OS does
    (non-UTF-8 names stay usable), and the list is bounded (16 MiB, MAX_INPUTS lines)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_LIST_BYTES + 1)
    except OSError as exc:
        raise AudioError(f"{path}: cannot read the list of files ({exc.strerror})") from None
    if len(data) > MAX_LIST_BYTES:
        raise ValueError(f"--files-from {path}: larger than {MAX_LIST_BYTES // (1024 * 1024)} MiB")
    if b"\0" in data:
        raise ValueError(f"--files-from {path}: not a text file (NUL bytes)")
    lines = [os.fsdecode(line).strip() for line in data.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def output_targets(inputs: list[str], output: Path | None, fmt: str) -> dict[int, Path]:
    """Input index -> output file. With several inputs (or an existing folder) -o is a folder."""
    if output is None:
        return {}
    as_folder = len(inputs) > 1 or output.is_dir() or str(output).endswith(("/", "\\"))
    if not as_folder:
        problem = check_output(output, inputs)
        if problem:
            raise ValueError(f"-o {problem}")
        return {0: output}
    if output.exists() and not output.is_dir():
        raise ValueError(f"-o {output}: with several inputs -o names a folder, and this is a file")
    output.mkdir(parents=True, exist_ok=True)
    targets: dict[int, Path] = {}
    used: set[str] = set()
    for index, name in enumerate(inputs):
        stem = "stdin" if name == "-" else Path(name).stem or "audio"
        candidate, n = stem, 1
        while candidate in used:  # a/x.wav and b/x.wav must not overwrite each other
            n += 1
            candidate = f"{stem}-{n}"
        used.add(candidate)
        targets[index] = output / f"{candidate}.{fmt}"
    return targets


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two names are (or resolve to) the same file; a missing output compares by resolved path."""
    with contextlib.suppress(OSError):
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


def check_output(target: Path, inputs: list[str]) -> str | None:
    """Why ``target`` cannot be written (checked before any decoding), or None."""
    for name in inputs:
        if name != "-" and same_file(target, name):
            return f"the output {target} is the input {name}; refusing to overwrite it"
    if target.is_dir():
        return f"cannot write {target}: it is a directory"
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        return f"cannot write {target}: the folder {parent} does not exist"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot write {target}: the folder {parent} is not writable"
    if target.exists() and not os.access(target, os.W_OK) and not target.is_symlink():
        return f"cannot write {target}: the file is read-only"
    return None


def transcribe_command(
    files: list[str] = typer.Argument(
        None, help="Audio files (wav, flac, ogg, mp3, ...), globs, or - for WAV on stdin."
    ),
    model: str | None = MODEL_OPTION,
    device: str = DEVICE_OPTION,
    threads: int = THREADS_OPTION,
    beam: int = BEAM_OPTION,
    window: int | None = WINDOW_OPTION,
    overlap: int | None = OVERLAP_OPTION,
    rescore: bool | None = RESCORE_OPTION,
    fmt: str | None = typer.Option(
        None, "--format", "-f", help="txt, json, srt or vtt (default: from -o's extension, else txt)."
    ),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        help="Write here (atomically). With several inputs: a folder, one DIR/<stem>.<ext> per input.",
    ),
    files_from: Path | None = typer.Option(
        None, "--files-from", help="Also transcribe the files listed in this text file (one per line)."
    ),
    realtime: bool = typer.Option(
        False, "--realtime", help="Feed the audio at 1x speed, like a live source."
    ),
    endpoint: bool = ENDPOINT_OPTION,
    rule1_silence: float = RULE1_SILENCE_OPTION,
    rule2_silence: float = RULE2_SILENCE_OPTION,
    max_utterance: float = MAX_UTTERANCE_OPTION,
    silence_from: str = SILENCE_FROM_OPTION,
    refine: bool | None = REFINE_OPTION,
    ray: str | None = typer.Option(
        None, "--ray", help="Spread the inputs over Ray: 'local' (this machine), 'auto' or ray://HOST:PORT "
        "(a running cluster). Needs pip install 'streamcli[ray]'.", show_default=False,
    ),
    workers: int | None = typer.Option(
        None, "--workers", help="--ray: workers (one model each; default: the cluster's CPUs / threads).",
        show_default=False,
    ),
    threads_per_worker: int = typer.Option(1, "--threads-per-worker", help="--ray: threads of each worker."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="--ray: redo inputs whose output exists (default: skip them)."
    ),
    debug: bool = DEBUG_OPTION,
) -> None:
    """Transcribe audio files, streaming: text appears as it is decoded.

    A file that cannot be read is reported and skipped; the others are transcribed and the exit code
    is 1 at the end. With --ray the inputs are spread over a Ray cluster (outputs written as each file
    completes, DIR/manifest.jsonl with one line per input, finished outputs skipped on a rerun).
    """

    def body() -> None:
        inputs = expand_inputs(list(files or []), files_from)
        if not inputs:
            raise ValueError("no input files (give FILE..., a glob, - for stdin, or --files-from)")
        if inputs.count("-") > 1:
            raise ValueError("- (stdin) can be given only once")
        out_format = pick_format(fmt, output if len(inputs) == 1 else None)
        if ray is not None:
            failed = _on_ray(inputs, out_format)
            if failed:
                fail(f"{failed} of {len(inputs)} inputs failed")
            return
        targets = output_targets(inputs, output, out_format)
        endpoints = endpoint_config(endpoint, rule1_silence, rule2_silence, max_utterance, silence_from)
        recognizer = load_recognizer(
            recognizer_config(model, device, threads, beam, endpoints, window, overlap, rescore)
        )
        failed = _transcribe_all(inputs, recognizer, out_format, targets, realtime, debug or CliState.debug,
                                 refine)
        if failed:
            fail(f"{failed} of {len(inputs)} inputs failed")

    def _on_ray(inputs: list[str], out_format: str) -> int:
        from streamcli.cli.ray_run import run_on_ray
        if realtime:
            raise ValueError("--ray transcribes files as fast as it can; --realtime does not apply")
        if workers is not None and not 1 <= workers <= 4096:
            raise ValueError(f"--workers must be 1..4096, got {workers}")
        if not 1 <= threads_per_worker <= 256:
            raise ValueError(f"--threads-per-worker must be 1..256, got {threads_per_worker}")
        targets = output_targets(inputs, output, out_format)
        folder = output if output is not None and (len(inputs) > 1 or output.is_dir()) else None
        endpoints = endpoint_config(endpoint, rule1_silence, rule2_silence, max_utterance, silence_from)
        config = recognizer_config(model, device, threads, beam, endpoints, window, overlap, rescore)
        return run_on_ray(
            inputs, targets, out_format, config, ray, workers, threads_per_worker, overwrite, folder
        )

    run_command(body, debug=debug)


def _transcribe_all(
    inputs: list[str],
    recognizer: Recognizer,
    fmt: str,
    targets: dict[int, Path],
    realtime: bool,
    debug: bool = False,
    refine: bool | None = None,
) -> int:
    from streamcli.formats import DocumentWriter, render, to_dict
    from streamcli.transcription import transcribe

    document_to_stdout = not targets and fmt != "txt"
    several = len(inputs) > 1
    view: PlainView | LiveView
    if console.is_terminal:
        view = LiveView(console, show_lines=True)
    else:
        view = PlainView(show_lines=not document_to_stdout, header=several)
    failed = 0
    for index, name in enumerate(inputs):
        started = False  # the view shows this input (its start() ran)
        segments: list[Segment] = []
        target = targets.get(index)
        problem = check_output(target, inputs) if target is not None else None
        if problem:
            # Checked before decoding: a 3-hour file is not transcribed only to fail at the write.
            print_error(problem)
            failed += 1
            continue
        writer: DocumentWriter | None = None
        try:
            if target is not None:
                # Segments stream into the output's temp file: memory stays flat for any length.
                writer = DocumentWriter(target, fmt, file=safe_text(name))
            view.header(name)  # before opening: a file that cannot be read is still named in order
            flow, info = transcribe(name, recognizer, realtime=realtime, on_partial=view.on_partial,
                                    refine=refine)
            view.start(name, info)
            started = True
            for segment in flow:
                view.segment(segment)
                if writer is not None:
                    writer.add(segment)
                elif document_to_stdout:
                    segments.append(segment)
            view.finish(True)
            if writer is not None:
                writer.commit()
                writer = None
        except AudioError as exc:
            # Reported and skipped: outputs of the other inputs are kept; the exit code says it failed.
            if started:
                view.finish(False)
            report(exc, str(exc), debug)
            failed += 1
            continue
        except OSError as exc:
            if started:
                view.finish(False)
            where = target if target is not None else name
            report(exc, f"cannot write {where}: {exc.strerror or exc}", debug)
            failed += 1
            continue
        except BaseException:
            if started:
                view.finish(False)
            raise
        finally:
            if writer is not None:
                writer.abort()
        if target is not None:
            if console.is_terminal:
                err_console.print(Text(f"wrote {safe_text(str(target))}"))
        elif document_to_stdout:
            if fmt == "json" and several:
                import json

                text = json.dumps(to_dict(segments, safe_text(name)), ensure_ascii=False) + "\n"  # JSON Lines
            elif several:  # srt/vtt documents one after the other, each under a header
                text = f"==> {safe_text(name)} <==\n" + render(segments, fmt, file=safe_text(name)) + "\n"
            else:
                text = render(segments, fmt, file=safe_text(name))
            sys.stdout.write(text)
            sys.stdout.flush()
    return failed


def register(app: typer.Typer) -> None:
    """Adds `streamcli transcribe`."""
    app.command("transcribe")(transcribe_command)
