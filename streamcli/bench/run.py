"""The sweep: plans the (device, W, O, model) configurations and measures each one."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from streamcli.bench.accuracy import measure_accuracy, measure_peer, measure_second_pass, read_manifest
from streamcli.bench.audio import LoopedAudio, load_bench_audio
from streamcli.bench.config import FRAME_MS, BenchConfig, ProgressFn, no_progress
from streamcli.bench.measure import (
    FullContextEncoder,
    measure_emission,
    measure_full_context,
    measure_growth,
    measure_streams,
)
from streamcli.bench.schema import ConfigResult, Percentiles, peak_rss_mb
from streamcli.errors import DeviceError, StreamcliError
from streamcli.families import family_of
from streamcli.recognizer import validate_window

if TYPE_CHECKING:
    from streamcli.recognizer import ModelInfo, Recognizer


# ---------------------------------------------------------------------------------------------------
# Configuration


# ---------------------------------------------------------------------------------------------------
# Results


# ---------------------------------------------------------------------------------------------------
# Audio used for timing


# ---------------------------------------------------------------------------------------------------
# Measurement primitives


# ---------------------------------------------------------------------------------------------------
# Full-context baseline (windowed-CTC encoders)


# ---------------------------------------------------------------------------------------------------
# Accuracy and the peer runtime


# ---------------------------------------------------------------------------------------------------
# Planning the sweep and running it


def plan_configs(
    family: str,
    native: tuple[int, int],
    windows: Sequence[int] | None,
    overlaps: Sequence[int] | None,
    subsampling: int,
    shift_frames: int | None = None,
) -> tuple[list[tuple[int, int]], list[tuple[int, int, str]]]:
    """(valid (W, O) list, skipped (W, O, reason) list) for this model.

    wctc: every W x O pair with 0 <= O < W, both multiples of the subsampling. Fixed-chunk models
    (zipformer): only the native (W, O); any other request is explained and the native one measured.
    """
    native_w, native_o = native
    ws = list(windows) if windows is not None else [native_w]
    os_ = list(overlaps) if overlaps is not None else [native_o]
    valid: list[tuple[int, int]] = []
    skipped: list[tuple[int, int, str]] = []
    if not family_of(family).window:
        hop = shift_frames if shift_frames is not None else native_w - native_o
        for w in ws:
            for o in os_:
                if (w, o) != (native_w, native_o):
                    skipped.append(
                        (
                            w,
                            o,
                            (
                                f"{family} models have fixed chunking: native chunk {hop} frames "
                                f"({hop * FRAME_MS:g} ms) with {native_o} frames of left context "
                                f"(W={native_w}, O={native_o}); it was exported for that chunk "
                                f"and cannot run W={w}/O={o}, so it is measured at its native W/O instead"
                            ),
                        )
                    )
        return [(native_w, native_o)], skipped
    for w in ws:
        for o in os_:
            try:
                validate_window(w, o, subsampling)  # the one W/O rule
            except ValueError as exc:
                skipped.append((w, o, f"W={w}/O={o}: {exc}"))
            else:
                valid.append((w, o))
    return valid, skipped


def model_window(info: ModelInfo) -> tuple[int, int]:
    """(W, O): window_frames/overlap_frames mean the same for every family (O cached + hop new)."""
    return int(info.window_frames), int(info.overlap_frames)


def _recognizer(
    model: str | None, device: str, threads: int, window: int | None, overlap: int | None,
    rescore: bool | None = False,
) -> Recognizer:
    """The streaming measurements run the first pass alone (rescore=False): a final is not part of
    any window's T_proc; the second pass is measured on its own (measure_second_pass)."""
    from streamcli.families import create_recognizer
    from streamcli.recognizer import RecognizerConfig

    cfg = RecognizerConfig(
        model=model, device=device, threads=threads, window_frames=window, overlap_frames=overlap,
        rescore=rescore,
    )
    return create_recognizer(cfg)


def _two_pass(model: str | None, device: str, threads: int, w: int, o: int) -> Recognizer | None:
    """The same model with its second pass, or None when it has none."""
    rec = _recognizer(model, device, threads, w, o, rescore=None)
    return rec if rec.info.second_pass else None


def _skipped(model: str | None, device: str, family: str | None, w: int, o: int, reason: str) -> ConfigResult:
    return ConfigResult(
        status="skipped",
        reason=reason,
        model=model or "default",
        family=family,
        device=device,
        provider=None,
        threads=None,
        window_frames=w,
        overlap_frames=o,
        hop_frames=w - o,
    )


def run_bench(config: BenchConfig, progress: ProgressFn = no_progress) -> list[ConfigResult]:
    """Every (device, W, O) of the config; skipped configurations come back with their reason."""
    if config.data is not None:
        read_manifest(config.data)  # a bad manifest fails now, not after minutes of measuring
    results: list[ConfigResult] = []
    for device in config.devices:
        try:
            probe = _recognizer(config.model, device, config.threads, None, None)
        except DeviceError as exc:
            # The configurations this device would have run, named as on the devices that work.
            cpu_info = _recognizer(config.model, "cpu", config.threads, None, None).info
            valid, _ = plan_configs(
                cpu_info.family,
                model_window(cpu_info),
                config.windows,
                config.overlaps,
                int(cpu_info.subsampling),
                int(cpu_info.shift_frames),
            )
            results.extend(_skipped(config.model, device, cpu_info.family, w, o, str(exc)) for w, o in valid)
            continue
        info = probe.info
        valid, skipped = plan_configs(
            info.family,
            model_window(info),
            config.windows,
            config.overlaps,
            int(info.subsampling),
            int(info.shift_frames),
        )
        results.extend(_skipped(config.model, device, info.family, w, o, r) for w, o, r in skipped)
        audio = load_bench_audio(config.audio, Path(info.path))
        for w, o in valid:
            if family_of(info.family).window and (w, o) != (info.window_frames, info.overlap_frames):
                try:
                    rec = _recognizer(config.model, device, config.threads, w, o)
                except ValueError as exc:
                    results.append(_skipped(config.model, device, info.family, w, o, str(exc)))
                    continue
            else:
                rec = probe
            results.append(measure_config(rec, device, config, audio, progress))
    return results


def measure_config(
    recognizer: Recognizer,
    device: str,
    config: BenchConfig,
    audio: LoopedAudio,
    progress: ProgressFn = no_progress,
) -> ConfigResult:
    info = recognizer.info
    w, o = model_window(info)
    hop = int(info.shift_frames)
    lookahead = max(0, int(info.chunk_frames) - hop)
    hop_ms = hop * FRAME_MS
    tag = f"{device} W={w} O={o}"
    all_times, points = measure_growth(
        recognizer,
        audio,
        hop,
        config.lengths_s,
        config.windows_per_length,
        config.warmup_windows,
        progress,
        f"{tag} streaming",
    )
    rss_stream = peak_rss_mb()
    t_proc = Percentiles.of(all_times)
    # A frame waits for the rest of its hop (plus a fixed-chunk model's lookahead), then the window runs.
    t_wait = (hop + lookahead) * FRAME_MS
    t_wait_mean = (hop / 2 + lookahead) * FRAME_MS
    totals = t_wait + np.asarray(all_times)
    result = ConfigResult(
        status="ok",
        reason=None,
        model=info.name,
        family=info.family,
        device=device,
        provider=info.provider,
        threads=int(info.threads),
        window_frames=w,
        overlap_frames=o,
        hop_frames=hop,
        lookahead_frames=lookahead,
        t_wait_ms=t_wait,
        t_wait_mean_ms=t_wait_mean,
        t_proc_ms=t_proc,
        total_ms={"p50": float(np.percentile(totals, 50)), "p95": float(np.percentile(totals, 95))},
        rtf=float(np.mean(all_times)) / hop_ms,
        keeps_up=t_proc.p95 < hop_ms,
        cache_bytes=int(info.state_bytes),
        peak_rss_mb=rss_stream,
        windows_measured=len(all_times),
        audio=audio.source,
        model_files=list(info.files),
        per_length=points,
    )
    result.flatness_ratio = points[-1].t_proc_ms_p50 / points[0].t_proc_ms_p50
    if info.device_notice:
        result.notes.append(info.device_notice)
    if family_of(info.family).any_length and config.full_context:
        encoder = FullContextEncoder(recognizer)
        short = [p for p in points if p.seconds <= config.full_context_max_s]
        for p in points[len(short) :]:
            p.full_context_note = (
                f"not measured: beyond --full-context-max-s {config.full_context_max_s:g} "
                "(full attention costs time and memory ~N^2)"
            )
        if short:
            measured = measure_full_context(
                encoder,
                audio,
                [p.seconds for p in short],
                config.full_context_reps,
                config.full_context_budget_s,
                progress,
            )
            for point, (ms, reps, frames, failure) in zip(short, measured, strict=True):
                point.full_context_ms_p50, point.full_context_reps = ms, reps
                point.full_context_frames, point.full_context_note = frames, failure
            done = [m[0] for m in measured if m[0] is not None]
            if done:
                result.full_context_growth = done[-1] / done[0]
            result.full_context_peak_rss_mb = peak_rss_mb()
        del encoder
    elif not family_of(info.family).any_length:
        result.notes.append(f"no full-context baseline: a {info.family} encoder only accepts its fixed chunk")
    if config.streams > 1:
        result.streams = measure_streams(
            recognizer, audio, hop, config.streams, config.windows_per_length, config.warmup_windows, progress
        )
        keeping = [p.streams for p in result.streams if p.keeps_up]
        result.streams_keeping_up = max(keeping) if keeping else 0
    if config.realtime_s > 0:
        result.emission = measure_emission(
            recognizer, audio, config.realtime_s, config.realtime_block_ms, progress
        )
    two_pass = None
    if family_of(info.family).word_times:
        two_pass = _two_pass(config.model, device, config.threads, int(info.window_frames),
                             int(info.overlap_frames))
    if two_pass is not None and config.second_pass_s > 0:
        result.second_pass = measure_second_pass(two_pass, audio, config.second_pass_s, config.streams,
                                                 progress, refine=config.refine)
    if config.data is not None:
        if two_pass is not None:
            result.accuracy = measure_accuracy(two_pass, config.data, hop, config.data_limit, progress,
                                               first_pass=recognizer)
        else:
            result.accuracy = measure_accuracy(recognizer, config.data, hop, config.data_limit, progress)
    if config.peer is not None:
        if not family_of(info.family).sherpa_peer:
            result.peer_error = "--peer sherpa-onnx compares zipformer models only (sherpa-onnx has no wctc)"
        else:
            try:
                result.peer = measure_peer(
                    recognizer, audio, config.peer_seconds, int(info.threads), progress=progress
                )
            except StreamcliError as exc:
                result.peer_error = str(exc)
    return result


# ---------------------------------------------------------------------------------------------------
# Plot
