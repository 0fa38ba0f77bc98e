#!/usr/bin/env bash
# The whole training step against the PyTorch fixtures on the CUDA backend
# (fp32): test_parity with its `cuda` argument. Skipped (77) without a GPU.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
: "${REED_BUILD:=$REED_SRC/build}"
cd "$REED_SRC" || exit 1
"$REED_BUILD/test_parity" cuda
