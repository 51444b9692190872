"""streamcli vs sherpa-onnx on the same zipformer, files and threads: parity and speed in one run.

    python scripts/compare_sherpa.py [--model DIR] [--threads 1] [--limit N] [--decoding greedy|beam]

Without --model it builds the random-weight test zipformer (:mod:`streamcli_tools.devtools.zipformer_maker`)
in a tmp dir. Files: every wav/flac of ../shared/data/dev/dev.tsv plus
../shared/models/*/test_wavs/8k.wav, decoded, downmixed and resampled to 16 kHz once (streamcli.audio,
the one resampler), so both runtimes get the same float samples and the same tail padding (what
streamcli's input_finished() adds) and the comparison is about the recognizers. Runs alternate
between the runtimes file by file (the order flips every file) so load drift on a shared machine hits
both alike. Reports:

- parity: files whose token sequences and token times are identical / all files;
- RTF of each runtime (processing seconds / audio seconds, features + encoder + search) and the
  ratio streamcli / sherpa-onnx (< 1 means streamcli is faster).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamcli.audio import read_audio
from streamcli.tokens import WORD_START

SHARED = Path(__file__).resolve().parents[4] / "shared"
DEV_TSV = SHARED / "data" / "dev" / "dev.tsv"
SAMPLE_RATE = 16000


def load_16k(path: Path) -> np.ndarray:
    return read_audio(path, target_rate=SAMPLE_RATE)[0]


def dev_files(dev_tsv: Path = DEV_TSV) -> list[Path]:
    """Every file of dev.tsv plus the 8 kHz test wav of the shared model folder."""
    files: list[Path] = []
    with dev_tsv.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            files.append(dev_tsv.parent / row["path"])
    files += sorted((SHARED / "models").glob("*/test_wavs/8k.wav"))
    return files


@dataclass
class Decoded:
    tokens: list[tuple[str, float]]  # (piece with ▁ as space, start time rounded to ms)
    seconds: float  # processing time


def run_streamcli(recognizer, samples: np.ndarray) -> tuple[Decoded, int]:
    """Decodes one file; returns the result and the tail padding (samples) the stream added."""
    t0 = time.perf_counter()
    stream = recognizer.create_stream()
    stream.accept_waveform(SAMPLE_RATE, samples)
    stream.finish()
    result = stream.result()
    elapsed = time.perf_counter() - t0
    tokens = [(t.text.replace(WORD_START, " "), round(t.start, 3)) for t in result.tokens]
    return Decoded(tokens, elapsed), stream.tail_padding_samples


def sherpa_recognizer(model_dir: Path, threads: int, decoding: str = "greedy", beam: int = 4):
    import sherpa_onnx

    def pick(role: str) -> str:
        files = sorted(p for p in model_dir.glob(f"{role}*.onnx") if not p.name.endswith(".int8.onnx"))
        files = files or sorted(model_dir.glob(f"{role}*.onnx"))
        return str(files[0])

    return sherpa_onnx.OnlineRecognizer.from_transducer(
        tokens=str(model_dir / "tokens.txt"),
        encoder=pick("encoder"),
        decoder=pick("decoder"),
        joiner=pick("joiner"),
        num_threads=threads,
        sample_rate=SAMPLE_RATE,
        feature_dim=80,
        decoding_method="greedy_search" if decoding == "greedy" else "modified_beam_search",
        max_active_paths=beam,
        provider="cpu",
    )


def run_sherpa(recognizer, samples: np.ndarray, tail_padding: int) -> Decoded:
    t0 = time.perf_counter()
    stream = recognizer.create_stream()
    stream.accept_waveform(SAMPLE_RATE, samples)
    if tail_padding:
        stream.accept_waveform(SAMPLE_RATE, np.zeros(tail_padding, dtype=np.float32))
    stream.input_finished()
    while recognizer.is_ready(stream):
        recognizer.decode_stream(stream)
    result = recognizer.get_result_all(stream)
    elapsed = time.perf_counter() - t0
    tokens = [
        (tok.replace("\u2581", " "), round(float(ts), 3))
        for tok, ts in zip(result.tokens, result.timestamps, strict=False)
    ]
    return Decoded(tokens, elapsed)


def compare(
    model_dir: Path,
    files: list[Path],
    threads: int,
    decoding: str = "greedy",
    beam: int = 4,
    progress: bool = False,
    concurrent: bool = False,
) -> dict:
    """Decodes every file with both runtimes; see the module docstring.

    ``concurrent=True`` (for tests) decodes with sherpa-onnx in a worker thread while streamcli runs,
    so the two overlap where the GIL is released (onnxruntime calls); the times it reports are then
    not a fair speed comparison, only the parity is.
    """
    from streamcli.endpoint import EndpointConfig
    from streamcli.families import create_recognizer
    from streamcli.recognizer import RecognizerConfig

    ours = create_recognizer(
        RecognizerConfig(
            model=str(model_dir),
            device="cpu",
            threads=threads,
            decoding=decoding,
            beam=beam,
            endpoint=EndpointConfig(enabled=False),
        )
    )
    theirs = sherpa_recognizer(model_dir, threads, decoding, beam)
    audio = [load_16k(p) for p in files]
    # warm-up both (first runs allocate)
    warm = audio[0][: SAMPLE_RATE * 2]
    _, pad = run_streamcli(ours, warm)
    run_sherpa(theirs, warm, pad)

    pads = [ours.tail_padding_samples(a.size) for a in audio]
    pending = None
    if concurrent:
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=1)
        pending = pool.submit(lambda: [run_sherpa(theirs, a, p) for a, p in zip(audio, pads, strict=True)])
    per_file = []
    total_audio = ours_s = theirs_s = 0.0
    identical = num_tokens = 0
    ours_results = [run_streamcli(ours, a)[0] for a in audio] if concurrent else []
    theirs_results = pending.result() if pending is not None else []
    for i, (path, samples) in enumerate(zip(files, audio, strict=False)):
        if concurrent:
            a, b = ours_results[i], theirs_results[i]
        elif i % 2 == 0:
            a, pad = run_streamcli(ours, samples)
            b = run_sherpa(theirs, samples, pad)
        else:
            # sherpa first: the padding streamcli would add is known from a dry computation
            pad = pads[i]
            b = run_sherpa(theirs, samples, pad)
            a, pad2 = run_streamcli(ours, samples)
            assert pad2 == pad
        same = a.tokens == b.tokens
        identical += same
        num_tokens += len(a.tokens)
        dur = samples.size / SAMPLE_RATE
        total_audio += dur
        ours_s += a.seconds
        theirs_s += b.seconds
        entry = {
            "file": str(path),
            "seconds": round(dur, 3),
            "identical": same,
            "tokens": len(a.tokens),
            "streamcli_s": round(a.seconds, 4),
            "sherpa_s": round(b.seconds, 4),
        }
        if not same:
            k = next(
                (j for j, (x, y) in enumerate(zip(a.tokens, b.tokens, strict=False)) if x != y),
                min(len(a.tokens), len(b.tokens)),
            )
            entry["first_difference"] = {
                "index": k,
                "streamcli": a.tokens[k : k + 3],
                "sherpa": b.tokens[k : k + 3],
            }
        per_file.append(entry)
        if progress:
            print(f"[{i + 1}/{len(files)}] {'ok ' if same else 'DIFF'} {path.name}", file=sys.stderr)
    return {
        "files": len(files),
        "identical_files": identical,
        "tokens": num_tokens,
        "audio_s": round(total_audio, 2),
        "tokens_per_s": round(num_tokens / total_audio, 3) if total_audio else 0.0,
        "streamcli_s": round(ours_s, 3),
        "sherpa_s": round(theirs_s, 3),
        "streamcli_rtf": round(ours_s / total_audio, 5) if total_audio else 0.0,
        "sherpa_rtf": round(theirs_s / total_audio, 5) if total_audio else 0.0,
        "ratio": round(ours_s / theirs_s, 3) if theirs_s else float("nan"),
        "threads": threads,
        "decoding": decoding,
        "provider": ours.info.provider,
        "per_file": per_file,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--model", type=Path, default=None, help="model folder (default: build the test zipformer)"
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit", type=int, default=0, help="only the first N files")
    ap.add_argument("--decoding", choices=["greedy", "beam"], default="greedy")
    ap.add_argument("--beam", type=int, default=4)
    ap.add_argument("--json", type=Path, default=None, help="also write the full report here")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)

    files = dev_files()
    if args.limit:
        files = files[: args.limit]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model
        if model_dir is None:
            from streamcli_tools.devtools.zipformer_maker import make_test_zipformer

            model_dir = make_test_zipformer(Path(tmp) / "test-zipformer", seed=0)
        report = compare(model_dir, files, args.threads, args.decoding, args.beam, progress=not args.quiet)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    print(
        f"model: {args.model or 'test zipformer (random weights)'}  threads: {args.threads}  "
        f"decoding: {args.decoding}  provider: {report['provider']}"
    )
    print(
        f"files: {report['files']}  audio: {report['audio_s']:.1f} s  tokens: {report['tokens']} "
        f"({report['tokens_per_s']:.2f}/s)"
    )
    print(f"parity: {report['identical_files']}/{report['files']} files identical (tokens and times)")
    print(f"streamcli: {report['streamcli_s']:.2f} s  RTF {report['streamcli_rtf']:.4f}")
    print(f"sherpa-onnx: {report['sherpa_s']:.2f} s  RTF {report['sherpa_rtf']:.4f}")
    print(f"ratio streamcli/sherpa-onnx: {report['ratio']:.3f}")
    return 0 if report["identical_files"] == report["files"] else 1

