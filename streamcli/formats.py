"""Transcript writers (txt, json, srt, vtt) and atomic file writing.

JSON schema (one object per input file)::

    {
      "file": "talk.wav",                        # the input as given ("-" for stdin)
      "text": "full transcript",                 # segment texts joined by spaces
      "segments": [{"start": 0.0, "end": 2.5, "text": "..."}],
      "words":    [{"word": "hello", "start": 0.32, "end": 0.61}],
      "tokens":   [{"token": "▁HE", "start": 0.32}]
    }

Times are seconds (float, rounded to milliseconds). Files are written to a temporary file in the same
directory and moved into place with ``os.replace``, so a crash or a bad input never leaves half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from streamcli.results import Segment

FORMATS = ("txt", "json", "srt", "vtt")


def transcript_text(segments: Sequence[Segment]) -> str:
    return " ".join(s.text.strip() for s in segments if s.text.strip())


def to_dict(segments: Sequence[Segment], file: str) -> dict:
    """The JSON document (see module docstring) as a plain dict."""
    return {
        "file": file,
        "text": transcript_text(segments),
        "segments": [{"start": _ms(s.start), "end": _ms(s.end), "text": s.text.strip()} for s in segments],
        "words": [
            {"word": w.word, "start": _ms(w.start), "end": _ms(w.end)} for s in segments for w in s.words
        ],
        "tokens": [{"token": t.text, "start": _ms(t.start)} for s in segments for t in s.tokens],
    }


def format_txt(segments: Sequence[Segment]) -> str:
    """One finalized segment per line."""
    return "".join(s.text.strip() + "\n" for s in segments if s.text.strip())


def format_json(segments: Sequence[Segment], file: str) -> str:
    return json.dumps(to_dict(segments, file), ensure_ascii=False, indent=2) + "\n"


def timestamp(seconds: float, *, decimal: str = ".", always_hours: bool = True) -> str:
    """``HH:MM:SS.mmm`` (``,`` as decimal mark for SRT); negative times clamp to 0."""
    total_ms = max(0, round(seconds * 1000))
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    head = f"{hours:02d}:" if always_hours or hours else ""
    return f"{head}{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def _cues(segments: Sequence[Segment]) -> list[Segment]:
    # Subtitle players reject zero-length cues; empty segments carry nothing to show.
    return [s for s in segments if s.text.strip()]


def format_srt(segments: Sequence[Segment]) -> str:
    blocks = []
    for index, seg in enumerate(_cues(segments), start=1):
        end = max(seg.end, seg.start + 0.001)
        blocks.append(
            f"{index}\n{timestamp(seg.start, decimal=',')} --> {timestamp(end, decimal=',')}\n"
            f"{seg.text.strip()}\n"
        )
    return "\n".join(blocks)


def format_vtt(segments: Sequence[Segment]) -> str:
    lines = ["WEBVTT", ""]
    for seg in _cues(segments):
        end = max(seg.end, seg.start + 0.001)
        lines += [f"{timestamp(seg.start)} --> {timestamp(end)}", seg.text.strip(), ""]
    return "\n".join(lines)


def render(segments: Sequence[Segment], fmt: str, *, file: str = "") -> str:
    """The whole transcript in ``fmt`` (one of FORMATS)."""
    if fmt == "txt":
        return format_txt(segments)
    if fmt == "json":
        return format_json(segments, file)
    if fmt == "srt":
        return format_srt(segments)
    if fmt == "vtt":
        return format_vtt(segments)
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def write_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Writes ``text`` (UTF-8) to ``path`` via a temporary file in the same directory + os.replace."""
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600; give the result the usual permissions (umask applied).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    return target


def _ms(seconds: float) -> float:
    return round(float(seconds), 3)
