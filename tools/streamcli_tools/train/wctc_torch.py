"""Windowed-attention CTC encoder in torch: streaming forward with caches and its full-sequence reference.

Units. Input features are 10 ms fbank frames. The front-end stacks 5 consecutive feature frames into
one encoder frame (50 ms), so window_frames (W) and overlap_frames (O) are counted in feature frames
and must be multiples of 5; inside the model they become W/5 and O/5 encoder frames.

Streaming. Each call gets hop = W - O new feature frames. Every layer attends from each new frame to
the keys/values of the O/5 encoder frames before the chunk (taken from the cache, never recomputed)
and to all frames of the chunk itself, never to later frames. A causal depthwise convolution keeps its
own left context (kernel-1 frames) in a second cache. Positions are relative (a learned bias per head
and per distance, distance clipped to +-max_rel_distance), so nothing depends on the stream position.

Reference. `forward_full` runs the same layers on the whole sequence with the block mask: encoder frame
i of chunk c = i // hop' sees frames j with c*hop' - O' <= j < (c+1)*hop' (and j >= 0). Streaming
chunk by chunk with caches equals it up to float rounding (tests check <= 1e-4).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from streamcli.recognizer import validate_window
from streamcli.tokens import WORD_START

SUBSAMPLING = 5


def char_tokens() -> list[str]:
    """Token table of the shipped model: blank, characters, and each character in a word-initial form
    `▁x` (like sentencepiece pieces). No separate space token, so an utterance needs ~20% fewer CTC
    frames, which matters at 50 ms per encoder frame."""
    chars = ["'"] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
    return ["<blk>"] + chars + [WORD_START + c for c in chars]


@dataclass
class WctcConfig:
    feature_dim: int = 80
    d_model: int = 144
    num_layers: int = 6
    num_heads: int = 4
    ff_dim: int = 576
    conv_kernel: int = 15
    max_rel_distance: int = 64
    vocab_size: int = 30
    dropout: float = 0.1
    # CTC frames per 50 ms encoder frame: 2 gives 25 ms CTC frames, so fast speech (up to ~15
    # characters/s) leaves room for blanks between letters; the encoder itself stays at 50 ms.
    ctc_upsample: int = 1

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def block_mask(num_frames: int, hop: int, overlap: int, device: torch.device | None = None) -> torch.Tensor:
    """Boolean (T, T) mask in encoder frames: True where query i may attend to key j."""
    if hop <= 0 or overlap < 0:
        raise ValueError(f"need hop > 0 and overlap >= 0 encoder frames, got hop={hop}, overlap={overlap}")
    idx = torch.arange(num_frames, device=device)
    chunk_start = (idx // hop) * hop
    lo = (chunk_start - overlap).unsqueeze(1)
    hi = (chunk_start + hop).unsqueeze(1)
    j = idx.unsqueeze(0)
    return (j >= lo) & (j < hi)


class RelPosSelfAttention(nn.Module):
    """Multi-head attention with a learned per-head bias for each clipped relative distance."""

    def __init__(self, cfg: WctcConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.d_model // cfg.num_heads
        self.max_rel = cfg.max_rel_distance
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)
        self.rel_bias = nn.Parameter(torch.zeros(cfg.num_heads, 2 * cfg.max_rel_distance + 1))
        self.dropout = nn.Dropout(cfg.dropout)

    def _rel_bias(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
        dist = (q_pos.unsqueeze(1) - k_pos.unsqueeze(0)).clamp(-self.max_rel, self.max_rel) + self.max_rel
        return self.rel_bias[:, dist]  # (H, Tq, Tk)

    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        q_pos: torch.Tensor,
        k_pos: torch.Tensor,
        mask: torch.Tensor,
    ) -> torch.Tensor:
        """q (N, Tq, D), k/v (N, Tk, D), mask broadcastable to (N, 1, Tq, Tk), True = visible."""
        n, tq, d = q.shape
        tk = k.shape[1]
        h, hd = self.num_heads, self.head_dim
        qh = q.reshape(n, tq, h, hd).transpose(1, 2)
        kh = k.reshape(n, tk, h, hd).transpose(1, 2)
        vh = v.reshape(n, tk, h, hd).transpose(1, 2)
        scores = torch.matmul(qh, kh.transpose(2, 3)) * (1.0 / math.sqrt(hd))
        scores = scores + self._rel_bias(q_pos, k_pos).unsqueeze(0)
        # A large finite value instead of -inf: padded training rows whose chunk is all padding would
        # otherwise give NaN rows (0 * NaN later); exp(-1e9 - max) is exactly 0 in fp32 either way.
        scores = scores.masked_fill(~mask, -1e9)
        weights = self.dropout(torch.softmax(scores, dim=-1))
        ctx = torch.matmul(weights, vh).transpose(1, 2).reshape(n, tq, d)
        return self.out(ctx)


class CausalConvModule(nn.Module):
    """Pointwise GLU -> causal depthwise conv (left context cached) -> LayerNorm, SiLU -> pointwise."""

    def __init__(self, cfg: WctcConfig) -> None:
        super().__init__()
        self.kernel = cfg.conv_kernel
        self.pw_in = nn.Linear(cfg.d_model, 2 * cfg.d_model)
        self.depthwise = nn.Conv1d(cfg.d_model, cfg.d_model, cfg.conv_kernel, groups=cfg.d_model)
        self.norm = nn.LayerNorm(cfg.d_model)
        self.pw_out = nn.Linear(cfg.d_model, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, left: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, T, D); left (N, D, kernel-1) = the GLU outputs of the previous frames (zeros at start)."""
        y = nn.functional.glu(self.pw_in(x), dim=-1).transpose(1, 2)  # (N, D, T)
        y = torch.cat([left, y], dim=2)
        new_left = y[:, :, x.shape[1] :]  # the last kernel-1 columns (y holds kernel-1 + T)
        y = self.depthwise(y).transpose(1, 2)
        y = self.pw_out(nn.functional.silu(self.norm(y)))
        return self.dropout(y), new_left


class FeedForward(nn.Module):
    def __init__(self, cfg: WctcConfig) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(cfg.d_model)
        self.lin1 = nn.Linear(cfg.d_model, cfg.ff_dim)
        self.lin2 = nn.Linear(cfg.ff_dim, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.lin2(self.dropout(nn.functional.silu(self.lin1(self.norm(x))))))


class WctcLayer(nn.Module):
    """Conformer-style block: half FF, windowed MHSA, causal conv, half FF, final LayerNorm."""

    def __init__(self, cfg: WctcConfig) -> None:
        super().__init__()
        self.ff1 = FeedForward(cfg)
        self.attn_norm = nn.LayerNorm(cfg.d_model)
        self.attn = RelPosSelfAttention(cfg)
        self.conv_norm = nn.LayerNorm(cfg.d_model)
        self.conv = CausalConvModule(cfg)
        self.ff2 = FeedForward(cfg)
        self.final_norm = nn.LayerNorm(cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)
        self.d_model = cfg.d_model

    def forward_full(self, x: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        x = x + 0.5 * self.ff1(x)
        h = self.attn_norm(x)
        q, k, v = self.attn.qkv(h).chunk(3, dim=-1)
        x = x + self.dropout(self.attn.attend(q, k, v, pos, pos, mask))
        left = x.new_zeros(x.shape[0], self.d_model, self.conv.kernel - 1)
        c, _ = self.conv(self.conv_norm(x), left)
        x = x + c
        x = x + 0.5 * self.ff2(x)
        return self.final_norm(x)

    def forward_chunk(
        self,
        x: torch.Tensor,
        cache_key: torch.Tensor,
        cache_value: torch.Tensor,
        cache_conv: torch.Tensor,
        cache_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (N, T, D); cache_key/value (N, O', D); cache_conv (N, D, K-1); cache_mask (N, 1, 1, O'+T)."""
        overlap = cache_key.shape[1]
        t = x.shape[1]
        x = x + 0.5 * self.ff1(x)
        h = self.attn_norm(x)
        q, k, v = self.attn.qkv(h).chunk(3, dim=-1)
        k_all = torch.cat([cache_key, k], dim=1)
        v_all = torch.cat([cache_value, v], dim=1)
        # Window-local positions 0..O'+T-1 built from shapes (cumsum keeps them dynamic in ONNX).
        k_pos = torch.cumsum(torch.ones_like(k_all[0, :, 0], dtype=torch.long), dim=0) - 1
        q_pos = k_pos[overlap:]
        x = x + self.dropout(self.attn.attend(q, k_all, v_all, q_pos, k_pos, cache_mask))
        c, new_conv = self.conv(self.conv_norm(x), cache_conv)
        x = x + c
        x = x + 0.5 * self.ff2(x)
        # The newest O' frames' keys/values, which may reach back into the old cache when hop' < O'.
        new_key = k_all[:, t:]
        new_value = v_all[:, t:]
        return self.final_norm(x), new_key, new_value, new_conv


class WctcModel(nn.Module):
    """Feature normalization -> 5-frame stacking + MLP -> WctcLayer x L -> linear CTC head."""

    def __init__(self, cfg: WctcConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("feat_mean", torch.zeros(cfg.feature_dim))
        self.register_buffer("feat_inv_std", torch.ones(cfg.feature_dim))
        self.frontend = nn.Sequential(
            nn.Linear(cfg.feature_dim * SUBSAMPLING, cfg.d_model),
            nn.SiLU(),
            nn.Linear(cfg.d_model, cfg.d_model),
            nn.LayerNorm(cfg.d_model),
        )
        self.frontend_dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList([WctcLayer(cfg) for _ in range(cfg.num_layers)])
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size * cfg.ctc_upsample)

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        """(N, T', D) -> (N, T' * ctc_upsample, V): each encoder frame gives ctc_upsample CTC frames."""
        y = self.head(h)
        return y.reshape(y.shape[0], y.shape[1] * self.cfg.ctc_upsample, self.cfg.vocab_size)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, T, F) with T a multiple of 5 -> (N, T/5, D)."""
        n, t, f = x.shape
        x = (x - self.feat_mean) * self.feat_inv_std
        x = x.reshape(n, t // SUBSAMPLING, SUBSAMPLING * f)
        return self.frontend_dropout(self.frontend(x))

    def forward_full(
        self, x: torch.Tensor, window_frames: int, overlap_frames: int, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Reference: whole sequence (N, T, F), T a multiple of 5, block mask of W/O -> (N, T/5*u, V) logits.

        `lengths` (N,) in encoder frames hides the padding of shorter batch rows from the attention
        (training batches); streaming a row alone equals its unpadded reference.
        """
        hop, overlap = check_window(window_frames, overlap_frames)
        h = self._embed(x)
        t = h.shape[1]
        mask = block_mask(t, hop, overlap, device=x.device).unsqueeze(0).unsqueeze(0)
        if lengths is not None:
            key_ok = torch.arange(t, device=x.device).unsqueeze(0) < lengths.unsqueeze(1)
            mask = mask & key_ok[:, None, None, :]
        pos = torch.arange(t, device=x.device)
        for layer in self.layers:
            h = layer.forward_full(h, mask, pos)
        return self._logits(h)

    def initial_cache(self, batch: int, overlap_frames: int) -> dict[str, torch.Tensor]:
        """Zeros for a new stream; cache lengths in encoder frames = overlap_frames / 5."""
        if overlap_frames % SUBSAMPLING != 0 or overlap_frames < 0:
            raise ValueError(f"overlap_frames must be a non-negative multiple of 5, got {overlap_frames}")
        cfg = self.cfg
        o = overlap_frames // SUBSAMPLING
        p = next(self.parameters())
        return {
            "cache_key": p.new_zeros(batch, cfg.num_layers, o, cfg.d_model),
            "cache_value": p.new_zeros(batch, cfg.num_layers, o, cfg.d_model),
            "cache_conv": p.new_zeros(batch, cfg.num_layers, cfg.d_model, cfg.conv_kernel - 1),
            "cache_valid": p.new_zeros(batch, 1),
        }

    def forward_chunk(
        self,
        x: torch.Tensor,
        cache_key: torch.Tensor,
        cache_value: torch.Tensor,
        cache_conv: torch.Tensor,
        cache_valid: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One streaming step.

        x (N, T, F): the T new feature frames (T a multiple of 5; normally hop = W - O).
        cache_key / cache_value (N, L, O', D): per-layer keys/values of the last O' = O/5 encoder frames.
        cache_conv (N, L, D, K-1): per-layer left context of the causal depthwise convolution.
        cache_valid (N, 1): how many of the O' cached frames hold real frames (0 at stream start),
        as float so every cache has one dtype.
        Returns logits (N, T/5 * ctc_upsample, V) and the four new caches (same shapes).
        """
        h = self._embed(x)
        # Counts as (N, 1) float tensors derived from shapes so the ONNX graph keeps them dynamic.
        ones_cache = torch.ones_like(cache_key[:, 0, :, 0])  # (N, O')
        overlap_n = ones_cache.sum(dim=1, keepdim=True)
        chunk_n = torch.ones_like(h[:, :, 0]).sum(dim=1, keepdim=True)
        # Cached slot s (0..O'-1) is real when s >= O' - valid; the chunk's own frames are always real.
        slot = torch.cumsum(ones_cache, dim=1) - 1
        cache_ok = slot >= (overlap_n - cache_valid)
        chunk_ok = torch.ones_like(h[:, :, 0]) > 0
        mask = torch.cat([cache_ok, chunk_ok], dim=1).unsqueeze(1).unsqueeze(1)
        keys, values, convs = [], [], []
        for i, layer in enumerate(self.layers):
            h, k, v, c = layer.forward_chunk(h, cache_key[:, i], cache_value[:, i], cache_conv[:, i], mask)
            keys.append(k)
            values.append(v)
            convs.append(c)
        new_valid = torch.minimum(cache_valid + chunk_n, overlap_n)
        return (
            self._logits(h),
            torch.stack(keys, dim=1),
            torch.stack(values, dim=1),
            torch.stack(convs, dim=1),
            new_valid,
        )

    def stream(self, x: torch.Tensor, window_frames: int, overlap_frames: int) -> torch.Tensor:
        """Runs forward_chunk over (N, T, F) hop by hop (last chunk may be shorter) -> logits."""
        hop, _ = check_window(window_frames, overlap_frames)
        hop_frames = hop * SUBSAMPLING
        cache = self.initial_cache(x.shape[0], overlap_frames)
        outs = []
        for start in range(0, x.shape[1], hop_frames):
            logits, *new = self.forward_chunk(x[:, start : start + hop_frames], **cache)
            cache = dict(zip(cache.keys(), new, strict=True))
            outs.append(logits)
        return torch.cat(outs, dim=1)


def check_window(window_frames: int, overlap_frames: int) -> tuple[int, int]:
    """Validates W/O (feature frames; streamcli.recognizer.validate_window) and returns (hop, overlap) in
    encoder frames."""
    validate_window(window_frames, overlap_frames, SUBSAMPLING)
    return (window_frames - overlap_frames) // SUBSAMPLING, overlap_frames // SUBSAMPLING


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def save_checkpoint(path: str, model: WctcModel, extra: dict | None = None) -> None:
    torch.save({"config": model.cfg.to_dict(), "model": model.state_dict(), **(extra or {})}, path)


def load_checkpoint(path: str, map_location: str = "cpu") -> tuple[WctcModel, dict]:
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    model = WctcModel(WctcConfig(**ckpt["config"]))
    model.load_state_dict(ckpt["model"])
    return model, ckpt
