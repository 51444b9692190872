#!/usr/bin/env python3
"""Distil Whisper tiny.en's encoder into the windowed streaming student (CTC + feature loss), CPU or CUDA.

Loss = CTC (characters) + alpha * MSE between the student's final hidden frames and the frozen
full-context teacher's (teacher frame j - 1 for student frame j: the causal convolutions delay the
student by one 20 ms frame). The teacher sees the clean (speed-perturbed) features; the student sees
the same audio with noise / reverberation / SpecAugment, so the feature loss also teaches denoising.
A random (W, O) per batch makes one model serve several windows. The encoder learns at a lower rate
than the CTC head and the new relative-position biases; the convolutions stay frozen at first.

Features (Whisper log10 mel from streamcli.features, i.e. exactly the runtime's) are computed once
per (utterance, speed) with two worker processes and cached as float16 .npy under --out.

Example (the shipped model):
  nice -n 10 python scripts/train_student.py --train ../shared/data/train/all.tsv \
      --out runs/student --max-minutes 75 --threads 2
  python scripts/train_student.py ... --resume runs/student/last.pt   # continues the same run
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from streamcli_tools.train.data import (
    Utterance,
    augment_log10_mel,
    colored_noises,
    cosine_lr,
    encode_text,
    load_audio,
    make_batches,
    normalize_text,
    read_tsv,
    refuse_eval_data,
    speed_perturb,
)
from streamcli_tools.train.whisper_student import (
    WORD_START,
    StudentConfig,
    WhisperStudent,
    WhisperTeacher,
    char_tokens,
    count_parameters,
    load_student,
    save_student,
)

from streamcli.features import compute_features
from streamcli.metrics import corpus_error_rates
from streamcli.whisper.weights import load_tiny_en

FEATURE_TYPE = "whisper_log10_mel"
DEFAULT_WINDOWS = "50:0,60:20,100:0,100:26,100:50,150:50,200:50,200:100,300:100,400:100"


def feature_file(cache: Path, uid: str, speed: float) -> Path:
    return cache / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', uid)}.s{round(speed * 100)}.npy"


def compute_one(job: tuple[str, str, float, str]) -> str | None:
    path, out, speed, _uid = job
    if os.path.exists(out):
        return None
    try:
        audio = speed_perturb(load_audio(path), speed)
        feats = compute_features(audio, FEATURE_TYPE).astype(np.float16)
    except Exception as exc:  # an unreadable file is skipped and reported
        return f"{path}: {exc}"
    tmp = out + ".tmp.npy"
    np.save(tmp, feats)
    os.replace(tmp, out)
    return None


def collate(feats: list[np.ndarray], pad_value: float) -> tuple[torch.Tensor, torch.Tensor]:
    t_max = max(f.shape[0] for f in feats)
    t_max += t_max % 2
    x = np.full((len(feats), t_max, 80), pad_value, np.float32)
    for i, f in enumerate(feats):
        x[i, : f.shape[0]] = f
    return torch.from_numpy(x), torch.tensor([f.shape[0] for f in feats])


def greedy_text(logits: torch.Tensor, length: int, tokens: list[str]) -> str:
    best = logits[:length].argmax(-1).tolist()
    out, prev = [], 0
    for t in best:
        if t != prev and t != 0:
            out.append(tokens[t])
        prev = t
    return " ".join("".join(out).replace(WORD_START, " ").split())


def evaluate(
    model: WhisperStudent,
    feats: list[np.ndarray],
    texts: list[str],
    tokens: list[str],
    window: tuple[int, int],
) -> tuple[float, float]:
    model.eval()
    pairs = []
    with torch.no_grad():
        for i in range(0, len(feats), 16):
            x, lengths = collate([f.astype(np.float32) for f in feats[i : i + 16]], model.cfg.log_mel_floor)
            logits = model.head(model.encode_full(x, window[0], window[1], lengths))
            for j in range(x.shape[0]):
                pairs.append((texts[i + j], greedy_text(logits[j], int((lengths[j] + 1) // 2), tokens)))
    model.train()
    rates = corpus_error_rates(pairs)
    return rates.wer, rates.cer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", action="append", required=True, help="training TSV manifest (repeatable)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--resume")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-minutes", type=float, default=75.0)
    ap.add_argument("--max-batch-frames", type=int, default=12000)
    ap.add_argument("--lr-encoder", type=float, default=2e-4)
    ap.add_argument("--lr-head", type=float, default=2e-3)
    ap.add_argument("--warmup-steps", type=int, default=150)
    ap.add_argument("--freeze-conv-steps", type=int, default=300)
    ap.add_argument("--distill-weight", type=float, default=1.0)
    ap.add_argument("--windows", default=DEFAULT_WINDOWS)
    ap.add_argument("--speeds", default="0.9,1.0,1.1")
    ap.add_argument("--noise-prob", type=float, default=0.4)
    ap.add_argument("--reverb-prob", type=float, default=0.2)
    ap.add_argument("--specaugment", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--heldout-every", type=int, default=50, help="every Nth utterance is held out")
    ap.add_argument("--max-utterance-s", type=float, default=20.0)
    ap.add_argument("--checkpoint-minutes", type=float, default=5.0)
    ap.add_argument("--eval-minutes", type=float, default=10.0)
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    rng_np = np.random.default_rng(args.seed)
    device = torch.device(args.device)
    out = Path(args.out)
    cache = out / "features"
    cache.mkdir(parents=True, exist_ok=True)
    refuse_eval_data(args.train)

    utts: list[Utterance] = []
    for t in args.train:
        utts += read_tsv(t)
    speeds = [float(s) for s in args.speeds.split(",")]
    jobs = [(u.path, str(feature_file(cache, u.uid, s)), s, u.uid) for s in speeds for u in utts]
    t0 = time.time()
    with ProcessPoolExecutor(max_workers=max(1, args.threads)) as pool:
        for err in pool.map(compute_one, jobs, chunksize=16):
            if err:
                print("skip", err, flush=True)
    print(f"features ready in {time.time() - t0:.0f} s", flush=True)

    tokens = char_tokens()
    table = {t: i for i, t in enumerate(tokens)}
    (out / "tokens.txt").write_text("".join(f"{t} {i}\n" for i, t in enumerate(tokens)), encoding="utf-8")
    data: dict[float, list[np.ndarray]] = {s: [] for s in speeds}
    targets: list[list[int]] = []
    held_feats: list[np.ndarray] = []
    held_texts: list[str] = []
    for k, u in enumerate(utts):
        files = [feature_file(cache, u.uid, s) for s in speeds]
        if not all(f.exists() for f in files):
            continue
        ids = encode_text(u.text, table)
        if k % args.heldout_every == 0:
            held_feats.append(np.load(feature_file(cache, u.uid, 1.0)))
            held_texts.append(normalize_text(u.text))
            continue
        per_speed = [np.load(f) for f in files]
        frames = max(f.shape[0] for f in per_speed)
        repeats = sum(1 for a, b in zip(ids, ids[1:], strict=False) if a == b)
        if (
            not ids
            or frames > args.max_utterance_s * 100
            or min(f.shape[0] for f in per_speed) // 2 < len(ids) + repeats
        ):
            continue
        for s, f in zip(speeds, per_speed, strict=True):
            data[s].append(f)
        targets.append(ids)
    hours = sum(f.shape[0] for f in data[1.0]) / 100 / 3600
    print(
        f"{len(targets)} training utterances ({hours:.2f} h at speed 1.0), {len(held_feats)} held out",
        flush=True,
    )

    weights, _ = load_tiny_en()
    teacher = WhisperTeacher()
    teacher.load_ct2(weights)
    teacher.to(device).eval().requires_grad_(False)
    if args.resume:
        model, ckpt = load_student(args.resume)
    else:
        ckpt = {}
        model = WhisperStudent(StudentConfig(vocab_size=len(tokens)))
        model.load_ct2(weights)
    model.to(device).train()
    print(f"student parameters: {count_parameters(model)}", flush=True)

    head_params = [p for n, p in model.named_parameters() if n.startswith("head.") or "rel_bias" in n]
    conv_params = [p for n, p in model.named_parameters() if n.startswith("conv")]
    enc_params = [
        p
        for n, p in model.named_parameters()
        if not (n.startswith("head.") or "rel_bias" in n or n.startswith("conv"))
    ]
    opt = torch.optim.AdamW(
        [
            {"params": enc_params, "lr_base": args.lr_encoder},
            {"params": conv_params, "lr_base": args.lr_encoder},
            {"params": head_params, "lr_base": args.lr_head},
        ],
        lr=args.lr_encoder,
        weight_decay=1e-2,
        betas=(0.9, 0.98),
    )
    if "optimizer" in ckpt:
        opt.load_state_dict(ckpt["optimizer"])
    step = int(ckpt.get("step", 0))
    elapsed_before = float(ckpt.get("elapsed_s", 0.0))
    epoch0 = int(ckpt.get("epoch", 0))
    ctc = torch.nn.CTCLoss(blank=0, zero_infinity=True)
    windows = [tuple(int(v) for v in p.split(":")) for p in args.windows.split(",")]
    noises = [compute_features(n * 0.05, FEATURE_TYPE) for n in colored_noises(rng_np)]
    budget_s = args.max_minutes * 60
    t_start = time.time()
    last_ckpt = last_eval = time.time()
    log = open(out / "log.jsonl", "a", encoding="utf-8")  # noqa: SIM115 (open for the whole run)

    def elapsed() -> float:
        return elapsed_before + time.time() - t_start

    def checkpoint(name: str, epoch: int) -> None:
        tmp = out / f".{name}.tmp"
        save_student(
            str(tmp),
            model,
            {
                "optimizer": opt.state_dict(),
                "step": step,
                "elapsed_s": elapsed(),
                "epoch": epoch,
                "hours": hours,
                "args": vars(args),
            },
        )
        os.replace(tmp, out / name)

    def log_line(**fields: object) -> None:
        log.write(json.dumps(fields) + "\n")
        log.flush()
        print(json.dumps(fields), flush=True)

    lengths = [f.shape[0] for f in data[1.0]]
    floor = model.cfg.log_mel_floor
    done = False
    epoch = epoch0
    loss_avg = ctc_avg = dist_avg = None
    while not done:
        for batch in make_batches(lengths, args.max_batch_frames, rng):
            speed = rng.choice(speeds)
            clean = [data[speed][i].astype(np.float32) for i in batch]
            noisy = [
                augment_log10_mel(
                    c, rng_np, noises, args.noise_prob, args.reverb_prob, args.specaugment, floor
                )
                for c in clean
            ]
            x_clean, flen = collate(clean, -10.0)
            x_noisy, _ = collate(noisy, floor)
            ys = [torch.tensor(targets[i]) for i in batch]
            w, o = rng.choice(windows)
            frac = min(1.0, elapsed() / budget_s)
            for g in opt.param_groups:
                g["lr"] = cosine_lr(g["lr_base"], step, args.warmup_steps, frac)
            frozen = step < args.freeze_conv_steps
            for p in conv_params:
                p.requires_grad_(not frozen)
            enc_len = (flen + 1) // 2
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
                with torch.no_grad():
                    target = teacher(x_clean.to(device), flen.to(device)).float()
                hidden = model.encode_full(x_noisy.to(device), w, o, flen.to(device))
                logits = model.head(hidden)
            hidden = hidden.float()
            log_probs = logits.float().log_softmax(-1).transpose(0, 1)
            loss_ctc = ctc(
                log_probs,
                torch.cat(ys).to(device),
                enc_len.to(device),
                torch.tensor([len(y) for y in ys], device=device),
            )
            valid = (torch.arange(hidden.shape[1], device=device)[None, :] < enc_len[:, None].to(device))[
                :, 1:
            ]
            diff = (hidden[:, 1:] - target[:, :-1]).pow(2).mean(-1)
            loss_dist = (diff * valid).sum() / valid.sum()
            loss = loss_ctc + args.distill_weight * loss_dist
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            step += 1
            a = 0.95 if loss_avg is not None else 0.0
            loss_avg = a * (loss_avg or 0) + (1 - a) * loss.item()
            ctc_avg = a * (ctc_avg or 0) + (1 - a) * loss_ctc.item()
            dist_avg = a * (dist_avg or 0) + (1 - a) * loss_dist.item()
            if step % 25 == 0:
                log_line(
                    step=step,
                    epoch=epoch,
                    loss=round(loss_avg, 4),
                    ctc=round(ctc_avg, 4),
                    distill=round(dist_avg, 4),
                    lr_head=opt.param_groups[2]["lr"],
                    elapsed_min=round(elapsed() / 60, 2),
                    window=[w, o],
                )
            if time.time() - last_ckpt > args.checkpoint_minutes * 60:
                checkpoint("last.pt", epoch)
                last_ckpt = time.time()
            if held_feats and time.time() - last_eval > args.eval_minutes * 60:
                wer, cer = evaluate(model, held_feats, held_texts, tokens, (100, 26))
                log_line(step=step, heldout_wer=round(wer, 4), heldout_cer=round(cer, 4), window=[100, 26])
                last_eval = time.time()
            if elapsed() >= budget_s:
                done = True
                break
        if not done:
            epoch += 1
            checkpoint("last.pt", epoch)
    if held_feats:
        for win in ((100, 26), (200, 50)):
            wer, cer = evaluate(model, held_feats, held_texts, tokens, win)
            log_line(
                step=step, heldout_wer=round(wer, 4), heldout_cer=round(cer, 4), window=list(win), final=True
            )
    checkpoint("last.pt", epoch)
    checkpoint("final.pt", epoch)
    print(f"done: {step} steps, {elapsed() / 60:.1f} min -> {out / 'final.pt'}", flush=True)


if __name__ == "__main__":
    main()
