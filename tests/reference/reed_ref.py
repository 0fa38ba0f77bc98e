"""PyTorch reference implementation of the REED Workbench model and losses.

This is the project's own reference, written to the REED Workbench spec.  It is
used for three things:

  * generating the parity fixtures that the C engine is tested against
    (tests/reference/make_fixtures.py),
  * the PyTorch side of the training-step benchmark (bench/train_step.py),
  * documenting, in executable form, the exact maths the C engine implements.

Parameter names follow the public PyTorch SiT / REPA code (x_embedder.proj.*,
t_embedder.mlp.0.*, blocks.i.attn.qkv.*, projectors.k.0.* ...) so that our
checkpoints can be loaded there.  One deliberate difference: `pos_embed` is a
fixed, non-persistent buffer here, so it is NOT part of the state_dict (the
REPA code stores it as a frozen nn.Parameter; load with strict=False there, or
let that code recompute it -- it is the same deterministic sin-cos table).

Conventions
  * t in [0, 1]; t = 0 is data, t = 1 is noise.  The timestep embedding uses t
    directly (not t * 1000).
  * learn_sigma = False: out channels = in channels.
  * Label dropout (classifier-free guidance) happens outside the model; label
    `num_classes` is the null class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


# ---------------------------------------------------------------------------
# Alignment sources
# ---------------------------------------------------------------------------

@dataclass
class Source:
    """One representation-alignment target ("source").

    name          : identifier used in fixture tensor names (in.target.<name> ...)
    kind          : "token" (per-token target, shape (B, T, dim)) or
                    "global" (one vector per image, shape (B, dim))
    depth         : 1-based block index whose *output* is tapped
                    (depth=1 -> output of blocks.0)
    coeff         : c_k, the weight of this source in the alignment sum
    weighting     : time weighting w(t): "constant" | "linear" | "cosine" |
                    "sigmoid" | "cutoff:a:b" (1 for a <= t <= b, else 0)
    projector_dim : hidden width P of the 3-layer projector MLP
    dim           : target feature dimension D_k
    tokens        : number of target tokens (token-level); 1 for global
    """
    name: str
    kind: str
    depth: int
    coeff: float
    weighting: str
    projector_dim: int
    dim: int
    tokens: int = 1


# ---------------------------------------------------------------------------
# Fixed embeddings
# ---------------------------------------------------------------------------

def get_1d_sincos(embed_dim: int, pos: np.ndarray) -> np.ndarray:
    """MAE 1-D sin-cos table: [sin(p*w_k) for k<D/2] ++ [cos(p*w_k) for k<D/2],
    w_k = 10000^(-k/(D/2)).  Computed in float64."""
    assert embed_dim % 2 == 0
    omega = np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2.0)
    omega = 1.0 / 10000 ** omega
    out = np.einsum("m,d->md", pos.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def get_2d_sincos_pos_embed(embed_dim: int, grid_size: int) -> np.ndarray:
    """MAE get_2d_sincos_pos_embed (no cls token), float64, shape (G*G, D).

    Token r*G + c (row r, column c): the first D/2 dims encode the column c,
    the last D/2 dims encode the row r (MAE's meshgrid puts w first)."""
    assert embed_dim % 4 == 0, "hidden size must be divisible by 4"
    rows, cols = np.meshgrid(np.arange(grid_size), np.arange(grid_size), indexing="ij")
    emb_col = get_1d_sincos(embed_dim // 2, cols.reshape(-1))
    emb_row = get_1d_sincos(embed_dim // 2, rows.reshape(-1))
    return np.concatenate([emb_col, emb_row], axis=1)


def timestep_frequency_embedding(t: torch.Tensor, dim: int = 256,
                                 max_period: float = 10000.0) -> torch.Tensor:
    """GLIDE/DiT frequency embedding of t (NOT scaled by 1000):
    freqs_k = exp(-ln(max_period) * k / half), emb = [cos(t*f), sin(t*f)]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period)
                      * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].to(torch.float32) * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return emb.to(t.dtype)


def modulate(h: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation, broadcast over the token axis."""
    return h * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


# ---------------------------------------------------------------------------
# Modules (names chosen to match SiT / REPA / timm)
# ---------------------------------------------------------------------------

class PatchEmbed(nn.Module):
    """Conv2d patchifier; tokens in row-major order over the (H/p, W/p) grid."""

    def __init__(self, in_ch: int, hidden: int, patch: int):
        super().__init__()
        self.proj = nn.Conv2d(in_ch, hidden, kernel_size=patch, stride=patch, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)                        # (B, hidden, G, G)
        return x.flatten(2).transpose(1, 2)     # (B, G*G, hidden)


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(),
                                 nn.Linear(hidden, hidden))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_frequency_embedding(t, self.freq_dim))


class LabelEmbedder(nn.Module):
    """Embedding(num_classes + 1, hidden); the last row is the null class."""

    def __init__(self, num_classes: int, hidden: int):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, hidden)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.embedding_table(y)


class Attention(nn.Module):
    """timm-style multi-head self-attention (qkv laid out as (B, T, 3, NH, hs))."""

    def __init__(self, hidden: int, heads: int, use_sdpa: bool = False):
        super().__init__()
        assert hidden % heads == 0
        self.heads = heads
        self.head_dim = hidden // heads
        self.use_sdpa = use_sdpa
        self.qkv = nn.Linear(hidden, 3 * hidden, bias=True)
        self.proj = nn.Linear(hidden, hidden, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        qkv = self.qkv(x).reshape(B, T, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]                # each (B, NH, T, hs)
        if self.use_sdpa:
            o = F.scaled_dot_product_attention(q, k, v)
        else:
            # Explicit attention: softmax(q k^T / sqrt(hs)) v
            att = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
            att = att.softmax(dim=-1)
            o = att @ v
        o = o.transpose(1, 2).reshape(B, T, C)          # heads concatenated
        return self.proj(o)


class Mlp(nn.Module):
    def __init__(self, hidden: int, mlp_hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(hidden, mlp_hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(mlp_hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SiTBlock(nn.Module):
    """adaLN-Zero transformer block."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: float = 4.0, use_sdpa: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden, heads, use_sdpa)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden, int(hidden * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        (shift_msa, scale_msa, gate_msa,
         shift_mlp, scale_mlp, gate_mlp) = self.adaLN_modulation(c).chunk(6, dim=-1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class FinalLayer(nn.Module):
    def __init__(self, hidden: int, patch: int, out_ch: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden, patch * patch * out_ch)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


def build_projector(hidden: int, proj_dim: int, out_dim: int) -> nn.Sequential:
    """REPA projector: Linear, SiLU, Linear, SiLU, Linear (names .0/.2/.4)."""
    return nn.Sequential(nn.Linear(hidden, proj_dim), nn.SiLU(),
                         nn.Linear(proj_dim, proj_dim), nn.SiLU(),
                         nn.Linear(proj_dim, out_dim))


class SiT(nn.Module):
    """SiT with one projector per alignment source.

    forward(x, t, y) -> (v_pred (B, C, H, W), [z_tilde_k]) where z_tilde_k is
    (B, T, D_k) for token-level sources and (B, D_k) for global ones.
    """

    def __init__(self, in_channels: int, image_size: int, patch: int, hidden: int,
                 depth: int, heads: int, num_classes: int, mlp_ratio: float = 4.0,
                 sources: Sequence[Source] = (), use_sdpa: bool = False):
        super().__init__()
        assert image_size % patch == 0
        self.in_channels = in_channels
        self.out_channels = in_channels            # learn_sigma = False
        self.patch = patch
        self.grid = image_size // patch
        self.num_tokens = self.grid * self.grid
        self.hidden = hidden
        self.num_classes = num_classes
        self.sources = list(sources)
        for s in self.sources:
            assert s.kind in ("token", "global"), s.kind
            assert 1 <= s.depth <= depth, f"source {s.name}: depth {s.depth} not in 1..{depth}"

        self.x_embedder = PatchEmbed(in_channels, hidden, patch)
        self.t_embedder = TimestepEmbedder(hidden)
        self.y_embedder = LabelEmbedder(num_classes, hidden)
        pos = torch.from_numpy(get_2d_sincos_pos_embed(hidden, self.grid)).float().unsqueeze(0)
        self.register_buffer("pos_embed", pos, persistent=False)   # not in state_dict
        self.blocks = nn.ModuleList([SiTBlock(hidden, heads, mlp_ratio, use_sdpa)
                                     for _ in range(depth)])
        self.projectors = nn.ModuleList([build_projector(hidden, s.projector_dim, s.dim)
                                         for s in self.sources])
        self.final_layer = FinalLayer(hidden, patch, self.out_channels)
        self.initialize_weights()

    # -- initialisation (standard SiT/REPA init, used for real training) --
    def initialize_weights(self) -> None:
        def _basic_init(m: nn.Module) -> None:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.apply(_basic_init)

        # Patch embedding initialised like a Linear on the flattened kernel.
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)

        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)

        # adaLN-Zero: zero the modulation outputs and the final projection.
        for blk in self.blocks:
            nn.init.zeros_(blk.adaLN_modulation[-1].weight)
            nn.init.zeros_(blk.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, p*p*C) -> (B, C, H, W) via 'nhwpqc->nchpwq'."""
        B, p, c, g = x.shape[0], self.patch, self.out_channels, self.grid
        x = x.reshape(B, g, g, p, p, c)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(B, c, g * p, g * p)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor):
        h = self.x_embedder(x) + self.pos_embed              # (B, T, hidden)
        c = self.t_embedder(t) + self.y_embedder(y)          # (B, hidden)
        zs: List[Optional[torch.Tensor]] = [None] * len(self.sources)
        for i, blk in enumerate(self.blocks):
            h = blk(h, c)
            for k, s in enumerate(self.sources):
                if s.depth == i + 1:                          # tap output of blocks.i
                    if s.kind == "token":
                        zs[k] = self.projectors[k](h)         # (B, T, D_k)
                    else:
                        zs[k] = self.projectors[k](h.mean(dim=1))   # (B, D_k)
        out = self.final_layer(h, c)
        return self.unpatchify(out), zs


# ---------------------------------------------------------------------------
# Interpolants, weightings, losses
# ---------------------------------------------------------------------------

def interpolant(path: str, x: torch.Tensor, noise: torch.Tensor, t: torch.Tensor):
    """Return (x_t, v_target) for t of shape (B,).  t=0 data, t=1 noise."""
    tb = t.view(-1, *([1] * (x.dim() - 1)))
    if path == "linear":
        x_t = (1 - tb) * x + tb * noise
        v = noise - x
    elif path == "cosine":
        ct, st = torch.cos(tb * (math.pi / 2)), torch.sin(tb * (math.pi / 2))
        x_t = ct * x + st * noise
        v = (math.pi / 2) * (ct * noise - st * x)
    else:
        raise ValueError(f"unknown path {path!r}")
    return x_t, v


def time_weight(kind: str, t: torch.Tensor) -> torch.Tensor:
    """Per-sample time weighting w(t) of an alignment loss."""
    if kind == "constant":
        return torch.ones_like(t)
    if kind == "linear":
        return 1 - t
    if kind == "cosine":
        return (1 + torch.cos(math.pi * t)) / 2
    if kind == "sigmoid":
        return 1 / (1 + torch.exp(10 * (t - 0.5)))
    if kind.startswith("cutoff"):
        # "cutoff:a:b" -> 1 on [a, b], 0 elsewhere
        _, a, b = kind.split(":")
        return ((t >= float(a)) & (t <= float(b))).to(t.dtype)
    raise ValueError(f"unknown weighting {kind!r}")


def cosine_similarity_per_sample(z_tilde: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """sim_b: cosine similarity (F.normalize, eps 1e-12), averaged over tokens
    for token-level sources.  Returns shape (B,)."""
    cos = (F.normalize(z_tilde, dim=-1, eps=1e-12) * F.normalize(z, dim=-1, eps=1e-12)).sum(-1)
    return cos.mean(dim=1) if cos.dim() == 2 else cos


def reed_loss(model: SiT, x: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
              y: torch.Tensor, targets: Dict[str, torch.Tensor], path: str,
              w_diff: float = 1.0, w_align: float = 1.0, proj_coeff: float = 1.0
              ) -> Dict[str, torch.Tensor]:
    """Full REED/REPA training objective.

    L = w_diff * L_den + proj_coeff * w_align * sum_k c_k * L_k
    L_den = mean over batch and all dims of (v_pred - v)^2
    L_k   = -mean_b( w_k(t_b) * sim_b )
    Returns a dict with every intermediate the fixtures record.
    """
    x_t, v = interpolant(path, x, noise, t)
    v_pred, zs = model(x_t, t, y)
    loss_den = ((v_pred - v) ** 2).mean()
    out: Dict[str, torch.Tensor] = {"x_t": x_t, "v_target": v, "v_pred": v_pred,
                                    "loss_denoise": loss_den}
    align = torch.zeros((), dtype=x.dtype, device=x.device)
    for s, z_tilde in zip(model.sources, zs):
        sim_b = cosine_similarity_per_sample(z_tilde, targets[s.name])
        l_k = -(time_weight(s.weighting, t) * sim_b).mean()
        out[f"loss.{s.name}"] = l_k
        out[f"sim.{s.name}"] = sim_b.mean()          # unweighted, for reporting
        out[f"sim_per_sample.{s.name}"] = sim_b
        align = align + s.coeff * l_k
    out["loss"] = w_diff * loss_den + proj_coeff * w_align * align
    return out


# ---------------------------------------------------------------------------
# Curriculum schedules (documentation / tests)
# ---------------------------------------------------------------------------

def lambda_diff(s: int, s0: int, warmup: int, total: int, mode: str = "constant") -> float:
    """Denoising-loss weight at step s.

    0 before s0; linear ramp (s - s0)/W over the W warm-up steps; afterwards
    'constant' (1), 'linear' decay to 0 at the final step `total`, or 'cosine'
    decay to 0 at `total`."""
    if s < s0:
        return 0.0
    if s < s0 + warmup:
        return (s - s0) / warmup
    if mode == "constant":
        return 1.0
    span = total - s0 - warmup
    frac = min(max((s - s0 - warmup) / span, 0.0), 1.0) if span > 0 else 1.0
    if mode == "linear":
        return 1.0 - frac
    if mode == "cosine":
        return (1.0 + math.cos(math.pi * frac)) / 2.0
    raise ValueError(f"unknown mode {mode!r}")


def lambda_align(s: int, ramp: int, mode: str = "constant") -> float:
    """Alignment-loss weight at step s: 1, max(0, 1 - s/R) or (1+cos(pi*min(s/R,1)))/2."""
    if mode == "constant":
        return 1.0
    if mode == "linear":
        return max(0.0, 1.0 - s / ramp)
    if mode == "cosine":
        return (1.0 + math.cos(math.pi * min(s / ramp, 1.0))) / 2.0
    raise ValueError(f"unknown mode {mode!r}")


# ---------------------------------------------------------------------------
# Optimiser
# ---------------------------------------------------------------------------

def make_adamw(model: nn.Module, lr: float = 1e-4, betas=(0.9, 0.999), eps: float = 1e-8,
               weight_decay: float = 0.0) -> torch.optim.AdamW:
    """torch AdamW over *all* parameters (weight decay applies to biases and
    embeddings too, exactly as torch does with a single param group)."""
    return torch.optim.AdamW(model.parameters(), lr=lr, betas=betas, eps=eps,
                             weight_decay=weight_decay)


def optimizer_step(model: nn.Module, opt: torch.optim.Optimizer, loss: torch.Tensor,
                   max_norm: float) -> float:
    """zero_grad, backward, clip_grad_norm_, step.  Returns the pre-clip norm."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    opt.step()
    return float(norm)
