"""`streamcli serve`: a thin command over streamcli.serve."""

from __future__ import annotations

from pathlib import Path

import typer

from streamcli.cli.common import (
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
    endpoint_config,
    err_console,
    load_recognizer,
    recognizer_config,
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
        None, "--token", help="Require ?token=SECRET or 'Authorization: Bearer SECRET' "
        "(also $STREAMCLI_TOKEN; the command line is visible to other users in ps).", show_default=False,
    ),
    token_file: Path | None = typer.Option(
        None, "--token-file", help="Read the token from the first line of this file."
    ),
    allow_origin: list[str] = typer.Option(
        [], "--allow-origin", help="Browser origin allowed besides the server's own page "
        "(repeatable; '*': any)."
    ),
    max_queued_audio: float = typer.Option(
        5.0, "--max-queued-audio", help="Stop reading a client while this much of its audio waits (s)."
    ),
    write_timeout: float = typer.Option(
        10.0, "--write-timeout", help="Close a client that does not take an answer within this long (s)."
    ),
    max_upload_mb: int = typer.Option(200, "--max-upload-mb", help="Largest REST upload (MiB)."),
    max_file_jobs: int = typer.Option(2, "--max-file-jobs", help="REST transcriptions at once."),
    endpoint: bool = ENDPOINT_OPTION,
    rule1_silence: float = RULE1_SILENCE_OPTION,
    rule2_silence: float = RULE2_SILENCE_OPTION,
    max_utterance: float = MAX_UTTERANCE_OPTION,
    silence_from: str = SILENCE_FROM_OPTION,
    max_final_wait: float = typer.Option(
        1.0, "--max-final-wait", help="Refuse new connections (1013) while finals are this far behind (s)."
    ),
    debug: bool = DEBUG_OPTION,
) -> None:
    """Serve live transcription on one port: the vosk-server WebSocket protocol, OpenAI-compatible
    REST (/v1/audio/transcriptions) and Realtime (/v1/realtime), a captions page at /, /healthz,
    /readyz and /metrics.

    An OpenAI client points at it with base_url="http://HOST:PORT/v1" (api_key = the token, or any
    text without --token):

    \b
    files:
      client = OpenAI(base_url="http://127.0.0.1:2700/v1", api_key="unused")
      print(client.audio.transcriptions.create(file=open("a.flac", "rb"), model="whisper-1").text)
    live audio (pcm16 mono, 24 or 16 kHz):
      with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
          conn.input_audio_buffer.append(audio=base64.b64encode(pcm16_chunk).decode())
          for event in conn: print(event.type, getattr(event, "delta", ""))
    """

    def body() -> None:
        from streamcli.serve import ServeConfig, Server, read_token

        config = ServeConfig(
            host=host,
            port=port,
            max_streams=max_streams,
            max_message_bytes=max_message_kb * 1024,
            idle_timeout_s=idle_timeout,
            token=read_token(token, token_file),
            max_final_wait_s=max_final_wait,
            refine=refine is not False,
            allow_origins=list(allow_origin),
            max_queued_audio_s=max_queued_audio,
            write_timeout_s=write_timeout,
            max_upload_bytes=max_upload_mb * 1024 * 1024,
            max_file_jobs=max_file_jobs,
        ).validate()
        endpoints = endpoint_config(endpoint, rule1_silence, rule2_silence, max_utterance, silence_from)
        recognizer = load_recognizer(
            recognizer_config(model, device, threads, 0, endpoints, window, overlap, rescore)
        )

        def ready(bound: int) -> None:
            err_console.print(
                f"serving {recognizer.info.name} on ws://{host}:{bound}/ "
                f"(captions page: http://{host}:{bound}/, OpenAI API: http://{host}:{bound}/v1); "
                f"up to {max_streams} streams; Ctrl-C to stop",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )

        Server(recognizer, config, on_ready=ready).run()
        err_console.print("stopped: open streams were finalized", markup=False, highlight=False)

    run_command(body, debug=debug)
