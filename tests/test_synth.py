"""Synthetic training data: text normalisation, voice split, and a few real espeak-ng utterances."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from streamcli_tools.devtools import synth_speech, text_corpus

from streamcli.features import compute_features

TRAIN_SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "a stitch in time saves nine",
    "she sells sea shells by the sea shore",
    "every cloud has a silver lining they say",
]
HELDOUT_SENTENCES = ["the early bird catches the worm", "actions speak louder than words"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            "In 1984 Mr. Smith paid $5.50 for 3 apples.",
            "in nineteen eighty four mister smith paid five dollars fifty cents for three apples",
        ),
        (
            "The 21st century, 2005 and the 1960s.",
            "the twenty first century two thousand five and the nineteen sixties",
        ),
        (
            "He owns 1,250,000 sheep; 25% are black.",
            "he owns one million two hundred fifty thousand sheep twenty five percent are black",
        ),
        ("It's 3:05 & we're late!", "it's three oh five and we're late"),
        ("Chapter 342 of 1900 pages", "chapter three hundred forty two of nineteen hundred pages"),
    ],
)
def test_normalize_text_librispeech_style(raw: str, expected: str) -> None:
    assert text_corpus.normalize_text(text_corpus.expand_abbreviations(raw)) == expected


def test_numbers_in_words() -> None:
    assert text_corpus.int_to_words(0) == "zero"
    assert text_corpus.int_to_words(115) == "one hundred fifteen"
    assert text_corpus.int_to_words(2_000_017) == "two million seventeen"
    assert text_corpus.ordinal_words(12) == "twelfth"
    assert text_corpus.ordinal_words(40) == "fortieth"
    assert text_corpus.year_to_words(1905) == "nineteen oh five"


def test_sentence_filters_and_dev_overlap() -> None:
    paragraphs = [
        "Call the IBM office now. Use x = y + 2 here. Short one. "
        "This is a perfectly ordinary sentence about apples. "
        "This is a perfectly ordinary sentence about apples.",
        "There's iron they say in all our blood and a grain or two perhaps is good.",
        "Zxqvw blorft wibble glonk.",
    ]
    dev = text_corpus.DevFilter(
        ["there's iron they say in all our blood and a grain or two perhaps is good but"]
    )
    stats = text_corpus.CorpusStats()
    kept = text_corpus.build_sentences(
        paragraphs, vocabulary=text_corpus.load_wordlist(), dev_filter=dev, stats=stats
    )
    assert kept == ["this is a perfectly ordinary sentence about apples"]
    assert stats.rejected_raw == 2  # the acronym and the code
    assert stats.rejected_length == 1  # "short one"
    assert stats.rejected_dev_overlap == 1
    assert stats.duplicates == 1
    if text_corpus.load_wordlist() is not None:
        assert stats.rejected_vocabulary == 1


def test_heldout_text_split_is_deterministic_and_disjoint() -> None:
    sentences = [f"sentence number {text_corpus.int_to_words(i)} is here" for i in range(2000)]
    heldout = {s for s in sentences if text_corpus.is_heldout_text(s, 0.1)}
    assert heldout == {s for s in sentences if text_corpus.is_heldout_text(s, 0.1)}
    assert 100 < len(heldout) < 300


def test_voice_catalogs_are_disjoint_by_voice_accent_and_variant() -> None:
    engines = ("espeak", "flite", "festival")
    train = synth_speech.voice_catalog("train", engines)
    heldout = synth_speech.voice_catalog("heldout", engines)
    assert train and heldout
    assert not {v.key for v in train} & {v.key for v in heldout}
    for voice in train:
        base, _, variant = voice.name.partition("+")
        assert base not in synth_speech.HELDOUT_ESPEAK_BASES
        assert variant not in synth_speech.HELDOUT_ESPEAK_VARIANTS
        assert voice.name not in synth_speech.HELDOUT_FLITE_VOICES | synth_speech.HELDOUT_FESTIVAL_VOICES


def _read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


@pytest.fixture(scope="module")
def tiny_sets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same tiny espeak-ng data set made twice: with 1 and with 2 worker processes."""
    outs = []
    for jobs in (1, 2):
        out = tmp_path_factory.mktemp(f"synth_jobs{jobs}")
        cfg = synth_speech.SynthConfig(
            out_dir=out,
            hours=8 / 3600,
            heldout_hours=4 / 3600,
            seed=3,
            jobs=jobs,
            engines=("espeak",),
            write_features=True,
            batch_size=4,
        )
        summary = synth_speech.generate(cfg, TRAIN_SENTENCES, HELDOUT_SENTENCES, log=lambda _m: None)
        assert summary["train"]["hours"] * 3600 >= 8 and summary["heldout"]["hours"] * 3600 >= 4
        outs.append(out)
    return outs[0], outs[1]


def test_generated_audio_and_manifests(tiny_sets: tuple[Path, Path]) -> None:
    out = tiny_sets[0]
    for split, sentences in (("train", TRAIN_SENTENCES), ("heldout", HELDOUT_SENTENCES)):
        rows = _read_tsv(out / f"{split}.tsv")
        assert rows
        assert list(rows[0]) == ["id", "path", "duration_seconds", "transcript", "feats"]
        for row in rows:
            info = sf.info(str(out / row["path"]))
            assert info.samplerate == 16000 and info.channels == 1
            assert abs(info.frames / 16000 - float(row["duration_seconds"])) < 1e-3
            assert 0.5 < float(row["duration_seconds"]) < 30
            # The transcript is made of this split's sentences only.
            text = row["transcript"]
            for s in sorted(sentences, key=len, reverse=True):
                text = text.replace(s, "")
            assert text.strip() == "", row["transcript"]
            samples, _ = sf.read(str(out / row["path"]), dtype="float32")
            assert 0 < np.max(np.abs(samples)) <= 1.0
            feats = np.load(out / row["feats"])
            assert feats.dtype == np.float32 and feats.shape == (round(info.frames / 160), 80)
            np.testing.assert_array_equal(feats, compute_features(samples, "kaldi_fbank", 16000))


def test_heldout_voices_unseen_in_train(tiny_sets: tuple[Path, Path]) -> None:
    out = tiny_sets[0]
    train_voices = {r["voice"] for r in _read_tsv(out / "train_meta.tsv")}
    heldout_voices = {r["voice"] for r in _read_tsv(out / "heldout_meta.tsv")}
    assert train_voices and heldout_voices
    assert not train_voices & heldout_voices
    heldout_catalog = {v.name for v in synth_speech.voice_catalog("heldout", ("espeak",))}
    assert heldout_voices <= heldout_catalog


def test_deterministic_regardless_of_worker_count(tiny_sets: tuple[Path, Path]) -> None:
    one, two = tiny_sets
    assert (one / "train.tsv").read_text() == (two / "train.tsv").read_text()
    rows = _read_tsv(one / "train.tsv")
    for row in rows:
        assert (one / row["path"]).read_bytes() == (two / row["path"]).read_bytes()


def test_growing_reuses_files_and_refuses_other_seed(tiny_sets: tuple[Path, Path], tmp_path: Path) -> None:
    out = tiny_sets[0]
    before = _read_tsv(out / "train.tsv")
    first_mtime = (out / before[0]["path"]).stat().st_mtime_ns
    cfg = synth_speech.SynthConfig(
        out_dir=out,
        hours=16 / 3600,
        heldout_hours=4 / 3600,
        seed=3,
        jobs=1,
        engines=("espeak",),
        write_features=True,
        batch_size=4,
    )
    synth_speech.generate(cfg, TRAIN_SENTENCES, HELDOUT_SENTENCES, log=lambda _m: None)
    after = _read_tsv(out / "train.tsv")
    assert after[: len(before)] == before and len(after) > len(before)
    assert (out / before[0]["path"]).stat().st_mtime_ns == first_mtime
    other = synth_speech.SynthConfig(
        out_dir=out, hours=16 / 3600, seed=4, engines=("espeak",), write_features=True
    )
    with pytest.raises(ValueError, match="was made with"):
        synth_speech.generate(other, TRAIN_SENTENCES, HELDOUT_SENTENCES, log=lambda _m: None)


def test_cli_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert synth_speech.main(["--out", str(tmp_path), "--hours", "-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err


def test_wordnet_examples_parsed_as_sentences(tmp_path: Path) -> None:
    (tmp_path / "data.noun").write_text(
        "  1 This software and database is being provided to you\n"
        '00001740 03 n 01 bank 0 000 | sloping land; "they pulled the canoe up on the bank"; '
        '"he sat on the bank of the river and watched the currents"\n',
        encoding="utf-8",
    )
    examples = list(text_corpus.wordnet_examples(tmp_path))
    assert examples == [
        "They pulled the canoe up on the bank.",
        "He sat on the bank of the river and watched the currents.",
    ]
    assert text_corpus.build_sentences(examples, vocabulary=None, dev_filter=None) == [
        "they pulled the canoe up on the bank",
        "he sat on the bank of the river and watched the currents",
    ]
