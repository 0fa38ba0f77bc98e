#!/usr/bin/env bash
# Resume continues exactly: 20 steps straight and 10 + resume + 10 give the
# same metrics (losses, similarities, grad norms) at every step; a Ctrl-C
# (SIGINT) or a hang-up (SIGHUP) mid-run saves a checkpoint and the resumed
# run matches too. The straight run also matches one whose source rows are
# gathered on the host (REED_SOURCE_CAP_MB=0) instead of on the backend.
# Uses a small REED config with two .npy sources and a live curriculum.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

setup_tmp
make_sources "$tmp" 512
write_test_config "$tmp/cfg.lua" "$tmp" 20

compare_metrics() { # compare_metrics A B: equal except timing, for steps in both
  python3 - "$1" "$2" <<'EOF'
import json, sys
def load(p):
    rows = {}
    for line in open(p):
        o = json.loads(line)
        o.pop("imgs_per_s")
        rows[o["step"]] = o
    return rows
a, b = load(sys.argv[1]), load(sys.argv[2])
if sorted(a) != sorted(b):
    sys.exit(f"steps differ: {sorted(a)} vs {sorted(b)}")
for s in sorted(a):
    if a[s] != b[s]:
        sys.exit(f"step {s} differs:\n  {a[s]}\n  {b[s]}")
print(f"  {len(a)} steps identical (last loss {a[max(a)]['loss']})")
EOF
}

echo "straight: 20 steps, a checkpoint every 5, keeping the newest 2"
"$REED_BIN" run "$tmp/cfg.lua" --run-dir "$tmp/straight" \
  --set train.ckpt_every=5 --set train.keep_ckpts=2 >/dev/null
kept=$(cd "$tmp/straight/checkpoints" && ls | tr '\n' ' ')
[ "$kept" = "step_00000015.safetensors step_00000020.safetensors " ] ||
  fail "expected the newest 2 checkpoints, found: $kept"
echo "  kept: $kept"

echo "host gather: the sources' rows gathered on the host (REED_SOURCE_CAP_MB=0)"
REED_SOURCE_CAP_MB=0 "$REED_BIN" run "$tmp/cfg.lua" --run-dir "$tmp/host" >/dev/null
compare_metrics "$tmp/straight/metrics.jsonl" "$tmp/host/metrics.jsonl"

echo "split: 10 steps, then resume to 20"
"$REED_BIN" run "$tmp/cfg.lua" --run-dir "$tmp/split" --steps 10 >/dev/null
"$REED_BIN" run --resume "$tmp/split" --steps 20 >"$tmp/resume.log"
grep -q "resumed from" "$tmp/resume.log" || fail "resume did not say where it resumed from"
compare_metrics "$tmp/straight/metrics.jsonl" "$tmp/split/metrics.jsonl"

# interrupt SIG: SIG early in the run saves a checkpoint (exit 130), and the
# resumed run matches the straight one. A run that finished before the
# signal arrived is tried again (3 tries), then counts as a failure. The
# run gets SIG's default action first (env --default-signal): under nohup
# SIGHUP would be inherited as ignored, and the run would go on on purpose.
interrupt() {
  local sig=$1 dir="$tmp/int-$1" try rc
  echo "interrupt: SIG$sig during the run, then resume"
  for try in 1 2 3; do
    rm -rf "$dir"
    env --default-signal="$sig" "$REED_BIN" run "$tmp/cfg.lua" --run-dir "$dir" \
      --set train.steps=20 >"$dir.log" &
    pid=$!
    for _ in $(seq 1 3000); do
      [ -s "$dir/metrics.jsonl" ] && break
      sleep 0.01
    done
    kill -"$sig" "$pid" 2>/dev/null || true
    rc=0; wait "$pid" || rc=$?
    [ "$rc" -ne 0 ] && break
    echo "  (try $try: the run finished before SIG$sig arrived)"
  done
  [ "$rc" -eq 130 ] || fail "the run interrupted by SIG$sig exited with $rc"
  grep -q "checkpoint:" "$dir.log" || fail "SIG$sig did not save a checkpoint"
  "$REED_BIN" run --resume "$dir" >/dev/null
  compare_metrics "$tmp/straight/metrics.jsonl" "$dir/metrics.jsonl"
}
interrupt INT
interrupt HUP   # a dropped SSH connection
echo "resume: ok"
