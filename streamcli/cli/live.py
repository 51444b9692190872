"""`streamcli live` and `streamcli devices`: thin commands over streamcli.live."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from streamcli import capture
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
    console,
    endpoint_config,
    err_console,
    load_recognizer,
    recognizer_config,
    run_command,
)
from streamcli.formats import LIVE_FORMATS, SegmentWriter, pick_format, timestamp, write_atomic
from streamcli.live import LiveEvent, LiveStatus, LiveSummary, PartialEvent, SegmentEvent, StatusEvent


def register(app: typer.Typer) -> None:
    """Adds `live` and `devices` to the streamcli app."""
    app.command("live")(live)
    app.command("devices")(devices)


def live(
    model: str | None = MODEL_OPTION,
    device: str = DEVICE_OPTION,
    threads: int = THREADS_OPTION,
    beam: int = BEAM_OPTION,
    window: int | None = WINDOW_OPTION,
    overlap: int | None = OVERLAP_OPTION,
    rescore: bool | None = RESCORE_OPTION,
    refine: bool | None = REFINE_OPTION,
    input_device: Annotated[
        str | None,
        typer.Option(
            "--input-device", "-i", help="Audio input: index or (part of a) name from `streamcli devices`."
        ),
    ] = None,
    input_file: Annotated[
        Path | None, typer.Option("--input-file", help="Play this audio file at 1x as a stand-in microphone.")
    ] = None,
    input_speed: Annotated[
        float,
        typer.Option("--input-speed", help="Speed of --input-file: 1 = real time, 0 = as fast as possible."),
    ] = 1.0,
    sample_rate: Annotated[
        int | None,
        typer.Option("--sample-rate", help="Capture rate in Hz (default: the input's native rate)."),
    ] = None,
    channels: Annotated[
        int | None,
        typer.Option("--channels", help="Capture channels (default: up to 2 of the device's; downmixed)."),
    ] = None,
    block_ms: Annotated[
        float, typer.Option("--block-ms", help="Capture block length in ms (0: the audio system chooses).")
    ] = 0.0,
    duration: Annotated[
        float | None, typer.Option("--duration", help="Stop after this many seconds of audio.")
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Append each finalized segment to this file (flushed as it comes)."
        ),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format", "-f", help="Output format: txt, jsonl, srt or vtt (default: from -o's extension)."
        ),
    ] = None,
    endpoint: bool = ENDPOINT_OPTION,
    rule1_silence: float = RULE1_SILENCE_OPTION,
    rule2_silence: float = RULE2_SILENCE_OPTION,
    max_utterance: float = MAX_UTTERANCE_OPTION,
    silence_from: str = SILENCE_FROM_OPTION,
    save_audio: Annotated[
        Path | None,
        typer.Option(
            "--save-audio", help="Also record what the recognizer hears (mono float WAV, model rate)."
        ),
    ] = None,
    stats_json: Annotated[
        Path | None,
        typer.Option("--stats-json", help="Write the session summary (latency, RTF, counters) here."),
    ] = None,
    status: Annotated[
        bool, typer.Option("--status/--no-status", help="Show the status line (terminal only).")
    ] = True,
    debug: bool = DEBUG_OPTION,
) -> None:
    """Transcribe a microphone (or any audio input) live: partial text in place, finalized lines above.

    Ctrl-C finalizes the current text, writes it and exits 0.
    """

    def body() -> None:
        from streamcli import live as lv
        out_format = pick_format(fmt, output, LIVE_FORMATS)
        endpoints = endpoint_config(endpoint, rule1_silence, rule2_silence, max_utterance, silence_from)
        if input_file is None:
            capture.import_sounddevice()  # PortAudio missing: say so before loading a model
        recognizer = load_recognizer(
            recognizer_config(model, device, threads, beam, endpoints, window, overlap, rescore)
        )
        session = lv.LiveTranscriber(
            recognizer,
            input_device=input_device,
            input_file=input_file,
            sample_rate_hz=sample_rate,
            channels=channels,
            block_ms=block_ms,
            duration_s=duration,
            file_speed=input_speed,
            save_audio=save_audio,
            refine=refine is not False,
        )
        # Only now, with the input open: a device error must not truncate an existing output file.
        try:
            writer = SegmentWriter(output, out_format) if output is not None else None
        except BaseException:
            session.close()
            raise
        where = session.device.name if session.device is not None else str(input_file)
        err = err_console
        err.print(
            f"live: {where} at {session.capture_rate_hz} Hz x{session.capture_channels} -> "
            f"{recognizer.info.name} on {recognizer.info.provider}; Ctrl-C to stop",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )

        def on_event(event: lv.LiveEvent) -> None:
            if writer is not None and isinstance(event, lv.SegmentEvent):
                writer.write(event.segment)
            renderer(event)

        try:
            with lv.stop_on_sigint(session), LiveRenderer(console, show_status=status) as renderer:
                session.run(on_event)
        finally:
            if writer is not None:
                writer.close()
            err.print(summary_line(session.summary), markup=False, highlight=False, soft_wrap=True)
            if stats_json is not None:
                write_atomic(stats_json, json.dumps(lv.summary_dict(session.summary), indent=2) + "\n")
            if writer is not None:
                err.print(
                    f"wrote {plural(writer.count, 'segment')} to {output}",
                    markup=False,
                    highlight=False,
                    soft_wrap=True,
                )

    run_command(body, debug=debug)


def devices(debug: bool = DEBUG_OPTION) -> None:
    """List audio input devices (index, name, channels, default rate; * marks the default)."""

    def body() -> None:
        from rich.table import Table

        from streamcli.capture import list_input_devices
        from streamcli.errors import DeviceError

        found = list_input_devices()
        if not found:
            raise DeviceError("no audio input devices found (no microphone, or no audio server running)")
        if console.is_terminal:
            table = Table(title="audio input devices")
            for column in ("", "index", "name", "host API", "channels", "default rate"):
                table.add_column(column)
            for d in found:
                table.add_row(
                    "*" if d.is_default else "",
                    str(d.index),
                    d.name,
                    d.hostapi,
                    str(d.channels),
                    f"{d.default_rate_hz:g} Hz",
                )
            console.print(table)
        else:
            for d in found:
                mark = "*" if d.is_default else " "
                sys.stdout.write(
                    f"{mark} {d.index}\t{d.name}\t{d.hostapi}\t{d.channels} ch\t{d.default_rate_hz:g} Hz\n"
                )
            sys.stdout.flush()

    run_command(body, debug=debug)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def level_bar(level_dbfs: float, width: int = 12, floor_dbfs: float = -60.0) -> str:
    """A text meter: full at 0 dBFS, empty at ``floor_dbfs``."""
    fraction = min(1.0, max(0.0, (level_dbfs - floor_dbfs) / -floor_dbfs))
    filled = int(round(fraction * width))
    return "#" * filled + "-" * (width - filled)


def status_line(status: LiveStatus) -> str:
    """One status line, under 100 columns: the overflow/dropped counters come before the provider,
    so a narrow terminal cuts the least useful part."""

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}"

    rtf = "-" if status.rtf is None else f"{status.rtf:.2f}"
    provider = (status.provider or "?").replace("ExecutionProvider", "")
    return (
        f"{timestamp(status.audio_s, digits=1)} [{level_bar(status.level_dbfs)}]"
        f" {status.level_dbfs:5.1f} dBFS"
        f" | p50 {ms(status.latency_p50_ms)} p95 {ms(status.latency_p95_ms)} ms | RTF {rtf}"
        f" | overflow {status.overflowed_blocks} dropped {status.dropped_blocks} | {provider}"
    )


def summary_line(summary: LiveSummary) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f} ms"

    rtf = "-" if summary.rtf is None else f"{summary.rtf:.3f}"
    return (
        f"live: {summary.audio_s:.1f} s of audio at {summary.capture_rate_hz} Hz x{summary.capture_channels}"
        f", {plural(summary.segments, 'segment')}, {plural(summary.tokens, 'token')}"
        f"; audio-to-text latency p50 {ms(summary.latency_p50_ms)} p95 {ms(summary.latency_p95_ms)}"
        f"; RTF {rtf} on {summary.provider or '?'}"
        f"; blocks {summary.blocks}, overflowed {summary.overflowed_blocks}, dropped {summary.dropped_blocks}"
        f" ({summary.dropped_s:.2f} s); stopped: {summary.stop_reason}"
    )


class LiveRenderer:
    """Shows events on a Rich console: finalized lines scroll above a live partial + status area.

    On something that is not a terminal it prints only finalized lines, flushed one by one.
    """

    def __init__(self, console: Any, *, show_status: bool = True) -> None:
        self.console = console
        self.interactive = bool(console.is_terminal)
        self.show_status = show_status
        self._partial = PartialEvent("")
        self._status: LiveStatus | None = None
        self._live: Any = None

    def __enter__(self) -> LiveRenderer:
        if self.interactive:
            from rich.live import Live

            self._live = Live(self._renderable(), console=self.console, auto_refresh=False, transient=True)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def _renderable(self) -> Any:
        from rich.text import Text

        # One line, updated in place: a long partial shows its newest end; tentative words are dim.
        width = max(10, int(self.console.width) - 1)
        full = self._partial.text
        refined = bool(self._partial.committed or self._partial.tentative)
        steady = len(self._partial.committed) if refined else len(full)
        if len(full) > width:
            cut = len(full) - (width - 1)
            full, steady = "…" + full[cut:], max(0, steady - cut) + 1
        text = Text(full, style="italic", no_wrap=True, overflow="crop")
        if steady < len(full):
            text.stylize("dim", steady)
        if self.show_status and self._status is not None:
            line = status_line(self._status)
            text.append("\n" + line[:width], style="dim")
        return text

    def __call__(self, event: LiveEvent) -> None:
        if isinstance(event, SegmentEvent):
            seg = event.segment
            line = f"[{timestamp(seg.start, digits=1)}] {seg.text.strip()}"
            if self.interactive:
                self.console.print(line, markup=False, highlight=False)
            else:
                self.console.file.write(line + "\n")
                self.console.file.flush()
        elif isinstance(event, PartialEvent):
            self._partial = event
        elif isinstance(event, StatusEvent):
            self._status = event.status
        if self._live is not None:
            self._live.update(self._renderable(), refresh=True)
