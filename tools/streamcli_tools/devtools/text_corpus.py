#!/usr/bin/env python3
"""English sentences for synthetic training speech, normalised like LibriSpeech transcripts.

Sources are what a fresh Debian machine gets from its package archive (see scripts/install.sh):
the BSD fortune cookie files (`fortunes`, under /usr/share/games/fortunes), the usage examples of
WordNet 3.0 (`wordnet-base`, /usr/share/wordnet/data.*, Princeton WordNet license) and, optionally,
any plain-text files given with --text-file. The SCOWL word list (`wamerican`,
/usr/share/dict/american-english) filters out sentences with words a TTS voice would spell out or
mangle, so the audio and the transcript agree.

Normalisation: lowercase, letters and apostrophes only, numbers spelled out ("1984" -> "nineteen
eighty four", "3rd" -> "third", "$5" -> "five dollars"), common abbreviations expanded.
Sentences of 3-30 words. Anything that overlaps the evaluation set (the dev transcripts) is
dropped, and the remaining sentences are split into train / held-out by a hash of their text, so
the split does not depend on the order or the number of sources.

    python scripts/text_corpus.py --out /work/data/synth/text
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

FORTUNES_DIR = Path("/usr/share/games/fortunes")
WORDLIST_PATH = Path("/usr/share/dict/american-english")
WORDNET_DIR = Path("/usr/share/wordnet")
DEFAULT_DEV_TSV = Path(__file__).resolve().parents[4] / "shared" / "data" / "dev" / "dev.tsv"

# Fortune files that are pictures or program code rather than sentences.
SKIPPED_FORTUNE_FILES = frozenset({"ascii-art", "perl"})

MIN_WORDS = 3
MAX_WORDS = 30
# Length of the word n-grams that must not be shared with any dev transcript.
DEV_NGRAM_WORDS = 6

_ONES = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL_EXCEPTIONS = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
    "nine": "ninth", "twelve": "twelfth",
}

# Expanded before sentence splitting so their periods do not end a sentence.
_ABBREVIATIONS = {
    "mr": "mister", "mrs": "missus", "ms": "miss", "dr": "doctor", "st": "saint", "jr": "junior",
    "sr": "senior", "prof": "professor", "capt": "captain", "gen": "general", "lt": "lieutenant",
    "col": "colonel", "sgt": "sergeant", "rev": "reverend", "vs": "versus", "etc": "et cetera",
    "mt": "mount", "no": "number",
}
_ABBREV_RE = re.compile(r"\b(" + "|".join(_ABBREVIATIONS) + r")\.(?=\s|$)", re.IGNORECASE)
_LATIN_RE = [(re.compile(r"\be\.g\.", re.I), "for example"), (re.compile(r"\bi\.e\.", re.I), "that is")]
_SENTENCE_END_RE = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
_NUMBER_RE = re.compile(
    r"(?P<currency>[$£])?(?P<num>\d[\d,]*(?:\.\d+)?)(?P<suffix>st|nd|rd|th|s|%|'s)?(?![\w])", re.IGNORECASE
)
_TIME_RE = re.compile(r"\b(\d{1,2}):(\d{2})\b")
_ACRONYM_RE = re.compile(r"\b[A-Z]{2,}\b")
_ALLOWED_ACRONYMS = frozenset({"OK"})


def int_to_words(n: int) -> str:
    """Cardinal number in words, without "and" (LibriSpeech style): 342 -> three hundred forty two."""
    if n < 0:
        return "minus " + int_to_words(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return _ONES[hundreds] + " hundred" + ("" if rest == 0 else " " + int_to_words(rest))
    for scale, name in _SCALES:
        if n >= scale:
            high, rest = divmod(n, scale)
            return int_to_words(high) + " " + name + ("" if rest == 0 else " " + int_to_words(rest))
    raise AssertionError("unreachable")


def year_to_words(n: int) -> str:
    """Years as spoken: 1984 -> nineteen eighty four, 1900 -> nineteen hundred, 2005 -> two thousand five."""
    if 2000 <= n <= 2009 or n % 1000 == 0:
        return int_to_words(n)
    high, low = divmod(n, 100)
    if low == 0:
        return int_to_words(high) + " hundred"
    if low < 10:
        return int_to_words(high) + " oh " + int_to_words(low)
    return int_to_words(high) + " " + int_to_words(low)


def ordinal_words(n: int) -> str:
    words = int_to_words(n).split()
    last = words[-1]
    if last in _ORDINAL_EXCEPTIONS:
        words[-1] = _ORDINAL_EXCEPTIONS[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def _number_match_to_words(match: re.Match[str]) -> str:
    raw = match.group("num").replace(",", "")
    currency = match.group("currency")
    suffix = (match.group("suffix") or "").lower()
    if raw.endswith("."):
        raw = raw[:-1]
    if "." in raw:
        whole, frac = raw.split(".", 1)
        if currency and len(frac) == 2:
            words = int_to_words(int(whole)) + " dollars"
            if int(frac):
                words += " " + int_to_words(int(frac)) + " cents"
            return " " + words + " "
        words = int_to_words(int(whole)) + " point " + " ".join(_ONES[int(d)] for d in frac)
    else:
        value = int(raw)
        if suffix in ("st", "nd", "rd", "th"):
            return " " + ordinal_words(value) + " "
        # Four-digit numbers without a thousands comma are read as years ("in 1984", "the 1960s").
        is_year = "," not in match.group("num") and 1100 <= value <= 2099 and not currency
        words = year_to_words(value) if is_year else int_to_words(value)
        if suffix == "s":
            words = words[:-1] + "ies" if words.endswith("y") else words + "s"
            suffix = ""
    if currency:
        words += " pounds" if currency == "£" else (" dollar" if words == "one" else " dollars")
    if suffix == "%":
        words += " percent"
    elif suffix == "'s":
        words += "'s"
    return " " + words + " "


def normalize_text(text: str) -> str:
    """LibriSpeech-like transcript text: lowercase words of letters and apostrophes, single spaces."""
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("`", "'")
    text = _TIME_RE.sub(
        lambda m: " " + int_to_words(int(m.group(1))) + " "
        + ("o'clock" if m.group(2) == "00" else
           ("oh " + _ONES[int(m.group(2))] if m.group(2)[0] == "0" else int_to_words(int(m.group(2)))))
        + " ",
        text,
    )
    text = _NUMBER_RE.sub(_number_match_to_words, text)
    text = text.replace("&", " and ").replace("%", " percent ").replace("+", " plus ")
    text = text.lower()
    text = re.sub(r"[^a-z']+", " ", text)
    words = []
    for word in text.split():
        word = word.strip("'")
        if word:
            words.append(word)
    return " ".join(words)


def expand_abbreviations(text: str) -> str:
    for pattern, replacement in _LATIN_RE:
        text = pattern.sub(replacement, text)
    return _ABBREV_RE.sub(lambda m: _ABBREVIATIONS[m.group(1).lower()], text)


def split_sentences(paragraph: str) -> list[str]:
    paragraph = re.sub(r"\s+", " ", expand_abbreviations(paragraph)).strip()
    return [s.strip() for s in _SENTENCE_END_RE.split(paragraph) if s.strip()]


def is_clean_raw_sentence(sentence: str) -> bool:
    """Reject raw text a TTS voice would not read as its transcript says (code, acronyms, URLs)."""
    if any(ch in sentence for ch in "<>{}[]|\\/=_@#*^~"):
        return False
    if sum(1 for ch in sentence if ord(ch) > 127 and ch not in "\u2019\u2018\u201c\u201d\u2014\u2013"):
        return False
    acronyms = [a for a in _ACRONYM_RE.findall(sentence) if a not in _ALLOWED_ACRONYMS]
    # All-capital sentences are shouting, not acronyms; a few capitals inside normal text are spelled.
    letters = [ch for ch in sentence if ch.isalpha()]
    mostly_upper = letters and sum(ch.isupper() for ch in letters) > 0.6 * len(letters)
    if acronyms and not mostly_upper:
        return False
    return not re.search(r"\d[a-zA-Z]|[a-zA-Z]\d", sentence.replace("'s", ""))


def fortune_paragraphs(path: Path) -> Iterator[str]:
    """Fortunes of one file, attribution lines and speaker labels removed."""
    text = path.read_text(encoding="utf-8", errors="replace")
    for fortune in re.split(r"^%\s*$", text, flags=re.MULTILINE):
        lines = []
        for line in fortune.splitlines():
            stripped = line.strip()
            if not stripped or stripped.startswith("--") or stripped.startswith("-- "):
                if lines:
                    yield " ".join(lines)
                    lines = []
                continue
            stripped = re.sub(r"^[A-Z][\w .]{0,20}:\s+", "", stripped)  # "Q: ..." / "Name: ..."
            lines.append(stripped)
        if lines:
            yield " ".join(lines)


def fortune_files(directory: Path = FORTUNES_DIR) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(
        p for p in directory.iterdir()
        if p.is_file() and "." not in p.name and p.name not in SKIPPED_FORTUNE_FILES
    )


def wordnet_examples(directory: Path = WORDNET_DIR) -> Iterator[str]:
    """The quoted usage examples of WordNet's synsets ("the plane went into a steep bank")."""
    for part in ("noun", "verb", "adj", "adv"):
        path = directory / f"data.{part}"
        if not path.is_file():
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  "):  # the license header
                    continue
                _, _, gloss = line.partition("| ")
                for example in re.findall(r'"([^"]+)"', gloss):
                    example = example.strip()
                    # Examples are mostly lowercase fragments; a capital and a period make them sentences.
                    yield example[:1].upper() + example[1:] + ("" if example[-1:] in ".!?" else ".")


def text_file_paragraphs(path: Path) -> Iterator[str]:
    """Paragraphs (blank-line separated) of a plain-text file."""
    text = path.read_text(encoding="utf-8", errors="replace")
    for paragraph in re.split(r"\n\s*\n", text):
        if paragraph.strip():
            yield paragraph


def load_wordlist(path: Path = WORDLIST_PATH) -> frozenset[str] | None:
    if not path.is_file():
        return None
    words = {w.strip().lower() for w in path.read_text(encoding="utf-8", errors="replace").split()}
    words.update(_ONES, _TENS[2:], ("hundred", "thousand", "million", "billion", "trillion", "point",
                                     "oh", "percent", "o'clock", "cetera", "missus", "first", "second",
                                     "third", "fifth", "eighth", "ninth", "twelfth", "minus"))
    return frozenset(w for w in words if w and w != "_")


def _in_vocabulary(word: str, vocabulary: frozenset[str]) -> bool:
    if word in vocabulary:
        return True
    # Ordinals/plurals of spelled numbers, and possessives the list does not carry.
    for suffix in ("th", "ieth", "s", "ies", "'s", "'"):
        if word.endswith(suffix) and word[: -len(suffix)] in vocabulary:
            return True
    return word.endswith("ieth") and word[:-4] + "y" in vocabulary


def word_ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


@dataclass
class DevFilter:
    """Drops sentences equal to, contained in, or sharing a word n-gram with a dev transcript."""

    transcripts: list[str] = field(default_factory=list)
    ngram_words: int = DEV_NGRAM_WORDS

    def __post_init__(self) -> None:
        self._ngrams: set[tuple[str, ...]] = set()
        for t in self.transcripts:
            self._ngrams |= word_ngrams(t.split(), self.ngram_words)
        self._joined = " | ".join(" " + t + " " for t in self.transcripts)

    @classmethod
    def from_manifests(cls, paths: Iterable[Path]) -> DevFilter:
        transcripts = []
        for path in paths:
            with open(path, newline="", encoding="utf-8") as f:
                for row in csv.DictReader(f, delimiter="\t"):
                    transcripts.append(normalize_text(row["transcript"]))
        return cls(transcripts)

    def overlaps(self, sentence: str) -> bool:
        if " " + sentence + " " in self._joined:
            return True
        return bool(word_ngrams(sentence.split(), self.ngram_words) & self._ngrams)


def is_heldout_text(sentence: str, heldout_text_fraction: float) -> bool:
    digest = hashlib.sha1(sentence.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < heldout_text_fraction


@dataclass
class CorpusStats:
    paragraphs: int = 0
    raw_sentences: int = 0
    rejected_raw: int = 0
    rejected_length: int = 0
    rejected_vocabulary: int = 0
    rejected_dev_overlap: int = 0
    duplicates: int = 0
    kept: int = 0


def build_sentences(
    paragraphs: Iterable[str],
    *,
    vocabulary: frozenset[str] | None,
    dev_filter: DevFilter | None,
    stats: CorpusStats | None = None,
) -> list[str]:
    """Normalised, de-duplicated sentences in first-seen order."""
    stats = stats if stats is not None else CorpusStats()
    seen: set[str] = set()
    kept: list[str] = []
    for paragraph in paragraphs:
        stats.paragraphs += 1
        for raw in split_sentences(paragraph):
            stats.raw_sentences += 1
            if not is_clean_raw_sentence(raw):
                stats.rejected_raw += 1
                continue
            sentence = normalize_text(raw)
            n_words = len(sentence.split())
            if not MIN_WORDS <= n_words <= MAX_WORDS:
                stats.rejected_length += 1
                continue
            if vocabulary is not None and not all(_in_vocabulary(w, vocabulary) for w in sentence.split()):
                stats.rejected_vocabulary += 1
                continue
            if dev_filter is not None and dev_filter.overlaps(sentence):
                stats.rejected_dev_overlap += 1
                continue
            if sentence in seen:
                stats.duplicates += 1
                continue
            seen.add(sentence)
            kept.append(sentence)
    stats.kept = len(kept)
    return kept


SOURCES = ("fortunes", "wordnet")


def default_paragraphs(text_files: Iterable[Path] = (), sources: Sequence[str] = SOURCES) -> Iterator[str]:
    unknown = set(sources) - set(SOURCES)
    if unknown:
        raise ValueError(f"unknown text source(s) {sorted(unknown)}; choose from {SOURCES}")
    if "fortunes" in sources:
        for path in fortune_files():
            yield from fortune_paragraphs(path)
    if "wordnet" in sources:
        yield from wordnet_examples()
    for path in text_files:
        yield from text_file_paragraphs(path)


def build_corpus(
    *,
    text_files: Iterable[Path] = (),
    dev_manifests: Iterable[Path] = (),
    heldout_text_fraction: float = 0.05,
    sources: Sequence[str] = SOURCES,
    use_wordlist: bool = True,
    stats: CorpusStats | None = None,
) -> tuple[list[str], list[str]]:
    """(train sentences, held-out sentences); disjoint, dev overlap removed."""
    if not 0.0 <= heldout_text_fraction < 1.0:
        raise ValueError(f"heldout_text_fraction must be in [0, 1), got {heldout_text_fraction}")
    dev_paths = [Path(p) for p in dev_manifests]
    for p in dev_paths:
        if not p.is_file():
            raise ValueError(f"dev manifest not found: {p}")
    sentences = build_sentences(
        default_paragraphs([Path(p) for p in text_files], sources),
        vocabulary=load_wordlist() if use_wordlist else None,
        dev_filter=DevFilter.from_manifests(dev_paths) if dev_paths else None,
        stats=stats,
    )
    if not sentences:
        raise ValueError(
            "no sentences: install the Debian packages fortunes and wordnet-base (scripts/install.sh) "
            "or pass --text-file"
        )
    train = [s for s in sentences if not is_heldout_text(s, heldout_text_fraction)]
    heldout = [s for s in sentences if is_heldout_text(s, heldout_text_fraction)]
    return train, heldout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for train.txt / heldout.txt")
    parser.add_argument("--text-file", type=Path, action="append", default=[], help="extra plain-text source")
    parser.add_argument("--dev", type=Path, action="append", default=None,
                        help=f"evaluation manifest(s) whose text is kept out (default {DEFAULT_DEV_TSV})")
    parser.add_argument("--heldout-text-fraction", type=float, default=0.05)
    parser.add_argument("--sources", default=",".join(SOURCES),
                        help="comma-separated built-in sources (fortunes, wordnet; empty for none)")
    args = parser.parse_args(argv)
    dev = args.dev if args.dev is not None else ([DEFAULT_DEV_TSV] if DEFAULT_DEV_TSV.is_file() else [])
    stats = CorpusStats()
    try:
        train, heldout = build_corpus(text_files=args.text_file, dev_manifests=dev,
                                      heldout_text_fraction=args.heldout_text_fraction, stats=stats,
                                      sources=[x for x in args.sources.split(",") if x])
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    for name, sentences in (("train.txt", train), ("heldout.txt", heldout)):
        tmp = args.out / (name + ".tmp")
        tmp.write_text("".join(s + "\n" for s in sentences), encoding="utf-8")
        tmp.replace(args.out / name)
    n_words = sum(len(s.split()) for s in train + heldout)
    print(f"{len(train)} train + {len(heldout)} held-out sentences ({n_words} words) -> {args.out}")
    print(f"stats: {stats}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
