#!/usr/bin/env python3
"""PyTorch side of the REED Workbench training-step benchmark.

  python3 bench/train_step.py --config tiny|small|sitS --threads N --steps S --warmup W
                              [--naive-attn] [--seed 0]

Builds the reference model (tests/reference/reed_ref.py, standard init) for the
chosen config and times full training steps on the CPU:

  sample t ~ U(0,1) and noise -> forward -> denoising + alignment losses ->
  backward -> clip_grad_norm_ -> AdamW -> EMA update (decay 0.999, torch._foreach ops)

Input is 1x28x28 with 10 classes; two alignment sources: a token-level 7x7x64
target (49 tokens) tapped after block `enc`, and a global 64-d target tapped
after block `text`.  The batch (images, labels, targets) is random and made
once; t and noise are resampled each step.

Prints one JSON line:
  {"impl":"pytorch","config":..,"threads":..,"batch":..,"imgs_per_s":..,
   "ms_per_step":..,"peak_rss_mb":..,"flops_per_step":..,"torch":..,
   "rss_after_import_mb":..,"attn":"sdpa"|"naive","optimizer":"fused"|"foreach"|"for-loop"}
peak_rss_mb is ru_maxrss of the whole process (it includes torch's own
footprint, given separately as rss_after_import_mb).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import torch
import torch.nn.functional as F

# Resident memory right after importing torch (a CUDA build of torch maps
# ~0.5 GB of libraries); reported so the C engine's RSS can be compared fairly.
RSS_AFTER_IMPORT_MB = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
from reed_ref import SiT, Source, reed_loss  # noqa: E402

IMAGE, CHANNELS, CLASSES = 28, 1, 10
TARGET_GRID, TARGET_DIM, GLOBAL_DIM = 7, 64, 64

CONFIGS = {
    "tiny":  dict(hidden=128, depth=4,  heads=4, patch=4, batch=64, enc=2, text=3, projector=256),
    "small": dict(hidden=256, depth=8,  heads=4, patch=2, batch=64, enc=4, text=6, projector=512),
    "sitS":  dict(hidden=384, depth=12, heads=6, patch=2, batch=32, enc=4, text=8, projector=2048),
}

# Loss / optimiser settings (fixed for the benchmark; they do not change the cost).
PATH, W_DIFF, W_ALIGN, PROJ_COEFF = "linear", 1.0, 1.0, 0.5
LR, BETAS, EPS, WD, CLIP, EMA_DECAY, LABEL_DROPOUT = 1e-4, (0.9, 0.999), 1e-8, 0.0, 1.0, 0.999, 0.1


def sources_for(cfg: dict, tokens: int):
    return [Source("tok", "token", depth=cfg["enc"], coeff=1.0, weighting="constant",
                   projector_dim=cfg["projector"], dim=TARGET_DIM, tokens=tokens),
            Source("glob", "global", depth=cfg["text"], coeff=1.0, weighting="constant",
                   projector_dim=cfg["projector"], dim=GLOBAL_DIM, tokens=1)]


def analytic_flops(cfg: dict) -> int:
    """2*M*N*K for every forward matmul (incl. the attention QK^T and AV
    products), times 3 for forward + backward.  Elementwise ops, LayerNorm,
    softmax and the optimiser are not counted."""
    B, h, d, p, P = cfg["batch"], cfg["hidden"], cfg["depth"], cfg["patch"], cfg["projector"]
    T = (IMAGE // p) ** 2

    def mm(m, n, k):
        return 2 * m * n * k

    f = mm(B * T, h, CHANNELS * p * p)                        # patch embedding (conv as GEMM)
    f += mm(B, h, 256) + mm(B, h, h)                          # timestep MLP
    per_block = (mm(B, 6 * h, h)                              # adaLN modulation
                 + mm(B * T, 3 * h, h)                        # qkv
                 + 2 * mm(B * T, T, h)                        # QK^T and AV over all heads
                 + mm(B * T, h, h)                            # attention output proj
                 + mm(B * T, 4 * h, h) + mm(B * T, h, 4 * h)) # MLP
    f += d * per_block
    f += mm(B, 2 * h, h) + mm(B * T, p * p * CHANNELS, h)     # final layer
    proj = lambda rows, out: mm(rows, P, h) + mm(rows, P, P) + mm(rows, out, P)
    f += proj(B * T, TARGET_DIM) + proj(B, GLOBAL_DIM)        # projectors
    return 3 * f


def make_optimizer(params):
    """AdamW with PyTorch's fastest available CPU implementation."""
    for kind, kw in (("fused", dict(fused=True)), ("foreach", dict(foreach=True))):
        try:
            opt = torch.optim.AdamW(params, lr=LR, betas=BETAS, eps=EPS, weight_decay=WD, **kw)
            return opt, kind
        except (RuntimeError, TypeError, ValueError):
            continue
    return torch.optim.AdamW(params, lr=LR, betas=BETAS, eps=EPS, weight_decay=WD), "for-loop"


def main() -> int:
    ap = argparse.ArgumentParser(description="PyTorch REED training-step benchmark")
    ap.add_argument("--config", choices=sorted(CONFIGS), default="tiny")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--naive-attn", action="store_true",
                    help="explicit softmax(QK^T/sqrt(d))V instead of F.scaled_dot_product_attention")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = CONFIGS[args.config]
    B, grid = cfg["batch"], IMAGE // cfg["patch"]
    tokens = grid * grid

    model = SiT(CHANNELS, IMAGE, cfg["patch"], cfg["hidden"], cfg["depth"], cfg["heads"],
                CLASSES, sources=sources_for(cfg, tokens), use_sdpa=not args.naive_attn)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    ema = [p.detach().clone() for p in params]
    opt, opt_kind = make_optimizer(params)

    # Fixed random batch, made once.
    x = torch.randn(B, CHANNELS, IMAGE, IMAGE)
    labels = torch.randint(0, CLASSES, (B,))
    tok_target = torch.randn(B, TARGET_GRID * TARGET_GRID, TARGET_DIM)
    glob_target = torch.randn(B, GLOBAL_DIM)

    def step() -> None:
        t = torch.rand(B)
        noise = torch.randn_like(x)
        # Classifier-free-guidance label dropout (null class = CLASSES).
        y = torch.where(torch.rand(B) < LABEL_DROPOUT, torch.full_like(labels, CLASSES), labels)
        tok = tok_target
        if tokens != TARGET_GRID * TARGET_GRID:
            # Patch 2 gives a 14x14 token grid (196 tokens) but the token-level
            # target is a 7x7 grid (49 tokens): resample the target to the
            # model's grid with bilinear interpolation (align_corners=False).
            g = tok.reshape(B, TARGET_GRID, TARGET_GRID, TARGET_DIM).permute(0, 3, 1, 2)
            g = F.interpolate(g, size=(grid, grid), mode="bilinear", align_corners=False)
            tok = g.permute(0, 2, 3, 1).reshape(B, tokens, TARGET_DIM)
        out = reed_loss(model, x, noise, t, y, {"tok": tok, "glob": glob_target},
                        path=PATH, w_diff=W_DIFF, w_align=W_ALIGN, proj_coeff=PROJ_COEFF)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        opt.step()
        with torch.no_grad():                       # EMA: e = d*e + (1-d)*p
            torch._foreach_mul_(ema, EMA_DECAY)
            torch._foreach_add_(ema, params, alpha=1 - EMA_DECAY)

    for _ in range(args.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    elapsed = time.perf_counter() - t0

    result = {
        "impl": "pytorch",
        "config": args.config,
        "threads": args.threads,
        "batch": B,
        "imgs_per_s": round(B * args.steps / elapsed, 3),
        "ms_per_step": round(1000 * elapsed / args.steps, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_after_import_mb": round(RSS_AFTER_IMPORT_MB, 1),
        "flops_per_step": analytic_flops(cfg),
        "torch": torch.__version__,
        "attn": "naive" if args.naive_attn else "sdpa",
        "optimizer": opt_kind,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
