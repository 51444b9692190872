"""The ``streamcli`` command line (Typer). Commands are thin: the library does the work.

Shared helpers for the other CLI modules (cli_export, cli_live, cli_bench import them from here):

- ``console`` / ``err_console``: Rich consoles on stdout / stderr (``console.is_terminal`` decides
  between the live view and plain lines).
- ``MODEL_OPTION``, ``DEVICE_OPTION``, ``THREADS_OPTION``, ``BEAM_OPTION``, ``WINDOW_OPTION``,
  ``OVERLAP_OPTION``, ``DEBUG_OPTION``: option definitions, used as defaults:
  ``def cmd(model: str | None = MODEL_OPTION, debug: bool = DEBUG_OPTION)``.
- ``run_command(body, debug=debug)``: runs ``body()`` and turns StreamcliError / ValueError / OSError
  (and any unexpected exception) into one ``error: ...`` line on stderr and a non-zero exit;
  ``--debug`` (on the command or before it: ``streamcli --debug CMD``) prints the traceback too.
- ``fail(message, code=1)``: print one ``error: ...`` line and exit with ``code``.
- ``load_recognizer(model, device, threads, beam=0, endpoint=None, window_frames=None,
  overlap_frames=None)``: resolves ``--model NAME|PATH``
  through the registry, builds the recognizer and prints the device fallback notice, if any.
- ``clock(seconds)``: ``MM:SS.ss`` (``H:MM:SS.ss`` past an hour) for ``[start → end]`` lines.
"""

from __future__ import annotations

import contextlib
import glob
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeVar

import typer
from rich.console import Console, Group
from rich.text import Text

from streamcli import __version__
from streamcli.errors import AudioError, StreamcliError

if TYPE_CHECKING:
    from streamcli.endpoint import EndpointConfig
    from streamcli.recognizer import Recognizer
    from streamcli.registry import KnownModel
    from streamcli.results import Result, Segment
    from streamcli.transcribe import TranscriptionStats

T = TypeVar("T")

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

app = typer.Typer(
    name="streamcli",
    help="Streaming speech-to-text: ONNX streaming encoders with cached state.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
models_app = typer.Typer(
    help="Known downloadable models: list, download, inspect.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(models_app, name="models")


class _State:
    debug = False


# ---------------------------------------------------------------------------------------------------
# Shared option definitions

MODEL_OPTION = typer.Option(
    None,
    "--model",
    "-m",
    help="Model folder, or a name from `streamcli models list` (default: the shipped model).",
)
DEVICE_OPTION = typer.Option(
    "auto", "--device", help="auto, cpu, cuda or cuda:N (auto falls back to CPU with a notice)."
)
THREADS_OPTION = typer.Option(0, "--threads", min=0, help="CPU threads for onnxruntime (0: automatic).")
BEAM_OPTION = typer.Option(
    0, "--beam", min=0, help="Modified beam search with N active paths (0: greedy search)."
)
DEBUG_OPTION = typer.Option(False, "--debug", help="Show the full traceback of errors.")
WINDOW_OPTION = typer.Option(
    None,
    "--window",
    help="Windowed models: window W in 10 ms frames (a multiple of the model's subsampling: 2 for the "
    "default model, 5 for the older wctc one; default: the model's own).",
)
OVERLAP_OPTION = typer.Option(
    None,
    "--overlap",
    help="Windowed models: overlap O in 10 ms frames, 0 <= O < W (default: the model's own).",
)
RESCORE_OPTION = typer.Option(
    None,
    "--rescore/--no-rescore",
    help="Two-pass models: Whisper's decoder writes each segment's final text (default: on where the "
    "model has a second pass). --no-rescore prints the streaming first pass only.",
    show_default=False,
)


# ---------------------------------------------------------------------------------------------------
# Error handling


def _one_line(message: str) -> str:
    return " ".join(part.strip() for part in str(message).strip().splitlines() if part.strip())


def safe_text(text: str) -> str:
    """Printable text for any name: bytes of a non-UTF-8 file name (surrogate escapes) become U+FFFD."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def print_error(message: str) -> None:
    err_console.print(Text("error: " + safe_text(_one_line(message))), soft_wrap=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """Prints one ``error: ...`` line on stderr and exits with ``code``."""
    print_error(message)
    raise typer.Exit(code)


def run_command(body: Callable[[], T], *, debug: bool = False) -> T:
    """Runs a command body; errors become one line on stderr and a non-zero exit (traceback with --debug)."""
    debug = debug or _State.debug
    try:
        return body()
    except (typer.Exit, typer.Abort, SystemExit):
        raise
    except KeyboardInterrupt:
        print_error("interrupted")
        raise typer.Exit(130) from None
    except BrokenPipeError:
        # The reader went away (`streamcli ... | head`): stop quietly, like other Unix tools.
        _silence_stdout()
        raise typer.Exit(0) from None
    except StreamcliError as exc:
        _report(exc, str(exc), debug)
        raise typer.Exit(exc.exit_code) from None
    except ValueError as exc:  # bad configuration values
        _report(exc, str(exc), debug)
        raise typer.Exit(2) from None
    except OSError as exc:
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        _report(exc, f"{where}{exc.strerror or exc}", debug)
        raise typer.Exit(1) from None
    except Exception as exc:  # noqa: BLE001 - last line of defence: never a bare traceback
        _report(exc, f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)", debug)
        raise typer.Exit(1) from None


def _silence_stdout() -> None:
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # not a real file descriptor (tests): nothing to flush anyway
        pass


def _report(exc: BaseException, message: str, debug: bool) -> None:
    if debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    print_error(message)


# ---------------------------------------------------------------------------------------------------
# Recognizer helper


def load_recognizer(
    model: str | None,
    device: str = "auto",
    threads: int = 0,
    beam: int = 0,
    endpoint: EndpointConfig | None = None,
    window_frames: int | None = None,
    overlap_frames: int | None = None,
    rescore: bool | None = None,
) -> Recognizer:
    """``--model/--device/--threads/--beam/--window/--overlap/--rescore`` -> a recognizer; prints the
    device fallback notice."""
    from streamcli.endpoint import EndpointConfig
    from streamcli.families import create_recognizer
    from streamcli.recognizer import RecognizerConfig
    from streamcli.registry import resolve_model

    path = resolve_model(model)
    config = RecognizerConfig(
        model=str(path),
        device=device,
        threads=threads,
        decoding="modified_beam_search" if beam > 0 else "greedy",
        beam=beam if beam > 0 else 4,
        window_frames=window_frames,
        overlap_frames=overlap_frames,
        rescore=rescore,
        endpoint=endpoint if endpoint is not None else EndpointConfig(),
    )
    recognizer = create_recognizer(config)
    notice = getattr(recognizer.info, "device_notice", None)
    if notice:
        err_console.print(Text(f"note: {notice}"), soft_wrap=True)
    return recognizer


def clock(seconds: float) -> str:
    """``MM:SS.ss``, or ``H:MM:SS.ss`` from one hour on."""
    centis = max(0, round(seconds * 100))
    hours, rest = divmod(centis, 360_000)
    minutes, rest = divmod(rest, 6000)
    secs, centi = divmod(rest, 100)
    text = f"{minutes:02d}:{secs:02d}.{centi:02d}"
    return f"{hours}:{text}" if hours else text


def segment_line(segment: Segment) -> str:
    return f"[{clock(segment.start)} → {clock(segment.end)}] {segment.text.strip()}"


def footer_line(stats: TranscriptionStats) -> str:
    """One short status line (the file's name is printed once, above it): fits in 80 columns."""
    duration = stats.audio.duration_s if stats.audio is not None else None
    total = f"/{duration:.1f}" if duration is not None else ""
    provider = (stats.provider or "?").replace("ExecutionProvider", "")
    return (
        f"{stats.audio_s:.1f}{total} s · {stats.elapsed_s:.1f} s elapsed · RTF {stats.rtf:.3f} · "
        f"window p50/p95 {stats.chunk_ms_percentile(50):.1f}/{stats.chunk_ms_percentile(95):.1f} ms"
        f" · {provider}"
    )


# ---------------------------------------------------------------------------------------------------
# Output views


class PlainView:
    """Not a terminal: finalized text, one line per segment, flushed as produced (pipes work)."""

    def __init__(self, show_lines: bool, header: bool) -> None:
        self.show_lines = show_lines
        self.header = header

    def start(self, name: str, stats: TranscriptionStats) -> None:
        if self.show_lines and self.header:
            sys.stdout.write(f"==> {safe_text(name)} <==\n")
            sys.stdout.flush()

    def partial(self, result: Result) -> None:
        pass

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
        self._partial = ""
        self._last_refresh = 0.0

    def start(self, name: str, stats: TranscriptionStats) -> None:
        from rich.live import Live

        self.name = name
        self.stats = stats
        self._partial = ""
        if self.show_lines:
            self.out.print(Text(safe_text(name), style="bold"))
        self._live = Live(self._render(), console=self.out, auto_refresh=False, transient=True)
        self._live.start()

    def _render(self) -> Group:
        return Group(
            Text(self._partial or "…", style="italic"),
            Text(footer_line(self.stats), style="dim"),
        )

    def partial(self, result: Result) -> None:
        self._partial = result.text.strip()
        now = time.perf_counter()
        if self._live is not None and now - self._last_refresh >= self._MIN_REFRESH_S:
            self._last_refresh = now
            self._live.update(self._render(), refresh=True)

    def segment(self, segment: Segment) -> None:
        self._partial = ""
        if self.show_lines and self._live is not None:
            self._live.console.print(Text(segment_line(segment)))
            self._live.update(self._render(), refresh=True)

    def finish(self, ok: bool) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        if ok:
            self.out.print(Text(footer_line(self.stats), style="dim"))


# ---------------------------------------------------------------------------------------------------
# transcribe


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


def _pick_format(fmt: str | None, output: Path | None, several: bool) -> str:
    from streamcli.formats import FORMATS

    if fmt is None:
        suffix = output.suffix.lstrip(".").lower() if output is not None and not several else ""
        if suffix and suffix not in FORMATS and not (output is not None and output.is_dir()):
            raise ValueError(
                f"-o {output}: .{suffix} is not an output format ({', '.join(FORMATS)}); name the file "
                "with one of those extensions, or give --format to write that name anyway"
            )
        fmt = suffix if suffix in FORMATS else "txt"
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return fmt


@app.command("transcribe")
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
    endpoint: bool = typer.Option(
        True, "--endpoint/--no-endpoint", help="Split segments at endpoints (silence, 20 s max)."
    ),
    debug: bool = DEBUG_OPTION,
) -> None:
    """Transcribe audio files, streaming: text appears as it is decoded.

    A file that cannot be read is reported and skipped; the others are transcribed and the exit code
    is 1 at the end.
    """

    def body() -> None:
        from streamcli.endpoint import EndpointConfig

        inputs = expand_inputs(list(files or []), files_from)
        if not inputs:
            raise ValueError("no input files (give FILE..., a glob, - for stdin, or --files-from)")
        if inputs.count("-") > 1:
            raise ValueError("- (stdin) can be given only once")
        out_format = _pick_format(fmt, output, len(inputs) > 1)
        targets = output_targets(inputs, output, out_format)
        recognizer = load_recognizer(
            model, device, threads, beam, EndpointConfig(enabled=endpoint), window, overlap, rescore
        )
        failed = _transcribe_all(inputs, recognizer, out_format, targets, realtime, debug or _State.debug)
        if failed:
            fail(f"{failed} of {len(inputs)} inputs failed")

    run_command(body, debug=debug)


def _transcribe_all(
    inputs: list[str],
    recognizer: Recognizer,
    fmt: str,
    targets: dict[int, Path],
    realtime: bool,
    debug: bool = False,
) -> int:
    from streamcli.formats import DocumentWriter, render, to_dict
    from streamcli.transcribe import TranscriptionStats, transcribe

    document_to_stdout = not targets and fmt != "txt"
    several = len(inputs) > 1
    view: PlainView | LiveView
    if console.is_terminal:
        view = LiveView(console, show_lines=True)
    else:
        view = PlainView(show_lines=not document_to_stdout, header=several)
    failed = 0
    for index, name in enumerate(inputs):
        stats = TranscriptionStats()
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
            view.start(name, stats)
            for segment in transcribe(
                name, recognizer, realtime=realtime, on_partial=view.partial, stats=stats
            ):
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
            view.finish(False)
            _report(exc, str(exc), debug)
            failed += 1
            continue
        except OSError as exc:
            view.finish(False)
            where = target if target is not None else name
            _report(exc, f"cannot write {where}: {exc.strerror or exc}", debug)
            failed += 1
            continue
        except BaseException:
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


# ---------------------------------------------------------------------------------------------------
# models


def print_table(title: str, headers: list[str], rows: list[list[str]], *, show_header: bool = True) -> None:
    """A Rich table on a terminal; plain tab-separated lines (``# title`` first) otherwise."""
    if console.is_terminal:
        from rich.table import Table

        table = Table(title=title, title_justify="left", show_header=show_header)
        for header in headers:
            table.add_column(header)
        for row in rows:
            table.add_row(*row)
        console.print(table)
        return
    lines = [f"# {title}"]
    if show_header:
        lines.append("\t".join(headers))
    lines += ["\t".join(row) for row in rows]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


@models_app.command("list")
def models_list(debug: bool = DEBUG_OPTION) -> None:
    """Known downloadable models, their size and whether they are in the cache."""

    def body() -> None:
        from streamcli.registry import KNOWN_MODELS, cache_dir, human_bytes, missing_files

        rows = []
        for m in KNOWN_MODELS.values():
            state = "yes" if not missing_files(m) else ("int8" if not missing_files(m, "int8") else "no")
            rows.append(
                [
                    m.name,
                    ", ".join(m.aliases),
                    m.family,
                    human_bytes(m.size_bytes),
                    human_bytes(sum(f.size_bytes for f in m.files_for("int8"))),
                    state,
                ]
            )
        from streamcli.registry import default_model_dir, shipped_models

        default = default_model_dir()
        for folder in shipped_models():
            size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
            mark = "shipped, default" if folder == default else "shipped"
            rows.insert(0, [folder.name, "", "wctc (two-pass)" if (folder / "encoder.onnx").is_file() and
                            _has_second_pass(folder) else "wctc", human_bytes(size), "-", mark])
        headers = ["name", "aliases", "family", "size", "int8 size", "downloaded"]
        print_table(f"models (cache: {cache_dir()})", headers, rows)

    run_command(body, debug=debug)


@models_app.command("download")
def models_download(
    name: str = typer.Argument(..., help="A name (or alias) from `streamcli models list`."),
    precision: str = typer.Option(
        "all", "--precision", help="all, int8 (CPU) or fp32 (CUDA): which files of a model to fetch."
    ),
    debug: bool = DEBUG_OPTION,
) -> None:
    """Download a model into the cache, verifying size and sha256 of every file."""

    def body() -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        from streamcli.registry import KNOWN_MODELS, download_model, find_known

        known = find_known(name)
        if known is None:
            raise ValueError(f"unknown model {name!r}; known: {', '.join(KNOWN_MODELS)}")
        known.files_for(precision)  # validates --precision before any download
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=err_console,
        ) as bar:
            tasks: dict[str, int] = {}

            def progress(file_name: str, done: int, total: int) -> None:
                if file_name not in tasks:
                    tasks[file_name] = bar.add_task(file_name, total=total)
                bar.update(tasks[file_name], completed=done)

            folder = download_model(known, precision=precision, progress=progress)
        console.print(Text(f"{known.name}: verified (size + sha256) in {folder}"), soft_wrap=True)

    run_command(body, debug=debug)


@models_app.command("info")
def models_info(
    target: str = typer.Argument(..., help="A model folder, or a name from `streamcli models list`."),
    device: str = DEVICE_OPTION,
    threads: int = THREADS_OPTION,
    debug: bool = DEBUG_OPTION,
) -> None:
    """Show a model: family, chunk/shift, states, ONNX metadata and the provider it runs on.

    For a registry name: its files, sizes and sha256, and (when downloaded) the model itself.
    """

    def body() -> None:
        from streamcli.registry import find_known, resolve_model

        known = find_known(target) if not Path(target).exists() else None
        if known is None:
            _print_model_folder(resolve_model(target), device, threads)
            return
        _print_known(known)
        try:
            folder = resolve_model(known.name)
        except StreamcliError as exc:
            console.print(Text(f"not usable yet: {exc}"), soft_wrap=True)
            return
        _print_model_folder(folder, device, threads)

    run_command(body, debug=debug)


def _has_second_pass(folder: Path) -> bool:
    from streamcli.providers import read_onnx_metadata

    return bool(read_onnx_metadata(folder / "encoder.onnx").get("second_pass"))


def _print_known(known: KnownModel) -> None:
    from streamcli.registry import human_bytes, model_dir

    folder = model_dir(known)
    console.print(
        Text(f"{known.name} ({known.family}, {known.license}): {known.description}"), soft_wrap=True
    )
    rows = [
        [
            f.name,
            f.precision,
            human_bytes(f.size_bytes),
            f.sha256,
            "yes" if (folder / f.name).is_file() else "no",
        ]
        for f in known.files
    ]
    print_table(f"files (from {known.base_url})", ["file", "precision", "size", "sha256", "present"], rows)
    console.print(Text(f"cache folder: {folder}"), soft_wrap=True)


_INFO_FIELDS = (
    "family",
    "name",
    "path",
    "files",
    "provider",
    "threads",
    "decoding",
    "sample_rate",
    "feature_dim",
    "frame_shift_ms",
    "chunk_frames",
    "shift_frames",
    "window_frames",
    "overlap_frames",
    "subsampling",
    "state_bytes",
    "feature_type",
)


def _print_model_folder(folder: Path, device: str, threads: int) -> None:
    import onnxruntime as ort

    recognizer = load_recognizer(str(folder), device, threads)
    info = recognizer.info
    def shown(value: object) -> str:
        if isinstance(value, (tuple, list)):
            return ", ".join(str(v) for v in value)
        return str(value)

    rows = [[field, shown(getattr(info, field))] for field in _INFO_FIELDS if hasattr(info, field)]
    if info.second_pass:
        rows.append(["second pass", info.second_pass])
    if hasattr(info, "chunk_frames") and hasattr(info, "shift_frames"):
        shift_ms = info.shift_frames * getattr(info, "frame_shift_ms", 10)
        rows.append(
            ["chunk / shift", f"{info.chunk_frames} / {info.shift_frames} frames ({shift_ms} ms per step)"]
        )
    print_table(f"model {folder}", ["field", "value"], rows, show_header=False)
    for encoder in sorted(folder.glob("encoder*.onnx")):
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(encoder), options, providers=["CPUExecutionProvider"])
        meta = session.get_modelmeta().custom_metadata_map
        rows = [[key, meta[key]] for key in sorted(meta)]
        print_table(f"{encoder.name}: ONNX metadata", ["key", "value"], rows, show_header=False)
        inputs = session.get_inputs()
        rows = [[item.name, str(item.shape), item.type] for item in inputs]
        print_table(f"{encoder.name}: inputs (x + cached states)", ["input", "shape", "type"], rows)


# ---------------------------------------------------------------------------------------------------
# App wiring


@app.callback(invoke_without_command=True)
def _main_callback(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks of errors (any command)."),
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
) -> None:
    """Streaming speech-to-text: ONNX streaming encoders with cached state."""
    if version:
        console.print(f"streamcli {__version__}")
        raise typer.Exit(0)
    _State.debug = debug
    if ctx.invoked_subcommand is None:
        console.print(ctx.get_help())
        raise typer.Exit(0)


def _register_commands() -> None:
    # Imported here, after the helpers above exist: these modules import them from streamcli.cli.
    from streamcli import cli_bench, cli_export, cli_live, cli_serve

    for module in (cli_export, cli_live, cli_bench, cli_serve):
        module.register(app)
    # The command list shows each command's whole first line (Click would cut it at 45 characters).
    for typer_app in (app, models_app):
        for info in typer_app.registered_commands:
            if info.short_help is None and info.callback is not None and info.callback.__doc__:
                info.short_help = info.callback.__doc__.strip().splitlines()[0]


_register_commands()


def _click_exception_types() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """Click's UsageError/Abort classes: recent Typer releases carry their own copy of Click."""
    usage: list[type[BaseException]] = []
    abort: list[type[BaseException]] = []
    for module_name in ("click.exceptions", "typer._click.exceptions"):
        with contextlib.suppress(ImportError):
            import importlib

            module = importlib.import_module(module_name)
            usage += [module.UsageError] if hasattr(module, "UsageError") else []
            abort += [module.Abort] if hasattr(module, "Abort") else []
    abort.append(KeyboardInterrupt)
    return tuple(usage), tuple(abort)


def _terminate(signum: int, frame: object) -> None:
    # SIGTERM becomes an exception in the main thread, so cleanup runs as for Ctrl-C: temp files of
    # unfinished outputs and partial downloads are removed, finished outputs stay.
    raise SystemExit(128 + signum)


def main() -> None:
    """The console script: Click's usage errors become one ``error:`` line (exit 2), as every other error."""
    import signal

    usage_errors, aborts = _click_exception_types()
    with contextlib.suppress(ValueError):  # not the main thread (embedded use): leave signals alone
        signal.signal(signal.SIGTERM, _terminate)
    try:
        code = app(prog_name="streamcli", standalone_mode=False)
    except usage_errors as exc:
        ctx = getattr(exc, "ctx", None)
        hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
        print_error(exc.format_message() + hint)
        sys.exit(2)
    except aborts:
        print_error("interrupted")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
