#!/usr/bin/env bash
# Sample quality during training (eval.every) and `reed eval` agree:
# - a 6-step run with eval.every = 4 writes fd, fd_n and cond_acc after steps
#   4 and 6 (the last) and nowhere else;
# - `reed eval` on the final checkpoint with the same n, steps and seed
#   reports the same FD and class accuracy as the run's last evaluation
#   (one sampler, one evaluator, one set of test statistics);
# - a missing evaluator turns evaluation off with a message naming the file,
#   and the run still finishes;
# - eval.every on a model the evaluator cannot score is a config error.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

setup_tmp
make_sources "$tmp" 512
write_test_config "$tmp/cfg.lua" "$tmp" 6

"$REED_BIN" run "$tmp/cfg.lua" --run-dir "$tmp/run" --set eval.every=4 --set eval.n=30 \
  --set eval.steps=3 --set eval.seed=5 >"$tmp/out.txt" 2>&1 || { cat "$tmp/out.txt"; fail "run failed"; }
grep "eval at step" "$tmp/out.txt" || fail "no evaluation messages"

python3 - "$tmp/run/metrics.jsonl" >"$tmp/last.txt" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
evaluated = [r["step"] for r in rows if "fd" in r]
if evaluated != [3, 5]:
    sys.exit(f"evaluations after steps {[s + 1 for s in evaluated]}, expected [4, 6]")
for r in rows:
    if "fd" in r and not (r["fd_n"] == 30 and r["fd"] > 0 and 0 <= r["cond_acc"] <= 1):
        sys.exit(f"bad evaluation record: {r}")
print(f'{rows[-1]["fd"]!r} {100 * rows[-1]["cond_acc"]:.2f}')
EOF
read -r fd acc <"$tmp/last.txt"
echo "run's last evaluation: FD $fd, class accuracy $acc%"

"$REED_BIN" eval "$tmp/run" --n 30 --steps 3 --seed 5 --threads 2 >"$tmp/eval.txt"
cat "$tmp/eval.txt"
# metrics.jsonl keeps 8 significant digits and reed eval prints 4
# decimals, so the two agree to their rounding (422.98855 is printed
# 422.9886), not as strings.
eval_fd=$(sed -n 's/^FD \([0-9.]*\) .*/\1/p' "$tmp/eval.txt")
python3 -c 'import sys; a, b = map(float, sys.argv[1:]); sys.exit(not abs(a - b) <= 1e-4 + 1e-7 * abs(a))' \
  "$fd" "${eval_fd:-nan}" || fail "reed eval's FD ${eval_fd:-(none)} differs from the run's ($fd)"
grep -q "^class accuracy $acc%" "$tmp/eval.txt" || fail "reed eval's accuracy differs ($acc%)"

echo "missing evaluator: evaluation turns off, the run finishes"
mkdir -p "$tmp/empty/assets"
REED_SRC="$tmp/empty" "$REED_BIN" run "$tmp/cfg.lua" --run-dir "$tmp/run2" \
  --set eval.every=2 --set eval.n=10 >"$tmp/out2.txt" 2>&1 ||
  { cat "$tmp/out2.txt"; fail "the run failed instead of turning evaluation off"; }
grep "eval: .*evaluator.safetensors.*periodic evaluation is off" "$tmp/out2.txt" ||
  { cat "$tmp/out2.txt"; fail "no message naming the missing evaluator"; }
! grep -q '"fd"' "$tmp/run2/metrics.jsonl" || fail "fd written without an evaluator"

echo "eval.every on a 3-channel model is a config error"
if "$REED_BIN" run "$tmp/cfg.lua" --run-dir "$tmp/run3" --set eval.every=2 \
     --set model.in_channels=3 >"$tmp/out3.txt" 2>&1; then
  fail "accepted eval.every for a 3-channel model"
fi
grep "eval.every" "$tmp/out3.txt" || { cat "$tmp/out3.txt"; fail "message does not name eval.every"; }
echo "PASS"
