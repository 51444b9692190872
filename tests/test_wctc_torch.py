"""Torch windowed-CTC model: streaming with caches equals the full-sequence block-masked reference."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from streamcli_tools.train.wctc_torch import (  # noqa: E402
    WctcConfig,
    WctcModel,
    block_mask,
    char_tokens,
    check_window,
    load_checkpoint,
    save_checkpoint,
)

TINY = WctcConfig(
    d_model=32, num_layers=2, num_heads=2, ff_dim=64, conv_kernel=5, max_rel_distance=6, vocab_size=55
)


@pytest.fixture(scope="module")
def model() -> WctcModel:
    torch.manual_seed(0)
    m = WctcModel(TINY).eval()
    # Non-trivial relative biases and feature normalisation so both paths really use them.
    for layer in m.layers:
        layer.attn.rel_bias.data.normal_(0.0, 1.0)
    m.feat_mean.normal_()
    m.feat_inv_std.uniform_(0.5, 1.5)
    return m


# (W, O, T): O = 0, hop < O, hop > O, a ragged last chunk (T not a multiple of the hop), windows wider
# than the relative-position clip (6 encoder frames = 30 feature frames).
CASES = [(50, 0, 235), (50, 25, 260), (100, 25, 455), (40, 35, 130), (200, 100, 505), (25, 20, 95)]


@pytest.mark.parametrize(("window", "overlap", "frames"), CASES)
def test_streaming_equals_full_masked_reference(model, window, overlap, frames):
    torch.manual_seed(window + overlap)
    x = torch.randn(2, frames, 80) * 3.0
    with torch.no_grad():
        full = model.forward_full(x, window, overlap)
        streamed = model.stream(x, window, overlap)
    assert streamed.shape == full.shape == (2, frames // 5, TINY.vocab_size)
    assert (streamed - full).abs().max().item() <= 1e-4


def test_reference_depends_on_window(model):
    """Different W/O give different outputs: the mask really limits the context."""
    x = torch.randn(1, 400, 80)
    with torch.no_grad():
        a = model.forward_full(x, 100, 25)
        b = model.forward_full(x, 100, 0)
        c = model.forward_full(x, 400, 0)
    assert (a - b).abs().max().item() > 1e-3
    assert (a - c).abs().max().item() > 1e-3


def test_no_output_depends_on_frames_after_its_chunk(model):
    window, overlap = 100, 25
    hop = window - overlap
    x = torch.randn(1, 450, 80)
    y = x.clone()
    y[:, 2 * hop :] = torch.randn(1, 450 - 2 * hop, 80)  # change everything from chunk 2 on
    with torch.no_grad():
        a = model.stream(x, window, overlap)
        b = model.stream(y, window, overlap)
    first_two_chunks = 2 * hop // 5
    assert torch.equal(a[:, :first_two_chunks], b[:, :first_two_chunks])
    assert (a[:, first_two_chunks:] - b[:, first_two_chunks:]).abs().max().item() > 1e-3


def test_block_mask_shape_of_windows():
    mask = block_mask(10, hop=3, overlap=2)
    # frame 4 is in chunk 1 (frames 3..5): sees 1..5
    assert mask[4].nonzero().flatten().tolist() == [1, 2, 3, 4, 5]
    # frame 0 at the stream start: its chunk only
    assert mask[0].nonzero().flatten().tolist() == [0, 1, 2]
    # last chunk is partial (9): sees 7, 8, 9
    assert mask[9].nonzero().flatten().tolist() == [7, 8, 9]


def test_cache_shapes_and_valid_count(model):
    cache = model.initial_cache(3, 25)
    assert cache["cache_key"].shape == (3, TINY.num_layers, 5, TINY.d_model)
    assert cache["cache_conv"].shape == (3, TINY.num_layers, TINY.d_model, TINY.conv_kernel - 1)
    with torch.no_grad():
        logits, k, v, c, valid = model.forward_chunk(torch.randn(3, 15, 80), **cache)
    assert logits.shape == (3, 3, TINY.vocab_size)
    assert k.shape == v.shape == cache["cache_key"].shape
    assert c.shape == cache["cache_conv"].shape
    assert valid.flatten().tolist() == [3.0, 3.0, 3.0]  # 3 new encoder frames, cache holds 5
    with torch.no_grad():
        *_, valid2 = model.forward_chunk(torch.randn(3, 15, 80), k, v, c, valid)
    assert valid2.flatten().tolist() == [5.0, 5.0, 5.0]  # capped at the cache length


@pytest.mark.parametrize(("window", "overlap"), [(52, 25), (50, 24), (50, 50), (50, 60), (0, 0), (50, -5)])
def test_bad_windows_are_value_errors(window, overlap):
    with pytest.raises(ValueError):
        check_window(window, overlap)


def test_checkpoint_roundtrip(model, tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(str(path), model, {"tokens": char_tokens()})
    loaded, ckpt = load_checkpoint(str(path))
    x = torch.randn(1, 100, 80)
    with torch.no_grad():
        assert torch.equal(loaded.eval().forward_full(x, 50, 25), model.forward_full(x, 50, 25))
    assert ckpt["tokens"] == char_tokens()


def test_char_tokens_layout():
    tokens = char_tokens()
    assert tokens[0] == "<blk>"
    assert len(tokens) == len(set(tokens)) == 55
    assert "\u2581a" in tokens and "a" in tokens and "'" in tokens
