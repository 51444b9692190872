"""What every ``streamcli`` command shares (each command module imports it; it imports none of them).


- ``console`` / ``err_console``: Rich consoles on stdout / stderr (``console.is_terminal`` decides
  between the live view and plain lines).
- ``MODEL_OPTION``, ``DEVICE_OPTION``, ``THREADS_OPTION``, ``BEAM_OPTION``, ``WINDOW_OPTION``,
  ``OVERLAP_OPTION``, ``DEBUG_OPTION``: option definitions, used as defaults:
  ``def cmd(model: str | None = MODEL_OPTION, debug: bool = DEBUG_OPTION)``.
- ``run_command(body, debug=debug)``: runs ``body()`` and turns StreamcliError / ValueError / OSError
  (and any unexpected exception) into one ``error: ...`` line on stderr and a non-zero exit;
  ``--debug`` (on the command or before it: ``streamcli --debug CMD``) prints the traceback too.
- ``fail(message, code=1)``: print one ``error: ...`` line and exit with ``code``.
- ``recognizer_config(model, device, threads, beam, endpoint, window_frames, overlap_frames, rescore)``:
  the model option group as one validated config; ``load_recognizer(config)`` builds the recognizer
  (``--model NAME|PATH`` resolved through the registry) and prints the device fallback notice, if any.
- the endpoint option group (``ENDPOINT_OPTION``, ``RULE1_SILENCE_OPTION``, ...) and
  ``endpoint_config(...)``, shared by transcribe, live and serve.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from streamcli.errors import StreamcliError
from streamcli.formats import safe_text

if TYPE_CHECKING:
    from streamcli.endpoint import EndpointConfig
    from streamcli.recognizer import Recognizer, RecognizerConfig
    from streamcli.results import Result

T = TypeVar("T")

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


class CliState:
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
# The endpoint group: transcribe, live and serve split segments by the same rules.
ENDPOINT_OPTION = typer.Option(
    True, "--endpoint/--no-endpoint", help="Split segments at endpoints (--no-endpoint: one segment)."
)
RULE1_SILENCE_OPTION = typer.Option(
    2.4, "--rule1-silence", help="Endpoint after this much silence (s) when nothing was decoded."
)
RULE2_SILENCE_OPTION = typer.Option(
    1.2, "--rule2-silence", help="Endpoint after this much silence (s) following speech."
)
MAX_UTTERANCE_OPTION = typer.Option(
    20.0, "--max-utterance", help="Endpoint when an utterance reaches this length (s)."
)
SILENCE_FROM_OPTION = typer.Option(
    "either", "--silence-from", help="Trailing silence measured by: decoder, audio, either or both."
)


def endpoint_config(
    enabled: bool, rule1_silence: float, rule2_silence: float, max_utterance: float, silence_from: str
) -> EndpointConfig:
    """The endpoint option group as one validated config."""
    from streamcli.endpoint import EndpointConfig

    return EndpointConfig(
        enabled=enabled,
        rule1_min_trailing_silence_s=rule1_silence,
        rule2_min_trailing_silence_s=rule2_silence,
        rule3_min_utterance_length_s=max_utterance,
        silence_from=silence_from,  # type: ignore[arg-type]  # validated by EndpointConfig
    )


# ---------------------------------------------------------------------------------------------------
# Error handling


def _one_line(message: str) -> str:
    return " ".join(part.strip() for part in str(message).strip().splitlines() if part.strip())


def print_error(message: str) -> None:
    err_console.print(Text("error: " + safe_text(_one_line(message))), soft_wrap=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """Prints one ``error: ...`` line on stderr and exits with ``code``."""
    print_error(message)
    raise typer.Exit(code)


def run_command(body: Callable[[], T], *, debug: bool = False) -> T:
    """Runs a command body; errors become one line on stderr and a non-zero exit (traceback with --debug)."""
    debug = debug or CliState.debug
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
        report(exc, str(exc), debug)
        raise typer.Exit(exc.exit_code) from None
    except ValueError as exc:  # bad configuration values
        report(exc, str(exc), debug)
        raise typer.Exit(2) from None
    except OSError as exc:
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        report(exc, f"{where}{exc.strerror or exc}", debug)
        raise typer.Exit(1) from None
    except Exception as exc:  # noqa: BLE001 - last line of defence: never a bare traceback
        report(exc, f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)", debug)
        raise typer.Exit(1) from None


def _silence_stdout() -> None:
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # not a real file descriptor (tests): nothing to flush anyway
        pass


def report(exc: BaseException, message: str, debug: bool) -> None:
    if debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    print_error(message)


# ---------------------------------------------------------------------------------------------------
# Recognizer helper


def load_recognizer(config: RecognizerConfig) -> Recognizer:
    """A recognizer for the options (:func:`recognizer_config`); prints the device fallback notice."""
    from streamcli.families import create_recognizer

    recognizer = create_recognizer(config)
    notice = recognizer.info.device_notice
    if notice:
        err_console.print(Text(f"note: {notice}"), soft_wrap=True)
    return recognizer


def recognizer_config(
    model: str | None,
    device: str = "auto",
    threads: int = 0,
    beam: int = 0,
    endpoint: EndpointConfig | None = None,
    window_frames: int | None = None,
    overlap_frames: int | None = None,
    rescore: bool | None = None,
) -> RecognizerConfig:
    """The options as a validated config (the model is resolved once, by create_recognizer)."""
    from streamcli.endpoint import EndpointConfig
    from streamcli.recognizer import RecognizerConfig

    return RecognizerConfig(
        model=model,
        device=device,
        threads=threads,
        decoding="modified_beam_search" if beam > 0 else "greedy",
        beam=beam if beam > 0 else 4,
        window_frames=window_frames,
        overlap_frames=overlap_frames,
        rescore=rescore,
        endpoint=endpoint if endpoint is not None else EndpointConfig(),
    ).validate()


# ---------------------------------------------------------------------------------------------------
# Output views


# ---------------------------------------------------------------------------------------------------
# transcribe


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


REFINE_OPTION = typer.Option(
    None,
    "--refine/--no-refine",
    help="Two-pass models: show the second pass's refinement of the words being spoken (committed "
    "words normal, tentative ones dim) instead of the first pass (default: on; transcribe: with "
    "--realtime).",
    show_default=False,
)


def partial_text(result: Result, style: str = "") -> Text:
    """A partial as a viewer sees it: committed words in ``style``, tentative ones dim (a first-pass
    partial, with neither, is all ``style``)."""
    if not result.committed and not result.tentative:
        return Text(result.text.strip(), style=style)
    text = Text(result.committed, style=style)
    if result.tentative:
        text.append((" " if result.committed else "") + result.tentative, style=f"{style} dim".strip())
    return text
