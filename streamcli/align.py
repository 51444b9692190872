"""Word times for second-pass text: CTC forced alignment against the first pass's posteriors.

The final text comes from Whisper's decoder, which gives no times; the streaming first pass has
already produced per-frame character log-probabilities for the same audio. A Viterbi alignment of the
final words' characters to those frames gives each word a first and a last frame, so word times are
monotonic and inside the segment by construction. Words with no letters (digits, symbols) take the
gap between their neighbours.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from streamcli.metrics import normalize_transcript
from streamcli.results import Word
from streamcli.tokens import WORD_START


def ctc_align(log_probs: np.ndarray, targets: Sequence[int], blank: int = 0) -> list[int] | None:
    """Frame index of each target token in the best CTC path, or None when no path fits.

    ``log_probs`` (T, V). Standard Viterbi over the blank-extended sequence (2L + 1 states)."""
    t_len = log_probs.shape[0]
    n = len(targets)
    if n == 0:
        return []
    ext = np.full(2 * n + 1, blank, np.int64)
    ext[1::2] = targets
    s_len = ext.size
    # A label may skip the blank before it unless it repeats the previous label.
    can_skip = np.zeros(s_len, bool)
    can_skip[3::2] = ext[3::2] != ext[1:-2:2]
    neg = -1e30
    score = np.full(s_len, neg)
    score[0] = log_probs[0, ext[0]]
    if s_len > 1:
        score[1] = log_probs[0, ext[1]]
    back = np.zeros((t_len, s_len), np.int8)  # 0 stay, 1 from s-1, 2 from s-2
    for t in range(1, t_len):
        prev1 = np.concatenate([[neg], score[:-1]])
        prev2 = np.where(can_skip, np.concatenate([[neg, neg], score[:-2]]), neg)
        stacked = np.stack([score, prev1, prev2])
        choice = stacked.argmax(axis=0)
        score = stacked[choice, np.arange(s_len)] + log_probs[t, ext]
        back[t] = choice
    end = s_len - 1 if s_len == 1 or score[s_len - 1] >= score[s_len - 2] else s_len - 2
    if score[end] <= neg / 2:
        return None
    frames = [0] * n
    s = end
    for t in range(t_len - 1, -1, -1):
        if s % 2 == 1:
            frames[s // 2] = t  # keeps overwriting: ends at the first frame of the label
        if t > 0:
            s -= int(back[t, s])
    return frames


def align_words(
    words: Sequence[str],
    log_probs: np.ndarray | None,
    table: dict[str, int],
    start_s: float,
    end_s: float,
    frame_s: float,
) -> list[Word]:
    """Times for ``words`` (display text, e.g. "Blood,") over frames starting at ``start_s``.

    Falls back to spreading the words evenly over [start_s, end_s] when no alignment exists."""
    keys = [normalize_transcript(w) for w in words]
    targets: list[int] = []
    first_index: list[int | None] = []
    last_index: list[int | None] = []
    for key in keys:
        letters = [c for c in key.replace(" ", "") if (WORD_START + c) in table]
        if not letters:
            first_index.append(None)
            last_index.append(None)
            continue
        first_index.append(len(targets))
        targets.append(table[WORD_START + letters[0]])
        targets.extend(table[c] for c in letters[1:])
        last_index.append(len(targets) - 1)
    frames = ctc_align(log_probs, targets) if log_probs is not None and len(log_probs) else None
    if frames is None:
        step = (end_s - start_s) / max(1, len(words))
        return [
            Word(w, round(start_s + i * step, 3), round(start_s + (i + 1) * step, 3))
            for i, w in enumerate(words)
        ]
    starts: list[float | None] = []
    ends: list[float | None] = []
    for fi, li in zip(first_index, last_index, strict=True):
        if fi is None or li is None:
            starts.append(None)
            ends.append(None)
        else:
            starts.append(start_s + frames[fi] * frame_s)
            ends.append(start_s + (frames[li] + 1) * frame_s)
    out: list[Word] = []
    for i, w in enumerate(words):
        s, e = starts[i], ends[i]
        if s is None:
            prev_end = next((ends[j] for j in range(i - 1, -1, -1) if ends[j] is not None), start_s)
            next_start = next((starts[j] for j in range(i + 1, len(words)) if starts[j] is not None), end_s)
            s, e = prev_end, max(prev_end, next_start)
        # A word ends no later than the next word starts (frames are shared at boundaries).
        nxt = next((starts[j] for j in range(i + 1, len(words)) if starts[j] is not None), None)
        if nxt is not None:
            e = min(e, nxt)
        s = min(max(s, out[-1].start if out else start_s), end_s)
        e = min(max(e, s), end_s)
        out.append(Word(w, round(s, 3), round(e, 3)))
    return out
