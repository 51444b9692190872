"""WER/CER on a manifest, the second pass's cost, and the same model through sherpa-onnx (the peer)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from streamcli.bench.audio import LoopedAudio
from streamcli.bench.config import FRAME_MS, SAMPLE_RATE, ProgressFn, no_progress
from streamcli.bench.schema import Accuracy, PeerComparison, SecondPass
from streamcli.errors import ModelError

if TYPE_CHECKING:
    from streamcli.recognizer import Recognizer
    from streamcli.results import Segment


def read_manifest(path: str | os.PathLike[str]) -> list[tuple[str, Path, str]]:
    """TSV with a header naming at least id, path, transcript; relative paths are from its folder."""
    manifest = Path(path)
    if not manifest.is_file():
        raise ValueError(f"--data {path}: no such manifest file")
    lines = manifest.read_text(encoding="utf-8").splitlines()
    if not lines:
        raise ValueError(f"--data {path}: empty manifest")
    header = lines[0].split("\t")
    try:
        i_id, i_path, i_text = header.index("id"), header.index("path"), header.index("transcript")
    except ValueError:
        raise ValueError(f"--data {path}: header must name the columns id, path and transcript") from None
    rows = []
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) < len(header):
            raise ValueError(f"--data {path}:{n}: expected {len(header)} tab-separated columns")
        audio_path = Path(cols[i_path])
        rows.append(
            (
                cols[i_id],
                audio_path if audio_path.is_absolute() else manifest.parent / audio_path,
                cols[i_text],
            )
        )
    return rows


def _transcribe_rows(recognizer: Recognizer, rows: list[tuple[str, Path, str]], hop_frames: int,
                     progress: ProgressFn, label: str) -> tuple[list[str], float, float]:
    """(hypotheses, audio seconds, busy seconds): each file through streamcli.transcribe (the one
    streaming driver: endpoints, resets and, for a two-pass model, the finals), fed hop by hop."""
    from streamcli.audio import read_audio
    from streamcli.transcription import transcribe

    hyps: list[str] = []
    audio_s = busy_s = 0.0
    block_s = hop_frames * FRAME_MS / 1000.0
    progress(label, 0, len(rows))
    for i, (_, path, _text) in enumerate(rows):
        samples, _ = read_audio(path, target_rate=SAMPLE_RATE)
        audio_s += samples.size / SAMPLE_RATE
        t0 = time.perf_counter()
        segments, _ = transcribe(samples, recognizer, sample_rate=SAMPLE_RATE, block_s=block_s)
        hyps.append(" ".join(seg.text for seg in segments))
        busy_s += time.perf_counter() - t0
        progress(label, i + 1, len(rows))
    return hyps, audio_s, busy_s


def measure_accuracy(
    recognizer: Recognizer,
    manifest: str,
    hop_frames: int,
    limit: int | None,
    progress: ProgressFn = no_progress,
    first_pass: Recognizer | None = None,
) -> Accuracy:
    """WER/CER of ``recognizer`` (the finals of a two-pass model) and, given ``first_pass`` (the same
    model with rescoring off), of the streaming first pass alone."""
    from streamcli.metrics import corpus_error_rates

    rows = read_manifest(manifest)[:limit]
    refs = [text for _, _, text in rows]
    hyps, audio_s, busy_s = _transcribe_rows(recognizer, rows, hop_frames, progress, "accuracy")
    rates = corpus_error_rates(zip(refs, hyps, strict=True))
    result = Accuracy(
        manifest=str(manifest),
        utterances=len(rows),
        audio_seconds=audio_s,
        wer=float(rates.wer),
        cer=float(rates.cer),
        rtf=busy_s / audio_s if audio_s else None,
    )
    if first_pass is not None:
        hyps, _, busy_s = _transcribe_rows(first_pass, rows, hop_frames, progress, "accuracy, first pass")
        rates = corpus_error_rates(zip(refs, hyps, strict=True))
        result.first_pass_wer, result.first_pass_cer = float(rates.wer), float(rates.cer)
        result.first_pass_rtf = busy_s / audio_s if audio_s else None
    return result


def refined_finals(recognizer: Recognizer, samples: np.ndarray, sample_rate: int = SAMPLE_RATE,
                   block_s: float = 0.1) -> list[Segment]:
    """The finals a live or serve user gets with refinements on (streamcli.refine), at the cadence of
    real time on a machine that keeps up: ``block_s`` blocks, each refinement in flight awaited before
    the next block (fast and repeatable, unlike a 1x wall-clock run; a server under load refines less
    often, so its finals may differ from these)."""
    from streamcli.recognizer import StreamDriver
    from streamcli.refine import RefineConfig

    finals: list[Segment] = []
    driver = StreamDriver(recognizer.create_stream(), finals=recognizer.finals_worker(),
                          refine=RefineConfig(), on_segment=finals.append)
    block = max(1, int(block_s * sample_rate))
    for i in range(0, samples.size, block):
        driver.accept_waveform(sample_rate, samples[i : i + block])
        in_flight = driver.refiner._in_flight if driver.refiner is not None else None
        if in_flight is not None:
            in_flight.result()
        driver.take_finals()
    driver.finish()
    return finals


def measure_second_pass(recognizer: Recognizer, audio: LoopedAudio, seconds: float, streams: int = 1,
                        progress: ProgressFn = no_progress, refine: bool = True) -> SecondPass | None:
    """``streams`` streams of ``seconds`` of the bench audio each, paced at 1x and batched into one
    encoder call per hop (as serve runs them), their closed utterances finalized by the recognizer's
    batched second-pass worker, with refinements of the open utterances as live and serve run them
    (``refine``): endpoint decision -> final text per segment, and the worker's cost."""
    from streamcli.recognizer import StreamDriver, decode_batch
    from streamcli.refine import RefineConfig

    worker = recognizer.finals_worker()
    if worker is None:
        return None
    stats, refine_stats = worker.stats, worker.refine_stats
    first_batch = stats.batches.total
    busy_before = stats.busy_s + refine_stats.busy_s
    refine_before = refine_stats.busy_s
    drivers = [StreamDriver(recognizer.create_stream(), finals=worker,
                            refine=RefineConfig() if refine else None) for _ in range(streams)]
    readers = [audio.reader(k * 104729) for k in range(streams)]
    hop = int(recognizer.info.shift_frames * SAMPLE_RATE * FRAME_MS) // 1000
    steps = max(1, int(seconds * SAMPLE_RATE) // hop)
    label = f"second pass, {streams} stream{'s' if streams > 1 else ''}"
    progress(label, 0, steps)
    start = time.perf_counter()
    for b in range(steps):
        time.sleep(max(0.0, start + b * hop / SAMPLE_RATE - time.perf_counter()))
        for d, r in zip(drivers, readers, strict=True):
            d.stream.accept_waveform(SAMPLE_RATE, r.take(hop))
        decode_batch(recognizer, drivers)
        for d in drivers:
            d.take_finals()
        if b % 20 == 0:
            progress(label, b, steps)
    for d in drivers:
        d.finish()
    progress(label, steps, steps)
    finals = np.asarray([ms for d in drivers for ms in d.final_latency_ms], dtype=float)
    if finals.size == 0:
        return None
    audio_s = streams * steps * hop / SAMPLE_RATE
    busy_s = stats.busy_s + refine_stats.busy_s - busy_before
    batches = stats.batches.since(first_batch)
    return SecondPass(
        audio_seconds=audio_s,
        segments=int(finals.size),
        final_ms_p50=float(np.percentile(finals, 50)),
        final_ms_p95=float(np.percentile(finals, 95)),
        final_ms_max=float(finals.max()),
        ms_per_segment_mean=busy_s * 1000.0 / finals.size,
        ms_per_audio_s=busy_s * 1000.0 / audio_s,
        streams=streams,
        segments_per_s=finals.size / busy_s if busy_s > 0 else 0.0,
        batch_mean=float(np.mean(batches)) if batches else 0.0,
        refine=refine,
        refine_ms_per_audio_s=(refine_stats.busy_s - refine_before) * 1000.0 / audio_s,
    )


def _zipformer_files(model_dir: Path, used: Sequence[str]) -> tuple[Path, Path, Path, Path]:
    """The encoder/decoder/joiner files our runtime loaded (same files for the peer) and tokens.txt."""

    def pick(prefix: str) -> Path:
        found = [model_dir / n for n in used if Path(n).name.startswith(prefix)]
        if not found or not found[0].is_file():
            raise ModelError(f"{model_dir}: no {prefix}*.onnx for the peer runtime")
        return found[0]

    return pick("encoder"), pick("decoder"), pick("joiner"), model_dir / "tokens.txt"


def measure_peer(
    recognizer: Recognizer,
    audio: LoopedAudio,
    seconds: float,
    threads: int,
    files: tuple[Path, Path, Path, Path] | None = None,
    progress: ProgressFn = no_progress,
) -> PeerComparison:
    """Same zipformer files, same audio, same threads, greedy search: our runtime vs sherpa-onnx."""
    try:
        import sherpa_onnx
    except ImportError:
        raise ModelError("--peer sherpa-onnx: the sherpa-onnx package is not installed") from None
    info = recognizer.info
    encoder, decoder, joiner, tokens = files or _zipformer_files(Path(info.path), info.files)
    samples = audio.take(0, int(seconds * SAMPLE_RATE))
    progress("peer sherpa-onnx", 0, 2)

    # Our input_finished() pads the tail so the last words are decoded; sherpa-onnx leaves that to the
    # caller, so its stream gets the same zeros and both decode the same input.
    tail_samples = [0]

    def ours() -> tuple[float, str]:
        t0 = time.perf_counter()
        s = recognizer.create_stream()
        s.accept_waveform(SAMPLE_RATE, samples)
        s.finish()
        tail_samples[0] = s.tail_padding_samples
        return time.perf_counter() - t0, s.result().text

    try:
        peer = sherpa_onnx.OnlineRecognizer.from_transducer(
            tokens=str(tokens),
            encoder=str(encoder),
            decoder=str(decoder),
            joiner=str(joiner),
            num_threads=threads,
            sample_rate=SAMPLE_RATE,
            feature_dim=80,
            decoding_method="greedy_search",
            provider="cpu",
        )
    except Exception as exc:  # sherpa-onnx raises plain RuntimeError/ValueError with its own text
        raise ModelError(f"--peer sherpa-onnx could not load {encoder.parent}: {exc}") from None

    def theirs() -> tuple[float, str]:
        t0 = time.perf_counter()
        s = peer.create_stream()
        s.accept_waveform(SAMPLE_RATE, samples)
        s.accept_waveform(SAMPLE_RATE, np.zeros(tail_samples[0], dtype=np.float32))
        s.input_finished()
        while peer.is_ready(s):
            peer.decode_stream(s)
        return time.perf_counter() - t0, peer.get_result(s).strip()

    ours()  # warm-up both, then alternate so load from other processes hits both alike
    theirs()
    ours_s, theirs_s = [], []
    ours_text = theirs_text = ""
    for _ in range(3):
        t, ours_text = ours()
        ours_s.append(t)
        t, theirs_text = theirs()
        theirs_s.append(t)
    progress("peer sherpa-onnx", 2, 2)
    dur = samples.size / SAMPLE_RATE
    ours_rtf, peer_rtf = float(np.median(ours_s)) / dur, float(np.median(theirs_s)) / dur
    return PeerComparison(
        peer="sherpa-onnx",
        peer_version=str(getattr(sherpa_onnx, "__version__", "unknown")),
        audio_seconds=dur,
        threads=threads,
        ours_rtf=ours_rtf,
        peer_rtf=peer_rtf,
        ratio=ours_rtf / peer_rtf,
        texts_match=ours_text.split() == theirs_text.split(),
        ours_words=len(ours_text.split()),
        peer_words=len(theirs_text.split()),
    )
