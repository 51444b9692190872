#!/usr/bin/env python3
"""CTC training of the windowed-attention encoder (streamcli_tools.train.wctc_torch) on CPU or CUDA.

Data: TSV manifests with a header `id  path  duration_seconds  transcript` (relative paths resolve
against the TSV's folder; an optional `feats` column names a precomputed (T, 80) fbank .npy) and/or
LibriSpeech-layout folders (*/*/*.trans.txt beside .flac files). Never point it at the evaluation set
(../shared/data/dev); the script refuses paths under a folder named `dev` of the shared data.

Targets are characters (a-z, apostrophe, word boundary `▁`), see `char_tokens()`; the token table
is written beside every checkpoint as tokens.txt.

Augmentation: speed perturbation (0.9/1.0/1.1, features precomputed once per speed), additive noise
mixed in the log-mel domain at a random SNR, SpecAugment (frequency + time masks), and a random
window/overlap pair per batch so the model works for several W/O at inference.

Example:
  nice -n 10 python scripts/train.py --train /work/data/synth/train.tsv \
      --heldout /work/data/synth/heldout.tsv --out runs/wctc --max-minutes 50 --threads 2
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import time
from pathlib import Path

import numpy as np
import torch
from streamcli_tools.train.data import (
    Utterance,
    colored_noises,
    encode_text,
    load_audio,
    make_batches,
    noise_segment,
    normalize_text,
    read_tsv,
    refuse_eval_data,
    spec_augment,
    speed_perturb,
)
from streamcli_tools.train.wctc_torch import (
    SUBSAMPLING,
    WORD_START,
    WctcConfig,
    WctcModel,
    char_tokens,
    count_parameters,
    load_checkpoint,
    save_checkpoint,
)
from tqdm import tqdm

from streamcli.features import compute_features
from streamcli.metrics import corpus_error_rates

SAMPLE_RATE = 16000
# (window_frames, overlap_frames) pairs sampled per batch, in 10 ms feature frames.
DEFAULT_WINDOWS = "50:0,50:25,100:0,100:25,100:50,150:50,200:0,200:50,200:100,300:100,400:100"


def fbank(samples: np.ndarray) -> np.ndarray:
    """80-dim kaldi fbank, 10 ms shift: exactly the runtime's features (streamcli.features)."""
    return compute_features(samples, "kaldi_fbank", SAMPLE_RATE)


def read_librispeech(folder: str) -> list[Utterance]:
    out = []
    for trans in sorted(Path(folder).rglob("*.trans.txt")):
        for line in trans.read_text(encoding="utf-8").splitlines():
            uid, _, text = line.partition(" ")
            audio = trans.parent / f"{uid}.flac"
            if audio.exists():
                out.append(Utterance(uid, str(audio), text))
    return out


class FeatureStore:
    """Fbank features per (utterance, speed), computed once and kept in memory (and on disk cache)."""

    def __init__(self, cache_dir: Path, speeds: list[float]) -> None:
        self.cache_dir = cache_dir
        self.speeds = speeds
        cache_dir.mkdir(parents=True, exist_ok=True)

    def _file(self, utt: Utterance, speed: float) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", utt.uid)
        return self.cache_dir / f"{safe}.s{int(round(speed * 100))}.npy"

    def get(self, utt: Utterance, speed: float) -> np.ndarray:
        if speed == 1.0 and utt.feats_path and os.path.exists(utt.feats_path):
            return np.load(utt.feats_path).astype(np.float32)
        f = self._file(utt, speed)
        if f.exists():
            return np.load(f)
        audio = load_audio(utt.path)
        feats = fbank(speed_perturb(audio, speed))
        np.save(f, feats)
        return feats


def noise_fbanks(rng: np.random.Generator, frames: int = 3000) -> list[np.ndarray]:
    """Log-mel of white, pink and brown noise at unit power (mixed in at a random SNR later)."""
    return [fbank(noise * 0.05) for noise in colored_noises(rng, seconds=frames * 160 / SAMPLE_RATE)]


def augment(
    feats: np.ndarray,
    rng: np.random.Generator,
    noises: list[np.ndarray],
    noise_prob: float,
    specaugment: bool = True,
) -> np.ndarray:
    x = feats.copy()
    if noises and rng.random() < noise_prob:
        seg = noise_segment(noises, rng, x.shape)
        # Power addition in the mel domain: log(e^speech + e^noise), noise level relative to speech energy.
        speech_level = np.percentile(x.mean(axis=1), 90)
        snr_db = rng.uniform(5.0, 30.0)
        shift = speech_level - seg.mean() - snr_db * math.log(10) / 10.0
        x = np.logaddexp(x, seg + shift).astype(np.float32)
    if not specaugment:
        return x
    # SpecAugment as this model was trained: masks of <= 15 bins filled with the utterance mean.
    return spec_augment(x, rng, max_freq_width=15, fill=float(x.mean()))


def collate(feats: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    t_max = max(f.shape[0] for f in feats)
    t_max = -(-t_max // SUBSAMPLING) * SUBSAMPLING
    x = np.zeros((len(feats), t_max, 80), np.float32)
    for i, f in enumerate(feats):
        x[i, : f.shape[0]] = f
    lengths = torch.tensor([-(-f.shape[0] // SUBSAMPLING) for f in feats])
    return torch.from_numpy(x), lengths


def greedy_ids(logits: torch.Tensor, length: int) -> list[int]:
    best = logits[:length].argmax(-1).tolist()
    out, prev = [], 0
    for t in best:
        if t != prev and t != 0:
            out.append(t)
        prev = t
    return out


def evaluate(
    model: WctcModel,
    utts: list[Utterance],
    store: FeatureStore,
    tokens: list[str],
    window: tuple[int, int],
    device: torch.device,
) -> tuple[float, float]:
    """(WER, CER) of streaming-equivalent greedy decoding (block mask of `window`)."""
    model.eval()
    pairs: list[tuple[str, str]] = []
    with torch.no_grad():
        for i in range(0, len(utts), 16):
            group = utts[i : i + 16]
            x, lengths = collate([store.get(u, 1.0) for u in group])
            logits = model.forward_full(x.to(device), window[0], window[1], lengths=lengths.to(device)).cpu()
            for j, u in enumerate(group):
                hyp = "".join(
                    tokens[t] for t in greedy_ids(logits[j], int(lengths[j]) * model.cfg.ctc_upsample)
                )
                hyp = " ".join(hyp.replace(WORD_START, " ").split())
                pairs.append((normalize_text(u.text), hyp))
    model.train()
    rates = corpus_error_rates(pairs)
    return rates.wer, rates.cer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", action="append", default=[], help="training TSV manifest (repeatable)")
    ap.add_argument(
        "--librispeech", action="append", default=[], help="LibriSpeech-layout folder (repeatable)"
    )
    ap.add_argument("--heldout", help="held-out TSV for WER after each epoch (first 200 rows)")
    ap.add_argument("--out", required=True, help="output folder: checkpoints, tokens.txt, log.jsonl")
    ap.add_argument("--resume", help="checkpoint to continue from (model, optimizer, step, elapsed time)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (the machine is shared)")
    ap.add_argument("--max-minutes", type=float, default=50.0, help="training time budget (wall clock)")
    ap.add_argument("--epochs", type=int, default=1000)
    ap.add_argument("--max-batch-frames", type=int, default=16000, help="padded feature frames per batch")
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--warmup-steps", type=int, default=300)
    ap.add_argument("--windows", default=DEFAULT_WINDOWS, help="W:O pairs sampled per batch")
    ap.add_argument("--speeds", default="0.9,1.0,1.1")
    ap.add_argument("--noise-prob", type=float, default=0.5)
    ap.add_argument("--d-model", type=int, default=176)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--ff-dim", type=int, default=704)
    ap.add_argument("--conv-kernel", type=int, default=15)
    ap.add_argument("--ctc-upsample", type=int, default=1, help="CTC frames per 50 ms encoder frame (1 or 2)")
    ap.add_argument(
        "--dropout",
        type=float,
        default=None,
        help="dropout (default 0.1; with --resume: overrides the checkpoint's)",
    )
    ap.add_argument("--max-utterance-s", type=float, default=20.0)
    ap.add_argument("--checkpoint-minutes", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--restart-schedule",
        action="store_true",
        help="with --resume: the cosine lr decay starts anew from --lr over the remaining budget",
    )
    ap.add_argument("--specaugment", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--sortagrad", action=argparse.BooleanOptionalAction, default=True)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng_np = np.random.default_rng(args.seed)
    rng = random.Random(args.seed)
    device = torch.device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    refuse_eval_data(args.train + args.librispeech + ([args.heldout] if args.heldout else []))
    utts: list[Utterance] = []
    for t in args.train:
        utts += read_tsv(t)
    for folder in args.librispeech:
        utts += read_librispeech(folder)
    if not utts:
        raise SystemExit("no training data: give --train TSV and/or --librispeech DIR")
    heldout = read_tsv(args.heldout)[:200] if args.heldout else []

    tokens = char_tokens()
    table = {t: i for i, t in enumerate(tokens)}
    (out / "tokens.txt").write_text("".join(f"{t} {i}\n" for i, t in enumerate(tokens)), encoding="utf-8")
    windows = [tuple(int(v) for v in p.split(":")) for p in args.windows.split(",")]
    speeds = [float(s) for s in args.speeds.split(",")]
    store = FeatureStore(out / "feature_cache", speeds)

    # Features for every speed once up front; utterances whose text cannot fit the CTC frames are dropped.
    data: dict[float, list[np.ndarray]] = {s: [] for s in speeds}
    targets: list[list[int]] = []
    keep: list[Utterance] = []
    for u in tqdm(utts, desc="features", unit="utt"):
        ids = encode_text(u.text, table)
        try:
            per_speed = {s: store.get(u, s) for s in speeds}
        except Exception as exc:  # unreadable file: skip it, say so
            tqdm.write(f"skip {u.uid}: {exc}")
            continue
        frames = per_speed[max(speeds)].shape[0]
        repeats = sum(1 for a, b in zip(ids, ids[1:], strict=False) if a == b)
        if (
            not ids
            or frames > args.max_utterance_s * 100
            or frames // SUBSAMPLING * args.ctc_upsample < len(ids) + repeats
        ):
            continue
        for s in speeds:
            data[s].append(per_speed[s])
        targets.append(ids)
        keep.append(u)
    hours = sum(f.shape[0] for f in data[1.0 if 1.0 in speeds else speeds[0]]) / 100 / 3600
    print(f"{len(keep)} utterances kept of {len(utts)}, {hours:.2f} h of audio (speed 1.0)", flush=True)
    if heldout:
        for u in tqdm(heldout, desc="heldout features", unit="utt"):
            store.get(u, 1.0)

    if args.resume:
        model, ckpt = load_checkpoint(args.resume)
    else:
        ckpt = {}
        cfg = WctcConfig(
            d_model=args.d_model,
            num_layers=args.layers,
            num_heads=args.heads,
            ff_dim=args.ff_dim,
            conv_kernel=args.conv_kernel,
            ctc_upsample=args.ctc_upsample,
            vocab_size=len(tokens),
            dropout=0.1 if args.dropout is None else args.dropout,
        )
        model = WctcModel(cfg)
        all_feats = np.concatenate(data[speeds[0]][:2000])
        model.feat_mean.copy_(torch.from_numpy(all_feats.mean(axis=0)))
        model.feat_inv_std.copy_(torch.from_numpy(1.0 / (all_feats.std(axis=0) + 1e-5)))
    if args.resume and args.dropout is not None:
        model.cfg.dropout = args.dropout
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = args.dropout
    model.to(device).train()
    print(f"parameters: {count_parameters(model)}  config: {json.dumps(model.cfg.to_dict())}", flush=True)

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-3, betas=(0.9, 0.98))
    step = int(ckpt.get("step", 0))
    elapsed_before = float(ckpt.get("elapsed_s", 0.0))
    epoch0 = int(ckpt.get("epoch", 0))
    if "optimizer" in ckpt:
        opt.load_state_dict(ckpt["optimizer"])
    ctc = torch.nn.CTCLoss(blank=0, zero_infinity=True)
    budget_s = args.max_minutes * 60
    t_start = time.time()
    last_ckpt = time.time()
    log = open(out / "log.jsonl", "a", encoding="utf-8")  # noqa: SIM115 (open for the whole run)

    def elapsed() -> float:
        return elapsed_before + time.time() - t_start

    def checkpoint(name: str, epoch: int) -> None:
        extra = {
            "optimizer": opt.state_dict(),
            "step": step,
            "elapsed_s": elapsed(),
            "epoch": epoch,
            "tokens": tokens,
            "hours": hours,
        }
        tmp = out / f".{name}.tmp"
        save_checkpoint(str(tmp), model, extra)
        os.replace(tmp, out / name)

    noises = noise_fbanks(rng_np)
    lengths = [f.shape[0] for f in data[1.0 if 1.0 in speeds else speeds[0]]]
    done = False
    for epoch in range(epoch0, args.epochs):
        # SortaGrad: the first epoch goes from short to long utterances, which gets CTC off the
        # all-blank plateau sooner; later epochs are shuffled.
        batches = make_batches(
            lengths, args.max_batch_frames, rng, shuffle=not (args.sortagrad and epoch == 0)
        )
        bar = tqdm(batches, desc=f"epoch {epoch}", unit="batch")
        loss_avg = None
        for batch in bar:
            speed = rng.choice(speeds)
            feats = [
                augment(data[speed][i], rng_np, noises, args.noise_prob, args.specaugment) for i in batch
            ]
            x, frame_lengths = collate(feats)
            ys = [torch.tensor(targets[i]) for i in batch]
            w, o = rng.choice(windows)
            sched_start = elapsed_before if args.restart_schedule else 0.0
            frac = min(1.0, (elapsed() - sched_start) / max(1.0, budget_s - sched_start))
            lr = (
                args.lr
                * min(1.0, (step + 1) / args.warmup_steps)
                * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * frac)))
            )
            for g in opt.param_groups:
                g["lr"] = lr
            logits = model.forward_full(x.to(device), w, o, lengths=frame_lengths.to(device))
            log_probs = logits.log_softmax(-1).transpose(0, 1)
            loss = ctc(
                log_probs,
                torch.cat(ys).to(device),
                frame_lengths.to(device) * model.cfg.ctc_upsample,
                torch.tensor([len(y) for y in ys], device=device),
            )
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            step += 1
            loss_avg = loss.item() if loss_avg is None else 0.95 * loss_avg + 0.05 * loss.item()
            bar.set_postfix(
                loss=f"{loss_avg:.3f}", lr=f"{lr:.2e}", win=f"{w}/{o}", min=f"{elapsed() / 60:.1f}"
            )
            if step % 50 == 0:
                log.write(
                    json.dumps({"step": step, "loss": loss_avg, "lr": lr, "elapsed_s": elapsed()}) + "\n"
                )
                log.flush()
            if time.time() - last_ckpt > args.checkpoint_minutes * 60:
                checkpoint("last.pt", epoch)
                last_ckpt = time.time()
            if elapsed() >= budget_s:
                done = True
                break
        bar.close()
        if heldout:
            wer, cer = evaluate(model, heldout, store, tokens, (100, 25), device)
            print(f"epoch {epoch} step {step}: heldout WER {wer:.3f} CER {cer:.3f} (W=100,O=25)", flush=True)
            log.write(
                json.dumps({"epoch": epoch, "step": step, "heldout_wer": wer, "heldout_cer": cer}) + "\n"
            )
            log.flush()
        checkpoint("last.pt", epoch + 1)
        if done:
            break
    checkpoint("final.pt", args.epochs if not done else epoch + 1)
    print(f"done: {step} steps, {elapsed() / 60:.1f} min, checkpoint {out / 'final.pt'}", flush=True)


if __name__ == "__main__":
    main()
