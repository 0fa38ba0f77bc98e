#!/usr/bin/env bash
# The workbench end to end in a real terminal (tmux): start `reed run` on a
# small config in a 100×30 pane; the status line and charts show; pause()
# stops the step counter; set{proj_coeff=0} reaches metrics.jsonl from the
# step it was applied at; sample{n=4} writes a PNG and fills the preview;
# resizing lays the screen out again; `while true do end` + Ctrl-C leaves the
# run alive; q quits after a checkpoint and the terminal is restored.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
command -v tmux >/dev/null || { echo "tmux is not installed (scripts/install-deps.sh installs it)"; exit 77; }

setup_tmp
make_sources "$tmp" 512
write_test_config "$tmp/cfg.lua" "$tmp" 100000
sock="$tmp/tmux.sock"
t() { tmux -S "$sock" "$@"; }
# A workbench still running when the test ends (a failure) is killed too.
cleanup() { t kill-server 2>/dev/null || true; pkill -KILL -f -- "--run-dir $tmp/" || true; rm -rf "$tmp"; }
trap cleanup EXIT
run="$tmp/run"
metrics="$run/metrics.jsonl"

t new-session -d -s wb -x 100 -y 30 \
  "cd '$tmp' && TERM=screen-256color LANG=C.UTF-8 '$REED_BIN' run cfg.lua --run-dir '$run'; echo EXITED \$?; sleep 30"

screen() { t capture-pane -p -t wb; }
steps() { [ -f "$metrics" ] && wc -l <"$metrics" || echo 0; }
wait_for() { # wait_for SECONDS CONDITION...: polls every 0.2 s
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do
    [ $SECONDS -ge $deadline ] && return 1
    sleep 0.2
  done
}
screen_has() { screen | grep -Eq -- "$1"; }
screen_has_plot() { screen | LC_ALL=C.UTF-8 grep -qP '[\x{2801}-\x{28FF}]'; }
steps_at_least() { [ "$(steps)" -ge "$1" ]; }
type_line() { t send-keys -t wb -l -- "$1"; t send-keys -t wb Enter; }
check() { echo "  ok  $*"; }

wait_for 60 screen_has "step" || { screen; fail "no status line"; }
wait_for 60 steps_at_least 3 || { screen; fail "training did not start"; }
# The loss chart's title, and points plotted (braille dots: the test runs
# in a UTF-8 locale on a terminal other than the Linux console).
screen_has "loss" || { screen; fail "no loss chart"; }
wait_for 30 screen_has_plot || { screen; fail "the charts plotted no points"; }
check "status line and charts: $(screen | head -n 1 | cut -c1-90)"

type_line "pause()"
wait_for 20 screen_has "paused" || { screen; fail "pause() not shown"; }
a=$(steps); sleep 1.5; b=$(steps)
[ "$a" = "$b" ] || fail "steps went on while paused ($a → $b)"
check "pause() stops the step counter at $a"

type_line "set{proj_coeff=0}"
type_line "resume()"
wait_for 30 steps_at_least $((a + 5)) || fail "resume() did not resume"
python3 - "$metrics" "$a" <<'EOF' || fail "proj_coeff=0 not applied from the step after the pause"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
paused_at = int(sys.argv[2])
before = [r["proj_coeff"] for r in rows[:paused_at]]
after = [r["proj_coeff"] for r in rows[paused_at:]]
assert all(v == 0.5 for v in before), before[-3:]
assert after and all(v == 0 for v in after), after[:3]
print(f"  ok  set{{proj_coeff=0}}: 0.5 up to step {paused_at - 1}, 0 from step {paused_at}")
EOF

type_line "sample{n=4, steps=4}"
wait_for 60 bash -c "ls '$run'/samples/*.png >/dev/null 2>&1" || { screen; fail "sample{} wrote no PNG"; }
wait_for 20 screen_has "euler" || { screen; fail "the preview caption did not appear"; }
check "sample{n=4} wrote $(ls "$run"/samples/ | head -n 1) and filled the preview"

# The workbench must lay itself out again: the REPL prompt moves to the new
# bottom row (tmux alone would leave the old screen where it was).
# (The prompt can show a frame before the rest: wait for each.)
prompt_on_row() { screen | sed -n "$1p" | grep -q '^>'; }
status_on_top() { screen | head -n 1 | grep -q "step"; }
t resize-window -t wb -x 120 -y 40
wait_for 10 prompt_on_row 40 || { screen; fail "after resize to 120x40 the prompt is not on row 40"; }
wait_for 10 status_on_top || { screen; fail "status line lost after resize"; }
t resize-window -t wb -x 80 -y 24
wait_for 10 prompt_on_row 24 || { screen; fail "after resize to 80x24 the prompt is not on row 24"; }
wait_for 10 status_on_top || { screen; fail "status line lost at 80x24"; }
check "resize to 120x40 and 80x24: laid out again, status line on top, prompt at the bottom"

type_line "while true do end"
sleep 1
t send-keys -t wb C-c
# an entry "STEP<TAB>interrupted<TAB>CHUNK" (the header names the format)
interrupted() { grep -q "^[0-9]*$(printf '\t')interrupted$(printf '\t')" "$run/commands.log"; }
wait_for 20 interrupted || { screen; fail "the loop was not interrupted"; }
a=$(steps); wait_for 30 steps_at_least $((a + 3)) || fail "the run stopped after the interrupt"
check "while true do end + Ctrl-C: interrupted, the run goes on"

t send-keys -t wb Tab
t send-keys -t wb q
wait_for 60 screen_has "EXITED 0" || { screen; fail "q did not quit cleanly"; }
ls "$run"/checkpoints/*.safetensors >/dev/null || fail "no checkpoint written on quit"
screen | grep -q "workbench closed" || fail "terminal not restored (no closing line)"
check "q saved a checkpoint, quit and restored the terminal"

# The terminal goes away (an SSH connection drops) while a chunk runs: the
# workbench interrupts it, saves a checkpoint and exits.
run2="$tmp/run2"
t new-session -d -s wb2 -x 100 -y 30 \
  "cd '$tmp' && TERM=screen-256color LANG=C.UTF-8 '$REED_BIN' run cfg.lua --run-dir '$run2'"
wait_for 60 bash -c "[ -s '$run2/metrics.jsonl' ]" || fail "the second workbench did not start"
t send-keys -t wb2 -l -- "while true do end"
t send-keys -t wb2 Enter
sleep 1
t kill-server
running() { pgrep -f -- "--run-dir $run2" >/dev/null; }
gone() { ! running; }
wait_for 60 gone || fail "the workbench kept running after its terminal went away"
ls "$run2"/checkpoints/*.safetensors >/dev/null || fail "no checkpoint written when the terminal went away"
check "terminal gone during a chunk: interrupted, checkpoint saved, exited"
echo "workbench: ok"
