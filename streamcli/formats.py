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

from streamcli.results import Segment

FORMATS = ("txt", "json", "srt", "vtt")


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


def timestamp(seconds: float, *, decimal: str = ".", always_hours: bool = True) -> str:
    """``HH:MM:SS.mmm`` (``,`` as decimal mark for SRT); negative times clamp to 0."""
    total_ms = max(0, round(seconds * 1000))
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    head = f"{hours:02d}:" if always_hours or hours else ""
    return f"{head}{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


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
