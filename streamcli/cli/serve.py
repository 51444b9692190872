"""`streamcli serve`: a thin command over streamcli.serve."""

from __future__ import annotations

import typer

from streamcli.cli.common import (
    DEBUG_OPTION,
    DEVICE_OPTION,
    MODEL_OPTION,
    OVERLAP_OPTION,
    REFINE_OPTION,
    RESCORE_OPTION,
    THREADS_OPTION,
    WINDOW_OPTION,
    err_console,
    load_recognizer,
    run_command,
)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (default: this machine only)."),
    port: int = typer.Option(2700, "--port", help="TCP port (0: any free port; printed at start)."),
    model: str | None = MODEL_OPTION,
    device: str = DEVICE_OPTION,
    threads: int = THREADS_OPTION,
    window: int | None = WINDOW_OPTION,
    overlap: int | None = OVERLAP_OPTION,
    rescore: bool | None = RESCORE_OPTION,
    refine: bool | None = REFINE_OPTION,
    max_streams: int = typer.Option(64, "--max-streams", help="Refuse connections beyond this many streams."),
    max_message_kb: int = typer.Option(1024, "--max-message-kb", help="Largest WebSocket message (KiB)."),
    idle_timeout: float = typer.Option(
        30.0, "--idle-timeout", help="Close a connection silent this long (s)."
    ),
    token: str | None = typer.Option(
        None, "--token", help="Require ?token=SECRET or 'Authorization: Bearer SECRET'."
    ),
    max_final_wait: float = typer.Option(
        1.0, "--max-final-wait", help="Refuse new connections (1013) while finals are this far behind (s)."
    ),
    debug: bool = DEBUG_OPTION,
) -> None:
    """Serve live transcription over WebSocket (vosk-server protocol) and a captions page at /."""

    def body() -> None:
        from streamcli.serve import ServeConfig, Server

        config = ServeConfig(
            host=host,
            port=port,
            max_streams=max_streams,
            max_message_bytes=max_message_kb * 1024,
            idle_timeout_s=idle_timeout,
            token=token,
            max_final_wait_s=max_final_wait,
            refine=refine is not False,
        ).validate()
        recognizer = load_recognizer(model, device, threads, 0, None, window, overlap, rescore)

        def ready(bound: int) -> None:
            err_console.print(
                f"serving {recognizer.info.name} on ws://{host}:{bound}/ "
                f"(captions page: http://{host}:{bound}/); "
                f"up to {max_streams} streams; Ctrl-C to stop",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )

        Server(recognizer, config, on_ready=ready).run()
        err_console.print("stopped: open streams were finalized", markup=False, highlight=False)

    run_command(body, debug=debug)
