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
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path

from streamcli.errors import StreamcliError
from streamcli.results import Segment

FORMATS = ("txt", "json", "srt", "vtt")  # whole documents (transcribe)
LIVE_FORMATS = ("txt", "jsonl", "srt", "vtt")  # appended a segment at a time (live -o)


def pick_format(fmt: str | None, output: Path | None, allowed: Sequence[str] = FORMATS) -> str:
    """The one extension-to-format rule: ``--format`` if given, else the output's extension.

    No output (or a folder) means txt. An extension that is not a format is refused rather than
    guessed, so ``-o talk.wav`` never overwrites audio with text; ``--format`` writes any name.
    """
    if fmt is None:
        suffix = output.suffix.lstrip(".").lower() if output is not None and not output.is_dir() else ""
        if suffix and suffix not in allowed:
            raise ValueError(
                f"-o {output}: .{suffix} is not an output format ({', '.join(allowed)}); name the file "
                "with one of those extensions, or give --format to write that name anyway"
            )
        fmt = suffix or "txt"
    fmt = fmt.lower()
    if fmt not in allowed:
        raise ValueError(f"--format must be one of {', '.join(allowed)}, got {fmt!r}")
    return fmt


def safe_text(text: str) -> str:
    """Printable text for any name: bytes of a non-UTF-8 file name (surrogate escapes) become U+FFFD."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def transcript_text(segments: Sequence[Segment]) -> str:
    return " ".join(s.text.strip() for s in segments if s.text.strip())


def segment_record(s: Segment) -> dict:
    return {"start": _ms(s.start), "end": _ms(s.end), "text": s.text.strip()}


def word_records(s: Segment) -> list[dict]:
    return [{"word": w.word, "start": _ms(w.start), "end": _ms(w.end)} for w in s.words]


def token_records(s: Segment) -> list[dict]:
    return [{"token": t.text, "start": _ms(t.start)} for t in s.tokens]


def to_dict(segments: Sequence[Segment], file: str) -> dict:
    """The JSON document (see module docstring) as a plain dict."""
    return {
        "file": file,
        "text": transcript_text(segments),
        "segments": [segment_record(s) for s in segments],
        "words": [w for s in segments for w in word_records(s)],
        "tokens": [t for s in segments for t in token_records(s)],
    }


def format_txt(segments: Sequence[Segment]) -> str:
    """One finalized segment per line."""
    return "".join(s.text.strip() + "\n" for s in segments if s.text.strip())


def format_json(segments: Sequence[Segment], file: str) -> str:
    return json.dumps(to_dict(segments, file), ensure_ascii=False, indent=2) + "\n"


def timestamp(seconds: float, *, digits: int = 3, decimal: str = ".", always_hours: bool = True) -> str:
    """The one clock: ``HH:MM:SS.mmm`` with ``digits`` decimals; negative times clamp to 0.

    SRT: ``decimal=","``; terminal lines: ``digits=2, always_hours=False`` gives ``MM:SS.ss``, and
    ``H:MM:SS.ss`` from one hour on.
    """
    unit = 10**digits
    total = max(0, round(seconds * unit))
    hours, rest = divmod(total, 3600 * unit)
    minutes, rest = divmod(rest, 60 * unit)
    secs, fraction = divmod(rest, unit)
    head = f"{hours:02d}:" if always_hours else (f"{hours}:" if hours else "")
    tail = f"{decimal}{fraction:0{digits}d}" if digits else ""
    return f"{head}{minutes:02d}:{secs:02d}{tail}"


VTT_HEADER = "WEBVTT\n\n"


def srt_cue(index: int, seg: Segment) -> str:
    """One numbered SRT cue with its blank separator line (players reject zero-length cues)."""
    end = max(seg.end, seg.start + 0.001)
    span = f"{timestamp(seg.start, decimal=',')} --> {timestamp(end, decimal=',')}"
    return f"{index}\n{span}\n{seg.text.strip()}\n\n"


def vtt_cue(seg: Segment) -> str:
    end = max(seg.end, seg.start + 0.001)
    return f"{timestamp(seg.start)} --> {timestamp(end)}\n{seg.text.strip()}\n\n"


def _cues(segments: Sequence[Segment]) -> list[Segment]:
    # Empty segments carry nothing to show.
    return [s for s in segments if s.text.strip()]


def format_srt(segments: Sequence[Segment]) -> str:
    return "".join(srt_cue(i, seg) for i, seg in enumerate(_cues(segments), start=1))


def format_vtt(segments: Sequence[Segment]) -> str:
    return VTT_HEADER + "".join(vtt_cue(seg) for seg in _cues(segments))


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


def _temp_prefix(target: Path, pid: int | None = None) -> str:
    """Our temp files are ``.NAME.PID.XXXX.tmp``: the PID tells a live writer from a dead one."""
    return f".{target.name}.{os.getpid() if pid is None else pid}."


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_temp_files(target: Path) -> list[Path]:
    """Deletes temp files a killed streamcli left for ``target`` (our naming, writer process gone)."""
    directory = target.parent if str(target.parent) else Path(".")
    removed = []
    try:
        candidates = list(directory.glob(f".{glob_escape(target.name)}.*.tmp"))
    except OSError:
        return removed
    for path in candidates:
        parts = path.name[len(target.name) + 2 : -len(".tmp")].split(".")
        if len(parts) != 2 or not parts[0].isdigit() or path.is_symlink() or not path.is_file():
            continue
        pid = int(parts[0])
        if pid != os.getpid() and not pid_alive(pid):
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    return removed


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _new_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


class AtomicWriter:
    """Text written to a hidden temp file beside ``path``, moved into place by :meth:`commit`.

    The result keeps the mode (and, where allowed, the owner) of the file it replaces, so a
    ``chmod 600`` transcript stays private; a new file gets 0666 minus the umask. A link at ``path``
    is replaced, never written through. :meth:`abort` (or an exception inside ``with``) deletes the
    temp file and leaves any existing output untouched."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.target = Path(path)
        directory = self.target.parent if str(self.target.parent) else Path(".")
        sweep_stale_temp_files(self.target)
        fd, self._tmp_name = tempfile.mkstemp(prefix=_temp_prefix(self.target), suffix=".tmp", dir=directory)
        self.handle = os.fdopen(fd, "w", encoding="utf-8", newline="\n")
        self._done = False

    def write(self, text: str) -> None:
        self.handle.write(text)

    def commit(self) -> Path:
        try:
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.handle.close()
            try:
                old = os.lstat(self.target)
            except FileNotFoundError:
                old = None
            if old is not None and stat.S_ISREG(old.st_mode):
                os.chmod(self._tmp_name, stat.S_IMODE(old.st_mode))
                with contextlib.suppress(OSError):
                    os.chown(self._tmp_name, old.st_uid, old.st_gid)
            else:
                os.chmod(self._tmp_name, _new_file_mode())
            os.replace(self._tmp_name, self.target)
        except BaseException:
            self.abort()
            raise
        self._done = True
        return self.target

    def abort(self) -> None:
        if not self._done:
            with contextlib.suppress(OSError):
                self.handle.close()
            with contextlib.suppress(OSError):
                os.unlink(self._tmp_name)
            self._done = True

    def __enter__(self) -> AtomicWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def write_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Writes ``text`` (UTF-8) to ``path`` atomically (see :class:`AtomicWriter`)."""
    with AtomicWriter(path) as writer:
        writer.write(text)
    return writer.target


def _ms(seconds: float) -> float:
    return round(float(seconds), 3)


class DocumentWriter:
    """A whole-file transcript written segment by segment, so memory stays flat however long the input.

    txt/srt/vtt go straight into the atomic temp file. json needs its arrays one after the other, so
    words, tokens and the joined text are spooled to anonymous temp files and copied in at
    :meth:`commit`; the result is the same document :func:`render` gives (``json.loads`` equal).
    """

    def __init__(self, path: str | os.PathLike[str], fmt: str, file: str = "") -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
        self.fmt = fmt
        self._out = AtomicWriter(path)
        self._count = 0
        self._spools: dict[str, object] = {}
        self._counts = {"words": 0, "tokens": 0, "text": 0}
        if fmt == "json":
            directory = self._out.target.parent if str(self._out.target.parent) else Path(".")
            for key in ("words", "tokens", "text"):
                # Closed by commit()/abort(); anonymous, so nothing is left if the process dies.
                self._spools[key] = tempfile.TemporaryFile("w+", encoding="utf-8", dir=directory)  # noqa: SIM115
            self._out.write('{\n  "file": ' + json.dumps(file, ensure_ascii=False) + ',\n  "segments": [')
        elif fmt == "vtt":
            self._out.write(VTT_HEADER)

    def _spool(self, key: str, records: list) -> None:
        spool = self._spools[key]
        for record in records:
            sep = ",\n    " if self._counts[key] else "\n    "
            spool.write(sep + json.dumps(record, ensure_ascii=False))
            self._counts[key] += 1

    def add(self, seg: Segment) -> None:
        text = seg.text.strip()
        if not text and self.fmt != "json":
            return  # an empty segment has no line or cue; JSON keeps it, as render() does
        self._count += 1
        if self.fmt == "txt":
            self._out.write(text + "\n")
        elif self.fmt == "srt":
            self._out.write(srt_cue(self._count, seg))
        elif self.fmt == "vtt":
            self._out.write(vtt_cue(seg))
        else:
            sep = ",\n    " if self._count > 1 else "\n    "
            self._out.write(sep + json.dumps(segment_record(seg), ensure_ascii=False))
            self._spool("words", word_records(seg))
            self._spool("tokens", token_records(seg))
            if text:
                piece = json.dumps(text, ensure_ascii=False)[1:-1]
                self._spools["text"].write((" " if self._counts["text"] else "") + piece)
                self._counts["text"] += 1

    def _copy(self, key: str) -> None:
        spool = self._spools[key]
        spool.seek(0)
        while block := spool.read(1 << 16):
            self._out.write(block)

    def commit(self) -> Path:
        if self.fmt == "json":
            self._out.write("\n  ]," if self._count else "],")
            for key in ("words", "tokens"):
                self._out.write(f'\n  "{key}": [')
                self._copy(key)
                self._out.write("\n  ]," if self._counts[key] else "],")
            self._out.write('\n  "text": "')
            self._copy("text")
            self._out.write('"\n}\n')
        self._close_spools()
        return self._out.commit()

    def abort(self) -> None:
        self._close_spools()
        self._out.abort()

    def _close_spools(self) -> None:
        for spool in self._spools.values():
            with contextlib.suppress(OSError):
                spool.close()


class SegmentWriter:
    """Appends each finalized segment to a file and forces it to disk, so a crash loses at most the
    partial text. An existing file is continued, never emptied: a new session's segments follow the
    old ones (srt numbering goes on from the last cue, vtt gets its header only in a new file, a
    line cut short by a crash is closed first so every record stays on its own line).
    """

    def __init__(self, path: str | Path, fmt: str) -> None:
        if fmt not in LIVE_FORMATS:
            raise ValueError(f"unknown live output format {fmt!r}; choose one of {', '.join(LIVE_FORMATS)}")
        self.path = Path(path)
        self.fmt = fmt
        self.count = 0
        if self.path.is_dir():
            raise ValueError(f"output path {self.path} is a directory")
        previous = ""
        if self.path.is_file():
            try:
                with open(self.path, "rb") as old:
                    old.seek(0, os.SEEK_END)
                    size = old.tell()
                    old.seek(max(0, size - 65536))
                    previous = old.read().decode("utf-8", "replace")
            except OSError as exc:
                raise ValueError(f"cannot read output file {self.path}: {exc.strerror}") from None
        self._cue_base = _last_srt_cue(previous) if fmt == "srt" else 0
        try:
            self._handle = open(self.path, "a", encoding="utf-8", newline="\n")  # noqa: SIM115
        except OSError as exc:
            raise ValueError(f"cannot write output file {self.path}: {exc.strerror}") from None
        if previous and not previous.endswith("\n"):
            self._write("\n")
        if fmt == "vtt" and not previous:
            self._write(VTT_HEADER)
        elif fmt in ("srt", "vtt") and previous and not previous.endswith("\n\n"):
            self._write("\n")

    def _write(self, text: str) -> None:
        try:
            self._handle.write(text)
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except OSError as exc:
            raise StreamcliError(f"cannot write {self.path}: {exc.strerror or exc}; the segments before "
                                 "were kept") from None

    def write(self, segment: Segment) -> None:
        text = segment.text.strip()
        if not text:
            return
        self.count += 1
        if self.fmt == "txt":
            chunk = text + "\n"
        elif self.fmt == "jsonl":
            record = {**segment_record(segment), "words": word_records(segment),
                      "tokens": token_records(segment)}
            chunk = json.dumps(record, ensure_ascii=False) + "\n"
        elif self.fmt == "srt":
            chunk = srt_cue(self._cue_base + self.count, segment)
        else:
            chunk = vtt_cue(segment)
        self._write(chunk)

    def close(self) -> None:
        if not self._handle.closed:
            # A write that failed was reported already; what it left in the buffer cannot go anywhere.
            with contextlib.suppress(OSError):
                self._handle.close()


def _last_srt_cue(text: str) -> int:
    """The number of the last cue in the tail of an SRT file (0 when there is none)."""
    lines = text.splitlines()
    for i in range(len(lines) - 2, -1, -1):
        if lines[i].strip().isdigit() and "-->" in lines[i + 1]:
            return int(lines[i].strip())
    return 0
