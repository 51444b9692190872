"""Whisper tiny.en's encoder in torch: the exact full-context teacher and the windowed streaming student.

Teacher (`WhisperTeacher`): the published architecture. Log-mel normalised per utterance
(clamp to max - 8, then (x + 4) / 4), conv1 (k3, pad 1) + GELU, conv2 (k3, stride 2, pad 1) + GELU,
sinusoidal absolute positions, pre-LN blocks (self-attention, GELU MLP), final LayerNorm. Encoder
frames are 20 ms (2 feature frames).

Student (`WhisperStudent`), initialised from the same weights, changed only where streaming needs it:
- normalisation with a fixed floor instead of the utterance maximum (no future audio needed);
- both convolutions causal (left padding 2 instead of 1 on each side): the same kernels, so
  student frame j starts as teacher frame j - 1 (one 20 ms frame of delay, no lookahead); their left
  context is a cache (2 input frames, 2 conv1 frames);
- no absolute positions (a constant, the mean of Whisper's table, keeps the input statistics) and a
  learned per-head bias per clipped relative distance in every attention layer, so nothing depends on
  the stream position;
- windowed attention: W feature frames per window, O of them overlap the previous one and come from a
  key/value cache; W and O are even (one encoder frame = 2 feature frames);
- a linear CTC head over the character table of :func:`char_tokens`.

`forward_full` (block mask) is the training path and the reference; `forward_chunk` is what the ONNX
file runs; streaming chunk by chunk equals the masked reference (tests check <= 1e-4).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from streamcli.recognizer import validate_window
from streamcli_tools.train.wctc_torch import (  # the same character table as the wctc models
    WORD_START,
    char_tokens,
)

__all__ = ["WORD_START", "char_tokens"]  # re-exported for the training scripts

SUBSAMPLING = 2
CONV_CONTEXT = 2  # left frames each causal conv needs (kernel 3)


@dataclass
class StudentConfig:
    n_mels: int = 80
    d_model: int = 384
    num_heads: int = 6
    num_layers: int = 4
    ff_dim: int = 1536
    vocab_size: int = 55
    max_rel_distance: int = 64
    log_mel_floor: float = -6.5  # log10 mel floor replacing Whisper's "utterance max - 8"
    dropout: float = 0.1

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def check_window(window_frames: int, overlap_frames: int) -> tuple[int, int]:
    """Validates W/O (10 ms feature frames; the one rule, streamcli.recognizer.validate_window) and returns
    (hop, overlap) in 20 ms encoder frames."""
    validate_window(window_frames, overlap_frames, SUBSAMPLING)
    return (window_frames - overlap_frames) // SUBSAMPLING, overlap_frames // SUBSAMPLING


def block_mask(num_frames: int, hop: int, overlap: int, device: torch.device | None = None) -> torch.Tensor:
    """(T, T) bool, encoder frames: frame i of chunk c = i // hop sees c*hop - overlap <= j < (c+1)*hop."""
    idx = torch.arange(num_frames, device=device)
    start = (idx // hop) * hop
    j = idx.unsqueeze(0)
    return (j >= (start - overlap).unsqueeze(1)) & (j < (start + hop).unsqueeze(1))


def sinusoids(length: int, channels: int) -> torch.Tensor:
    """Whisper's sinusoidal table (also stored in the CTranslate2 file; used to check the reader)."""
    inc = math.log(10000) / (channels // 2 - 1)
    inv = torch.exp(-inc * torch.arange(channels // 2))
    t = torch.arange(length)[:, None] * inv[None, :]
    return torch.cat([torch.sin(t), torch.cos(t)], dim=1)


class Attention(nn.Module):
    def __init__(self, d_model: int, num_heads: int, max_rel: int | None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.max_rel = max_rel
        if max_rel is not None:
            self.rel_bias = nn.Parameter(torch.zeros(num_heads, 2 * max_rel + 1))

    def attend(self, q, k, v, mask, q_pos=None, k_pos=None) -> torch.Tensor:  # noqa: ANN001
        n, tq, d = q.shape
        tk = k.shape[1]
        h, hd = self.num_heads, self.head_dim
        qh = q.reshape(n, tq, h, hd).transpose(1, 2)
        kh = k.reshape(n, tk, h, hd).transpose(1, 2)
        vh = v.reshape(n, tk, h, hd).transpose(1, 2)
        scores = torch.matmul(qh, kh.transpose(2, 3)) * (1.0 / math.sqrt(hd))
        if self.max_rel is not None:
            dist = (q_pos.unsqueeze(1) - k_pos.unsqueeze(0)).clamp(-self.max_rel, self.max_rel) + self.max_rel
            scores = scores + self.rel_bias[:, dist].unsqueeze(0)
        if mask is not None:
            # Finite fill: a padded row whose keys are all hidden must not become NaN.
            scores = scores.masked_fill(~mask, -1e9)
        w = torch.softmax(scores.float(), dim=-1).to(vh.dtype)
        return self.out(torch.matmul(w, vh).transpose(1, 2).reshape(n, tq, d))


class Block(nn.Module):
    def __init__(
        self, d_model: int, num_heads: int, ff_dim: int, max_rel: int | None, dropout: float
    ) -> None:
        super().__init__()
        self.attn_ln = nn.LayerNorm(d_model)
        self.attn = Attention(d_model, num_heads, max_rel)
        self.mlp_ln = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, ff_dim), nn.GELU(), nn.Linear(ff_dim, d_model))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, mask, q_pos=None, k_pos=None) -> torch.Tensor:  # noqa: ANN001
        q, k, v = self.attn.qkv(self.attn_ln(x)).chunk(3, dim=-1)
        x = x + self.dropout(self.attn.attend(q, k, v, mask, q_pos, k_pos))
        return x + self.dropout(self.mlp(self.mlp_ln(x)))

    def forward_chunk(self, x, cache_k, cache_v, mask):  # noqa: ANN001, ANN201
        overlap, t = cache_k.shape[1], x.shape[1]
        q, k, v = self.attn.qkv(self.attn_ln(x)).chunk(3, dim=-1)
        k_all = torch.cat([cache_k, k], dim=1)
        v_all = torch.cat([cache_v, v], dim=1)
        # Window-local positions from shapes (cumsum keeps them dynamic in the ONNX graph).
        k_pos = torch.cumsum(torch.ones_like(k_all[0, :, 0], dtype=torch.long), dim=0) - 1
        q_pos = k_pos[overlap:]
        x = x + self.attn.attend(q, k_all, v_all, mask, q_pos, k_pos)
        x = x + self.mlp(self.mlp_ln(x))
        return x, k_all[:, t:], v_all[:, t:]


def _block_weights(block: Block, w: dict[str, np.ndarray], prefix: str) -> None:
    def t(name: str) -> torch.Tensor:
        return torch.from_numpy(np.asarray(w[f"{prefix}/{name}"], dtype=np.float32).copy())

    with torch.no_grad():
        block.attn_ln.weight.copy_(t("self_attention/layer_norm/gamma"))
        block.attn_ln.bias.copy_(t("self_attention/layer_norm/beta"))
        block.attn.qkv.weight.copy_(t("self_attention/linear_0/weight"))
        block.attn.qkv.bias.copy_(t("self_attention/linear_0/bias"))
        block.attn.out.weight.copy_(t("self_attention/linear_1/weight"))
        block.attn.out.bias.copy_(t("self_attention/linear_1/bias"))
        block.mlp_ln.weight.copy_(t("ffn/layer_norm/gamma"))
        block.mlp_ln.bias.copy_(t("ffn/layer_norm/beta"))
        block.mlp[0].weight.copy_(t("ffn/linear_0/weight"))
        block.mlp[0].bias.copy_(t("ffn/linear_0/bias"))
        block.mlp[2].weight.copy_(t("ffn/linear_1/weight"))
        block.mlp[2].bias.copy_(t("ffn/linear_1/bias"))


class _EncoderBase(nn.Module):
    def __init__(
        self,
        n_mels: int,
        d_model: int,
        num_heads: int,
        ff_dim: int,
        num_layers: int,
        max_rel: int | None,
        dropout: float,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(n_mels, d_model, 3)
        self.conv2 = nn.Conv1d(d_model, d_model, 3, stride=2)
        self.blocks = nn.ModuleList(
            [Block(d_model, num_heads, ff_dim, max_rel, dropout) for _ in range(num_layers)]
        )
        self.ln_post = nn.LayerNorm(d_model)

    def load_ct2(self, w: dict[str, np.ndarray]) -> None:
        def t(name: str) -> torch.Tensor:
            return torch.from_numpy(np.asarray(w[name], dtype=np.float32).copy())

        with torch.no_grad():
            self.conv1.weight.copy_(t("encoder/conv1/weight"))
            self.conv1.bias.copy_(t("encoder/conv1/bias"))
            self.conv2.weight.copy_(t("encoder/conv2/weight"))
            self.conv2.bias.copy_(t("encoder/conv2/bias"))
            for i, block in enumerate(self.blocks):
                _block_weights(block, w, f"encoder/layer_{i}")
            self.ln_post.weight.copy_(t("encoder/layer_norm/gamma"))
            self.ln_post.bias.copy_(t("encoder/layer_norm/beta"))


class WhisperTeacher(_EncoderBase):
    """The exact full-context Whisper encoder (frozen in training)."""

    def __init__(
        self,
        n_mels: int = 80,
        d_model: int = 384,
        num_heads: int = 6,
        ff_dim: int = 1536,
        num_layers: int = 4,
        max_positions: int = 1500,
    ) -> None:
        super().__init__(n_mels, d_model, num_heads, ff_dim, num_layers, None, 0.0)
        self.register_buffer("positions", torch.zeros(max_positions, d_model))

    def load_ct2(self, w: dict[str, np.ndarray]) -> None:
        super().load_ct2(w)
        with torch.no_grad():
            self.positions.copy_(
                torch.from_numpy(np.asarray(w["encoder/position_encodings/encodings"], np.float32))
            )

    @staticmethod
    def normalize(log_mel: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Whisper's per-utterance normalisation of log10 mel (N, T, 80), padding ignored for the max."""
        x = log_mel
        if lengths is not None:
            valid = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
            peak = x.masked_fill(~valid[:, :, None], -1e9).amax(dim=(1, 2), keepdim=True)
        else:
            peak = x.amax(dim=(1, 2), keepdim=True)
        return (torch.maximum(x, peak - 8.0) + 4.0) / 4.0

    def forward(self, log_mel: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """log10 mel (N, T, 80) -> (N, ceil(T/2), d); `lengths` (feature frames) hides batch padding."""
        x = self.normalize(log_mel, lengths).transpose(1, 2)
        x = nn.functional.gelu(nn.functional.conv1d(x, self.conv1.weight, self.conv1.bias, padding=1))
        x = nn.functional.gelu(
            nn.functional.conv1d(x, self.conv2.weight, self.conv2.bias, stride=2, padding=1)
        )
        x = x.transpose(1, 2)
        t = x.shape[1]
        x = x + self.positions[:t]
        mask = None
        if lengths is not None:
            enc_len = (lengths + 1) // 2
            mask = (torch.arange(t, device=x.device)[None, :] < enc_len[:, None])[:, None, None, :]
        for block in self.blocks:
            x = block(x, mask)
        return self.ln_post(x)


class WhisperStudent(_EncoderBase):
    """Windowed streaming student with caches; see the module docstring."""

    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__(
            cfg.n_mels,
            cfg.d_model,
            cfg.num_heads,
            cfg.ff_dim,
            cfg.num_layers,
            cfg.max_rel_distance,
            cfg.dropout,
        )
        self.cfg = cfg
        self.register_buffer("position_bias", torch.zeros(cfg.d_model))
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size)

    def load_ct2(self, w: dict[str, np.ndarray]) -> None:
        super().load_ct2(w)
        pe = np.asarray(w["encoder/position_encodings/encodings"], np.float32)
        with torch.no_grad():
            self.position_bias.copy_(torch.from_numpy(pe.mean(axis=0)))

    def normalize(self, log_mel: torch.Tensor) -> torch.Tensor:
        return (torch.clamp(log_mel, min=self.cfg.log_mel_floor) + 4.0) / 4.0

    def _frontend(self, x: torch.Tensor, ctx_in: torch.Tensor, ctx_mid: torch.Tensor):  # noqa: ANN202
        """x (N, T, 80) normalised, T even; ctx_in (N, 80, 2), ctx_mid (N, d, 2) -> (N, T/2, d), new ctx."""
        y = torch.cat([ctx_in, x.transpose(1, 2)], dim=2)
        new_in = y[:, :, -CONV_CONTEXT:]
        y = nn.functional.gelu(self.conv1(y))
        y = torch.cat([ctx_mid, y], dim=2)
        new_mid = y[:, :, -CONV_CONTEXT:]
        y = nn.functional.gelu(self.conv2(y))
        return y.transpose(1, 2) + self.position_bias, new_in, new_mid

    def encode_full(
        self,
        log_mel: torch.Tensor,
        window_frames: int,
        overlap_frames: int,
        lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Reference (and training): (N, T, 80) log10 mel, T even, block mask of W/O -> (N, T/2, d)."""
        hop, overlap = check_window(window_frames, overlap_frames)
        n = log_mel.shape[0]
        x = self.normalize(log_mel)
        zeros_in = x.new_zeros(n, self.cfg.n_mels, CONV_CONTEXT)
        zeros_mid = x.new_zeros(n, self.cfg.d_model, CONV_CONTEXT)
        h, _, _ = self._frontend(x, zeros_in, zeros_mid)
        t = h.shape[1]
        mask = block_mask(t, hop, overlap, device=x.device)[None, None]
        if lengths is not None:
            ok = torch.arange(t, device=x.device)[None, :] < ((lengths + 1) // 2)[:, None]
            mask = mask & ok[:, None, None, :]
        pos = torch.arange(t, device=x.device)
        for block in self.blocks:
            h = block(h, mask, pos, pos)
        return self.ln_post(h)

    def initial_cache(self, batch: int, overlap_frames: int) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        o = overlap_frames // SUBSAMPLING
        p = next(self.parameters())
        return {
            "cache_key": p.new_zeros(batch, cfg.num_layers, o, cfg.d_model),
            "cache_value": p.new_zeros(batch, cfg.num_layers, o, cfg.d_model),
            "cache_conv_in": p.new_zeros(batch, cfg.n_mels, CONV_CONTEXT),
            "cache_conv_mid": p.new_zeros(batch, cfg.d_model, CONV_CONTEXT),
            "cache_valid": p.new_zeros(batch, 1),
        }

    def forward_chunk(self, x, cache_key, cache_value, cache_conv_in, cache_conv_mid, cache_valid):  # noqa: ANN001, ANN201
        """x (N, T, 80) log10 mel, T even (normally the hop W - O). Returns logits (N, T/2, V), the final
        hidden frames (N, T/2, d) and the five new caches. cache_valid (N, 1) counts real cached frames."""
        h, new_in, new_mid = self._frontend(self.normalize(x), cache_conv_in, cache_conv_mid)
        ones_cache = torch.ones_like(cache_key[:, 0, :, 0])
        overlap_n = ones_cache.sum(dim=1, keepdim=True)
        chunk_n = torch.ones_like(h[:, :, 0]).sum(dim=1, keepdim=True)
        slot = torch.cumsum(ones_cache, dim=1) - 1
        cache_ok = slot >= (overlap_n - cache_valid)
        chunk_ok = torch.ones_like(h[:, :, 0]) > 0
        mask = torch.cat([cache_ok, chunk_ok], dim=1)[:, None, None, :]
        keys, values = [], []
        for i, block in enumerate(self.blocks):
            h, k, v = block.forward_chunk(h, cache_key[:, i], cache_value[:, i], mask)
            keys.append(k)
            values.append(v)
        h = self.ln_post(h)
        new_valid = torch.minimum(cache_valid + chunk_n, overlap_n)
        return (self.head(h), h, torch.stack(keys, 1), torch.stack(values, 1), new_in, new_mid, new_valid)

    def stream(
        self, log_mel: torch.Tensor, window_frames: int, overlap_frames: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """forward_chunk hop by hop over (N, T, 80), T even -> (logits, hidden) of the whole sequence."""
        hop, _ = check_window(window_frames, overlap_frames)
        hop_frames = hop * SUBSAMPLING
        cache = self.initial_cache(log_mel.shape[0], overlap_frames)
        logits, hidden = [], []
        for start in range(0, log_mel.shape[1], hop_frames):
            lg, h, *new = self.forward_chunk(log_mel[:, start : start + hop_frames], **cache)
            cache = dict(zip(cache.keys(), new, strict=True))
            logits.append(lg)
            hidden.append(h)
        return torch.cat(logits, 1), torch.cat(hidden, 1)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def save_student(path: str, model: WhisperStudent, extra: dict | None = None) -> None:
    torch.save({"config": model.cfg.to_dict(), "model": model.state_dict(), **(extra or {})}, path)


def load_student(path: str) -> tuple[WhisperStudent, dict]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = WhisperStudent(StudentConfig(**ckpt["config"]))
    model.load_state_dict(ckpt["model"])
    return model, ckpt
