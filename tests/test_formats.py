"""Transcript writers and atomic writes."""

from __future__ import annotations

import json
import os
import re

import pytest

from streamcli.formats import FORMATS, render, timestamp, to_dict, write_atomic
from streamcli.results import Segment, Token, Word

SEGMENTS = [
    Segment(
        0.32,
        1.5,
        "HELLO WORLD",
        words=[Word("HELLO", 0.32, 0.8), Word("WORLD", 0.84, 1.5)],
        tokens=[Token("▁HELL", 0.32, 10), Token("O", 0.6, 11), Token("▁WORLD", 0.84, 12)],
    ),
    Segment(2.0, 2.0, "", words=[], tokens=[]),  # an endpoint in silence: nothing to show
    Segment(
        3661.0456,
        3662.9,
        "ÜBER ALLES",
        words=[Word("ÜBER", 3661.05, 3661.5), Word("ALLES", 3661.6, 3662.9)],
        tokens=[Token("▁ÜBER", 3661.05, 3), Token("▁ALLES", 3661.6, 4)],
    ),
]

SRT_TIME = r"\d{2}:\d{2}:\d{2},\d{3}"
VTT_TIME = r"\d{2}:\d{2}:\d{2}\.\d{3}"


def test_timestamp():
    assert timestamp(0) == "00:00:00.000"
    assert timestamp(3661.0456, decimal=",") == "01:01:01,046"
    assert timestamp(59.9996) == "00:01:00.000"
    assert timestamp(-0.2) == "00:00:00.000"


def test_json_schema_round_trip():
    doc = json.loads(render(SEGMENTS, "json", file="talk.wav"))
    assert set(doc) == {"file", "text", "segments", "words", "tokens"}
    assert doc["file"] == "talk.wav"
    assert doc["text"] == "HELLO WORLD ÜBER ALLES"
    assert doc["segments"][0] == {"start": 0.32, "end": 1.5, "text": "HELLO WORLD"}
    assert doc["segments"][2]["start"] == 3661.046
    assert doc["words"][1] == {"word": "WORLD", "start": 0.84, "end": 1.5}
    assert doc["tokens"][0] == {"token": "▁HELL", "start": 0.32}
    assert len(doc["tokens"]) == 5 and len(doc["words"]) == 4
    assert to_dict([], "x")["segments"] == [] and to_dict([], "x")["text"] == ""


def test_txt_has_one_line_per_non_empty_segment():
    assert render(SEGMENTS, "txt") == "HELLO WORLD\nÜBER ALLES\n"
    assert render([], "txt") == ""


def test_srt_is_well_formed():
    text = render(SEGMENTS, "srt")
    blocks = text.strip().split("\n\n")
    assert len(blocks) == 2
    for number, block in enumerate(blocks, start=1):
        lines = block.split("\n")
        assert lines[0] == str(number)
        assert re.fullmatch(rf"{SRT_TIME} --> {SRT_TIME}", lines[1])
        assert lines[2]
    assert "01:01:01,046 --> 01:01:02,900" in text


def test_vtt_is_well_formed():
    text = render(SEGMENTS, "vtt")
    assert text.startswith("WEBVTT\n\n")
    cues = re.findall(rf"^({VTT_TIME}) --> ({VTT_TIME})\n(.+)$", text, flags=re.MULTILINE)
    assert [c[2] for c in cues] == ["HELLO WORLD", "ÜBER ALLES"]
    assert cues[0][:2] == ("00:00:00.320", "00:00:01.500")


def test_zero_length_cue_gets_a_positive_duration():
    text = render([Segment(1.0, 1.0, "HI")], "srt")
    assert "00:00:01,000 --> 00:00:01,001" in text


def test_unknown_format():
    with pytest.raises(ValueError, match="unknown format 'docx'"):
        render(SEGMENTS, "docx")
    assert FORMATS == ("txt", "json", "srt", "vtt")


def test_write_atomic_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    write_atomic(target, "new ü\n")
    assert target.read_text(encoding="utf-8") == "new ü\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    assert (target.stat().st_mode & 0o777) == (0o666 & ~_umask())


def test_write_atomic_failure_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "out.txt"
    target.write_text("finished earlier")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, "half")
    assert target.read_text() == "finished earlier"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
