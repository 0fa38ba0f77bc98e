#!/usr/bin/env python3
"""PyTorch side of the REED Workbench training-step benchmark.

  python3 bench/train_step.py --config tiny|small|sitS|B2 --threads N --steps S --warmup W
                              [--device cpu|cuda] [--precision fp32|bf16] [--batch B]
                              [--compile [--compile-limit 60]] [--naive-attn] [--seed 0]

Builds the reference model (tests/reference/reed_ref.py, standard init) for the
chosen config and times full training steps:

  sample t ~ U(0,1) and noise -> forward -> denoising + alignment losses ->
  backward -> clip_grad_norm_ -> AdamW -> EMA update (decay 0.999, torch._foreach ops)

tiny, small, sitS: input is 1x28x28 with 10 classes; two alignment sources: a
token-level 7x7x64 target (49 tokens) tapped after block `enc`, and a global
64-d target tapped after block `text`.
B2: SiT-B/2 (hidden 768, depth 12, 12 heads, patch 2) on 4x32x32 inputs (SD-VAE
latents of 256x256 images), 1000 classes, batch 256; a token-level 256x768
target (the model's own 16x16 grid) after block 4 and a global 1024-d target
after block 8, projector_dim 2048 (REPA's) -- the configs of bench/train_step.c.
The batch (images, labels, targets) is random and made once; t and noise are
resampled each step.

--device cuda: everything on the GPU; the timed region is bracketed by
torch.cuda.synchronize().  --precision bf16: torch.autocast(bfloat16) around
forward + loss (the CPU too), fp32 master weights, AdamW fused where available.
--compile: the model is wrapped in torch.compile.  The compiled run happens in
a child process; when compiling plus the first step takes more than
--compile-limit seconds (or fails) the child is killed and the benchmark runs
eagerly instead, saying so in "compile_note" ("compiled": false).  The first
compiled step is always a warm-up step (warm-up >= 1 with --compile).

Prints one JSON line:
  {"impl":"pytorch","config":..,"threads":..,"batch":..,"imgs_per_s":..,
   "ms_per_step":..,"peak_rss_mb":..,"flops_per_step":..,"torch":..,
   "rss_after_import_mb":..,"attn":"sdpa"|"naive","optimizer":"fused"|"foreach"|"for-loop",
   "device":"cpu"|"cuda","precision":"fp32"|"bf16","compiled":bool,
   "compile_first_step_s":..|null,"compile_note":..,"peak_gpu_mb":..|null,"tf32":bool}
peak_rss_mb is ru_maxrss of the whole process (it includes torch's own
footprint, given separately as rss_after_import_mb).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import resource
import signal
import subprocess
import sys
import threading
import time

import torch
import torch.nn.functional as F

# Resident memory right after importing torch (a CUDA build of torch maps
# ~0.5 GB of libraries); reported so the C engine's RSS can be compared fairly.
RSS_AFTER_IMPORT_MB = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
from reed_ref import SiT, Source, reed_loss  # noqa: E402

# Input and targets of the 28x28 configs (Fashion-MNIST shaped).
MNIST = dict(image=28, channels=1, classes=10, tok_grid=7, tok_dim=64, glob_dim=64)

CONFIGS = {
    "tiny":  dict(hidden=128, depth=4,  heads=4,  patch=4, batch=64,  enc=2, text=3, projector=256, **MNIST),
    "small": dict(hidden=256, depth=8,  heads=4,  patch=2, batch=64,  enc=4, text=6, projector=512, **MNIST),
    "sitS":  dict(hidden=384, depth=12, heads=6,  patch=2, batch=32,  enc=4, text=8, projector=2048, **MNIST),
    "B2":    dict(hidden=768, depth=12, heads=12, patch=2, batch=256, enc=4, text=8, projector=2048,
                  image=32, channels=4, classes=1000, tok_grid=16, tok_dim=768, glob_dim=1024),
}

# Loss / optimiser settings (fixed for the benchmark; they do not change the cost).
PATH, W_DIFF, W_ALIGN, PROJ_COEFF = "linear", 1.0, 1.0, 0.5
LR, BETAS, EPS, WD, CLIP, EMA_DECAY, LABEL_DROPOUT = 1e-4, (0.9, 0.999), 1e-8, 0.0, 1.0, 0.999, 0.1

# Lines the compiled child prints for its parent (before its JSON line).
READY, FIRST = "REED_COMPILE_READY", "REED_COMPILE_FIRST"


def sources_for(cfg: dict, tokens: int):
    return [Source("tok", "token", depth=cfg["enc"], coeff=1.0, weighting="constant",
                   projector_dim=cfg["projector"], dim=cfg["tok_dim"], tokens=tokens),
            Source("glob", "global", depth=cfg["text"], coeff=1.0, weighting="constant",
                   projector_dim=cfg["projector"], dim=cfg["glob_dim"], tokens=1)]


def analytic_flops(cfg: dict, batch: int) -> int:
    """2*M*N*K for every forward matmul (incl. the attention QK^T and AV
    products), times 3 for forward + backward.  Elementwise ops, LayerNorm,
    softmax and the optimiser are not counted."""
    B, h, d, p, P = batch, cfg["hidden"], cfg["depth"], cfg["patch"], cfg["projector"]
    C = cfg["channels"]
    T = (cfg["image"] // p) ** 2

    def mm(m, n, k):
        return 2 * m * n * k

    f = mm(B * T, h, C * p * p)                               # patch embedding (conv as GEMM)
    f += mm(B, h, 256) + mm(B, h, h)                          # timestep MLP
    per_block = (mm(B, 6 * h, h)                              # adaLN modulation
                 + mm(B * T, 3 * h, h)                        # qkv
                 + 2 * mm(B * T, T, h)                        # QK^T and AV over all heads
                 + mm(B * T, h, h)                            # attention output proj
                 + mm(B * T, 4 * h, h) + mm(B * T, h, 4 * h)) # MLP
    f += d * per_block
    f += mm(B, 2 * h, h) + mm(B * T, p * p * C, h)            # final layer
    proj = lambda rows, out: mm(rows, P, h) + mm(rows, P, P) + mm(rows, out, P)
    f += proj(B * T, cfg["tok_dim"]) + proj(B, cfg["glob_dim"])  # projectors
    return 3 * f


def make_optimizer(params):
    """AdamW with PyTorch's fastest available implementation (fused on CUDA)."""
    for kind, kw in (("fused", dict(fused=True)), ("foreach", dict(foreach=True))):
        try:
            opt = torch.optim.AdamW(params, lr=LR, betas=BETAS, eps=EPS, weight_decay=WD, **kw)
            return opt, kind
        except (RuntimeError, TypeError, ValueError):
            continue
    return torch.optim.AdamW(params, lr=LR, betas=BETAS, eps=EPS, weight_decay=WD), "for-loop"


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def run_benchmark(args, compiled: bool, child: bool = False) -> dict:
    """Builds the model and data, warms up and times; returns the result.
    child: the compiled run of a --compile parent (prints READY and FIRST)."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    dev = torch.device(args.device)
    cfg = CONFIGS[args.config]
    B = args.batch or cfg["batch"]
    grid = cfg["image"] // cfg["patch"]
    tokens = grid * grid
    tg = cfg["tok_grid"]
    C, S, K = cfg["channels"], cfg["image"], cfg["classes"]

    model = SiT(C, S, cfg["patch"], cfg["hidden"], cfg["depth"], cfg["heads"],
                K, sources=sources_for(cfg, tokens), use_sdpa=not args.naive_attn).to(dev)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    ema = [p.detach().clone() for p in params]
    opt, opt_kind = make_optimizer(params)
    net = torch.compile(model) if compiled else model   # attributes (sources) pass through
    bf16 = args.precision == "bf16"

    # Fixed random batch, made once.
    x = torch.randn(B, C, S, S, device=dev)
    labels = torch.randint(0, K, (B,), device=dev)
    tok_target = torch.randn(B, tg * tg, cfg["tok_dim"], device=dev)
    glob_target = torch.randn(B, cfg["glob_dim"], device=dev)

    def step() -> None:
        t = torch.rand(B, device=dev)
        noise = torch.randn_like(x)
        # Classifier-free-guidance label dropout (null class = K).
        y = torch.where(torch.rand(B, device=dev) < LABEL_DROPOUT, torch.full_like(labels, K), labels)
        tok = tok_target
        if tokens != tg * tg:
            # Patch 2 on 28x28 gives a 14x14 token grid (196 tokens) but the
            # token-level target is a 7x7 grid (49 tokens): resample the target
            # to the model's grid with bilinear interpolation (align_corners=False).
            g = tok.reshape(B, tg, tg, -1).permute(0, 3, 1, 2)
            g = F.interpolate(g, size=(grid, grid), mode="bilinear", align_corners=False)
            tok = g.permute(0, 2, 3, 1).reshape(B, tokens, -1)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=bf16):
            out = reed_loss(net, x, noise, t, y, {"tok": tok, "glob": glob_target},
                            path=PATH, w_diff=W_DIFF, w_align=W_ALIGN, proj_coeff=PROJ_COEFF)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        opt.step()
        with torch.no_grad():                       # EMA: e = d*e + (1-d)*p
            torch._foreach_mul_(ema, EMA_DECAY)
            torch._foreach_add_(ema, params, alpha=1 - EMA_DECAY)

    warmup = max(args.warmup, 1) if compiled else args.warmup
    first_s = None
    sync(dev)
    if child:
        print(READY, flush=True)
    for i in range(warmup):
        t0 = time.perf_counter()
        step()
        if i == 0 and compiled:
            sync(dev)
            first_s = time.perf_counter() - t0
            if child:
                print(f"{FIRST} {first_s:.3f}", flush=True)
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync(dev)
    elapsed = time.perf_counter() - t0

    return {
        "impl": "pytorch",
        "config": args.config,
        "threads": args.threads,
        "batch": B,
        "imgs_per_s": round(B * args.steps / elapsed, 3),
        "ms_per_step": round(1000 * elapsed / args.steps, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_after_import_mb": round(RSS_AFTER_IMPORT_MB, 1),
        "flops_per_step": analytic_flops(cfg, B),
        "torch": torch.__version__,
        "attn": "naive" if args.naive_attn else "sdpa",
        "optimizer": opt_kind,
        "device": dev.type,
        "precision": args.precision,
        "compiled": compiled,
        "compile_first_step_s": None if first_s is None else round(first_s, 3),
        "compile_note": "",
        "peak_gpu_mb": (round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
                        if dev.type == "cuda" else None),
        "tf32": bool(dev.type == "cuda" and torch.backends.cuda.matmul.allow_tf32),
        "steps": args.steps,
        "warmup": warmup,
    }


def die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent dies (PR_SET_PDEATHSIG)."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:          # the parent is already gone
        sys.exit(1)


def run_compiled_child(args, setup_limit: float = 300.0):
    """Runs the compiled benchmark in a child process (its own process group,
    so inductor's compile workers die with it).  Returns (result, note):
    result None when it was abandoned or failed, with the reason in note."""
    cmd = [sys.executable, os.path.abspath(__file__), *sys.argv[1:], "--compile-child"]
    group = dict(process_group=0) if sys.version_info >= (3, 11) else dict(start_new_session=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, bufsize=1, **group)
    lines: "queue.Queue[str | None]" = queue.Queue()

    # The child has its own process group, so a timeout(1) around this script
    # would not reach it: pass SIGTERM / SIGINT / SIGHUP on (and the child
    # asks for SIGKILL when this process dies, see die_with_parent).
    def on_signal(signum, frame):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        sys.exit(128 + signum)

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, on_signal)

    def reader() -> None:
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=reader, daemon=True).start()

    def kill() -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

    def wait_for(prefix: str, limit: float):
        """The first line starting with prefix within limit seconds; None at
        EOF; "timeout" when the time ran out."""
        deadline = time.monotonic() + limit
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            try:
                line = lines.get(timeout=left)
            except queue.Empty:
                return "timeout"
            if line is None:
                return None
            if line.startswith(prefix):
                return line
            print(line, file=sys.stderr)          # anything else the child says

    def failed(what: str):
        proc.wait()
        return None, f"compiled run failed {what} (exit {proc.returncode}); eager instead"

    got = wait_for(READY, setup_limit)
    if got == "timeout":
        kill()
        return None, f"compiled run not ready after {setup_limit:.0f} s; eager instead"
    if got is None:
        return failed("while setting up")
    got = wait_for(FIRST, args.compile_limit)
    if got == "timeout":
        kill()
        return None, (f"compile + first step took over {args.compile_limit:.0f} s: "
                      "gave up, eager instead")
    if got is None:
        return failed("while compiling")
    got = wait_for("{", 24 * 3600)
    if got is None:
        return failed("after compiling")
    proc.wait()
    if proc.returncode != 0:
        return failed("after compiling")
    return json.loads(got), ""


def main() -> int:
    ap = argparse.ArgumentParser(description="PyTorch REED training-step benchmark")
    ap.add_argument("--config", choices=sorted(CONFIGS), default="tiny")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=0, help="override the config's batch")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                    help="bf16: torch.autocast(bfloat16) around forward + loss")
    ap.add_argument("--compile", action="store_true", help="wrap the model in torch.compile")
    ap.add_argument("--compile-limit", type=float, default=60.0,
                    help="seconds allowed for compiling + the first step (then eager)")
    ap.add_argument("--compile-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--naive-attn", action="store_true",
                    help="explicit softmax(QK^T/sqrt(d))V instead of F.scaled_dot_product_attention")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.steps < 1 or args.warmup < 0 or args.batch < 0:
        ap.error("--steps must be >= 1, --warmup and --batch >= 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("train_step.py: --device cuda but torch sees no usable GPU", file=sys.stderr)
        return 77

    if args.compile_child:
        die_with_parent()
        result = run_benchmark(args, compiled=True, child=True)
    elif args.compile:
        result, note = run_compiled_child(args)
        if result is None:
            print(f"train_step.py: {note}", file=sys.stderr)
            result = run_benchmark(args, compiled=False)
            result["compile_note"] = note
    else:
        result = run_benchmark(args, compiled=False)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
