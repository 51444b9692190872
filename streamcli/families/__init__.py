"""Model families and the factory: ``{model_type: family}`` and :func:`create_recognizer`.

A model folder (the one rule: :func:`streamcli.registry.is_model_folder`, tokens.txt and
encoder*.onnx) names its family in the encoder's ONNX metadata (``model_type``). Options that a
family cannot honour are refused here, in one line, before any session is created.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamcli import registry
from streamcli.errors import ModelError
from streamcli.finals import SecondPass
from streamcli.providers import read_onnx_metadata
from streamcli.recognizer import Recognizer, RecognizerConfig


@dataclass(frozen=True)
class Family:
    """One model family: where its class lives and which per-family options it takes."""

    module: str
    class_name: str
    beam_search: bool  # --beam (modified beam search) applies
    window: bool  # --window/--overlap apply (a zipformer's chunk is fixed at export)
    any_length: bool  # the encoder takes any number of frames (bench's full-context baseline)
    word_times: bool  # CTC word times: a Whisper second pass can be attached (and aligned)
    sherpa_peer: bool  # sherpa-onnx runs the same model (bench --peer)

    def load(self) -> type[Recognizer]:
        return getattr(importlib.import_module(self.module), self.class_name)


FAMILIES: dict[str, Family] = {
    "zipformer": Family("streamcli.families.zipformer", "ZipformerTransducer", beam_search=True,
                        window=False, any_length=False, word_times=False, sherpa_peer=True),
    "zipformer2": Family("streamcli.families.zipformer", "ZipformerTransducer", beam_search=True,
                         window=False, any_length=False, word_times=False, sherpa_peer=True),
    "wctc": Family("streamcli.families.wctc", "WctcRecognizer", beam_search=False, window=True,
                   any_length=True, word_times=True, sherpa_peer=False),
}


# ModelInfo.family as each family's recognizer names it -> its capability table.
_BY_INFO_FAMILY = {"zipformer-transducer": FAMILIES["zipformer"], "wctc": FAMILIES["wctc"]}


def family_of(name: str) -> Family:
    """The capability table of a family: a model_type, or a loaded model's ``ModelInfo.family``."""
    try:
        return FAMILIES.get(name) or _BY_INFO_FAMILY[name]
    except KeyError:
        supported = ", ".join(FAMILIES)
        raise ModelError(f"unsupported model family {name!r} (supported: {supported})") from None



def detect_family(folder: Path) -> tuple[str, dict[str, str]]:
    """(model_type, encoder metadata) of a model folder."""
    encoders = sorted(Path(folder).glob(registry.ENCODER_GLOB))
    if not encoders:
        raise ModelError(f"{folder}: no encoder*.onnx (a model folder holds encoder*.onnx and tokens.txt)")
    meta = read_onnx_metadata(encoders[0])
    model_type = meta.get("model_type", "")
    if not model_type:
        raise ModelError(f"{encoders[0]}: no model_type in the ONNX metadata; cannot tell the model family")
    return model_type, meta


def check_options(family: Family, config: RecognizerConfig, meta: dict[str, str]) -> None:
    """ValueError (one line) for an option this family cannot honour."""
    if config.search != "greedy" and not family.beam_search:
        raise ValueError(
            "this model decodes with CTC greedy search only: --beam is for transducer models (leave it out)"
        )
    if not family.window and (config.window_frames is not None or config.overlap_frames is not None):
        raise ValueError(
            "--window/--overlap apply to wctc models; a zipformer's chunk is fixed at export "
            f"(this one: {meta.get('decode_chunk_len', '?')} frames)"
        )


def create_recognizer(config: RecognizerConfig | None = None, **overrides: Any) -> Recognizer:
    """The recognizer for ``config.model``'s family (a folder, a registry name, None = shipped default)."""
    if config is None:
        config = RecognizerConfig(**overrides)
    elif overrides:
        raise ValueError("pass either a RecognizerConfig or keyword overrides, not both")
    config.validate()
    folder = registry.resolve_model(config.model)
    model_type, meta = detect_family(folder)
    family = FAMILIES.get(model_type)
    if family is None:
        raise ModelError(
            f"{folder}: unsupported model_type {model_type!r} (supported: {', '.join(FAMILIES)})"
        )
    check_options(family, config, meta)
    recognizer = family.load()(config, folder, meta)
    second = meta.get("second_pass")
    if config.rescore and not second:
        raise ValueError(f"{folder.name} has no second pass (--rescore needs a two-pass model)")
    if second and config.rescore is not False:
        recognizer.attach_second_pass(create_second_pass(second, folder, config, recognizer))
    return recognizer


def create_second_pass(
    name: str, folder: Path, config: RecognizerConfig, first_pass: Recognizer
) -> SecondPass:
    """The second pass a model's metadata names (``second_pass``), for that first pass."""
    if name != "whisper-tiny.en":
        raise ModelError(f"{folder}: unknown second pass {name!r}")
    if not family_of(first_pass.info.family).word_times:
        raise ModelError(f"{folder}: a {name} second pass needs a wctc first pass (its CTC word times)")
    from streamcli.whisper.finals import WhisperFinals  # noqa: PLC0415 (two-pass models only)

    info = first_pass.info
    return WhisperFinals(first_pass.tokens, info.subsampling * info.frame_shift_ms / 1000.0,
                         config.device, config.threads, frames=config.second_pass_frames,
                         precision=config.second_pass_precision)
