#!/usr/bin/env bash
# bench/method.sh [BUILD_DIR] — the method benchmark of issue 3: plain SiT,
# REPA and REED trained with the same model, data, budget and seed, each
# evaluated at the same steps (Fréchet distance of evaluator features against
# the Fashion-MNIST test set, and the evaluator's accuracy on the samples'
# classes), then a table of distance per step and, for each method, the
# steps it needs to reach the distance plain SiT reaches at its last
# evaluation: the speed-up the paper reports (23.3× for REED over SiT-XL/2
# on ImageNet 256).
#
# The presets scripts/lua/presets/{sit,repa,reed}.lua are used as they are,
# with the step budget (and REED's align_steps) scaled to STEPS.
#
# Knobs (environment), sized for about 40 minutes on a quiet 2-core machine:
#   METHOD_STEPS=1500   training steps per method
#   METHOD_EVERY=150    evaluate every N steps (and at the last)
#   METHOD_N=400        samples per evaluation (class-balanced)
#   METHOD_SAMPLE_STEPS=20  Euler steps per sample
#   METHOD_THREADS=0    threads (0 = all cores)
#   METHOD_METHODS="sit repa reed"
#   METHOD_SET="..."    extra --set overrides for every method (e.g. a variant)
#   METHOD_OUT=runs/bench-method  where the runs go (replaced)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${1:-build}
[[ -d $BUILD || $BUILD == /* ]] || BUILD="$ROOT/$BUILD"
REED="$BUILD/reed"
[[ -x $REED ]] || { echo "method.sh: $REED not built (make build)" >&2; exit 2; }

STEPS=${METHOD_STEPS:-1500}
EVERY=${METHOD_EVERY:-150}
N=${METHOD_N:-400}
SAMPLE_STEPS=${METHOD_SAMPLE_STEPS:-20}
THREADS=${METHOD_THREADS:-0}
METHODS=${METHOD_METHODS:-"sit repa reed"}
OUT=${METHOD_OUT:-"$ROOT/runs/bench-method"}

echo "bench/method: $(date -u +%FT%TZ) on $(nproc) cores; $("$REED" --version)"
echo "settings: methods [$METHODS], presets scripts/lua/presets/<method>.lua, $STEPS steps each,"
echo "          evaluation every $EVERY steps: n $N class-balanced samples, $SAMPLE_STEPS Euler steps,"
echo "          EMA weights, seed 0, FD against the 10000 test images; threads $THREADS"
[[ -n ${METHOD_SET:-} ]] && echo "          extra overrides: $METHOD_SET"

export REED_SRC="$ROOT"  # the shipped teacher and evaluator
start=$(date +%s)
for m in $METHODS; do
    dir="$OUT/$m"
    rm -rf "$dir"
    sets=(--set "train.steps=$STEPS" --set "curriculum.align_steps=$STEPS"
          --set "eval.every=$EVERY" --set "eval.n=$N" --set "eval.steps=$SAMPLE_STEPS"
          --set "eval.seed=0" --set "train.threads=$THREADS"
          --set "train.sample_every=0" --set "train.ckpt_every=0")
    for s in ${METHOD_SET:-}; do sets+=(--set "$s"); done
    t0=$(date +%s)
    "$REED" run "$ROOT/scripts/lua/presets/$m.lua" --run-dir "$dir" --headless "${sets[@]}" \
        | grep -E "^(eval|done|run )" || { echo "method.sh: $m failed" >&2; exit 1; }
    echo "$m: $(( $(date +%s) - t0 )) s"
done
echo "total: $(( $(date +%s) - start )) s"
echo
python3 "$ROOT/bench/method_table.py" "$OUT" $METHODS
