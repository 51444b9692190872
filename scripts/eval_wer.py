#!/usr/bin/env python3
"""WER/CER of a model on a TSV manifest, or of a hypothesis TSV against a reference TSV.

Model mode streams every file through streamcli.transcription.transcribe (the same driver, endpoints
and second pass as `streamcli transcribe`), with the model's own window/overlap unless
--window/--overlap are given; WER/CER are also reported per subset (librispeech/test-other, jfk, ...):

    python scripts/eval_wer.py --model models/NAME --data ../shared/data/dev/dev.tsv
    python scripts/eval_wer.py --model models/NAME --data /work/data/synth/heldout.tsv --limit 200

Hypothesis mode scores a TSV with columns id + transcript (e.g. from another tool):

    python scripts/eval_wer.py --hyp hyp.tsv --data ../shared/data/dev/dev.tsv

Manifests: header `id  path  duration_seconds  transcript`, paths relative to the manifest's folder.
WER is corpus-level (edits summed over utterances, then divided), see streamcli.metrics.
--out-tsv writes id, reference, hypothesis, per-utterance word errors; --json the summary.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from streamcli.metrics import CorpusErrorRates, corpus_error_rates, word_edits


@dataclass(frozen=True)
class ManifestRow:
    utt_id: str
    audio_path: Path
    transcript: str
    duration_s: float


def read_manifest(path: Path, limit: int | None = None) -> list[ManifestRow]:
    if not path.is_file():
        raise ValueError(f"manifest not found: {path}")
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = {"id", "transcript"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
        for row in reader:
            audio = Path(row.get("path") or "")
            if not audio.is_absolute():
                audio = path.parent / audio
            duration = row.get("duration_seconds") or "0"
            rows.append(ManifestRow(row["id"], audio, row["transcript"] or "", float(duration)))
            if limit is not None and len(rows) >= limit:
                break
    if not rows:
        raise ValueError(f"{path}: no utterances")
    return rows


def read_hypotheses(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise ValueError(f"hypothesis file not found: {path}")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        text_column = "transcript" if "transcript" in (reader.fieldnames or ()) else "text"
        if "id" not in (reader.fieldnames or ()) or text_column not in (reader.fieldnames or ()):
            raise ValueError(f"{path}: needs columns id and transcript (or text)")
        return {row["id"]: row[text_column] or "" for row in reader}


def decode_with_model(rows: list[ManifestRow], model: str, *, device: str, threads: int,
                      window_frames: int | None, overlap_frames: int | None, rescore: bool | None,
                      second_pass_frames: str = "teacher", second_pass_precision: str = "auto",
                      refine: bool = False) -> tuple[dict[str, str], dict[str, object]]:
    """Hypotheses by id (every file through streamcli.transcription.transcribe, endpoints included, as a
    user's `streamcli transcribe` would), plus facts about the run (provider, RTF, second-pass cost)."""
    import numpy as np

    from streamcli.audio import read_audio
    from streamcli.bench.accuracy import refined_finals
    from streamcli.families import create_recognizer
    from streamcli.recognizer import RecognizerConfig
    from streamcli.transcription import transcribe

    recognizer = create_recognizer(RecognizerConfig(
        model=model, device=device, threads=threads, window_frames=window_frames,
        overlap_frames=overlap_frames, rescore=rescore, second_pass_frames=second_pass_frames,
        second_pass_precision=second_pass_precision))
    hypotheses: dict[str, str] = {}
    audio_s = 0.0
    chunk_ms: list[float] = []
    start = time.perf_counter()
    for row in rows:
        if refine:
            audio, rate = read_audio(row.audio_path, target_rate=16000)
            hypotheses[row.utt_id] = " ".join(s.text for s in refined_finals(recognizer, audio, rate))
            audio_s += audio.size / rate
        else:
            flow, stats = transcribe(str(row.audio_path), recognizer)
            hypotheses[row.utt_id] = " ".join(seg.text for seg in flow)
            audio_s += stats.audio_s
            chunk_ms += stats.chunk_times_ms
        print(f"\r{len(hypotheses)}/{len(rows)} utterances", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    wall_s = time.perf_counter() - start
    info = recognizer.info
    finals = list(recognizer.final_times_ms or [])
    facts = {
        "model": str(model),
        "family": info.family,
        "provider": info.provider,
        "second_pass": info.second_pass,
        "window_frames": info.window_frames,
        "overlap_frames": info.overlap_frames,
        "audio_seconds": round(audio_s, 3),
        "wall_seconds": round(wall_s, 3),
        "real_time_factor": round(wall_s / audio_s, 5) if audio_s else None,
        "window_ms_p50": round(float(np.percentile(chunk_ms, 50)), 3) if chunk_ms else None,
        "window_ms_p95": round(float(np.percentile(chunk_ms, 95)), 3) if chunk_ms else None,
        "final_segments": len(finals),
        "final_ms_p50": round(float(np.percentile(finals, 50)), 1) if finals else None,
        "final_ms_p95": round(float(np.percentile(finals, 95)), 1) if finals else None,
        "final_ms_per_audio_s": round(sum(finals) / audio_s, 2) if finals and audio_s else None,
    }
    return hypotheses, facts


def subset_root(rows: list[ManifestRow], manifest: Path) -> Path:
    """The manifest's folder when every file is below it, else the files' common folder."""
    parents = [r.audio_path.resolve().parent for r in rows]
    base = manifest.resolve().parent
    if all(p.is_relative_to(base) for p in parents):
        return base
    return Path(os.path.commonpath([str(p) for p in parents]))


def subset_of(row: ManifestRow, root: Path) -> str:
    """Subset name: the first folder below ``root`` (librispeech: the first two, e.g.
    librispeech/test-other)."""
    parts = row.audio_path.resolve().relative_to(root).parts
    if len(parts) < 2:
        return "."
    return "/".join(parts[:2]) if parts[0] == "librispeech" and len(parts) > 2 else parts[0]


def score(rows: list[ManifestRow], hypotheses: dict[str, str]) -> CorpusErrorRates:
    missing = [r.utt_id for r in rows if r.utt_id not in hypotheses]
    if missing:
        raise ValueError(f"{len(missing)} utterance(s) have no hypothesis, e.g. {missing[0]!r}")
    return corpus_error_rates((r.transcript, hypotheses[r.utt_id]) for r in rows)


def write_details(path: Path, rows: list[ManifestRow], hypotheses: dict[str, str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(["id", "word_errors", "reference_words", "reference", "hypothesis"])
        for r in rows:
            edits = word_edits(r.transcript, hypotheses[r.utt_id])
            writer.writerow([r.utt_id, edits.errors, edits.reference_length, r.transcript,
                             hypotheses[r.utt_id]])
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="reference TSV manifest")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="model folder or name for streamcli.recognizer")
    source.add_argument("--hyp", type=Path, help="hypothesis TSV (id, transcript) to score instead")
    parser.add_argument("--limit", type=int, default=None, help="first N utterances only")
    parser.add_argument("--device", default="cpu", help="auto|cpu|cuda|cuda:N (default cpu)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--rescore", action=argparse.BooleanOptionalAction, default=None,
                        help="second pass on/off (default: on where the model has one)")
    parser.add_argument("--second-pass-frames", default="teacher", help="teacher | student")
    parser.add_argument("--second-pass-precision", default="auto", help="auto | int8 | float32")
    parser.add_argument("--refine", action="store_true",
                        help="finals as live/serve give them with refinements on (real-time cadence)")
    parser.add_argument("--window", type=int, default=None, help="window frames W (wctc models)")
    parser.add_argument("--overlap", type=int, default=None, help="overlap frames O (wctc models)")
    parser.add_argument("--out-tsv", type=Path, default=None, help="per-utterance details")
    parser.add_argument("--json", type=Path, default=None, help="summary as JSON")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    try:
        if args.limit is not None and args.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {args.limit}")
        rows = read_manifest(args.data, args.limit)
        facts: dict[str, object] = {}
        if args.hyp is not None:
            hypotheses = read_hypotheses(args.hyp)
            facts["hypotheses"] = str(args.hyp)
        else:
            hypotheses, facts = decode_with_model(
                rows, args.model, device=args.device, threads=args.threads, window_frames=args.window,
                overlap_frames=args.overlap, rescore=args.rescore, second_pass_frames=args.second_pass_frames,
                second_pass_precision=args.second_pass_precision, refine=args.refine)
        rates = score(rows, hypotheses)
        subsets: dict[str, list[ManifestRow]] = {}
        root = subset_root(rows, args.data)
        for r in rows:
            subsets.setdefault(subset_of(r, root), []).append(r)
        per_subset = {}
        for name, group in sorted(subsets.items()):
            sub = score(group, hypotheses)
            per_subset[name] = {"utterances": sub.utterances, "wer": round(sub.wer, 5),
                                "cer": round(sub.cer, 5)}
        if args.out_tsv is not None:
            write_details(args.out_tsv, rows, hypotheses)
    except Exception as exc:  # one line for the user; --debug for the traceback
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = {
        "data": str(args.data),
        "utterances": rates.utterances,
        "wer": round(rates.wer, 5),
        "cer": round(rates.cer, 5),
        "word_errors": rates.words.errors,
        "reference_words": rates.words.reference_length,
        "substitutions": rates.words.substitutions,
        "deletions": rates.words.deletions,
        "insertions": rates.words.insertions,
        **facts,
        "subsets": per_subset,
    }
    print(f"WER {100 * rates.wer:.2f}% ({rates.words.errors}/{rates.words.reference_length} words: "
          f"{rates.words.substitutions} sub, {rates.words.deletions} del, {rates.words.insertions} ins)  "
          f"CER {100 * rates.cer:.2f}%  on {rates.utterances} utterances of {args.data}")
    for name, sub in per_subset.items():
        wer, cer = 100 * sub["wer"], 100 * sub["cer"]
        print(f"  {name:28s} {sub['utterances']:4d} utt  WER {wer:6.2f}%  CER {cer:6.2f}%")
    if facts.get("real_time_factor") is not None:
        print(f"provider {facts.get('provider')}, RTF {facts['real_time_factor']}, window p50/p95 "
              f"{facts['window_ms_p50']}/{facts['window_ms_p95']} ms, "
              f"second pass {facts.get('second_pass')}: "
              f"{facts.get('final_segments')} finals, p50/p95 {facts.get('final_ms_p50')}/"
              f"{facts.get('final_ms_p95')} ms")
    if args.json is not None:
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
