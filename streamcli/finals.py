"""The second-pass stage: closed utterances in, final segments out, batched on one worker thread.

The streaming first pass (a model family) writes the partial text. Where a model has a second pass
(its metadata says which, e.g. ``second_pass = whisper-tiny.en``), each utterance an endpoint closes
is rewritten by it. This module is the family-neutral part of that:

- :class:`UtteranceRecorder` keeps what a closed utterance needs while it is spoken (the first
  pass's input features, its per-frame log-probabilities for word times, optional hidden frames),
  bounded to the second pass's window; the stream owns one, the family's state never sees it;
- :class:`ClosedUtterance` is that record, handed over when the utterance closes;
- :class:`SecondPass` is the small interface a second pass implements: ``finalize(utterances)`` for a
  batch of utterances from any streams;
- :class:`FinalsWorker` is the one batched worker: ``submit()`` returns a future at once; the worker
  thread takes everything queued (up to ``max_batch``) and finalizes it in one call, so the first
  pass (a server's tick, a file's decode loop) never waits for a final.
"""

from __future__ import annotations

import atexit
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from streamcli.recent import Recent
from streamcli.results import Segment, Word

DEFAULT_MAX_BATCH = 16  # rows of one batched decode: beyond ~16 a step costs as much as two
# Refinements go one at a time: a final that arrives meanwhile waits for at most one of them, and with
# the committed words as a prefix a refinement is mostly Whisper's encoder, which batching does not
# make cheaper per row, so a batch only makes every stream wait for the others (4 serve streams,
# settle p50: 1.09 s in batches of 4, 1.05 s of 2, 1.03 s of 1).
MAX_REFINE_BATCH = 1


@dataclass(frozen=True)
class ClosedUtterance:
    """What the second pass gets for one utterance (all arrays belong to it alone)."""

    features: np.ndarray  # (T, feature_dim) the first pass's input frames, 10 ms each
    log_probs: np.ndarray  # (frames, vocab) the first pass's log-probabilities (word times)
    hidden: np.ndarray | None  # (frames, d) the first pass's hidden frames, where the model has them
    start_frame: int  # absolute encoder frame where the utterance's audio starts
    first_pass: Segment  # the utterance as the first pass wrote it
    # Words already committed on screen (streamcli.refine): the final keeps them as they are.
    committed: tuple[Word, ...] = ()
    # The second pass's token ids that spell them, where known: its decode continues after them.
    committed_ids: tuple[int, ...] = ()
    start_s: float = 0.0  # stream time of start_frame (the recorder knows the encoder frame length)

    @property
    def audio_s(self) -> float:
        return self.features.shape[0] / 100.0

    def after(self, at_s: float) -> ClosedUtterance | None:
        """The record from stream time ``at_s`` on, in whole encoder frames (the rest of the fields as
        they are); None when ``at_s`` is not past its first encoder frame."""
        per_frame = max(1, round(self.features.shape[0] / max(1, self.log_probs.shape[0])))
        frame_s = per_frame / 100.0
        skip = min(int((at_s - self.start_s) / frame_s + 1e-6), self.log_probs.shape[0])
        if skip <= 0:
            return None
        return replace(self, features=self.features[skip * per_frame :], log_probs=self.log_probs[skip:],
                       hidden=None if self.hidden is None else self.hidden[skip:],
                       start_frame=self.start_frame + skip, start_s=self.start_s + skip * frame_s)


class SecondPass(Protocol):
    """A second pass: rewrites a batch of closed utterances (from any streams) at once."""

    name: str  # shown as ModelInfo.second_pass
    needs_hidden: bool  # whether it reads ClosedUtterance.hidden (the family must output them)
    max_frames: int  # longest utterance it takes (10 ms frames); a longer one keeps the first pass
    final_times_ms: Recent  # per finalized utterance: ms of the call that finalized it (the newest)

    def finalize(self, utterances: Sequence[ClosedUtterance]) -> list[Segment | None]:
        """The final segment of each utterance, in order (None: no speech in it)."""
        ...


class UtteranceRecorder:
    """Collects the current utterance's features and first-pass outputs, window by window."""

    def __init__(self, max_frames: int, keep_hidden: bool, encoder_frame_s: float) -> None:
        self.max_frames = max_frames
        self.keep_hidden = keep_hidden
        self.encoder_frame_s = encoder_frame_s
        self.reset()

    def reset(self) -> None:
        self._features: list[np.ndarray] = []
        self._log_probs: list[np.ndarray] = []
        self._hidden: list[np.ndarray] = []
        self._frames = 0
        self._start_frame: int | None = None
        self.overflow = False  # longer than the second pass takes: the first pass stays

    def add(
        self, features: np.ndarray, logits: np.ndarray, hidden: np.ndarray | None, frame_offset: int
    ) -> None:
        """One decoded window: its (hop, feature_dim) features and the family's (frames, V) logits."""
        if self._start_frame is None:
            self._start_frame = frame_offset
        if self.overflow or self._frames + features.shape[0] > self.max_frames:
            self.overflow = True
            return
        self._features.append(np.array(features, dtype=np.float32))
        shifted = logits - logits.max(axis=-1, keepdims=True)
        self._log_probs.append(shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True)))
        if self.keep_hidden and hidden is not None:
            self._hidden.append(np.array(hidden, dtype=np.float32))
        self._frames += features.shape[0]

    @property
    def audio_s(self) -> float:
        return self._frames / 100.0

    @property
    def start_s(self) -> float | None:
        """Stream time where the record starts (None: nothing recorded yet)."""
        if self._start_frame is None:
            return None
        return self._start_frame * self.encoder_frame_s

    def snapshot(self, first_pass: Segment | None) -> ClosedUtterance | None:
        """The record of the utterance so far (None: nothing for the second pass); it goes on."""
        if first_pass is None or not self._features or self.overflow:
            return None
        self._compact()
        return ClosedUtterance(
            features=self._features[0],
            log_probs=self._log_probs[0],
            hidden=self._hidden[0] if self._hidden else None,
            start_frame=self._start_frame or 0,
            first_pass=first_pass,
            start_s=self.start_s or 0.0,
        )

    def close(self, first_pass: Segment | None) -> ClosedUtterance | None:
        """The record of the utterance that just closed (None: nothing for the second pass), then a
        fresh start."""
        record = self.snapshot(first_pass)
        self.reset()
        return record

    def cut(self, at_s: float) -> None:
        """Drops what precedes stream time ``at_s`` (its words became a segment of their own): the
        record starts later, and a refinement of what is left costs less."""
        if not self._features or self._start_frame is None:
            return
        self._compact()
        hidden = self._hidden[0] if self._hidden else None
        record = ClosedUtterance(self._features[0], self._log_probs[0], hidden, self._start_frame,
                                 Segment(0.0, 0.0, ""), start_s=self.start_s or 0.0)
        rest = record.after(at_s)
        if rest is None:
            return
        self._features, self._log_probs = [rest.features], [rest.log_probs]
        if rest.hidden is not None:
            self._hidden = [rest.hidden]
        self._frames = rest.features.shape[0]
        self._start_frame = rest.start_frame

    def _compact(self) -> None:
        """One array per kind (snapshots are taken often; concatenating once keeps them cheap)."""
        for chunks in (self._features, self._log_probs, self._hidden):
            if len(chunks) > 1:
                chunks[:] = [np.concatenate(chunks)]


@dataclass(eq=False)  # jobs are compared by identity (a queue removes one by it)
class _Job:
    utterance: ClosedUtterance
    future: Future
    submitted_s: float


@dataclass
class FinalsStats:
    """What the worker did, for bench and load tests."""

    batches: Recent = field(default_factory=Recent)  # rows of each finalize() call (the newest)
    latency_ms: Recent = field(default_factory=Recent)  # submit -> result, per utterance (the newest)
    busy_s: float = 0.0  # time spent in finalize()


class FinalsWorker:
    """One thread that finalizes queued utterances in batches; futures resolve in submit order per
    batch. ``on_done`` (if set) is called after each batch, from the worker thread (a server's wake-up).
    """

    def __init__(self, second_pass: SecondPass, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.second_pass = second_pass
        self.max_batch = max_batch
        self.on_done: Callable[[], None] | None = None
        # Seconds from submit to result, per final (a server's metrics).
        self.on_final_latency: Callable[[float], None] | None = None
        self.stats = FinalsStats()
        self.refine_stats = FinalsStats()
        self._queue: deque[_Job] = deque()  # finals
        self._refinements: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._busy_rows = 0
        self._busy_audio_s = 0.0
        self._s_per_audio_s = 0.0  # moving average of finalize() seconds per audio second
        self._thread: threading.Thread | None = None
        self._closed = False

    def close(self, timeout_s: float = 30.0) -> None:
        """Finalizes what is queued, drops the refinements not started, ends the thread."""
        with self._cond:
            self._closed = True
            for job in self._refinements:
                job.future.cancel()
            self._refinements.clear()
            self._cond.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    def submit(self, utterance: ClosedUtterance) -> Future:
        """A closed utterance's final: served before any refinement."""
        return self._enqueue(self._queue, utterance)

    def submit_refinement(self, utterance: ClosedUtterance) -> Future:
        """A refinement of an open utterance (streamcli.refine): served only when no final waits, so
        finals never queue behind refinements; under load refinements simply come less often."""
        return self._enqueue(self._refinements, utterance)

    def promote(self, future: Future) -> None:
        """A refinement that became a final (streamcli.refine): queued with the finals from now on, so
        it is not starved by other finals nor dropped by :meth:`close`. Started or done: nothing to do."""
        with self._cond:
            for job in self._refinements:
                if job.future is future:
                    self._refinements.remove(job)
                    self._queue.append(job)
                    self._cond.notify()
                    return

    def _enqueue(self, queue: deque[_Job], utterance: ClosedUtterance) -> Future:
        future: Future = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the second-pass worker is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="streamcli-finals", daemon=True)
                self._thread.start()
                # Before the interpreter tears down, let a batch in flight finish: onnxruntime aborts
                # the process (std::terminate) when its threads vanish in the middle of a run.
                atexit.register(self.close)
            queue.append(_Job(utterance, future, time.perf_counter()))
            self._cond.notify()
        return future

    @property
    def backlog(self) -> int:
        """Utterances queued or being finalized."""
        with self._cond:
            return len(self._queue) + self._busy_rows

    @property
    def seconds_per_audio_s(self) -> float:
        """Measured cost of finalizing one second of audio (moving average; 0 before the first batch).
        A real-time stream closes at most one second of audio per second, so the worker keeps up with
        about 1 / this many streams."""
        return self._s_per_audio_s

    def expected_wait_s(self) -> float:
        """Seconds a final submitted now would wait: the audio queued or in flight times the measured
        cost per audio second (a moving average of recent batches; 0 before the first)."""
        with self._cond:
            audio_s = sum(job.utterance.audio_s for job in self._queue) + self._busy_audio_s
        return audio_s * self._s_per_audio_s

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._refinements and not self._closed:
                    self._cond.wait()
                if not self._queue and not self._refinements:
                    return  # closed
                refining = not self._queue
                queue = self._refinements if refining else self._queue
                limit = min(self.max_batch, MAX_REFINE_BATCH) if refining else self.max_batch
                jobs = [queue.popleft() for _ in range(min(limit, len(queue)))]
                self._busy_rows = len(jobs)
                self._busy_audio_s = sum(job.utterance.audio_s for job in jobs)
            started_s = time.perf_counter()
            try:
                segments = self.second_pass.finalize([job.utterance for job in jobs])
            except BaseException as exc:  # every waiting caller sees the error, the worker goes on
                for job in jobs:
                    job.future.set_exception(exc)
            else:
                done_s = time.perf_counter()
                cost = (done_s - started_s) / max(self._busy_audio_s, 0.1)
                first = not self.stats.batches and not self.refine_stats.batches
                self._s_per_audio_s = cost if first else 0.8 * self._s_per_audio_s + 0.2 * cost
                stats = self.refine_stats if refining else self.stats
                stats.batches.append(len(jobs))
                stats.busy_s += done_s - started_s
                for job, segment in zip(jobs, segments, strict=True):
                    stats.latency_ms.append((done_s - job.submitted_s) * 1000.0)
                    if not refining and self.on_final_latency is not None:
                        self.on_final_latency(done_s - job.submitted_s)
                    job.future.set_result(segment)
            finally:
                with self._cond:
                    self._busy_rows = 0
                    self._busy_audio_s = 0.0
            if self.on_done is not None:
                self.on_done()


def completed(segment: Segment | None) -> Future:
    """A future that already holds ``segment`` (a final that needed no second pass)."""
    future: Future = Future()
    future.set_result(segment)
    return future
