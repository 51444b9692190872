"""Training data helpers shared by the training scripts: manifests, text targets, batching, augmentation.

Only numpy here (and soundfile/soxr for reading audio), so the helpers are testable without torch.
"""

from __future__ import annotations

import math
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from streamcli.metrics import normalize_transcript
from streamcli.tokens import WORD_START

SAMPLE_RATE = 16000


@dataclass
class Utterance:
    uid: str
    path: str
    text: str
    feats_path: str | None = None


def normalize_text(text: str) -> str:
    """The evaluation normalisation (streamcli.metrics) without digits: the character table has none."""
    return " ".join(re.sub(r"[0-9]+", " ", normalize_transcript(text)).split())


def encode_text(text: str, table: dict[str, int]) -> list[int]:
    """Character targets: the first letter of a word in its ``▁x`` form, the others plain."""
    ids = []
    for word in normalize_text(text).split():
        ids.append(table[WORD_START + word[0]])
        ids.extend(table[ch] for ch in word[1:])
    return ids


def load_audio(path: str) -> np.ndarray:
    data, sr = sf.read(path, dtype="float32", always_2d=True)
    data = data.mean(axis=1)
    if sr != SAMPLE_RATE:
        data = soxr.resample(data, sr, SAMPLE_RATE).astype(np.float32)
    return data


def speed_perturb(audio: np.ndarray, speed: float) -> np.ndarray:
    """Resampled to rate/speed and played at the original rate: tempo and pitch change (sox speed)."""
    if speed == 1.0:
        return audio
    return soxr.resample(audio, SAMPLE_RATE, int(SAMPLE_RATE / speed)).astype(np.float32)


def read_tsv(path: str) -> list[Utterance]:
    base = Path(path).resolve().parent
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    if "path" not in header or "transcript" not in header:
        raise SystemExit(f"{path}: header must name at least the columns path and transcript")
    col = {name: i for i, name in enumerate(header)}
    out = []
    for line in lines[1:]:
        if not line.strip():
            continue
        f = line.split("\t")
        audio = f[col["path"]]
        audio = audio if os.path.isabs(audio) else str(base / audio)
        feats = f[col["feats"]] if "feats" in col and col["feats"] < len(f) and f[col["feats"]] else None
        if feats and not os.path.isabs(feats):
            feats = str(base / feats)
        uid = f[col["id"]] if "id" in col else Path(audio).stem
        out.append(Utterance(uid, audio, f[col["transcript"]], feats))
    return out


def refuse_eval_data(paths: list[str]) -> None:
    """The shared dev set is for evaluation only; LibriSpeech dev/test never go into training."""
    for p in paths:
        resolved = str(Path(p).resolve())
        if "shared/data/dev" in resolved or re.search(r"(dev|test)-(clean|other)", resolved):
            raise SystemExit(f"refusing to train on evaluation data: {p}")


def make_batches(
    lengths: list[int], max_frames: int, rng: random.Random, shuffle: bool = True
) -> list[list[int]]:
    """Buckets of similar length so padding stays small; shuffled batch order (or short to long)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    cur: list[int] = []
    cur_max = 0
    for i in order:
        new_max = max(cur_max, lengths[i])
        if cur and new_max * (len(cur) + 1) > max_frames:
            batches.append(cur)
            cur, new_max = [], lengths[i]
        cur.append(i)
        cur_max = new_max
    if cur:
        batches.append(cur)
    if shuffle:
        rng.shuffle(batches)
    return batches


def colored_noises(rng: np.random.Generator, seconds: float = 30.0) -> list[np.ndarray]:
    """White, pink and brown noise waveforms at unit power."""
    n = int(seconds * SAMPLE_RATE)
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spec.shape[0]) + 1.0
    out = []
    for exponent in (0.0, 0.5, 1.0):
        colored = np.fft.irfft(spec / f**exponent, n=n).astype(np.float32)
        out.append(colored / (np.sqrt(np.mean(colored**2)) + 1e-9))
    return out


def noise_segment(noises: list[np.ndarray], rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """A random stretch of one of the noise feature arrays, repeated if short, of ``shape``."""
    noise = noises[rng.integers(len(noises))]
    start = rng.integers(0, max(1, noise.shape[0] - shape[0]))
    seg = noise[start : start + shape[0]]
    return np.resize(seg, shape) if seg.shape[0] < shape[0] else seg


def augment_log10_mel(
    x: np.ndarray,
    rng: np.random.Generator,
    noises: list[np.ndarray],
    noise_prob: float,
    reverb_prob: float,
    specaugment: bool,
    floor: float,
) -> np.ndarray:
    """Noise, reverberation and SpecAugment on a (T, 80) log10 mel, all in the mel power domain.

    Noise: power addition of a noise log-mel at an SNR of 0-30 dB. Reverberation: the power envelope of
    each band convolved with an exponential decay (RT60 0.2-0.9 s), i.e. the late reverberant tail of a
    room; no impulse responses needed. SpecAugment: 2 frequency masks (<= 12 bins) and time masks over
    up to ~10 % of the frames, filled with the floor.
    """
    x = x.astype(np.float32, copy=True)
    if reverb_prob and rng.random() < reverb_prob:
        rt60 = rng.uniform(0.2, 0.9)
        k = np.arange(int(rt60 * 100))
        kernel = np.exp(-6.9 * k / (rt60 * 100)).astype(np.float32)
        kernel /= kernel.sum()
        power = 10.0**x
        t = x.shape[0]
        spec = np.fft.rfft(power, n=t + len(kernel), axis=0) * np.fft.rfft(kernel, n=t + len(kernel))[:, None]
        wet = np.maximum(np.fft.irfft(spec, n=t + len(kernel), axis=0)[:t], 1e-10)
        x = np.log10(0.3 * power + 0.7 * wet).astype(np.float32)
    if noises and rng.random() < noise_prob:
        seg = noise_segment(noises, rng, x.shape)
        speech_level = np.percentile(x.mean(axis=1), 90)
        snr_db = rng.uniform(0.0, 30.0)
        shift = speech_level - seg.mean() - snr_db / 10.0
        x = np.log10(10.0**x + 10.0 ** (seg + shift)).astype(np.float32)
    if specaugment:
        spec_augment(x, rng, max_freq_width=12, fill=floor)
    return x


def spec_augment(x: np.ndarray, rng: np.random.Generator, max_freq_width: int, fill: float) -> np.ndarray:
    """SpecAugment in place on (frames, bins) features: 2 frequency masks of at most ``max_freq_width``
    bins, then one time mask per 300 frames covering up to ~10 % of them, all filled with ``fill``.
    (torchaudio's masking transforms would do this, but no torchaudio release matches torch 2.13.)"""
    for _ in range(2):
        w = rng.integers(0, max_freq_width + 1)
        f0 = rng.integers(0, x.shape[1] - w + 1)
        x[:, f0 : f0 + w] = fill
    for _ in range(max(1, x.shape[0] // 300)):
        w = rng.integers(0, min(40, max(1, x.shape[0] // 10)) + 1)
        t0 = rng.integers(0, max(1, x.shape[0] - w + 1))
        x[t0 : t0 + w] = fill
    return x


def cosine_lr(base: float, step: int, warmup_steps: int, frac: float) -> float:
    """Linear warm-up, then a cosine decay to 2 % of ``base`` over the training budget."""
    return base * min(1.0, (step + 1) / warmup_steps) * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * frac)))
