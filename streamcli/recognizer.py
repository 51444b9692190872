"""Streaming recognizer: config, model info, the Stream verbs, and the one streaming driver.

    rec = create_recognizer(RecognizerConfig(model="path/or/name", device="auto", threads=0))  # families
    s = rec.create_stream()
    s.accept_waveform(16000, samples)      # float32 mono in [-1, 1], any rate (resampled)
    while s.is_ready():
        s.decode()                         # one encoder call; returns the new tokens
    s.finish()                             # input_finished() (pads the tail) + decode_ready()
    print(s.result().text)

:class:`StreamDriver` is the one loop over a stream (decode ready windows, publish partials, apply
endpoints per window, reset, flush at the end) that transcribe, live, serve and bench use;
:func:`decode_batch` runs it for several streams in one batched encoder call. Where the model has a
second pass, closed utterances go to the recognizer's batched :class:`streamcli.finals.FinalsWorker`
and their finals come back in order without stopping the first pass.

The generic machinery lives here: online fbank, chunking (a chunk of ``chunk_frames`` feature frames
is decoded when *more* than that many frames are waiting, and the next chunk starts
``shift_frames`` later, as in sherpa-onnx), tail padding, timing, endpointing, utterance resets.

Model families plug in by subclassing :class:`Recognizer` and implementing four hooks:

- ``new_stream_state()`` -> opaque per-stream state (encoder caches + search state);
- ``decode_chunk(features, states, frame_offsets)``: run the encoder on ``features`` (N,
  chunk_frames, feature_dim) float32 with the N streams' cached states, advance their searches, update
  ``states`` in place; ``frame_offsets[i]`` is the absolute encoder frame index of the chunk's first
  output frame for stream i;
- ``hypothesis(state)`` -> (token ids, absolute encoder frames) of the current utterance;
- ``start_new_utterance(state)``: drop the utterance text, keep encoder state (and decoder context).

Optional: ``chunk_outputs(state)`` (the last window's logits and hidden frames: the record a second
pass needs; wctc has them). Readiness and the tail are one rule for every family, sherpa-onnx's
(``chunk_ready``, ``frames_to_flush``, ``tail_padding_samples`` below; no family overrides them).

Families live in :mod:`streamcli.families` (the ``{model_type: class}`` table and
``create_recognizer``); a family class is constructed as ``Family(config, folder, metadata)`` where
``metadata`` is the encoder's ONNX metadata. This module imports no family.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from streamcli.audio import AudioConverter
from streamcli.endpoint import EndpointConfig, EndpointDetector
from streamcli.errors import AudioError
from streamcli.features import FRAMES_30_S, feature_extractor, frames_covering, samples_for_frames
from streamcli.finals import ClosedUtterance, FinalsWorker, SecondPass, UtteranceRecorder, completed
from streamcli.providers import parse_device, resolve_threads
from streamcli.recent import Recent
from streamcli.refine import RefineConfig, Refiner, View
from streamcli.results import Result, Segment, Token, Word
from streamcli.tokens import TokenTable, tokens_to_words

MAX_BEAM = 64  # modified beam search: wider beams cost memory and time and no accuracy
MAX_WINDOW_FRAMES = FRAMES_30_S  # one window is one encoder call
_REVISION_WINDOW = 64  # tokens at the end of a hypothesis that new_tokens() re-checks

_DECODING_ALIASES = {
    "greedy": "greedy",
    "greedy_search": "greedy",
    "beam": "beam",
    "modified_beam_search": "beam",
}


def validate_window(window_frames: int, overlap_frames: int, subsampling: int = 1) -> None:
    """The one rule for a window W and overlap O (10 ms feature frames), with clear ValueErrors.

    0 <= O < W <= MAX_WINDOW_FRAMES, both multiples of the encoder's ``subsampling`` (one encoder
    frame is that many feature frames). Used by RecognizerConfig, the wctc family and the torch models.
    """
    for name, value in (("window_frames", window_frames), ("overlap_frames", overlap_frames)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be an integer number of 10 ms frames, got {value!r}")
        if value > MAX_WINDOW_FRAMES:
            flag = "--window" if name == "window_frames" else "--overlap"
            raise ValueError(f"{flag} {value}: at most {MAX_WINDOW_FRAMES} frames "
                             f"({MAX_WINDOW_FRAMES // 100} s; one window is one encoder call)")
        if value % subsampling:
            raise ValueError(
                f"{name} must be a multiple of {subsampling} (multiples of {subsampling}: one encoder "
                f"frame = {subsampling} feature frames), got {value}"
            )
    if window_frames <= 0:
        raise ValueError(f"window_frames must be > 0 (at least {subsampling} frames), got {window_frames}")
    if not 0 <= overlap_frames < window_frames:
        raise ValueError(
            f"overlap_frames ({overlap_frames}) must be smaller than window_frames ({window_frames}): "
            "the overlap must be smaller than the window (hop = W - O > 0)"
        )


@dataclass
class RecognizerConfig:
    """What to run and how. Validated by :meth:`validate` (clear ValueErrors)."""

    model: str | Path | None = None  # folder or known name; None = the shipped default model
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # 0 = automatic
    decoding: str = "greedy"  # greedy | beam (modified beam search; transducers only)
    beam: int = 4  # active paths of modified beam search
    window_frames: int | None = None  # wctc: window W in 10 ms frames (None = model default)
    overlap_frames: int | None = None  # wctc: overlap O in 10 ms frames (None = model default)
    rescore: bool | None = None  # second pass at endpoints (None = on where the model has one)
    second_pass_frames: str = "teacher"  # teacher (full-context Whisper encoder) | student
    second_pass_precision: str = "auto"  # auto (int8 on CPU, float32 on CUDA) | int8 | float32
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)

    def validate(self) -> RecognizerConfig:
        parse_device(self.device)
        resolve_threads(self.threads)
        if self.decoding not in _DECODING_ALIASES:
            raise ValueError(f"decoding must be greedy or beam, got {self.decoding!r}")
        if isinstance(self.beam, bool) or not isinstance(self.beam, int) or self.beam < 1:
            raise ValueError(f"beam must be an integer >= 1, got {self.beam!r}")
        if self.beam > MAX_BEAM:
            raise ValueError(f"--beam {self.beam}: at most {MAX_BEAM} active paths")
        if self.second_pass_frames not in ("teacher", "student"):
            raise ValueError(
                f"second_pass_frames must be teacher or student, got {self.second_pass_frames!r}"
            )
        if self.second_pass_precision not in ("auto", "int8", "float32"):
            raise ValueError(
                f"second_pass_precision must be auto, int8 or float32, got {self.second_pass_precision!r}"
            )
        for name in ("window_frames", "overlap_frames"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be a non-negative integer (10 ms frames), got {value!r}")
        if self.window_frames is not None or self.overlap_frames is not None:
            # The model's own defaults fill what is not given; the family checks its multiple.
            validate_window(
                self.window_frames if self.window_frames is not None else MAX_WINDOW_FRAMES,
                self.overlap_frames if self.overlap_frames is not None else 0,
            )
        if not isinstance(self.endpoint, EndpointConfig):
            raise ValueError("endpoint must be a streamcli.endpoint.EndpointConfig")
        return self

    @property
    def search(self) -> str:
        """Normalised decoding name: "greedy" or "beam"."""
        return _DECODING_ALIASES[self.decoding]


@dataclass(frozen=True)
class ModelInfo:
    """What a loaded model is and how it runs (all frame counts in 10 ms feature frames)."""

    family: str  # "zipformer-transducer" | "wctc"
    name: str
    path: Path
    sample_rate: int
    feature_dim: int
    frame_shift_ms: int
    chunk_frames: int  # feature frames one encoder call consumes
    shift_frames: int  # feature frames one encoder call advances
    window_frames: int  # frames one step attends to: overlap_frames cached + shift_frames new
    overlap_frames: int  # of those, the frames that come from the cache
    subsampling: int
    provider: str  # provider the encoder session really runs on
    threads: int
    state_bytes: int  # bytes of cached encoder state per stream
    decoding: str = "greedy"
    files: tuple[str, ...] = ()
    device_notice: str | None = None  # one line when device=auto fell back to CPU
    feature_type: str = "kaldi_fbank"  # kaldi_fbank | whisper_log10_mel (from the model metadata)
    second_pass: str | None = None  # what writes the finals at endpoints, None = the first pass


class Recognizer(ABC):
    """Base of every model family: owns the model; streams hold per-stream state.

    A second pass (:mod:`streamcli.finals`) is attached from outside (:func:`streamcli.families.
    create_recognizer` reads the model's metadata); the family only decodes the first pass."""

    info: ModelInfo
    tokens: TokenTable
    second_pass: SecondPass | None = None
    _finals_worker: FinalsWorker | None = None

    def __init__(self, config: RecognizerConfig) -> None:
        self.config = config

    def attach_second_pass(self, second_pass: SecondPass) -> None:
        """Closed utterances are rewritten by ``second_pass`` from now on (streams created later)."""
        self.second_pass = second_pass
        self.info = replace(self.info, second_pass=second_pass.name)

    @property
    def final_times_ms(self) -> Recent | None:
        """Milliseconds of the second-pass call behind each final; None: no second pass."""
        return self.second_pass.final_times_ms if self.second_pass is not None else None

    def finals_worker(self) -> FinalsWorker | None:
        """The one batched second-pass worker of this recognizer (shared by all its streams), started
        on first use; None without a second pass."""
        if self.second_pass is None:
            return None
        if self._finals_worker is None:
            self._finals_worker = FinalsWorker(self.second_pass)
        return self._finals_worker

    # ----- family hooks -------------------------------------------------------------------------
    @abstractmethod
    def new_stream_state(self) -> Any:
        """Fresh encoder caches + search state for one stream."""

    @abstractmethod
    def decode_chunk(self, features: np.ndarray, states: list[Any], frame_offsets: list[int]) -> None:
        """Encoder on (N, chunk_frames, feature_dim) features + search; updates ``states`` in place."""

    @abstractmethod
    def hypothesis(self, state: Any) -> tuple[list[int], list[int]]:
        """(token ids, absolute encoder frame of each) of the current utterance; callers only read them."""

    @abstractmethod
    def start_new_utterance(self, state: Any) -> None:
        """Forget the utterance's tokens, keep the encoder state (and decoder context)."""

    def chunk_outputs(self, state: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(logits, hidden frames) of the stream's last decoded window, for the second pass's record;
        a family without them returns (None, None) and gets no second pass."""
        return None, None

    def chunk_ready(self, processed_frames: int, frames_ready: int) -> bool:
        """Whether the chunk starting at ``processed_frames`` can be decoded.

        sherpa-onnx's rule, for every family: more than chunk_frames frames wait.
        """
        return processed_frames + self.info.chunk_frames < frames_ready

    def frames_to_flush(self, num_frames: int) -> int:
        """Total feature frames needed so that frame ``num_frames - 1`` gets decoded.

        A chunk starting at s is decoded once more than s + chunk_frames frames exist and its
        output covers frames s .. s + shift_frames - 1, so the last chunk must start at
        shift * floor((num_frames - 1) / shift).
        """
        if num_frames <= 0:
            return 0
        last_start = self.info.shift_frames * ((num_frames - 1) // self.info.shift_frames)
        return last_start + self.info.chunk_frames + 1

    def tail_padding_samples(self, num_samples: int) -> int:
        """Zeros input_finished() appends after ``num_samples`` samples so all of them get decoded."""
        feature_type = self.info.feature_type
        num_frames = frames_covering(feature_type, num_samples)
        if num_frames == 0:
            return 0
        needed = self.frames_to_flush(num_frames)
        return max(0, samples_for_frames(feature_type, needed) - num_samples)

    # ----- streams --------------------------------------------------------------------------------
    def create_stream(self) -> Stream:
        return Stream(self)

    def decode_streams(self, streams: list[Stream]) -> None:
        """Decodes one chunk for every ready stream in one batched encoder call."""
        ready = [s for s in streams if s.is_ready()]
        if not ready:
            return
        info = self.info
        feats = np.empty((len(ready), info.chunk_frames, info.feature_dim), dtype=np.float32)
        for i, s in enumerate(ready):
            s._fbank.get_frames(s._processed_frames, info.chunk_frames, out=feats[i])
        out_frames = info.shift_frames // info.subsampling
        offsets = [s._chunks_done * out_frames for s in ready]
        t0 = time.perf_counter()
        self.decode_chunk(feats, [s._state for s in ready], offsets)
        elapsed_ms = (time.perf_counter() - t0) * 1000.0
        for i, s in enumerate(ready):
            if s._utterance is not None:
                logits, hidden = self.chunk_outputs(s._state)
                if logits is not None:
                    s._utterance.add(feats[i, : info.shift_frames], logits, hidden, offsets[i])
            s._processed_frames += info.shift_frames
            s._chunks_done += 1
            s._fbank.discard_before(s._processed_frames)
            s.chunk_times_ms.append(elapsed_ms)

    def frame_time_s(self, encoder_frame: int) -> float:
        return round(encoder_frame * self.info.subsampling * self.info.frame_shift_ms / 1000.0, 6)


class Stream:
    """One audio stream through a recognizer (see the module docstring for the verbs)."""

    def __init__(self, recognizer: Recognizer) -> None:
        self._rec = recognizer
        info = recognizer.info
        self._sample_rate = info.sample_rate
        self._fbank = feature_extractor(info.feature_type, info.feature_dim, info.sample_rate)
        self._state = recognizer.new_stream_state()
        self._endpoint = EndpointDetector(recognizer.config.endpoint, sample_rate=info.sample_rate)
        second = recognizer.second_pass
        # What the second pass needs of the open utterance (None: the first pass writes the finals).
        frame_s = info.subsampling * info.frame_shift_ms / 1000.0
        self._utterance = (
            UtteranceRecorder(second.max_frames, second.needs_hidden, frame_s) if second else None
        )
        self._converter: AudioConverter | None = None  # the one door for audio (streamcli.audio)
        self._samples = 0  # samples received at the model rate (without tail padding)
        self._processed_frames = 0  # start frame of the next chunk
        self._chunks_done = 0
        self._finished = False
        self._utterance_start_s = 0.0
        self._reported: list[int] = []
        self.hypothesis_changed = False  # set by new_tokens(): the hypothesis differs from the last call
        self.tail_padding_samples = 0
        self.chunk_times_ms = Recent()  # encoder call times (ms), the newest

    # ----- input ------------------------------------------------------------------------------------
    def accept_waveform(self, sample_rate: int, samples: np.ndarray) -> None:
        """Appends mono float samples in [-1, 1] at any rate (audio.AudioConverter checks and resamples)."""
        if self._finished:
            raise ValueError("accept_waveform() after input_finished()")
        if (
            isinstance(sample_rate, bool)
            or not isinstance(sample_rate, (int, np.integer))
            or sample_rate <= 0
        ):
            raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
        arr = np.asarray(samples)
        if arr.ndim == 2 and 1 in arr.shape:
            arr = arr.reshape(-1)
        if arr.ndim != 1:
            raise ValueError(f"samples must be mono (1-D), got shape {arr.shape}")
        if arr.size and not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"samples must be float in [-1, 1], got dtype {arr.dtype}")
        if self._converter is None:
            self._converter = AudioConverter(int(sample_rate), self._sample_rate)
        elif self._converter.in_rate != sample_rate:
            before = self._converter.in_rate
            raise ValueError(f"sample rate changed within a stream: {before} -> {sample_rate}")
        try:
            self._push(self._converter.process(arr))
        except AudioError as exc:  # a verb on a stream: bad arguments are ValueErrors
            raise ValueError(str(exc)) from None

    def _push(self, samples: np.ndarray) -> None:
        if samples.size:
            self._fbank.accept_waveform(samples)
            self._endpoint.accept_waveform(samples)
            self._samples += samples.size

    def input_finished(self) -> None:
        """No more audio: flushes the resampler, pads zeros so the last frames are decoded."""
        if self._finished:
            return
        if self._converter is not None:
            self._push(self._converter.flush())
        pad = self._rec.tail_padding_samples(self._samples)
        if pad:
            self._fbank.accept_waveform(np.zeros(pad, dtype=np.float32))
        self.tail_padding_samples = pad
        self._fbank.input_finished()
        self._finished = True

    # ----- decoding -------------------------------------------------------------------------------
    def is_ready(self) -> bool:
        """True when a full chunk of features (plus one frame, as sherpa-onnx) is waiting."""
        return self._rec.chunk_ready(self._processed_frames, self._fbank.num_frames_ready)

    def decode(self) -> list[Token]:
        """Decodes one chunk (if ready) and returns the tokens it added to the hypothesis."""
        self._rec.decode_streams([self])
        return self.new_tokens()

    def decode_ready(self) -> list[Token]:
        """Decodes every chunk that is waiting; returns the tokens they added."""
        emitted: list[Token] = []
        while self.is_ready():
            emitted += self.decode()
        return emitted

    def finish(self) -> list[Token]:
        """``input_finished()`` then ``decode_ready()``: decodes the rest of the stream."""
        self.input_finished()
        return self.decode_ready()

    def new_tokens(self) -> list[Token]:
        """Tokens of the hypothesis not returned before (beam search may revise the tail)."""
        ids, frames = self._rec.hypothesis(self._state)
        # Only the recent tail can change (beam search); older tokens were final when reported.
        # Comparing a bounded window keeps this O(1) per chunk however long the utterance gets.
        reported = self._reported
        common = max(0, min(len(ids), len(reported)) - _REVISION_WINDOW)
        limit = min(len(ids), len(reported))
        while common < limit and ids[common] == reported[common]:
            common += 1
        # A shorter hypothesis with nothing new is a change too (beam search dropped its tail).
        self.hypothesis_changed = common < len(reported) or common < len(ids)
        del reported[common:]
        reported.extend(ids[common:])
        tokens = self._rec.tokens
        return [
            Token(tokens[i], self._rec.frame_time_s(f), i)
            for i, f in zip(ids[common:], frames[common:], strict=False)
        ]

    def result(self) -> Result:
        """The hypothesis since the last reset."""
        ids, frames = self._rec.hypothesis(self._state)
        table = self._rec.tokens
        toks = [Token(table[i], self._rec.frame_time_s(f), i) for i, f in zip(ids, frames, strict=False)]
        return Result(text=table.text(ids), tokens=toks, words=tokens_to_words(toks, end_s=self.decoded_s))

    def is_endpoint(self) -> bool:
        """Endpoint rules (streamcli.endpoint) say the current utterance has ended."""
        ids, frames = self._rec.hypothesis(self._state)
        last_token_s = self._rec.frame_time_s(frames[-1]) if frames else None
        return self._endpoint.is_endpoint(
            utterance_start_s=self._utterance_start_s,
            last_token_s=last_token_s,
            decoded_s=self.decoded_s,
            has_text=bool(ids),
        )

    def reset(self) -> Segment | None:
        """Finalizes the current utterance (None if empty) and starts a new one; times stay absolute.

        With a second pass the final is computed here, synchronously; a driver with a
        :class:`~streamcli.finals.FinalsWorker` uses :meth:`close_utterance` instead and waits for none."""
        segment, utterance = self.close_utterance()
        second = self._rec.second_pass
        if utterance is not None and second is not None:
            return second.finalize([utterance])[0]
        return segment

    def close_utterance(self) -> tuple[Segment | None, ClosedUtterance | None]:
        """Ends the current utterance: (the first pass's segment or None if empty, the record the second
        pass finalizes or None: no second pass, no text, or longer than it takes)."""
        segment = self._first_pass_segment()
        utterance = self._utterance.close(segment) if self._utterance is not None else None
        self._rec.start_new_utterance(self._state)
        self._utterance_start_s = self.decoded_s
        self._reported = []
        return segment, utterance

    @property
    def speech_end_s(self) -> float:
        """Stream time where the open utterance's speech ends, as far as is known: the later of the first
        pass's last token and the energy detector's last speech (with its hangover)."""
        _, frames = self._rec.hypothesis(self._state)
        ends = [self._utterance_start_s, self._endpoint.speech.last_speech_end_s or 0.0]
        if frames:
            ends.append(self._rec.frame_time_s(frames[-1]))
        return max(ends)

    def snapshot_utterance(self) -> ClosedUtterance | None:
        """The open utterance's record so far, for a refinement (None: no second pass or no text yet)."""
        if self._utterance is None:
            return None
        return self._utterance.snapshot(self._first_pass_segment())

    def cut_utterance(self, at_s: float) -> None:
        """The second pass's record of the open utterance starts at ``at_s`` from now on (the words
        before it became a segment); the first pass's hypothesis is not touched."""
        if self._utterance is not None:
            self._utterance.cut(at_s)

    @property
    def open_utterance_s(self) -> float:
        """Seconds of audio in the second pass's record of the open utterance (0 without one)."""
        return self._utterance.audio_s if self._utterance is not None else 0.0

    def _first_pass_segment(self) -> Segment | None:
        res = self.result()
        if not res.text:
            return None
        start = res.words[0].start if res.words else res.tokens[0].start
        end = res.words[-1].end if res.words else res.tokens[-1].start
        return Segment(start=start, end=end, text=res.text, words=res.words, tokens=res.tokens)

    # ----- clocks -----------------------------------------------------------------------------------
    @property
    def received_s(self) -> float:
        return self._samples / self._sample_rate

    @property
    def decoded_s(self) -> float:
        shift_s = self._rec.info.frame_shift_ms / 1000.0
        return min(self._processed_frames * shift_s, self.received_s)

    @property
    def finished(self) -> bool:
        return self._finished


class StreamLike(Protocol):
    """The verbs the driver uses: :class:`Stream`, or a test's fake with the same shape."""

    hypothesis_changed: bool

    def accept_waveform(self, sample_rate: int, samples: np.ndarray) -> None: ...
    def input_finished(self) -> None: ...
    def is_ready(self) -> bool: ...
    def decode(self) -> list[Token]: ...
    def new_tokens(self) -> list[Token]: ...
    def result(self) -> Result: ...
    def is_endpoint(self) -> bool: ...
    def reset(self) -> Segment | None: ...
    def close_utterance(self) -> tuple[Segment | None, ClosedUtterance | None]: ...
    @property
    def speech_end_s(self) -> float: ...


class RecognizerLike(Protocol):
    """What callers of the driver need from a recognizer (a :class:`Recognizer`, or a fake)."""

    info: ModelInfo

    def create_stream(self) -> Any: ...
    def decode_streams(self, streams: list[Any]) -> None: ...
    def finals_worker(self) -> FinalsWorker | None: ...


@dataclass(frozen=True)
class DecodedWindow:
    """What one decoded window gave: the tokens it added, and whether an endpoint closed the utterance
    after it (with or without text; its final arrives through the driver's finals)."""

    tokens: list[Token]
    closed: bool = False


DEFAULT_MAX_PENDING_FINALS = 32  # finals one stream may have in flight before its first pass waits


class StreamDriver:
    """The one streaming loop over a stream, used by transcribe, live, serve and bench.

    Feed audio with :meth:`accept_waveform`; every window that becomes ready is decoded, the partial
    is published (``on_partial``, only when it changed), the endpoint rules are applied after each
    window (not per block: a large block may hold an endpoint inside) and a closed utterance becomes a
    final. :meth:`finish` decodes the rest and closes the last utterance.

    Finals come out in the order their utterances closed, each once, through ``on_segment`` and the
    lists/generators below; segments without text never do. With ``finals`` (the recognizer's
    :class:`~streamcli.finals.FinalsWorker`) a closed utterance is handed to the batched second pass
    and the first pass goes on at once: its final is delivered when ready (:meth:`take_finals`);
    at most ``max_pending`` may be in flight, beyond that closing one waits (memory stays bounded
    however far a file's first pass runs ahead). Without it, the final is computed on closing.

    With ``finals`` and ``refine`` (:mod:`streamcli.refine`) the partial is the second pass's
    refinement of the open utterance (committed + tentative words) instead of the first pass's
    hypothesis; the words of a closed utterance stay in the partial until its final is delivered.

    For several streams in one batched encoder call use :func:`decode_batch`, which runs the same
    per-window step for each.
    """

    def __init__(
        self,
        stream: StreamLike,
        *,
        on_partial: Callable[[Result], None] | None = None,
        on_segment: Callable[[Segment], None] | None = None,
        finals: FinalsWorker | None = None,
        max_pending: int = DEFAULT_MAX_PENDING_FINALS,
        refine: RefineConfig | None = None,
    ) -> None:
        self.stream = stream
        self.on_partial = on_partial
        self.on_segment = on_segment
        self.finals = finals
        self.max_pending = max_pending
        self.segments = 0  # finals with text delivered so far
        self.finished = False
        # Per second-pass final: ms from the endpoint decision to its text being ready (the newest).
        self.final_latency_ms = Recent()
        self.refiner = Refiner(finals, refine) if finals is not None and refine is not None else None
        # Finals in closing order, done or not, each with the view its words had on screen (refining).
        self._pending: deque[tuple[Future, View | None]] = deque()
        self._shown: Result = Result("")

    def accept_waveform(self, sample_rate: int, samples: np.ndarray) -> list[Segment]:
        """Feeds samples and decodes every window that is ready; returns the finals ready by then."""
        self.stream.accept_waveform(sample_rate, samples)
        return self.decode_ready()

    def segments_ready(self) -> Iterator[Segment]:
        """Decodes every ready window, yielding each final as soon as it is ready (before the next
        window's partial; transcribe() yields from here). Does not wait for a final in flight."""
        while (window := self.step()) is not None:
            if window.closed or self._pending or self.refiner is not None:
                yield from self._finals(wait=False)
        yield from self._finals(wait=False)

    def step(self) -> DecodedWindow | None:
        """Decodes one window if one is ready (None otherwise) and applies the per-window rules."""
        if not self.stream.is_ready():
            return None
        return self.after_window(self.stream.decode())

    def after_window(self, tokens: list[Token]) -> DecodedWindow:
        """Partial + endpoint after a decoded window (called by step() and by decode_batch())."""
        if self.refiner is None:
            if (tokens or self.stream.hypothesis_changed) and self.on_partial is not None:
                self.on_partial(self.stream.result())
        else:
            self.refiner.maybe_submit(self.stream)
        if self.stream.is_endpoint():
            self.close_utterance()
            return DecodedWindow(tokens, closed=True)
        return DecodedWindow(tokens)

    def decode_ready(self) -> list[Segment]:
        return list(self.segments_ready())

    def close_utterance(self) -> None:
        """Closes the current utterance now (endpoint, end of input, or the caller's choice); its final
        is delivered by :meth:`take_finals` (at once without a worker)."""
        if self.finals is None:
            self._pending.append((completed(self.stream.reset()), None))
            return
        closed_s = time.perf_counter()
        speech_end_s = self.stream.speech_end_s if self.refiner is not None else 0.0  # before it resets
        segment, utterance = self.stream.close_utterance()
        view = None
        future: Future | None = None
        if self.refiner is not None:
            self.refiner.poll()
            view = self.refiner.view
            if utterance is not None:
                future = self.refiner.final(speech_end_s)  # a refinement that heard all of it
            committed, committed_ids = self.refiner.close()
            if utterance is not None and self.refiner.config.bind_finals:
                utterance = replace(utterance, committed=committed, committed_ids=committed_ids)
        if future is None:
            future = self.finals.submit(utterance) if utterance is not None else completed(segment)
        if utterance is not None:
            future.add_done_callback(
                lambda _: self.final_latency_ms.append((time.perf_counter() - closed_s) * 1000.0))
        self._pending.append((future, view))
        while sum(not f.done() for f, _ in self._pending) > self.max_pending:
            next(f for f, _ in self._pending if not f.done()).exception()  # waits; errors surface later

    @property
    def pending_finals(self) -> int:
        """Finals closed but not delivered yet (in flight or waiting to be taken)."""
        return len(self._pending)

    def take_finals(self, wait: bool = False) -> list[Segment]:
        """The finals that are ready, in closing order (``wait``: all of them, waiting as needed)."""
        return list(self._finals(wait))

    def partial(self) -> Result:
        """What a viewer shows after the finals: the refined view, or the first pass's hypothesis."""
        return self._view() if self.refiner is not None else self.stream.result()

    def _finals(self, wait: bool) -> Iterator[Segment]:
        self._refine()
        while self._pending and (wait or self._pending[0][0].done()):
            future, view = self._pending.popleft()
            segment = future.result()
            if segment is not None and segment.text.strip():
                self.segments += 1
                if self.on_segment is not None:
                    self.on_segment(segment)
                yield segment
            if view is not None:
                self._publish(force=True)  # that utterance's words left the partial: its final has them

    def _refine(self) -> None:
        """Applies a finished refinement and cuts a long open utterance (its committed words become a
        segment, shown in the partial until delivered)."""
        if self.refiner is None:
            return
        changed = self.refiner.poll()
        cut = self.refiner.cut(self.stream)
        if cut is not None:
            self._pending.append((completed(cut), View(tuple(cut.words))))
        if changed or cut is not None:
            self._publish()

    def _view(self) -> Result:
        assert self.refiner is not None
        views = [v for _, v in self._pending if v is not None] + [self.refiner.view]
        committed: list[Word] = []
        rest: list[Word] = []
        stable: list[Word] = []
        for v in views:  # committed = the prefix every earlier word of which is committed too
            if rest:
                rest += [*v.committed, *v.tentative]
            else:
                committed += v.committed
                rest += v.tentative
                stable = committed + list(v.agreed)
        words = committed + rest
        return Result(" ".join(w.word for w in words), words=words,
                      committed=" ".join(w.word for w in committed), tentative=" ".join(w.word for w in rest),
                      stable=" ".join(w.word for w in stable))

    def _publish(self, force: bool = False) -> None:
        """Calls on_partial with the view when it changed (``force``: also when the same, e.g. after
        a final, so a viewer always hears what the partial is once a final has been delivered)."""
        view = self._view()
        if force or (view.committed, view.tentative) != (self._shown.committed, self._shown.tentative):
            self._shown = view
            if self.on_partial is not None:
                self.on_partial(view)

    def input_finished(self) -> None:
        """No more audio (the tail is padded); the windows left are decoded by the next steps."""
        self.stream.input_finished()
        self.finished = True

    def finish(self) -> list[Segment]:
        """No more audio: decodes the rest, closes the last utterance, waits for every final."""
        return list(self.finish_segments())

    def finish_segments(self) -> Iterator[Segment]:
        """:meth:`finish` as a generator (each final as soon as it is ready, in order)."""
        self.input_finished()
        yield from self.segments_ready()
        self.close_utterance()
        yield from self._finals(wait=True)


def decode_batch(
    recognizer: RecognizerLike, drivers: Sequence[StreamDriver]
) -> list[tuple[StreamDriver, DecodedWindow]]:
    """One batched encoder call over every driver whose stream has a window ready, then each one's
    per-window step; returns (driver, window) for the drivers that were decoded."""
    ready = [d for d in drivers if d.stream.is_ready()]
    if not ready:
        return []
    recognizer.decode_streams([d.stream for d in ready])
    return [(d, d.after_window(d.stream.new_tokens())) for d in ready]
