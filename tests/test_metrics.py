"""streamcli.metrics: edit distances with known answers and a brute-force cross-check."""

from __future__ import annotations

import functools
import random
import sys

import pytest

from streamcli.metrics import (
    EditCounts,
    cer,
    char_edits,
    corpus_error_rates,
    edit_counts,
    normalize_transcript,
    wer,
    word_edits,
)


def brute_force_distance(a: str, b: str) -> int:
    @functools.cache
    def d(i: int, j: int) -> int:
        if i == 0:
            return j
        if j == 0:
            return i
        return min(d(i - 1, j) + 1, d(i, j - 1) + 1, d(i - 1, j - 1) + (a[i - 1] != b[j - 1]))

    return d(len(a), len(b))


@pytest.mark.parametrize(
    ("ref", "hyp", "subs", "dels", "ins"),
    [
        ("kitten", "sitting", 2, 0, 1),
        ("abc", "abc", 0, 0, 0),
        ("abc", "", 0, 3, 0),
        ("", "abc", 0, 0, 3),
        ("flaw", "lawn", 0, 1, 1),
        ("abcdef", "azced", 2, 1, 0),
    ],
)
def test_char_edit_counts_known(ref: str, hyp: str, subs: int, dels: int, ins: int) -> None:
    counts = edit_counts(ref, hyp)
    assert (counts.substitutions, counts.deletions, counts.insertions) == (subs, dels, ins)
    assert counts.reference_length == len(ref)


def test_word_edits_count_each_kind() -> None:
    counts = word_edits("the cat sat on the mat", "the cat sit on mat mat too")
    assert counts == EditCounts(substitutions=2, deletions=0, insertions=1, reference_length=6)
    assert wer("the cat sat on the mat", "the cat sit on mat mat too") == pytest.approx(0.5)
    assert wer("one two three four", "one three four") == pytest.approx(0.25)
    assert word_edits("one two three four", "one three four").deletions == 1


def test_error_rate_edges() -> None:
    assert wer("", "") == 0.0
    assert wer("", "hello") == float("inf")
    assert wer("hello world", "") == 1.0
    assert wer("a b", "x y z w") == pytest.approx(2.0)  # insertions can push WER above 1


def test_normalization_ignores_case_and_punctuation() -> None:
    assert normalize_transcript("Hello,  World! It\u2019s 'fine'.") == "hello world it's fine"
    assert wer("hello world", "HELLO, world.") == 0.0
    assert wer("hello world", "HELLO, world.", normalize=False) == 1.0
    assert cer("abc", "abd") == pytest.approx(1 / 3)
    # Spaces are characters: a split word costs one insertion.
    assert char_edits("hello world", "hel lo world").insertions == 1


def test_corpus_rates_sum_edits_before_dividing() -> None:
    rates = corpus_error_rates([("a b c d", "a b c d"), ("x", "y")])
    assert rates.words.errors == 1 and rates.words.reference_length == 5
    assert rates.wer == pytest.approx(0.2)  # not the mean of per-utterance rates (0.5)
    assert rates.utterances == 2
    assert rates.chars.reference_length == len("a b c d") + 1


def test_matches_brute_force_levenshtein() -> None:
    rng = random.Random(7)
    for _ in range(300):
        a = "".join(rng.choice("abc") for _ in range(rng.randint(0, 9)))
        b = "".join(rng.choice("abc") for _ in range(rng.randint(0, 9)))
        counts = edit_counts(a, b)
        assert counts.errors == brute_force_distance(a, b), (a, b)
        # Alignment bookkeeping: deletions - insertions equals the length difference.
        assert counts.deletions - counts.insertions == len(a) - len(b)


def _eval_wer(args: list[str]):
    """scripts/eval_wer.py run as the command it is (scripts are never imported by tests)."""
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "eval_wer.py"
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=900)


def test_eval_wer_scores_hypothesis_tsv(tmp_path) -> None:
    import json

    ref = tmp_path / "ref.tsv"
    ref.write_text("id\tpath\tduration_seconds\ttranscript\n"
                   "a\ta.wav\t1.0\tthe cat sat on the mat\n"
                   "b\tb.wav\t1.0\thello world\n", encoding="utf-8")
    hyp = tmp_path / "hyp.tsv"
    hyp.write_text("id\ttranscript\nb\tHello, world!\na\tthe cat sit on mat mat too\n", encoding="utf-8")
    summary_path = tmp_path / "summary.json"
    details = tmp_path / "details.tsv"
    proc = _eval_wer(["--data", str(ref), "--hyp", str(hyp), "--json", str(summary_path),
                      "--out-tsv", str(details)])
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(summary_path.read_text())
    assert summary["word_errors"] == 3 and summary["reference_words"] == 8
    assert summary["wer"] == pytest.approx(3 / 8)
    assert "WER 37.50%" in proc.stdout
    lines = details.read_text().splitlines()
    assert lines[1].split("\t")[:3] == ["a", "3", "6"] and lines[2].split("\t")[:3] == ["b", "0", "2"]


def test_eval_wer_missing_hypothesis_is_one_line_error(tmp_path) -> None:
    ref = tmp_path / "ref.tsv"
    ref.write_text("id\tpath\tduration_seconds\ttranscript\na\ta.wav\t1.0\tone two\n", encoding="utf-8")
    hyp = tmp_path / "hyp.tsv"
    hyp.write_text("id\ttranscript\nz\tone two\n", encoding="utf-8")
    proc = _eval_wer(["--data", str(ref), "--hyp", str(hyp)])
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert err.startswith("error:") and "no hypothesis" in err and "\n" not in err


def test_eval_wer_model_mode_matches_single_stream_decoding(test_zipformer_dir, tmp_path) -> None:
    """eval_wer's hypotheses are exactly what streamcli.transcribe gives for each file, and it scores them."""
    import csv
    import json
    from pathlib import Path

    from streamcli.families import create_recognizer
    from streamcli.recognizer import RecognizerConfig
    from streamcli.transcription import transcribe

    dev = Path(__file__).resolve().parents[2] / "shared" / "data" / "dev" / "dev.tsv"
    with open(dev, newline="", encoding="utf-8") as f:
        rows = sorted(csv.DictReader(f, delimiter="\t"), key=lambda r: float(r["duration_seconds"]))[:3]
    manifest = tmp_path / "small.tsv"
    manifest.write_text("id\tpath\tduration_seconds\ttranscript\n" + "".join(
        f"{r['id']}\t{dev.parent / r['path']}\t{r['duration_seconds']}\t{r['transcript']}\n" for r in rows),
        encoding="utf-8")
    details = tmp_path / "details.tsv"
    summary_path = tmp_path / "summary.json"
    proc = _eval_wer(["--model", str(test_zipformer_dir), "--data", str(manifest), "--device", "cpu",
                      "--out-tsv", str(details), "--json", str(summary_path)])
    assert proc.returncode == 0, proc.stderr
    recognizer = create_recognizer(RecognizerConfig(model=str(test_zipformer_dir), device="cpu"))
    expected = {r["id"]: " ".join(seg.text for seg in transcribe(str(dev.parent / r["path"]), recognizer)[0])
                for r in rows}
    assert any(expected.values())
    with open(details, newline="", encoding="utf-8") as f:
        got = {d["id"]: d["hypothesis"] for d in csv.DictReader(f, delimiter="\t")}
    assert got == expected
    summary = json.loads(summary_path.read_text())
    rates = corpus_error_rates((r["transcript"], expected[r["id"]]) for r in rows)
    assert summary["word_errors"] == rates.words.errors and summary["utterances"] == 3
    assert summary["provider"] == "CPUExecutionProvider" and summary["audio_seconds"] > 0
    expected_subsets = {
        "/".join(Path(r["path"]).parts[:2]) if r["path"].startswith("librispeech")
        else Path(r["path"]).parts[0]
        for r in rows
    }
    assert set(summary["subsets"]) == expected_subsets
