#!/bin/bash
# tools/cuda-emu/selftest.sh — checks that the emulator shows the bugs its
# race checks are for (selftest/races.cu): a read of another thread's shared
# write with no barrier is wrong in one of the two thread orders
# (EMU_ORDER=reverse), the same read after __syncthreads is right in both,
# a read of shared memory this block never wrote is garbage (a value
# left by another block is poisoned away), and a cp.async refill of a
# buffer another thread has still to read shows. Under a minute.
set -euo pipefail
EMU=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-/tmp/reed-cuda-emu-selftest}
mkdir -p "$OUT"
python3 "$EMU/launch.py" "$EMU/selftest/races.cu" > "$OUT/races.cpp" 2>/dev/null
g++ -std=c++17 -O1 -Wno-unknown-pragmas -D__CUDACC__ -I"$EMU/include" "$OUT/races.cpp" "$EMU/emu.cpp" \
  -o "$OUT/races"
fails=0
# expect CASE ORDER RESULT: RESULT "right" (exit 0) or "wrong" (exit 1)
expect() {
  local got=right
  EMU_ORDER=$2 "$OUT/races" "$1" > /dev/null 2>&1 || got=wrong
  if [[ $got == "$3" ]]; then echo "ok   $1, $2 order: $got"
  else echo "FAIL $1, $2 order: $got, want $3"; fails=$((fails + 1)); fi
}
expect race forward right     # the neighbour happened to run first
expect race reverse wrong     # ... and here it did not: the race shows
expect synced forward right
expect synced reverse right
expect leftover forward wrong # block 1 reads what only block 0 wrote
expect leftover reverse wrong
expect stage forward wrong    # a cp.async refill of a stage still being read
expect stage_synced forward right
expect stage_synced reverse right
echo "selftest: $fails failed"
[[ $fails == 0 ]]
