"""Decoding searches: transducer greedy and modified beam search, CTC greedy.

Transducer searches work on one chunk of encoder output for a batch of streams and keep their
per-stream state between chunks, so they run chunk by chunk in a streaming recognizer. Conventions
follow sherpa-onnx/icefall so results match them token for token: blank id 0 (from the token table),
``<unk>`` treated as blank, at most one symbol per encoder frame, initial decoder context
``[-1, ..., -1, blank]`` (ids < 0 embed to zeros), token times = encoder frame index.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


class TransducerNets(Protocol):
    """What the searches need from a transducer model (implemented by the zipformer family)."""

    context_size: int
    blank_id: int
    unk_id: int | None

    def run_decoder(self, y: np.ndarray) -> np.ndarray:
        """(M, context_size) int64 -> (M, decoder_dim) float32."""
        ...

    def run_joiner(self, encoder_out: np.ndarray, decoder_out: np.ndarray) -> np.ndarray:
        """(M, joiner_dim), (M, joiner_dim) -> (M, vocab) logits."""
        ...


def initial_context(context_size: int, blank_id: int) -> list[int]:
    return [-1] * (context_size - 1) + [blank_id]


@dataclass
class GreedyHyp:
    """Greedy search state of one stream (one utterance; the decoder context survives a reset)."""

    context: list[int]
    tokens: list[int] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)  # absolute encoder frame of each token
    decoder_out: np.ndarray | None = None

    def start_new_utterance(self) -> None:
        self.tokens = []
        self.frames = []


def greedy_search(
    nets: TransducerNets, encoder_out: np.ndarray, hyps: list[GreedyHyp], frame_offsets: list[int]
) -> list[int]:
    """Greedy search over one chunk for a batch; updates ``hyps``; returns new-token counts.

    Equivalent to the frame-by-frame loop (joiner on frame t with the current decoder output,
    argmax, on a non-blank: emit and rerun the decoder), but the joiner scores all remaining frames
    of the chunk at once with the current decoder output: every frame before the first non-blank is
    final, so one call advances to the next emission. A joiner call costs far more than an extra row
    (onnxruntime overhead + reading the weights), so calls per chunk = emissions + 1, batched over
    streams, beat one call per frame.
    """
    n, num_frames, _ = encoder_out.shape
    blank_id, unk_id, ctx = nets.blank_id, nets.unk_id, nets.context_size
    need = [i for i in range(n) if hyps[i].decoder_out is None]
    if need:
        dec = nets.run_decoder(np.array([hyps[i].context[-ctx:] for i in need], dtype=np.int64))
        for row, i in enumerate(need):
            hyps[i].decoder_out = dec[row]
    pos = [0] * n
    emitted = [0] * n
    active = list(range(n))
    while active:
        lengths = [num_frames - pos[i] for i in active]
        if len(active) == 1:
            i, length = active[0], lengths[0]
            enc = encoder_out[i, pos[i] :]
            dec = np.broadcast_to(hyps[i].decoder_out, (length, hyps[i].decoder_out.shape[-1]))
        else:
            enc = np.concatenate([encoder_out[i, pos[i] :] for i in active])
            dec = np.repeat(np.stack([hyps[i].decoder_out for i in active]), lengths, axis=0)
        ys = nets.run_joiner(np.ascontiguousarray(enc), np.ascontiguousarray(dec)).argmax(axis=-1).tolist()
        still: list[int] = []
        to_update: list[int] = []
        start = 0
        for i, length in zip(active, lengths, strict=True):
            h = hyps[i]
            k = next((k for k in range(length) if ys[start + k] != blank_id and ys[start + k] != unk_id), -1)
            if k < 0:
                pos[i] += length
            else:
                token = ys[start + k]
                h.tokens.append(token)
                h.frames.append(frame_offsets[i] + pos[i] + k)
                h.context.append(token)
                del h.context[:-ctx]
                emitted[i] += 1
                pos[i] += k + 1
                to_update.append(i)
            if pos[i] < num_frames:
                still.append(i)
            start += length
        if to_update:
            dec = nets.run_decoder(np.array([hyps[i].context for i in to_update], dtype=np.int64))
            for row, i in enumerate(to_update):
                hyps[i].decoder_out = dec[row]
        active = still
    return emitted


@dataclass
class BeamHyp:
    ys: tuple[int, ...]  # decoder context prefix + emitted tokens
    log_prob: float
    frames: tuple[int, ...] = ()


@dataclass
class BeamState:
    """Modified beam search state of one stream: the active hypotheses, keyed by token sequence."""

    context_size: int
    hyps: dict[tuple[int, ...], BeamHyp]

    @classmethod
    def initial(cls, context_size: int, blank_id: int) -> BeamState:
        ys = tuple(initial_context(context_size, blank_id))
        return cls(context_size, {ys: BeamHyp(ys, 0.0)})

    def best(self) -> BeamHyp:
        """Most probable hypothesis, log-prob normalised by length (as icefall/sherpa-onnx)."""
        return max(self.hyps.values(), key=lambda h: h.log_prob / len(h.ys))

    @property
    def tokens(self) -> list[int]:
        return list(self.best().ys[self.context_size :])

    @property
    def frames(self) -> list[int]:
        return list(self.best().frames)

    def start_new_utterance(self) -> None:
        """Keeps the best hypothesis' last context tokens; drops the text (like sherpa-onnx Reset)."""
        best = self.best()
        ys = best.ys[-self.context_size :]
        self.context_size = len(ys)
        self.hyps = {ys: BeamHyp(ys, 0.0)}


def _log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=-1, keepdims=True)
    y = x - m
    return y - np.log(np.exp(y).sum(axis=-1, keepdims=True))


def modified_beam_search(
    nets: TransducerNets,
    encoder_out: np.ndarray,
    states: list[BeamState],
    frame_offsets: list[int],
    beam: int,
) -> None:
    """Modified beam search (at most one symbol per frame) over one chunk for a batch of streams.

    Per frame: the decoder runs on the distinct contexts of all hypotheses, the joiner on
    (frame, hypothesis) pairs, log-softmax scores are added to each hypothesis' log-prob and the
    ``beam`` best (hypothesis, token) pairs of each stream survive; hypotheses that end up with the
    same token sequence are merged (log-add).
    """
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    n, num_frames, _ = encoder_out.shape
    ctx, blank_id, unk_id = nets.context_size, nets.blank_id, nets.unk_id
    dec_cache: dict[tuple[int, ...], np.ndarray] = {}
    for t in range(num_frames):
        flat: list[BeamHyp] = []
        split = [0]
        for st in states:
            flat.extend(st.hyps.values())
            split.append(len(flat))
        contexts = [h.ys[-ctx:] for h in flat]
        missing = sorted({c for c in contexts if c not in dec_cache})
        if missing:
            out = nets.run_decoder(np.array(missing, dtype=np.int64))
            for c, row in zip(missing, out, strict=False):
                dec_cache[c] = row
        dec = np.stack([dec_cache[c] for c in contexts])
        enc = np.repeat(encoder_out[:, t], np.diff(split), axis=0)
        logp = _log_softmax(nets.run_joiner(np.ascontiguousarray(enc), dec).astype(np.float32))
        vocab = logp.shape[-1]
        for b, st in enumerate(states):
            lo, hi = split[b], split[b + 1]
            scores = logp[lo:hi] + np.array([h.log_prob for h in flat[lo:hi]], dtype=np.float32)[:, None]
            flat_scores = scores.reshape(-1)
            k = min(beam, flat_scores.size)
            top = np.argpartition(-flat_scores, k - 1)[:k]
            top = top[np.argsort(-flat_scores[top], kind="stable")]
            new: dict[tuple[int, ...], BeamHyp] = {}
            for idx in top.tolist():
                hyp = flat[lo + idx // vocab]
                token = idx % vocab
                score = float(flat_scores[idx])
                if token in (blank_id, unk_id):
                    cand = BeamHyp(hyp.ys, score, hyp.frames)
                else:
                    cand = BeamHyp(hyp.ys + (token,), score, hyp.frames + (frame_offsets[b] + t,))
                old = new.get(cand.ys)
                if old is None:
                    new[cand.ys] = cand
                else:
                    old.log_prob = float(np.logaddexp(old.log_prob, cand.log_prob))
            st.hyps = new


def ctc_greedy(
    logits: np.ndarray, blank_id: int, prev_token: int, frame_offset: int
) -> tuple[list[int], list[int], int]:
    """CTC greedy over one chunk of (T, V) logits or log-probs: collapse repeats, drop blanks.

    ``prev_token`` is the last frame's argmax of the previous chunk (so a token spanning a chunk
    boundary is emitted once); returns (new token ids, their absolute frames, last argmax).
    """
    ids = logits.argmax(axis=-1)
    tokens: list[int] = []
    frames: list[int] = []
    prev = prev_token
    for t, y in enumerate(ids.tolist()):
        if y != blank_id and y != prev:
            tokens.append(y)
            frames.append(frame_offset + t)
        prev = y
    return tokens, frames, prev
