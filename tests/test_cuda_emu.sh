#!/usr/bin/env bash
# The CUDA emulator's race checks (tools/cuda-emu/selftest.sh): a planted
# race shows in one of the two thread orders, a planted read of another
# block's shared memory is poisoned. The emulator is how sessions without a
# GPU check the CUDA kernels, so its checks are tested where the suite runs.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT="${REED_BUILD:-/tmp}/cuda-emu-selftest" bash "$ROOT/tools/cuda-emu/selftest.sh"
