#!/usr/bin/env python3
"""Synthetic English speech for training the windowed CTC encoder, from offline Debian TTS voices.

Engines: espeak-ng (8 English accents x its voice variants), flite (kal, kal16, awb, slt, rms) and
festival (kal_diphone, ked_diphone, cmu_us_slt_arctic_hts) where installed. Each utterance gets a
random voice, speaking rate, pitch and word gap, then optional speed perturbation (resampling,
which moves pitch and formants together), telephone band limiting, reverberation (random
exponentially decaying impulse response), additive noise (white, pink, brown or babble of other
synthetic utterances) at a random SNR, random leading/trailing silence and a random gain.
Output is 16 kHz mono 16-bit WAV plus TSV manifests with the columns of dev.tsv
(id, path relative to the manifest, duration_seconds, transcript; with --features a fifth column
`feats` names the (T, 80) float32 fbank .npy beside each wav) and a side table of what was done to
each utterance (<split>_meta.tsv).

Held-out voices are never used for training: the West Midlands accent (en-gb-x-gbcwmd), a set of
espeak-ng variants, flite's rms and festival's ked voice belong to the held-out split only, and the
held-out texts are a disjoint hash-split of the corpus (scripts/text_corpus.py).

Everything is deterministic given --seed (independent of --jobs). Re-running with a larger --hours
and the same --seed/--out keeps the files already made and adds more, so a data set can grow.

    nice -n 15 python scripts/synth_speech.py --out /work/data/synth --hours 10 --jobs 2 --features
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from streamcli.features import compute_features
from streamcli_tools.devtools import text_corpus

SAMPLE_RATE = 16000
FORMAT_VERSION = 1
MAX_UTTERANCE_WORDS = 45

ESPEAK_BASES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-gb-x-rp",
                "en-029", "en-us-nyc")
# Variants that sound like a person (robot, whisper and croak effects are left out). "" = the base voice.
ESPEAK_VARIANTS = (
    "", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3", "klatt4", "klatt5", "klatt6",
    "adam", "Alex", "Alicia", "Andrea", "Andy", "Annie", "antonio", "aunty", "belinda", "benjamin",
    "boris", "caleb", "david", "Denis", "Diogo", "ed", "edward", "edward2", "Gene", "Gene2", "gustave",
    "Henrique", "Hugo", "iven", "iven2", "iven3", "Jacky", "john", "kaukovalta", "Lee", "linda",
    "marcelo", "Marco", "Mario", "max", "Michael", "michel", "miguel", "Mike", "Mr", "Nguyen", "norbert",
    "pablo", "paul", "pedro", "quincy", "rob", "robert", "sandro", "shelby", "steph", "steph2", "steph3",
    "travis", "victor", "zac", "anika", "grandma", "grandpa", "announcer",
)
HELDOUT_ESPEAK_BASES = frozenset({"en-gb-x-gbcwmd"})
HELDOUT_ESPEAK_VARIANTS = frozenset({"m5", "f3", "klatt4", "edward", "edward2", "grandma", "Mario", "steph2",
                                     "Annie", "quincy"})
FLITE_VOICES = ("kal", "kal16", "awb", "slt", "rms")
HELDOUT_FLITE_VOICES = frozenset({"rms"})
FESTIVAL_VOICES = {  # voice name -> folder that shows it is installed
    "kal_diphone": "/usr/share/festival/voices/english/kal_diphone",
    "ked_diphone": "/usr/share/festival/voices/english/ked_diphone",
    "cmu_us_slt_arctic_hts": "/usr/share/festival/voices/us/cmu_us_slt_arctic_hts",
}
HELDOUT_FESTIVAL_VOICES = frozenset({"ked_diphone"})
# Share of utterances per engine (festival is ~10x slower per call, so it gets fewer).
ENGINE_WEIGHTS = {"espeak": 0.62, "flite": 0.25, "festival": 0.13}
SPLITS = ("heldout", "train")


@dataclass(frozen=True)
class Voice:
    engine: str  # "espeak" | "flite" | "festival"
    name: str  # espeak "en-us+m3", flite "slt", festival "kal_diphone"

    @property
    def key(self) -> str:
        return f"{self.engine}:{self.name}"


def espeak_variant_dir() -> Path | None:
    for root in ("/usr/lib/x86_64-linux-gnu/espeak-ng-data", "/usr/lib/aarch64-linux-gnu/espeak-ng-data",
                 "/usr/share/espeak-ng-data", "/usr/local/share/espeak-ng-data"):
        path = Path(root) / "voices" / "!v"
        if path.is_dir():
            return path
    return None


def available_engines() -> dict[str, bool]:
    return {
        "espeak": shutil.which("espeak-ng") is not None,
        "flite": shutil.which("flite") is not None,
        "festival": shutil.which("text2wave") is not None,
    }


def voice_catalog(split: str, engines: Sequence[str]) -> list[Voice]:
    """All voices of one split; train and held-out catalogs never share a voice, base accent or variant."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    heldout = split == "heldout"
    voices: list[Voice] = []
    if "espeak" in engines:
        variant_dir = espeak_variant_dir()
        for base in ESPEAK_BASES:
            for variant in ESPEAK_VARIANTS:
                if variant and variant_dir is not None and not (variant_dir / variant).exists():
                    continue
                is_heldout = base in HELDOUT_ESPEAK_BASES or variant in HELDOUT_ESPEAK_VARIANTS
                if is_heldout == heldout:
                    voices.append(Voice("espeak", base + (f"+{variant}" if variant else "")))
    if "flite" in engines:
        voices += [Voice("flite", v) for v in FLITE_VOICES if (v in HELDOUT_FLITE_VOICES) == heldout]
    if "festival" in engines:
        voices += [
            Voice("festival", v) for v, folder in FESTIVAL_VOICES.items()
            if (v in HELDOUT_FESTIVAL_VOICES) == heldout and Path(folder).is_dir()
        ]
    return voices


@dataclass
class UtterancePlan:
    """Everything random about one utterance, drawn in order in the main process (deterministic)."""

    split: str
    index: int
    voice: Voice
    text: str
    rate: float  # espeak words/minute, or a duration multiplier for flite/festival (>1 = slower)
    pitch: int  # espeak 0-99; flite/festival: f0 mean in Hz (0 = voice default)
    word_gap_10ms: int
    aug_seed: int

    @property
    def utt_id(self) -> str:
        return f"synth-{self.split}-{self.index:07d}"

    @property
    def rel_path(self) -> str:
        return f"{self.split}/{self.index // 1000:04d}/{self.utt_id}.wav"


class SentenceStream:
    """Endless stream of sentences: each pass over the list in a fresh seeded order."""

    def __init__(self, sentences: Sequence[str], rng: np.random.Generator) -> None:
        if not sentences:
            raise ValueError("no sentences for this split")
        self._sentences = list(sentences)
        self._rng = rng
        self._order: list[int] = []

    def next(self) -> str:
        if not self._order:
            self._order = list(self._rng.permutation(len(self._sentences)))
        return self._sentences[self._order.pop()]


def plan_utterances(split: str, sentences: Sequence[str], voices: Sequence[Voice], seed: int,
                    ) -> Iterator[UtterancePlan]:
    if not voices:
        raise ValueError(f"no TTS voices for split {split!r}: install espeak-ng (scripts/install.sh)")
    split_id = SPLITS.index(split)
    rng = np.random.default_rng([seed, split_id, 1])
    stream = SentenceStream(sentences, np.random.default_rng([seed, split_id, 2]))
    engines = sorted({v.engine for v in voices})
    weights = np.array([ENGINE_WEIGHTS[e] for e in engines])
    weights /= weights.sum()
    by_engine = {e: [v for v in voices if v.engine == e] for e in engines}
    index = 0
    while True:
        engine = engines[int(rng.choice(len(engines), p=weights))]
        voice = by_engine[engine][int(rng.integers(len(by_engine[engine])))]
        # Mostly single sentences; some 2-3 sentence runs so utterances of 10-20 s exist too.
        n_sentences = int(rng.choice([1, 2, 3], p=[0.55, 0.3, 0.15]))
        text = stream.next()
        for _ in range(n_sentences - 1):
            nxt = stream.next()
            if len(text.split()) + len(nxt.split()) > MAX_UTTERANCE_WORDS:
                break
            text += " " + nxt
        if engine == "espeak":
            rate = float(rng.uniform(115, 215))
            pitch = int(rng.integers(20, 81))
            word_gap = int(rng.choice([0, 0, 0, 1, 2, 4]))
        else:
            rate = float(rng.uniform(0.8, 1.3))
            pitch = int(rng.integers(0, 2)) * int(rng.integers(90, 200))
            word_gap = 0
        yield UtterancePlan(split, index, voice, text, rate, pitch, word_gap, int(rng.integers(2**31)))
        index += 1


# ---------------------------------------------------------------------------------------------------
# Synthesis


class SynthesisError(RuntimeError):
    pass


def _run(cmd: list[str], text: str | None, timeout_s: float = 120.0) -> None:
    proc = subprocess.run(cmd, input=text, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        raise SynthesisError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.strip()[:300]}")


def synthesize(plan: UtterancePlan, tmp_dir: Path) -> np.ndarray:
    """Clean TTS audio at 16 kHz, float32 mono in [-1, 1]."""
    wav = tmp_dir / f"{plan.utt_id}.wav"
    voice = plan.voice
    if voice.engine == "espeak":
        _run(["espeak-ng", "-v", voice.name, "-s", str(round(plan.rate)), "-p", str(plan.pitch),
              "-g", str(plan.word_gap_10ms), "-a", "120", "-w", str(wav), "--stdin"], plan.text)
    elif voice.engine == "flite":
        cmd = ["flite", "-voice", voice.name, "--setf", f"duration_stretch={plan.rate:.3f}"]
        if plan.pitch:
            cmd += ["--setf", f"int_f0_target_mean={plan.pitch}"]
        text_file = tmp_dir / f"{plan.utt_id}.txt"
        text_file.write_text(plan.text + "\n", encoding="utf-8")
        _run(cmd + ["-f", str(text_file), "-o", str(wav)], None)
        text_file.unlink()
    elif voice.engine == "festival":
        _run(["text2wave", "-eval", f"(voice_{voice.name})",
              "-eval", f"(Parameter.set 'Duration_Stretch {plan.rate:.3f})", "-o", str(wav)], plan.text)
    else:
        raise ValueError(f"unknown engine {voice.engine!r}")
    samples, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    wav.unlink()
    samples = samples.mean(axis=1)
    if rate != SAMPLE_RATE:
        samples = soxr.resample(samples, rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    if samples.size == 0 or not np.any(samples):
        raise SynthesisError(f"{voice.key} produced no audio for {plan.text!r}")
    return samples


def trim_silence(samples: np.ndarray, threshold_db: float = -50.0) -> np.ndarray:
    """Cut the TTS engine's own leading/trailing silence, so the added margins are what we chose."""
    peak = float(np.max(np.abs(samples)))
    frame = 160
    n_frames = len(samples) // frame
    if n_frames == 0 or peak == 0.0:
        return samples
    energy = np.sqrt(np.mean(samples[: n_frames * frame].reshape(n_frames, frame) ** 2, axis=1))
    loud = np.nonzero(energy > peak * 10 ** (threshold_db / 20))[0]
    if loud.size == 0:
        return samples
    start = max(0, (loud[0] - 2) * frame)
    end = min(len(samples), (loud[-1] + 3) * frame)
    return samples[start:end]


# ---------------------------------------------------------------------------------------------------
# Augmentation


def colored_noise(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Noise with power spectrum ~ 1/f^exponent (0 white, 1 pink, 2 brown), unit RMS."""
    spectrum = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    freqs = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    freqs[0] = freqs[1] if n > 1 else 1.0
    spectrum *= freqs ** (-exponent / 2.0)
    noise = np.fft.irfft(spectrum, n).astype(np.float32)
    return noise / (np.sqrt(np.mean(noise**2)) + 1e-12)


def babble_noise(n: int, bank: Sequence[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Several other synthetic talkers at once, each looped to length n from a random offset."""
    mix = np.zeros(n, dtype=np.float32)
    for _ in range(int(rng.integers(3, 7))):
        clip = bank[int(rng.integers(len(bank)))]
        offset = int(rng.integers(len(clip)))
        looped = np.resize(np.roll(clip, -offset), n)
        mix += looped / (np.sqrt(np.mean(clip**2)) + 1e-12)
    return mix / (np.sqrt(np.mean(mix**2)) + 1e-12)


def fft_convolve(signal: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    n = len(signal) + len(kernel) - 1
    size = 1 << (n - 1).bit_length()
    out = np.fft.irfft(np.fft.rfft(signal, size) * np.fft.rfft(kernel, size), size)[:n]
    return out.astype(np.float32)


def reverberate(samples: np.ndarray, rt60_s: float, direct_to_reverb_db: float,
                rng: np.random.Generator) -> np.ndarray:
    """Room-like reverb: a direct path plus exponentially decaying noise with the given RT60."""
    length = int(rt60_s * SAMPLE_RATE)
    t = np.arange(length, dtype=np.float32) / SAMPLE_RATE
    tail = rng.standard_normal(length).astype(np.float32) * np.exp(-6.908 * t / rt60_s)  # -60 dB at rt60
    pre_delay = int(rng.integers(40, 400))  # 2.5-25 ms until the first reflections
    tail[:pre_delay] = 0.0
    tail *= 10 ** (-direct_to_reverb_db / 20) / (np.sqrt(np.sum(tail**2)) + 1e-12)
    kernel = tail
    kernel[0] = 1.0
    wet = fft_convolve(samples, kernel)[: len(samples) + length // 2]
    return wet


@dataclass
class AugmentInfo:
    speed: float = 1.0
    telephone: bool = False
    rt60_s: float = 0.0
    noise: str = "none"
    snr_db: float = float("nan")
    gain_db: float = 0.0


def augment(samples: np.ndarray, rng: np.random.Generator, babble_bank: Sequence[np.ndarray],
            ) -> tuple[np.ndarray, AugmentInfo]:
    info = AugmentInfo()
    samples = trim_silence(samples)
    if rng.random() < 0.5:
        # Resampling as speed perturbation: tempo, pitch and formants move together (like Kaldi's sp).
        info.speed = float(rng.uniform(0.88, 1.12))
        samples = soxr.resample(samples, round(SAMPLE_RATE * info.speed), SAMPLE_RATE).astype(np.float32)
    if rng.random() < 0.12:
        info.telephone = True
        samples = soxr.resample(soxr.resample(samples, SAMPLE_RATE, 8000), 8000, SAMPLE_RATE)
        samples = samples.astype(np.float32)
    lead = np.zeros(int(rng.uniform(0.05, 0.6) * SAMPLE_RATE), dtype=np.float32)
    trail = np.zeros(int(rng.uniform(0.1, 0.7) * SAMPLE_RATE), dtype=np.float32)
    samples = np.concatenate([lead, samples, trail])
    if rng.random() < 0.35:
        info.rt60_s = float(rng.uniform(0.15, 0.9))
        samples = reverberate(samples, info.rt60_s, float(rng.uniform(-3.0, 12.0)), rng)
    speech_rms = float(np.sqrt(np.mean(samples**2))) + 1e-9
    if rng.random() < 0.7:
        kind = str(rng.choice(["white", "pink", "brown", "babble"], p=[0.2, 0.3, 0.15, 0.35]))
        if kind == "babble" and babble_bank:
            noise = babble_noise(len(samples), babble_bank, rng)
        else:
            kind = "pink" if kind == "babble" else kind
            noise = colored_noise(len(samples), {"white": 0.0, "pink": 1.0, "brown": 2.0}[kind], rng)
        info.noise = kind
        info.snr_db = float(rng.uniform(3.0, 35.0))
        samples = samples + noise * (speech_rms / 10 ** (info.snr_db / 20))
    peak = float(np.max(np.abs(samples))) + 1e-9
    target_peak_db = float(rng.uniform(-28.0, -1.0))
    gain = 10 ** (target_peak_db / 20) / peak
    info.gain_db = 20 * math.log10(gain)
    return np.clip(samples * gain, -1.0, 1.0).astype(np.float32), info


# ---------------------------------------------------------------------------------------------------
# Features


def fbank_features(samples: np.ndarray) -> np.ndarray:
    """80-dim log-mel fbank exactly as the runtime computes it (streamcli.features)."""
    return compute_features(samples, "kaldi_fbank", SAMPLE_RATE)


# ---------------------------------------------------------------------------------------------------
# Workers


@dataclass
class WorkResult:
    plan: UtterancePlan
    duration_s: float
    info: AugmentInfo = field(default_factory=AugmentInfo)
    error: str = ""


_WORKER: dict[str, object] = {}


def _init_worker(out_dir: str, babble_banks: dict[str, list[np.ndarray]], write_features: bool) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _WORKER["out_dir"] = Path(out_dir)
    _WORKER["banks"] = babble_banks
    _WORKER["features"] = write_features
    _WORKER["tmp"] = Path(tempfile.mkdtemp(prefix="synth_speech_"))


def _make_utterance(plan: UtterancePlan) -> WorkResult:
    out_dir: Path = _WORKER["out_dir"]  # type: ignore[assignment]
    path = out_dir / plan.rel_path
    feat_path = path.with_suffix(".npy")
    write_features = bool(_WORKER["features"])
    if path.exists() and (not write_features or feat_path.exists()):
        return WorkResult(plan, sf.info(str(path)).frames / SAMPLE_RATE)  # made by an earlier run
    try:
        clean = synthesize(plan, _WORKER["tmp"])  # type: ignore[arg-type]
        rng = np.random.default_rng(plan.aug_seed)
        banks: dict[str, list[np.ndarray]] = _WORKER["banks"]  # type: ignore[assignment]
        samples, info = augment(clean, rng, banks.get(plan.split, []))
    except (SynthesisError, subprocess.TimeoutExpired, OSError, RuntimeError) as exc:
        return WorkResult(plan, 0.0, error=str(exc))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_wav = path.with_name(path.stem + ".tmp.wav")
    sf.write(str(tmp_wav), samples, SAMPLE_RATE, subtype="PCM_16")
    if write_features:
        # From the 16-bit file as any reader sees it, so these equal features computed at training time.
        stored, _ = sf.read(str(tmp_wav), dtype="float32")
        feats = fbank_features(stored)
        tmp = feat_path.with_name(feat_path.stem + ".tmp.npy")
        np.save(tmp, feats)
        os.replace(tmp, feat_path)
    # The wav lands last: its presence marks the utterance (and its features) as complete.
    os.replace(tmp_wav, path)
    return WorkResult(plan, len(samples) / SAMPLE_RATE, info)


def make_babble_bank(split: str, sentences: Sequence[str], voices: Sequence[Voice], seed: int,
                     n_clips: int = 24) -> list[np.ndarray]:
    """Clean clips of the split's own voices and texts, mixed later as babble noise."""
    espeak_voices = [v for v in voices if v.engine == "espeak"] or list(voices)
    rng = np.random.default_rng([seed, SPLITS.index(split), 3])
    bank = []
    with tempfile.TemporaryDirectory(prefix="synth_babble_") as tmp:
        for i in range(n_clips):
            voice = espeak_voices[int(rng.integers(len(espeak_voices)))]
            text = sentences[int(rng.integers(len(sentences)))]
            plan = UtterancePlan(split, 9_000_000 + i, voice, text,
                                 float(rng.uniform(140, 200)) if voice.engine == "espeak" else 1.0,
                                 int(rng.integers(30, 70)) if voice.engine == "espeak" else 0, 0, 0)
            try:
                bank.append(trim_silence(synthesize(plan, Path(tmp))))
            except SynthesisError:
                continue
    return bank


# ---------------------------------------------------------------------------------------------------
# Manifests


MANIFEST_COLUMNS = ("id", "path", "duration_seconds", "transcript")
META_COLUMNS = ("id", "engine", "voice", "rate", "pitch", "word_gap_10ms", "speed", "telephone", "rt60_s",
                "noise", "snr_db", "gain_db")


def write_tsv_atomic(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(tmp, path)


def read_manifest(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


@dataclass
class SynthConfig:
    out_dir: Path
    hours: float
    heldout_fraction: float = 0.05
    heldout_hours: float | None = None
    seed: int = 0
    jobs: int = 2
    engines: tuple[str, ...] = ("espeak", "flite", "festival")
    write_features: bool = False
    batch_size: int = 64

    def validate(self) -> None:
        if self.hours <= 0:
            raise ValueError(f"--hours must be > 0, got {self.hours}")
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ValueError(f"--heldout-fraction must be in [0, 1), got {self.heldout_fraction}")
        if self.heldout_hours is not None and self.heldout_hours < 0:
            raise ValueError(f"--heldout-hours must be >= 0, got {self.heldout_hours}")
        if self.jobs < 1:
            raise ValueError(f"--jobs must be >= 1, got {self.jobs}")
        unknown = set(self.engines) - set(ENGINE_WEIGHTS)
        if unknown:
            raise ValueError(f"unknown engine(s) {sorted(unknown)}; choose from {sorted(ENGINE_WEIGHTS)}")

    def split_hours(self) -> dict[str, float]:
        heldout = self.heldout_hours if self.heldout_hours is not None else self.hours * self.heldout_fraction
        train = self.hours - heldout if self.heldout_hours is None else self.hours
        return {"heldout": heldout, "train": train}


def text_fingerprint(train_sentences: Sequence[str], heldout_sentences: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for sentence in [*train_sentences, "\x00", *heldout_sentences]:
        digest.update(sentence.encode("utf-8") + b"\n")
    return digest.hexdigest()[:16]


def _check_run_identity(cfg: SynthConfig, engines: Sequence[str], texts_sha: str) -> None:
    """A folder holds one deterministic stream; refuse to mix streams of other seeds, engines or texts."""
    identity = {"format_version": FORMAT_VERSION, "seed": cfg.seed, "engines": list(engines),
                "features": cfg.write_features, "texts_sha256": texts_sha}
    path = cfg.out_dir / "synth_config.json"
    if path.exists():
        old = json.loads(path.read_text())
        if {k: old.get(k) for k in identity} != identity:
            raise ValueError(f"{cfg.out_dir} was made with {old}, not {identity}: use another --out")
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(identity, indent=1) + "\n")


def _log(message: str) -> None:
    print(message, flush=True)


def generate(cfg: SynthConfig, train_sentences: Sequence[str], heldout_sentences: Sequence[str],
             log=_log) -> dict[str, dict[str, float]]:
    """Make both splits; returns per-split {'utterances', 'hours', 'seconds_wall'}."""
    cfg.validate()
    have = available_engines()
    engines = [e for e in cfg.engines if have[e]]
    missing = [e for e in cfg.engines if not have[e]]
    if missing:
        log(f"warning: TTS engine(s) not installed, skipped: {', '.join(missing)}")
    if not engines:
        raise ValueError("no TTS engine installed: run scripts/install.sh (espeak-ng, flite, festival)")
    if set(train_sentences) & set(heldout_sentences):
        raise ValueError("train and held-out sentences overlap")
    catalogs = {s: voice_catalog(s, engines) for s in SPLITS}
    shared = {v.key for v in catalogs["train"]} & {v.key for v in catalogs["heldout"]}
    assert not shared, f"voices in both splits: {shared}"
    texts = {"train": list(train_sentences), "heldout": list(heldout_sentences)}
    _check_run_identity(cfg, engines, text_fingerprint(texts["train"], texts["heldout"]))
    hours = cfg.split_hours()
    active = [s for s in SPLITS if hours[s] > 0]
    banks = {s: make_babble_bank(s, texts[s], catalogs[s], cfg.seed) for s in active}
    summary: dict[str, dict[str, float]] = {}
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(cfg.jobs, initializer=_init_worker,
                  initargs=(str(cfg.out_dir), banks, cfg.write_features)) as pool:
        for split in active:
            start = time.monotonic()
            plans = plan_utterances(split, texts[split], catalogs[split], cfg.seed)
            target_s = hours[split] * 3600.0
            rows: list[list[object]] = []
            meta: list[list[object]] = []
            total_s = 0.0
            failures = 0
            while total_s < target_s:
                batch = [next(plans) for _ in range(cfg.batch_size)]
                for res in pool.imap(_make_utterance, batch):
                    if total_s >= target_s:
                        break
                    if res.error:
                        failures += 1
                        log(f"warning: {res.plan.utt_id} ({res.plan.voice.key}) skipped: {res.error}")
                        if failures > 50 and failures > len(rows):
                            raise RuntimeError("most utterances fail to synthesize; see warnings above")
                        continue
                    p, info = res.plan, res.info
                    row: list[object] = [p.utt_id, p.rel_path, f"{res.duration_s:.3f}", p.text]
                    if cfg.write_features:
                        row.append(str(Path(p.rel_path).with_suffix(".npy")))
                    rows.append(row)
                    meta.append([p.utt_id, p.voice.engine, p.voice.name, f"{p.rate:.3f}", p.pitch,
                                 p.word_gap_10ms, f"{info.speed:.3f}", int(info.telephone),
                                 f"{info.rt60_s:.3f}", info.noise, f"{info.snr_db:.1f}",
                                 f"{info.gain_db:.1f}"])
                    total_s += res.duration_s
                # Manifests are rewritten after every batch so a trainer can pick up partial data.
                columns = MANIFEST_COLUMNS + (("feats",) if cfg.write_features else ())
                write_tsv_atomic(cfg.out_dir / f"{split}.tsv", columns, rows)
                write_tsv_atomic(cfg.out_dir / f"{split}_meta.tsv", META_COLUMNS, meta)
                wall = time.monotonic() - start
                log(f"{split}: {len(rows)} utterances, {total_s / 3600:.3f} h of {hours[split]:.3f} h, "
                    f"{wall:.0f} s wall")
            summary[split] = {"utterances": len(rows), "hours": total_s / 3600,
                              "seconds_wall": time.monotonic() - start, "failures": failures}
    voices_used = {s: sorted({m[1] + ":" + m[2] for m in read_meta(cfg.out_dir / f"{s}_meta.tsv")})
                   for s in active}
    (cfg.out_dir / "voices.json").write_text(json.dumps(voices_used, indent=1) + "\n")
    return summary


def read_meta(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f, delimiter="\t"))[1:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="output folder for wavs and manifests")
    parser.add_argument("--hours", type=float, required=True, help="total hours (train + held-out)")
    parser.add_argument("--heldout-fraction", type=float, default=0.05, help="share of --hours held out")
    parser.add_argument("--heldout-hours", type=float, default=None,
                        help="held-out hours instead of the fraction (then --hours is train only)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="worker processes")
    parser.add_argument("--engines", default="espeak,flite,festival", help="comma-separated TTS engines")
    parser.add_argument("--features", action="store_true",
                        help="also write 80-dim fbank .npy next to each wav (same name)")
    parser.add_argument("--text-dir", type=Path, default=None,
                        help="folder with train.txt/heldout.txt from text_corpus.py (default: build now)")
    parser.add_argument("--text-file", type=Path, action="append", default=[], help="extra text source")
    parser.add_argument("--dev", type=Path, action="append", default=None,
                        help="evaluation manifest(s) whose text is kept out of both splits")
    args = parser.parse_args(argv)
    cfg = SynthConfig(out_dir=args.out, hours=args.hours, heldout_fraction=args.heldout_fraction,
                      heldout_hours=args.heldout_hours, seed=args.seed, jobs=args.jobs,
                      engines=tuple(e.strip() for e in args.engines.split(",") if e.strip()),
                      write_features=args.features)
    try:
        cfg.validate()
        if args.text_dir is not None:
            train = (args.text_dir / "train.txt").read_text(encoding="utf-8").split("\n")
            heldout = (args.text_dir / "heldout.txt").read_text(encoding="utf-8").split("\n")
            train, heldout = [s for s in train if s], [s for s in heldout if s]
        else:
            dev = args.dev
            if dev is None:
                dev = [text_corpus.DEFAULT_DEV_TSV] if text_corpus.DEFAULT_DEV_TSV.is_file() else []
            train, heldout = text_corpus.build_corpus(text_files=args.text_file, dev_manifests=dev)
        summary = generate(cfg, train, heldout)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for split, s in summary.items():
        print(f"{split}: {s['utterances']} utterances, {s['hours']:.3f} h in {s['seconds_wall']:.0f} s "
              f"({s['hours'] * 3600 / max(s['seconds_wall'], 1e-9):.1f}x real time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
