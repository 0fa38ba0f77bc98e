#!/usr/bin/env bash
# Learning: the `tiny` model overfits 64 Fashion-MNIST examples. The mean
# denoising loss of the last 20 steps must fall below half of the first 10
# (the loss of a velocity model on random t never reaches 0, so "well below
# its start" is a ratio, printed for the record).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
setup_tmp
cat >"$tmp/cfg.lua" <<EOF2
local c = preset "sit"
c.data.limit = 64
c.model.class_dropout = 0
c.train.steps = 200
c.train.batch = 32
c.train.lr = 1e-3
c.train.log_every = 1
c.train.sample_every = 0
c.train.ckpt_every = 0
c.sample.n = 16
c.sample.steps = 20
return c
EOF2
"$REED_BIN" run "$tmp/cfg.lua" --run-dir "$tmp/run" >/dev/null
python3 - "$tmp/run/metrics.jsonl" <<'PY'
import json, sys
loss = [json.loads(l)["loss_denoise"] for l in open(sys.argv[1])]
first, last = sum(loss[:10]) / 10, sum(loss[-20:]) / 20
print(f"  mean loss_denoise: first 10 steps {first:.4f}, last 20 steps {last:.4f}, ratio {last/first:.3f}")
sys.exit(0 if last < 0.5 * first else "the model did not overfit 64 examples")
PY
echo "learning: ok"
