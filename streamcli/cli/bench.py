"""`streamcli bench`: thin command over streamcli.bench (Rich tables, progress bar, --json, --plot)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from streamcli.cli.common import DEBUG_OPTION, MODEL_OPTION, THREADS_OPTION, console, fail, run_command

if TYPE_CHECKING:
    from streamcli import bench


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _config_table(r: bench.ConfigResult) -> Table:
    table = Table(title=f"{r.model} on {r.device} ({r.provider}, {r.threads} threads)", show_header=False)
    table.add_column("quantity")
    table.add_column("value", justify="right")
    hop_ms = r.hop_frames * r.frame_ms
    rows = [
        (
            "window W / overlap O / hop W-O",
            f"{r.window_frames} / {r.overlap_frames} / {r.hop_frames} frames ({r.frame_ms:g} ms each)",
        ),
        ("family", str(r.family)),
        (
            "T_wait worst / mean (theory)",
            f"{_ms(r.t_wait_ms)} / {_ms(r.t_wait_mean_ms)} ms"
            + (f" (incl. {r.lookahead_frames} lookahead frames)" if r.lookahead_frames else ""),
        ),
        (
            "T_proc per window p50 / p95 / p99 / max",
            " / ".join(
                f"{v:.2f}" for v in (r.t_proc_ms.p50, r.t_proc_ms.p95, r.t_proc_ms.p99, r.t_proc_ms.max)
            )
            + " ms",
        ),
        ("total T_wait + T_proc p50 / p95", f"{r.total_ms['p50']:.1f} / {r.total_ms['p95']:.1f} ms"),
        ("RTF (mean T_proc / hop)", f"{r.rtf:.4f}"),
        (
            "keeps up in real time (p95 T_proc < hop)",
            f"{'yes' if r.keeps_up else 'NO'} ({r.t_proc_ms.p95:.1f} vs {hop_ms:g} ms)",
        ),
        ("cache per stream", f"{r.cache_bytes:,} bytes"),
        ("peak RSS (process, streaming)", f"{r.peak_rss_mb:.0f} MB"),
        ("windows measured", str(r.windows_measured)),
        ("audio", str(r.audio)),
        ("model files", ", ".join(r.model_files)),
    ]
    if r.emission is not None:
        e = r.emission
        rows.append(
            (
                f"emission latency, real-time run {e.audio_seconds:g} s",
                f"p50 {_ms(e.p50_ms)} / p95 {_ms(e.p95_ms)} ms over {e.tokens} tokens",
            )
        )
    if r.second_pass is not None:
        sp = r.second_pass
        rows.append(
            (
                f"final latency after the endpoint ({sp.streams} x real time, {sp.segments} segments, "
                f"{sp.audio_seconds:g} s)",
                f"p50 {sp.final_ms_p50:.0f} / p95 {sp.final_ms_p95:.0f} / max {sp.final_ms_max:.0f} ms; "
                f"second pass {sp.segments_per_s:.1f} segments/s (batch {sp.batch_mean:.1f}), "
                f"{sp.ms_per_audio_s:.0f} ms per audio second"
                + (f" ({sp.refine_ms_per_audio_s:.0f} of them refinements)" if sp.refine else ""),
            )
        )
    if r.accuracy is not None:
        a = r.accuracy
        rtf = "-" if a.rtf is None else f"{a.rtf:.3f}"
        label = "finals " if a.first_pass_wer is not None else ""
        rows.append(
            (
                f"accuracy ({a.utterances} utts, {a.audio_seconds / 60:.1f} min)",
                f"{label}WER {100 * a.wer:.2f}% / CER {100 * a.cer:.2f}% (RTF {rtf})",
            )
        )
        if a.first_pass_wer is not None and a.first_pass_cer is not None:
            rtf1 = "-" if a.first_pass_rtf is None else f"{a.first_pass_rtf:.3f}"
            rows.append(("accuracy, first pass alone",
                         f"WER {100 * a.first_pass_wer:.2f}% / CER {100 * a.first_pass_cer:.2f}% "
                         f"(RTF {rtf1})"))
    if r.streams_keeping_up is not None:
        rows.append(("streams keeping up (batched)", f"{r.streams_keeping_up} of {r.streams[-1].streams}"))
    if r.peer is not None:
        p = r.peer
        rows.append(
            (
                f"RTF ours / sherpa-onnx {p.peer_version} ({p.threads} threads)",
                f"{p.ours_rtf:.4f} / {p.peer_rtf:.4f} (ratio {p.ratio:.2f}; "
                f"texts {'match' if p.texts_match else 'DIFFER'})",
            )
        )
    for quantity, value in rows:
        table.add_row(quantity, value)
    return table


def _length_table(r: bench.ConfigResult) -> Table:
    table = Table(title=f"T_proc per window vs stream position (W={r.window_frames}, O={r.overlap_frames})")
    cols = (
        "position s",
        "window p50 ms",
        "window p95 ms",
        "encoder+search p50",
        "full-context ms",
        "full / enc",
    )
    for col in cols:
        table.add_column(col, justify="right")
    for p in r.per_length:
        if p.full_context_ms_p50 is not None:
            full, ratio = f"{p.full_context_ms_p50:.1f}", f"{p.full_context_ms_p50 / p.t_encoder_ms_p50:.1f}x"
        else:
            note = p.full_context_note or ""
            full, ratio = (
                ("failed" if note.startswith("baseline failed") else "not run" if note else "-"),
                "-",
            )
        table.add_row(
            f"{p.seconds:g}",
            f"{p.t_proc_ms_p50:.2f}",
            f"{p.t_proc_ms_p95:.2f}",
            f"{p.t_encoder_ms_p50:.2f}",
            full,
            ratio,
        )
    flat = "flat" if r.flatness_ratio <= r.flatness_target else "NOT flat"
    caption = (
        f"flatness {r.flatness_ratio:.2f} (p50 at {r.per_length[-1].seconds:g} s / at "
        f"{r.per_length[0].seconds:g} s; target <= {r.flatness_target:g}: {flat})"
    )
    if r.full_context_growth is not None:
        caption += f"; full context grows {r.full_context_growth:.1f}x"
    table.caption = caption
    return table


def _sweep_table(results: list[bench.ConfigResult]) -> Table:
    table = Table(title="sweep")
    for col in (
        "device",
        "W",
        "O",
        "hop",
        "T_wait ms",
        "T_proc p50",
        "p95",
        "p99",
        "total p50",
        "total p95",
        "RTF",
        "keeps up",
        "cache bytes",
        f"flatness (target <= {results[0].flatness_target:g})",
    ):
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(
            r.device,
            str(r.window_frames),
            str(r.overlap_frames),
            str(r.hop_frames),
            _ms(r.t_wait_ms),
            f"{r.t_proc_ms.p50:.2f}",
            f"{r.t_proc_ms.p95:.2f}",
            f"{r.t_proc_ms.p99:.2f}",
            f"{r.total_ms['p50']:.1f}",
            f"{r.total_ms['p95']:.1f}",
            f"{r.rtf:.4f}",
            "yes" if r.keeps_up else "NO",
            f"{r.cache_bytes:,}",
            f"{r.flatness_ratio:.2f}",
        )
    return table


def _streams_table(r: bench.ConfigResult) -> Table:
    table = Table(title=f"batched streams on {r.device} (hop {r.hop_frames * r.frame_ms:g} ms)")
    for col in ("streams", "step p50 ms", "step p95 ms", "step / hop", "keeps up"):
        table.add_column(col, justify="right")
    for p in r.streams:
        table.add_row(
            str(p.streams),
            f"{p.t_proc_ms_p50:.2f}",
            f"{p.t_proc_ms_p95:.2f}",
            f"{p.rtf:.4f}",
            "yes" if p.keeps_up else "NO",
        )
    return table


def _growth_sweep_table(results: list[bench.ConfigResult]) -> Table:
    """One row per configuration: streaming T_proc p50 at each position (and the baseline if any)."""
    table = Table(title="T_proc p50 (ms) per window vs stream position")
    for col in ("device", "W", "O"):
        table.add_column(col, justify="right")
    seconds = [p.seconds for p in results[0].per_length]
    for sec in seconds:
        table.add_column(f"{sec:g} s", justify="right")
    table.add_column(f"flatness (target <= {results[0].flatness_target:g})", justify="right")
    for r in results:
        cells = []
        for p in r.per_length:
            full = "" if p.full_context_ms_p50 is None else f" (full {p.full_context_ms_p50:.0f})"
            cells.append(f"{p.t_proc_ms_p50:.2f}{full}")
        table.add_row(
            r.device, str(r.window_frames), str(r.overlap_frames), *cells, f"{r.flatness_ratio:.2f}"
        )
    return table


def _show_results(results: list[bench.ConfigResult]) -> None:
    # Piped output (files, CI logs) gets room for the wide sweep table instead of Rich's 80 columns.
    out = console if console.is_terminal else Console(highlight=False, width=160)

    def show(renderable: object) -> None:
        out.print(renderable)

    ok = [r for r in results if r.ok]
    for r in results:
        if not r.ok:
            show(Text(f"skipped {r.device} W={r.window_frames} O={r.overlap_frames}: {r.reason}"))
    if len(ok) == 1:
        show(_config_table(ok[0]))
        show(_length_table(ok[0]))
        notes: dict[str, list[str]] = {}
        for p in ok[0].per_length:
            if p.full_context_note:
                notes.setdefault(p.full_context_note, []).append(f"{p.seconds:g} s")
        for note, where in notes.items():  # says which positions, so the measured ones are not doubted
            show(Text(f"full-context baseline at {', '.join(where)}: {note}"))
    elif ok:
        show(_sweep_table(ok))
        show(_growth_sweep_table(ok))
    for r in ok:
        for note in r.notes:
            show(Text(f"note ({r.device} W={r.window_frames} O={r.overlap_frames}): {note}"))
        if r.streams:
            show(_streams_table(r))
        if len(ok) > 1 and r.emission is not None:
            show(
                Text(
                    f"{r.device} W={r.window_frames} O={r.overlap_frames}: emission latency p50 "
                    f"{_ms(r.emission.p50_ms)} / p95 {_ms(r.emission.p95_ms)} ms "
                    f"over {r.emission.tokens} tokens"
                )
            )
        if len(ok) > 1 and r.peer is not None:
            show(Text(f"{r.device}: RTF ours {r.peer.ours_rtf:.4f} / sherpa-onnx {r.peer.peer_rtf:.4f}"))
        if r.peer_error:
            show(Text(f"peer: {r.peer_error}"))


def _run_with_progress(config: bench.BenchConfig) -> list[bench.ConfigResult]:
    from streamcli import bench

    """A progress bar per phase on a terminal; piped output gets only the results."""
    if not console.is_terminal:
        return bench.run_bench(config)
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        tasks: dict[str, int] = {}

        def on_progress(label: str, completed: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=total)
            bar.update(tasks[label], completed=completed, total=total)

        return bench.run_bench(config, on_progress)


def bench_command(
    model: str | None = MODEL_OPTION,
    device: str = typer.Option("auto", "--device", help="Comma-separated: cpu, cuda, cuda:N, auto."),
    threads: int = THREADS_OPTION,
    window: str | None = typer.Option(
        None, "--window", help="Window W in 10 ms frames, comma-separated for a sweep (default: model's)."
    ),
    overlap: str | None = typer.Option(
        None, "--overlap", help="Overlap O in 10 ms frames, comma-separated (default: model's)."
    ),
    lengths: str = typer.Option("10,60,600", "--lengths", help="Stream positions (s) for the growth table."),
    windows_per_length: int = typer.Option(40, "--windows-per-length", help="Windows timed per position."),
    streams: int = typer.Option(1, "--streams", help="Also batch up to K streams into one call per hop."),
    realtime_seconds: float = typer.Option(
        10.0, "--realtime-seconds", help="Real-time paced run for emission latency (0 = skip)."
    ),
    second_pass_seconds: float = typer.Option(
        30.0, "--second-pass-seconds", min=0.0,
        help="Two-pass models: audio per stream (--streams of them, 1x) through both passes to time the "
        "finals (0 = skip).",
    ),
    refine: bool = typer.Option(
        True, "--refine/--no-refine",
        help="Two-pass models: time the finals with refinements of the open utterance running (as live "
        "and serve do by default).",
    ),
    audio: Path | None = typer.Option(
        None, "--audio", help="Audio to time with (looped; default: test wavs)."
    ),
    data: Path | None = typer.Option(
        None, "--data", help="Manifest TSV (id, path, transcript): adds WER/CER."
    ),
    data_limit: int | None = typer.Option(None, "--data-limit", help="Use only the first N manifest rows."),
    peer: str | None = typer.Option(None, "--peer", help="'sherpa-onnx': same zipformer files through it."),
    peer_seconds: float = typer.Option(30.0, "--peer-seconds", help="Audio seconds for the peer comparison."),
    full_context: bool = typer.Option(
        True, "--full-context/--no-full-context", help="Time the full-context re-encoding baseline."
    ),
    full_context_reps: int = typer.Option(3, "--full-context-reps", help="Baseline repetitions per length."),
    full_context_max_s: float = typer.Option(
        120.0, "--full-context-max-s", help="Longest position for the baseline (its memory grows ~N^2)."
    ),
    json_out: Path | None = typer.Option(None, "--json", help="Write the results as JSON (schema: README)."),
    plot: Path | None = typer.Option(
        None, "--plot", help="Write a latency-vs-window PNG (needs matplotlib)."
    ),
    debug: bool = DEBUG_OPTION,
) -> None:
    """Measure latency of windowed streaming attention: wait + processing per window, growth, RTF."""

    def body() -> None:
        from streamcli import bench
        if plot is not None:
            try:
                import matplotlib  # noqa: F401
            except ImportError:
                fail("--plot needs matplotlib: pip install 'streamcli[plot]'")
        config = bench.BenchConfig(
            model=model,
            devices=bench.parse_devices(device),
            threads=threads,
            windows=bench.parse_int_list(window, "--window") if window else None,
            overlaps=bench.parse_int_list(overlap, "--overlap") if overlap else None,
            lengths_s=bench.parse_float_list(lengths, "--lengths"),
            windows_per_length=windows_per_length,
            streams=streams,
            realtime_s=realtime_seconds,
            second_pass_s=second_pass_seconds,
            refine=refine,
            audio=str(audio) if audio else None,
            data=str(data) if data else None,
            data_limit=data_limit,
            peer=peer,
            peer_seconds=peer_seconds,
            full_context=full_context,
            full_context_reps=full_context_reps,
            full_context_max_s=full_context_max_s,
        )
        results = _run_with_progress(config)
        _show_results(results)
        ok = [r for r in results if r.ok]
        if json_out is not None:
            bench.write_json(results, json_out)
            console.print(f"wrote {json_out}")
        if plot is not None and ok:
            bench.plot_latency(ok, plot)
            console.print(f"wrote {plot}")
        if not ok:
            fail("nothing was measured: " + "; ".join(sorted({str(r.reason) for r in results})))

    run_command(body, debug=debug)


def register(app: typer.Typer) -> None:
    """Adds `streamcli bench`."""
    app.command("bench")(bench_command)
