#!/usr/bin/env bash
# CUDA training parity: the small REED test config (lib.sh's
# write_test_config: two .npy sources, the curriculum phases inside the run)
# trained for 50 steps with the same seed on the CPU and on CUDA.
#
#   fp32: loss, loss_denoise and every sim_* agree with the CPU's at every
#         step to REED_CUDA_RTOL (default 1e-4) relative, measured against
#         max(|cpu|, |cuda|, 1e-2) so that values near zero (the alignment-only
#         loss of the first steps, sims of random targets) are held to 1e-6
#         absolute rather than to an impossible relative bound;
#   bf16: loss and loss_denoise stay within REED_BF16_BAND (default 5%) of the
#         CPU's at every step, measured against max(|cpu|, 0.1) (so 0.005
#         absolute where the loss is near zero); the sims are printed, not
#         checked. The run checks every bf16 view it reads
#         (REED_CUDA_VIEW_CHECK=1: a stale view aborts it), with sole views
#         off (REED_CUDA_VIEW_SOLE=0: a sole view has no fp32 to check with);
#   bf16 on the flash attention path (REED_CUDA_ATTENTION=flash): loss and
#         loss_denoise within the same band of the CPU's;
#   bf16 with sole views of any size (REED_CUDA_VIEW_SOLE_MIN=0), so the
#         MLP's GELU runs in cuBLASLt's epilogues (bf16 pre-activations):
#         loss and loss_denoise within the same band of the CPU's;
#   bf16 views on (sole views too) and off (REED_CUDA_VIEWS=0), both on the
#         GEMM attention path and without the GELU epilogues
#         (REED_CUDA_LT_GELU=0: they need views): the GEMMs and the bias
#         gradients read the same bf16 values either way, and nothing reads
#         a sole view's fp32, so every metric must agree to 1e-5 relative at
#         every step (identical is expected; a stale view would be far off).
# Every CUDA run backs every training activation buffer on first use
# (REED_CUDA_LAZY_MIN=0 unless set; cuda_lazy.cu), where the driver allows.
# Prints the worst step of each comparison. Exits 77 (skipped) when
# `reed run --device cuda` reports no usable GPU (or a build without the CUDA
# backend), 1 on a failure.
#
# The images are random (.npy), so the test does not need the Fashion-MNIST
# package (the GPU machines do not have it).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

STEPS=50
RTOL=${REED_CUDA_RTOL:-1e-4}
export REED_CUDA_LAZY_MIN=${REED_CUDA_LAZY_MIN:-0}
BAND=${REED_BF16_BAND:-0.05}

setup_tmp
make_sources "$tmp" 512
python3 - "$tmp" <<'EOF'
import sys
import numpy as np
d = sys.argv[1]
rng = np.random.default_rng(1)
np.save(f"{d}/images.npy", rng.uniform(-1, 1, (512, 1, 28, 28)).astype(np.float32))
np.save(f"{d}/labels.npy", rng.integers(0, 10, 512).astype(np.int64))
EOF
write_test_config "$tmp/cfg.lua" "$tmp" "$STEPS"
sed -i "s|^return c\$|c.data.dataset = \"npy\"\nc.data.images = \"$tmp/images.npy\"\nc.data.labels = \"$tmp/labels.npy\"\nreturn c|" \
  "$tmp/cfg.lua"
grep -q 'dataset = "npy"' "$tmp/cfg.lua" || fail "could not point the config at the .npy data"

# run NAME ARGS...: trains into $tmp/NAME, output in $tmp/NAME.log.
run() {
  local name=$1; shift
  "$REED_BIN" run "$tmp/cfg.lua" --run-dir "$tmp/$name" --headless "$@" >"$tmp/$name.log" 2>&1
}

echo "probe: 1 step with --device cuda"
if ! run probe --steps 1 --device cuda; then
  # No usable GPU skips; a GPU on which the backend fails to start fails.
  if grep -Eq 'train.device = "cuda": (no CUDA device|this build has no CUDA backend|.*needs 8\.0 or newer)' \
    "$tmp/probe.log"; then
    echo "SKIP: no usable GPU: $(grep -m1 'train.device' "$tmp/probe.log")"
    exit 77
  fi
  cat "$tmp/probe.log" >&2
  fail "reed run --device cuda failed for another reason"
fi
grep -Eq '^run .*, cuda(,|$)' "$tmp/probe.log" ||
  fail "--device cuda did not train on cuda: $(grep -m1 '^run ' "$tmp/probe.log")"

echo "cpu fp32, cuda fp32, cuda bf16: $STEPS steps each"
run cpu --device cpu || { cat "$tmp/cpu.log" >&2; fail "the CPU run failed"; }
run cuda --device cuda --set train.precision=fp32 ||
  { cat "$tmp/cuda.log" >&2; fail "the CUDA fp32 run failed"; }
REED_CUDA_VIEW_CHECK=1 REED_CUDA_VIEW_SOLE=0 run bf16 --device cuda --set train.precision=bf16 ||
  { cat "$tmp/bf16.log" >&2; fail "the CUDA bf16 run failed"; }
REED_CUDA_ATTENTION=flash REED_CUDA_VIEW_CHECK=1 run flash --device cuda \
  --set train.precision=bf16 || { cat "$tmp/flash.log" >&2; fail "the CUDA bf16 run on the flash path failed"; }
REED_CUDA_VERBOSE=1 REED_CUDA_VIEW_SOLE_MIN=0 REED_CUDA_VIEW_CHECK=1 run gelu --device cuda \
  --set train.precision=bf16 || { cat "$tmp/gelu.log" >&2; fail "the CUDA bf16 run with every output a sole view failed"; }
# Whether this GPU's cuBLASLt had the GELU epilogues for the test's shapes
# (where it has none, the run took the GELU kernels: noted, not a failure).
grep -E "cuBLASLt .*GELU" "$tmp/gelu.log" | sort -u | sed 's/^/  /' || echo "  (no GELU epilogue plan was made)"
echo "cuda bf16 with the GEMM attention path, views on and off: $STEPS steps each"
for views in 1 0; do
  REED_CUDA_LT_GELU=0 REED_CUDA_ATTENTION=gemm REED_CUDA_VIEWS=$views run "views$views" --device cuda \
    --set train.precision=bf16 || { cat "$tmp/views$views.log" >&2; fail "the CUDA bf16 run with REED_CUDA_VIEWS=$views failed"; }
done

python3 - "$tmp" "$STEPS" "$RTOL" "$BAND" <<'EOF'
import json, sys

d, steps, rtol, band = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])

def load(name):
    rows = {}
    for line in open(f"{d}/{name}/metrics.jsonl"):
        o = json.loads(line)
        rows[o["step"]] = o
    if sorted(rows) != list(range(steps)):
        sys.exit(f"FAIL: {name}: expected steps 0..{steps - 1}, got {sorted(rows)[:5]}...")
    return rows

cpu, cuda, bf16 = load("cpu"), load("cuda"), load("bf16")
views_on, views_off = load("views1"), load("views0")
flash, gelu = load("flash"), load("gelu")
keys = ["loss", "loss_denoise"] + sorted(k for k in cpu[0] if k.startswith("sim_"))
if len(keys) < 4:
    sys.exit(f"FAIL: expected two sim_* metrics, the CPU's metrics have {sorted(cpu[0])}")
ok = True

def compare(other, name, keys, floor, tol, check, base=cpu):
    """Worst |a - b| / max(|a|, |b|, floor) per key over all steps (a from base)."""
    global ok
    for k in keys:
        worst = (-1.0, 0, 0.0, 0.0)
        for s in range(steps):
            a, b = base[s].get(k), other[s].get(k)
            if a is None or b is None:
                print(f"  {name} {k}: missing at step {s}")
                ok = False
                break
            den = max(abs(a), abs(b), floor) if floor else max(abs(a), 0.1)
            r = abs(a - b) / den
            if r > worst[0]:
                worst = (r, s, a, b)
        r, s, a, b = worst
        bad = check and r > tol
        ok &= not bad
        first = "cpu" if base is cpu else "views on"
        print(f"  {name:10s} {k:14s} worst {r:.2e} at step {s:2d} ({first} {a:.7g}, {name.split()[0]} {b:.7g})"
              f"{'  FAIL > %g' % tol if bad else ''}{'' if check else '  (not checked)'}")

print(f"fp32: relative to max(|cpu|, |cuda|, 1e-2), tolerance {rtol:g}")
compare(cuda, "cuda fp32", keys, 1e-2, rtol, True)
print(f"bf16: relative to max(|cpu|, 0.1), band {band:g}")
compare(bf16, "bf16", keys[:2], 0, band, True)
compare(bf16, "bf16", keys[2:], 0, band, False)
compare(flash, "bf16 flash", keys[:2], 0, band, True)
compare(gelu, "bf16 gelu", keys[:2], 0, band, True)
print("bf16 views off against on: relative to max(|on|, |off|, 1e-2), tolerance 1e-5")
compare(views_off, "views-off", keys, 1e-2, 1e-5, True, base=views_on)
sys.exit(0 if ok else 1)
EOF
echo "cuda train: ok"
