#!/usr/bin/env bash
# The whole training step against the PyTorch fixtures on the CUDA backend:
# test_parity with its `cuda` argument (fp32), then `cuda-bf16`. Skipped
# (77) without a GPU.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
: "${REED_BUILD:=$REED_SRC/build}"
cd "$REED_SRC" || exit 1
"$REED_BUILD/test_parity" cuda || exit $?
# The bf16 mode on each attention path, views and sole views on (bf16
# tolerance; see test_parity.c).
"$REED_BUILD/test_parity" cuda-bf16
