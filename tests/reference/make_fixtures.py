#!/usr/bin/env python3
"""Write the parity fixtures the C engine is tested against.

Outputs (relative to the repository root):
  tests/fixtures/parity_a.safetensors, tests/fixtures/parity_b.safetensors
  tests/fixtures/state_dict_{a,b,tiny}.json

Everything is computed in float32 (the C engine is float32) on the CPU with a
fixed seed and a single thread, so the files are reproducible.

Each .safetensors file holds (all float32):
  <param>                       every parameter under its state_dict name (initial values)
  in.x, in.noise                (B, C, H, W)
  in.t                          (B,)
  in.y                          (B,)  labels stored as float32 (value num_classes = null class)
  in.target.<src>               (B, T, D) token-level or (B, D) global
  out.x_t, out.v_target, out.v_pred   (B, C, H, W)
  out.loss, out.loss_denoise, out.loss.<src>, out.sim.<src>   (1,)
  out.sim_per_sample.<src>      (B,)
  grad.<param>                  dL/dparam at the initial values
  adam.loss                     (3,) loss before each of 3 AdamW steps on the same batch
  adam.grad_norm                (3,) global grad L2 norm before clipping
  adam.final.<param>            parameters after the 3 steps
and string metadata describing the configuration (see `metadata()`).

Usage:
  python3 tests/reference/make_fixtures.py            # write fixtures
  python3 tests/reference/make_fixtures.py --check    # write, then self-check in float64
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
from typing import Dict, List

import numpy as np
import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reed_ref import (SiT, Source, get_2d_sincos_pos_embed, optimizer_step,  # noqa: E402
                      reed_loss)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")

# AdamW settings used for the adam.* tensors.
ADAM = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, clip=1.0, steps=3)

# ---------------------------------------------------------------------------
# Configurations
# ---------------------------------------------------------------------------

CONFIGS = {
    "a": dict(
        model=dict(in_channels=1, image_size=28, patch=4, hidden=64, depth=2, heads=4,
                   num_classes=10),
        batch=4, path="linear", w_diff=0.7, w_align=0.4, proj_coeff=0.5, seed=1234,
        sources=[Source("tok", "token", depth=1, coeff=1.0, weighting="linear",
                        projector_dim=48, dim=32, tokens=49),
                 Source("glob", "global", depth=2, coeff=0.5, weighting="cosine",
                        projector_dim=48, dim=24, tokens=1)],
        null_label_index=1,   # batch element whose label is forced to the null class
    ),
    "b": dict(
        model=dict(in_channels=3, image_size=8, patch=2, hidden=96, depth=3, heads=3,
                   num_classes=5),
        batch=3, path="cosine", w_diff=1.0, w_align=1.0, proj_coeff=1.0, seed=5678,
        sources=[Source("tok", "token", depth=2, coeff=1.5, weighting="sigmoid",
                        projector_dim=64, dim=40, tokens=16)],
        null_label_index=None,
    ),
}

# `tiny` is only used for the state_dict name/shape listing.
TINY = dict(
    model=dict(in_channels=1, image_size=28, patch=4, hidden=128, depth=4, heads=4,
               num_classes=10),
    sources=[Source("tok", "token", depth=2, coeff=1.0, weighting="constant",
                    projector_dim=256, dim=64, tokens=49),
             Source("glob", "global", depth=3, coeff=1.0, weighting="constant",
                    projector_dim=256, dim=64, tokens=1)],
)


def build_model(cfg: dict, dtype=torch.float32) -> SiT:
    return SiT(**cfg["model"], sources=cfg["sources"]).to(dtype)


def randomize_parameters(model: SiT, gen: torch.Generator) -> None:
    """Overwrite every parameter (after the standard init) with N(0, 0.1^2)
    values, including the adaLN / final linears that the standard init zeroes,
    so that no gradient is trivially zero."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32) * 0.1)


def make_inputs(cfg: dict, gen: torch.Generator) -> Dict[str, torch.Tensor]:
    m = cfg["model"]
    B, C, H = cfg["batch"], m["in_channels"], m["image_size"]
    x = torch.randn(B, C, H, H, generator=gen)
    noise = torch.randn(B, C, H, H, generator=gen)
    # t spread over (0.05, 0.95) so every time weighting is far from 0 / 1.
    t = 0.05 + 0.9 * torch.rand(B, generator=gen)
    y = torch.randint(0, m["num_classes"], (B,), generator=gen)
    if cfg["null_label_index"] is not None:
        y[cfg["null_label_index"]] = m["num_classes"]          # null class
    inputs = {"in.x": x, "in.noise": noise, "in.t": t, "in.y": y.to(torch.float32)}
    for s in cfg["sources"]:
        shape = (B, s.tokens, s.dim) if s.kind == "token" else (B, s.dim)
        inputs[f"in.target.{s.name}"] = torch.randn(*shape, generator=gen)
    return inputs


def targets_from(inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {k[len("in.target."):]: v for k, v in inputs.items() if k.startswith("in.target.")}


def run_loss(model: SiT, cfg: dict, inputs: Dict[str, torch.Tensor]):
    dt = next(model.parameters()).dtype
    return reed_loss(model, inputs["in.x"].to(dt), inputs["in.noise"].to(dt),
                     inputs["in.t"].to(dt), inputs["in.y"].long(),
                     {k: v.to(dt) for k, v in targets_from(inputs).items()},
                     path=cfg["path"], w_diff=cfg["w_diff"], w_align=cfg["w_align"],
                     proj_coeff=cfg["proj_coeff"])


def metadata(cfg: dict) -> Dict[str, str]:
    m = cfg["model"]
    md = {k: str(m[k]) for k in ("in_channels", "image_size", "patch", "hidden", "depth",
                                 "heads", "num_classes")}
    md.update(batch=str(cfg["batch"]), path=cfg["path"], w_diff=repr(cfg["w_diff"]),
              w_align=repr(cfg["w_align"]), proj_coeff=repr(cfg["proj_coeff"]),
              n_sources=str(len(cfg["sources"])), mlp_ratio="4")
    for i, s in enumerate(cfg["sources"]):
        md[f"source{i}.name"] = s.name
        md[f"source{i}.kind"] = s.kind
        md[f"source{i}.depth"] = str(s.depth)
        md[f"source{i}.coeff"] = repr(s.coeff)
        md[f"source{i}.weighting"] = s.weighting
        md[f"source{i}.projector_dim"] = str(s.projector_dim)
        md[f"source{i}.dim"] = str(s.dim)
        md[f"source{i}.tokens"] = str(s.tokens)
    # Optimiser settings of the adam.* tensors (extra keys, informational).
    md.update({"adam.lr": repr(ADAM["lr"]), "adam.beta1": repr(ADAM["betas"][0]),
               "adam.beta2": repr(ADAM["betas"][1]), "adam.eps": repr(ADAM["eps"]),
               "adam.weight_decay": repr(ADAM["weight_decay"]),
               "adam.clip": repr(ADAM["clip"]), "adam.steps": str(ADAM["steps"])})
    return md


# ---------------------------------------------------------------------------
# Fixture generation
# ---------------------------------------------------------------------------

def make_fixture(name: str) -> Dict[str, torch.Tensor]:
    cfg = CONFIGS[name]
    torch.manual_seed(cfg["seed"])
    gen = torch.Generator().manual_seed(cfg["seed"])
    model = build_model(cfg)                 # standard init (exercises the code path)
    randomize_parameters(model, gen)
    inputs = make_inputs(cfg, gen)
    init_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    tensors: Dict[str, torch.Tensor] = dict(init_state)
    tensors.update(inputs)

    # Forward + all losses + gradient of L.
    model.zero_grad(set_to_none=True)
    out = run_loss(model, cfg, inputs)
    out["loss"].backward()
    for k, v in out.items():
        v = v.detach()
        tensors[f"out.{k}"] = v.reshape(1) if v.dim() == 0 else v
    for pname, p in model.named_parameters():
        tensors[f"grad.{pname}"] = p.grad.detach().clone()

    # Three AdamW steps (same batch, same t and noise) from the initial values.
    model.load_state_dict(init_state)
    opt = torch.optim.AdamW(model.parameters(), lr=ADAM["lr"], betas=ADAM["betas"],
                            eps=ADAM["eps"], weight_decay=ADAM["weight_decay"])
    losses, norms = [], []
    for _ in range(ADAM["steps"]):
        loss = run_loss(model, cfg, inputs)["loss"]
        losses.append(float(loss.detach()))
        norms.append(optimizer_step(model, opt, loss, ADAM["clip"]))
    tensors["adam.loss"] = torch.tensor(losses, dtype=torch.float32)
    tensors["adam.grad_norm"] = torch.tensor(norms, dtype=torch.float32)
    for k, v in model.state_dict().items():
        tensors[f"adam.final.{k}"] = v.detach().clone()

    tensors = {k: v.to(torch.float32).contiguous() for k, v in tensors.items()}
    path = os.path.join(FIXTURES, f"parity_{name}.safetensors")
    save_file(tensors, path, metadata=metadata(cfg))
    canonicalize_header(path)
    os.chmod(path, 0o644)
    return tensors


def canonicalize_header(path: str) -> None:
    """safetensors writes the metadata map in hash order, so two runs give files
    with identical tensors but different bytes.  Rewrite the JSON header with
    sorted metadata keys (tensor entries keep their order and offsets, which are
    relative to the data section) so regeneration is byte-for-byte reproducible."""
    with open(path, "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    new = {"__metadata__": dict(sorted(meta.items())), **header}
    text = json.dumps(new, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)                 # keep the data section 8-byte aligned
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + raw[8 + n:])


def write_state_dict_json(name: str, cfg: dict) -> str:
    model = build_model(cfg)
    # REPA's SiT keeps pos_embed as a frozen nn.Parameter, listed first in its
    # state_dict; ours is a buffer, so add it here as REPA's state_dict has it.
    shapes = {"pos_embed": list(model.pos_embed.shape)}
    shapes.update({k: list(v.shape) for k, v in model.state_dict().items()})
    path = os.path.join(FIXTURES, f"state_dict_{name}.json")
    with open(path, "w") as f:             # one "name": [shape] entry per line
        f.write("{\n" + ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}"
                                   for k, v in shapes.items()) + "\n}\n")
    return path


# ---------------------------------------------------------------------------
# Self-check (--check): float64 autograd + finite differences + AdamW replay
# ---------------------------------------------------------------------------

def mae_pos_embed_reference(embed_dim: int, grid_size: int) -> np.ndarray:
    """Literal transcription of MAE's get_2d_sincos_pos_embed (meshgrid w first)."""
    gh = np.arange(grid_size, dtype=np.float32)
    gw = np.arange(grid_size, dtype=np.float32)
    grid = np.stack(np.meshgrid(gw, gh), axis=0).reshape(2, 1, grid_size, grid_size)

    def one_d(d, pos):
        omega = np.arange(d // 2, dtype=np.float64) / (d / 2.0)
        omega = 1.0 / 10000 ** omega
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    return np.concatenate([one_d(embed_dim // 2, grid[0]), one_d(embed_dim // 2, grid[1])], axis=1)


def manual_adamw_replay(cfg, fx: Dict[str, torch.Tensor], model64: SiT):
    """Re-derive adam.* in float64 with an explicit AdamW (the formula the C
    engine implements):  g <- g * min(1, clip / (||g|| + 1e-6));
    p <- p * (1 - lr*wd);  m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2;
    p <- p - (lr / (1-b1^k)) * m / (sqrt(v) / sqrt(1-b2^k) + eps)."""
    lr, (b1, b2), eps, wd, clip = (ADAM["lr"], ADAM["betas"], ADAM["eps"],
                                   ADAM["weight_decay"], ADAM["clip"])
    params = dict(model64.named_parameters())
    m = {k: torch.zeros_like(p) for k, p in params.items()}
    v = {k: torch.zeros_like(p) for k, p in params.items()}
    losses, norms = [], []
    for step in range(1, ADAM["steps"] + 1):
        model64.zero_grad(set_to_none=True)
        loss = run_loss(model64, cfg, fx)["loss"]
        loss.backward()
        norm = torch.sqrt(sum((p.grad ** 2).sum() for p in params.values()))
        coef = min(1.0, clip / (float(norm) + 1e-6))
        losses.append(float(loss.detach()))
        norms.append(float(norm))
        with torch.no_grad():
            for k, p in params.items():
                g = p.grad * coef
                p.mul_(1 - lr * wd)
                m[k].mul_(b1).add_(g, alpha=1 - b1)
                v[k].mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = v[k].sqrt() / math.sqrt(1 - b2 ** step) + eps
                p.addcdiv_(m[k], denom, value=-lr / (1 - b1 ** step))
    return losses, norms


def self_check(name: str) -> bool:
    cfg = CONFIGS[name]
    fx = load_file(os.path.join(FIXTURES, f"parity_{name}.safetensors"))
    ok = True

    def report(label, err, tol):
        nonlocal ok
        good = err <= tol
        ok &= good
        print(f"  [{'ok' if good else 'FAIL'}] {label}: {err:.3e} (tol {tol:.0e})")

    print(f"self-check config {name}")
    # 1. positional embedding equals MAE's
    m = cfg["model"]
    g = m["image_size"] // m["patch"]
    report("pos_embed vs MAE formula (max abs)",
           float(np.abs(get_2d_sincos_pos_embed(m["hidden"], g)
                        - mae_pos_embed_reference(m["hidden"], g)).max()), 1e-12)

    # 2. float64 copy of the model with the fixture's initial parameters
    model64 = build_model(cfg, torch.float64)
    names = [k for k, _ in model64.named_parameters()]
    model64.load_state_dict({k: fx[k].double() for k in model64.state_dict()})
    fx64 = {k: v.double() for k, v in fx.items() if k.startswith("in.")}
    model64.zero_grad(set_to_none=True)
    out64 = run_loss(model64, cfg, fx64)
    out64["loss"].backward()
    out64 = {k: v.detach() for k, v in out64.items()}
    grads64 = {k: p.grad.detach().clone() for k, p in model64.named_parameters()}
    report("out.loss float32 vs float64 (rel)",
           abs(float(fx["out.loss"]) - float(out64["loss"])) / abs(float(out64["loss"])), 1e-5)
    report("out.v_pred float32 vs float64 (max abs)",
           float((fx["out.v_pred"].double() - out64["v_pred"]).abs().max()), 1e-4)
    worst, worst_name = 0.0, ""
    for k in names:
        g64 = grads64[k]
        scale = float(g64.abs().max())
        if scale == 0.0:
            report(f"grad.{k} is all zero", 1.0, 0.0)
            continue
        err = float((fx[f"grad.{k}"].double() - g64).abs().max()) / scale
        if err > worst:
            worst, worst_name = err, k
    report(f"fixture grads float32 vs float64 autograd (max rel, worst {worst_name})",
           worst, 1e-3)

    # 3. finite differences (float64, central) on a few entries of several params
    gen = torch.Generator().manual_seed(0)
    probe = ["x_embedder.proj.weight", "x_embedder.proj.bias", "t_embedder.mlp.0.weight",
             "t_embedder.mlp.2.bias", "y_embedder.embedding_table.weight",
             "blocks.0.attn.qkv.weight", "blocks.0.attn.proj.bias", "blocks.0.mlp.fc1.weight",
             "blocks.0.adaLN_modulation.1.weight", f"blocks.{m['depth'] - 1}.mlp.fc2.weight",
             "final_layer.adaLN_modulation.1.bias", "final_layer.linear.weight",
             "projectors.0.0.weight", "projectors.0.4.bias"]
    params = dict(model64.named_parameters())
    labels_used = set(int(v) for v in fx["in.y"])
    h = 1e-6
    worst_fd = 0.0
    for k in probe:
        p = params[k]
        flat = p.data.view(-1)
        picks = torch.randint(0, flat.numel(), (4,), generator=gen).tolist()
        if k.startswith("y_embedder"):      # pick rows that are actually used
            hid = p.shape[1]
            picks = [sorted(labels_used)[i % len(labels_used)] * hid + j
                     for i, j in enumerate(torch.randint(0, hid, (4,), generator=gen).tolist())]
        for idx in picks:
            old = float(flat[idx])
            with torch.no_grad():
                flat[idx] = old + h
                lp = float(run_loss(model64, cfg, fx64)["loss"])
                flat[idx] = old - h
                lm = float(run_loss(model64, cfg, fx64)["loss"])
                flat[idx] = old
            fd = (lp - lm) / (2 * h)
            an = float(grads64[k].view(-1)[idx])
            worst_fd = max(worst_fd, abs(fd - an) / max(abs(an), 1e-3))
    report(f"finite differences vs float64 autograd ({len(probe)} params x 4 entries, rel)",
           worst_fd, 1e-5)

    # 4. fixture-internal consistency and an explicit AdamW replay in float64
    report("adam.loss[0] == out.loss", abs(float(fx["adam.loss"][0]) - float(fx["out.loss"])), 0.0)
    model64.load_state_dict({k: fx[k].double() for k in model64.state_dict()})
    losses, norms = manual_adamw_replay(cfg, fx64, model64)
    report("adam.loss vs manual float64 AdamW (max rel)",
           max(abs(a - b) / abs(b) for a, b in zip(fx["adam.loss"].tolist(), losses)), 1e-4)
    report("adam.grad_norm vs manual float64 AdamW (max rel)",
           max(abs(a - b) / abs(b) for a, b in zip(fx["adam.grad_norm"].tolist(), norms)), 1e-4)
    final_err = max(float((fx[f"adam.final.{k}"].double() - p.detach()).abs().max())
                    for k, p in model64.named_parameters())
    report("adam.final vs manual float64 AdamW (max abs)", final_err, 1e-4)
    print(f"  info: grad norms {['%.4f' % n for n in norms]} (clip {ADAM['clip']}), "
          f"losses {['%.5f' % l for l in losses]}")

    # 5. explicit attention == SDPA
    model_sdpa = copy.deepcopy(model64)
    for blk in model_sdpa.blocks:
        blk.attn.use_sdpa = True
    model64.load_state_dict({k: fx[k].double() for k in model64.state_dict()})
    model_sdpa.load_state_dict({k: fx[k].double() for k in model64.state_dict()})
    with torch.no_grad():
        a = run_loss(model64, cfg, fx64)["v_pred"]
        b = run_loss(model_sdpa, cfg, fx64)["v_pred"]
    report("explicit attention vs SDPA (max abs, float64)", float((a - b).abs().max()), 1e-10)
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="after writing, verify gradients with float64 autograd and finite "
                         "differences, and replay AdamW explicitly")
    args = ap.parse_args()
    torch.set_num_threads(1)          # reproducible float32 reductions
    os.makedirs(FIXTURES, exist_ok=True)

    for name in CONFIGS:
        t = make_fixture(name)
        path = os.path.join(FIXTURES, f"parity_{name}.safetensors")
        print(f"wrote {os.path.relpath(path, ROOT)}: {len(t)} tensors, "
              f"{os.path.getsize(path) / 1e6:.3f} MB, loss {float(t['out.loss']):.6f}")
    for name, cfg in list(CONFIGS.items()) + [("tiny", TINY)]:
        path = write_state_dict_json(name, cfg)
        print(f"wrote {os.path.relpath(path, ROOT)}")

    if args.check:
        ok = all([self_check(name) for name in CONFIGS])
        print("self-check:", "PASSED" if ok else "FAILED")
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
