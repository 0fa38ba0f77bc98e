#!/usr/bin/env bash
# bench/run.sh [BUILD_DIR] — REED engine vs PyTorch, full training steps on the CPU.
#
# For each OPENBLAS_CORETYPE pass (as the machine set it, then unset; one
# pass when it is not set), each thread count and each config it runs
# BUILD_DIR/bench_train_step and bench/train_step.py under the same
# environment (OMP_NUM_THREADS = OPENBLAS_NUM_THREADS = MKL_NUM_THREADS = the
# thread count, OMP_WAIT_POLICY=passive), alternating which side goes first
# so a noisy neighbour hurts both alike, and keeps the best repeat per cell.
# It also measures the sgemm ceiling (BUILD_DIR/bench_sgemm_ceiling, the
# engine's OpenBLAS) per thread count and reports each side's achieved
# GFLOP/s (analytic flops_per_step / seconds per step) as a share of it.
#
# Knobs (environment):
#   BENCH_THREADS="1 2"             thread counts
#   BENCH_CONFIGS="tiny small sitS"  configs
#   BENCH_PLAN_<config>="W S R"      warm-up steps, timed steps, repeats
#                                    (defaults below: sized for ~15 min on 2 cores)
#   BENCH_DATA=fashion-mnist|random  images for the engine (default fashion-mnist)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${1:-build}
[[ -d $BUILD || $BUILD == /* ]] || BUILD="$ROOT/$BUILD"
BUILD=$(cd "$BUILD" 2>/dev/null && pwd) || { echo "run.sh: no build directory '${1:-build}'" >&2; exit 2; }
REED_BENCH="$BUILD/bench_train_step"
SGEMM_BENCH="$BUILD/bench_sgemm_ceiling"
TORCH_BENCH="$ROOT/bench/train_step.py"
for exe in "$REED_BENCH" "$SGEMM_BENCH"; do
    [[ -x $exe ]] || { echo "run.sh: $exe not built (cmake --build $BUILD --target $(basename "$exe"))" >&2; exit 2; }
done

THREADS=${BENCH_THREADS:-"1 2"}
CONFIGS=${BENCH_CONFIGS:-"tiny small sitS"}
DATA=${BENCH_DATA:-fashion-mnist}

# Warm-up steps, timed steps, repeats per config. On this 2-core machine one
# step takes ~0.5 s (tiny), ~20 s (small) and ~35 s (sitS) on either side.
plan_for() {
    local var="BENCH_PLAN_$1"
    if [[ -n ${!var:-} ]]; then echo "${!var}"; return; fi
    case $1 in
        tiny) echo "2 10 2" ;;
        small) echo "1 1 1" ;;
        sitS) echo "1 1 1" ;;
        *) echo "1 2 1" ;;
    esac
}

WORK=$(mktemp -d /tmp/reed_run_bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
RESULTS="$WORK/results.tsv"   # pass <TAB> json line
: >"$RESULTS"

# Runs "$@" with the benchmark environment for thread count $1 and the
# current OPENBLAS_CORETYPE pass ($CORETYPE_MODE: keep or unset).
with_env() {
    local t=$1; shift
    local unset_args=()
    [[ $CORETYPE_MODE == unset ]] && unset_args=(-u OPENBLAS_CORETYPE)
    env "${unset_args[@]}" OMP_NUM_THREADS="$t" OPENBLAS_NUM_THREADS="$t" MKL_NUM_THREADS="$t" \
        OMP_WAIT_POLICY=passive "$@"
}

# Runs one benchmark command, echoes its JSON line and records it under the
# current pass; a failure is reported and leaves the cell empty.
record() {
    local label=$1; shift
    local out start=$SECONDS
    if out=$("$@" 2>"$WORK/stderr") && [[ $out == \{* ]]; then
        echo "  [$label, $((SECONDS - start)) s] $out"
        printf '%s\t%s\n' "$PASS" "$(tail -n 1 <<<"$out")" >>"$RESULTS"
    else
        echo "  [$label] FAILED: $(tail -n 3 "$WORK/stderr" | tr '\n' ' ')$out"
    fi
}

# torch.mm's own ceiling (its BLAS is MKL, not OpenBLAS), for reference next
# to the engine's: square 2048^3, best of 5 after one warm-up call.
TORCH_MM="$WORK/torch_mm.py"
cat >"$TORCH_MM" <<'EOF'
import json, sys, time, torch
t, n = int(sys.argv[1]), 2048
torch.set_num_threads(t)
a, b = torch.rand(n, n), torch.rand(n, n)
torch.mm(a, b)
best = float("inf")
for _ in range(5):
    t0 = time.perf_counter()
    torch.mm(a, b)
    best = min(best, time.perf_counter() - t0)
print(json.dumps({"impl": "torch-mm", "threads": t, "gflops": round(2 * n**3 / best / 1e9, 2)}))
EOF

run_cell() {
    local cfg=$1 t=$2 plan w s r
    plan=$(plan_for "$cfg"); read -r w s r <<<"$plan"
    echo "-- $cfg, $t thread(s): warm-up $w, timed steps $s, repeats $r"
    for ((i = 1; i <= r; i++)); do
        local reed=(with_env "$t" "$REED_BENCH" --config "$cfg" --threads "$t" --steps "$s" --warmup "$w" --data "$DATA")
        local torch=(with_env "$t" python3 "$TORCH_BENCH" --config "$cfg" --threads "$t" --steps "$s" --warmup "$w")
        if ((i % 2)); then
            record "reed  #$i" "${reed[@]}"; record "torch #$i" "${torch[@]}"
        else
            record "torch #$i" "${torch[@]}"; record "reed  #$i" "${reed[@]}"
        fi
    done
}

run_pass() {
    PASS=$1 CORETYPE_MODE=$2
    echo
    echo "=== pass: $PASS ==="
    for t in $THREADS; do
        record "sgemm ceiling" with_env "$t" "$SGEMM_BENCH" --threads "$t" --n 2048 --reps 5
        record "torch.mm ceiling" with_env "$t" python3 "$TORCH_MM" "$t"
        for cfg in $CONFIGS; do run_cell "$cfg" "$t"; done
    done
}

# --- header ----------------------------------------------------------------------
echo "REED training-step benchmark — $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "host: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "load before: $(uptime)"
echo "build: $BUILD; engine images: $DATA (first 1024); torch $(python3 -c 'import torch; print(torch.__version__)')"
echo "environment for both sides: OMP_NUM_THREADS=OPENBLAS_NUM_THREADS=MKL_NUM_THREADS=<threads>, OMP_WAIT_POLICY=passive"
echo "threads: $THREADS; configs: $CONFIGS"
for cfg in $CONFIGS; do echo "steps for $cfg (warm-up timed repeats): $(plan_for "$cfg")"; done
START=$SECONDS
if [[ -n ${OPENBLAS_CORETYPE+x} ]]; then
    echo "OPENBLAS_CORETYPE is set to '$OPENBLAS_CORETYPE': running once with it as set, once with it unset"
    run_pass "OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE" keep
    run_pass "OPENBLAS_CORETYPE unset" unset
else
    echo "OPENBLAS_CORETYPE is not set: running once (OpenBLAS picks its kernels for this CPU)"
    run_pass "OPENBLAS_CORETYPE not set" unset
fi
echo
echo "load after: $(uptime)"
echo "total time: $((SECONDS - START)) s"

# --- summary --------------------------------------------------------------------
python3 - "$RESULTS" <<'EOF'
import json, sys
from collections import defaultdict

best = {}                    # (pass, impl, config, threads) -> fastest run
ceiling = defaultdict(dict)  # pass -> {(impl, threads): gflops}
passes = []
for line in open(sys.argv[1]):
    pas, js = line.rstrip("\n").split("\t", 1)
    r = json.loads(js)
    if pas not in passes:
        passes.append(pas)
    if r["impl"] in ("sgemm", "torch-mm"):
        ceiling[pas][(r["impl"], r["threads"])] = r["gflops"]
        continue
    key = (pas, r["impl"], r["config"], r["threads"])
    if key not in best or r["imgs_per_s"] > best[key]["imgs_per_s"]:
        best[key] = r

def gflops(r):
    return r["flops_per_step"] / (r["ms_per_step"] / 1000) / 1e9

for pas in passes:
    print(f"\n{pas}: best repeat per cell; GFLOP/s = analytic flops_per_step / s per step;"
          " % of the engine's OpenBLAS sgemm 2048^3 ceiling at the same thread count")
    for (impl, t), g in sorted(ceiling[pas].items(), key=lambda kv: (kv[0][1], kv[0][0])):
        print(f"  ceiling {impl:8s} {t} thread(s): {g:7.2f} GFLOP/s")
    head = ["config", "threads", "reed img/s", "torch img/s", "ratio reed/torch",
            "reed peak RSS MB", "torch peak RSS MB", "reed GFLOP/s (% of sgemm)",
            "torch GFLOP/s (% of sgemm)"]
    rows = []
    cells = sorted({(k[2], k[3]) for k in best if k[0] == pas},
                   key=lambda c: (["tiny", "small", "sitS"].index(c[0])
                                  if c[0] in ("tiny", "small", "sitS") else 9, c[1]))
    for cfg, t in cells:
        re, to = best.get((pas, "reed", cfg, t)), best.get((pas, "pytorch", cfg, t))
        ceil = ceiling[pas].get(("sgemm", t))
        def perf(r):
            if not r:
                return "n/a"
            g = gflops(r)
            return f"{g:.1f} ({100 * g / ceil:.0f}%)" if ceil else f"{g:.1f}"
        rows.append([cfg, str(t),
                     f"{re['imgs_per_s']:.2f}" if re else "n/a",
                     f"{to['imgs_per_s']:.2f}" if to else "n/a",
                     f"{re['imgs_per_s'] / to['imgs_per_s']:.2f}" if re and to else "n/a",
                     f"{re['peak_rss_mb']:.0f}" if re else "n/a",
                     f"{to['peak_rss_mb']:.0f}" if to else "n/a",
                     perf(re), perf(to)])
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    fmt = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    print(fmt(head))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(fmt(r))
print("\ntorch peak RSS includes ~530 MB of torch itself (rss_after_import_mb in its JSON);"
      " reed peak RSS includes the dataset as the engine loads it.")
EOF
