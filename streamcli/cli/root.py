"""The ``streamcli`` app: the Typer object, the global options, every command registered, ``main()``.

Each command lives in its own module of this package (transcribe, models, live, bench, export,
serve) and is added here with its module's ``register(app)``; they share ``streamcli.cli.common``.
Nothing in the package imports this module, so the wiring has no circle.
"""

from __future__ import annotations

import contextlib
import sys

import typer

from streamcli import __version__
from streamcli.cli import bench, export, live, models, serve, transcribe
from streamcli.cli.common import CliState, console, print_error

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
    CliState.debug = debug
    if ctx.invoked_subcommand is None:
        console.print(ctx.get_help())
        raise typer.Exit(0)


def _register_commands() -> None:
    app.add_typer(models_app, name="models")
    for module in (transcribe, export, live, bench, serve):
        module.register(app)
    models.register(models_app)
    # The command list shows each command's whole first line (Click would cut it at 45 characters).
    for typer_app in (app, models_app):
        for info in typer_app.registered_commands:
            if info.short_help is None and info.callback is not None and info.callback.__doc__:
                info.short_help = info.callback.__doc__.strip().splitlines()[0]


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
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            # `streamcli` or `streamcli models` alone: the help is the answer, not an error line.
            console.print(ctx.get_help(), markup=False, highlight=False)
            sys.exit(0)
        hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
        print_error(exc.format_message() + hint)
        sys.exit(2)
    except aborts:
        print_error("interrupted")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


_register_commands()
