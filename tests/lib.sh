# Helpers shared by the shell tests (sourced, not run).
# REED_BIN (the reed binary) and REED_SRC (the source tree) come from ctest.
: "${REED_SRC:=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
: "${REED_BIN:=$REED_SRC/build/reed}"
export REED_SRC

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# setup_tmp: sets $tmp to a fresh directory removed when the test exits.
setup_tmp() {
  tmp=$(mktemp -d /tmp/reed-test.XXXXXX)
  trap 'rm -rf "$tmp"' EXIT
}

# make_sources DIR N: random representation targets for the first N
# Fashion-MNIST examples: DIR/enc.npy (N, 49, 16) and DIR/text.npy (N, 24).
make_sources() {
  python3 - "$1" "$2" <<'EOF'
import sys
import numpy as np
d, n = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
np.save(f"{d}/enc.npy", rng.standard_normal((n, 49, 16)).astype(np.float32))
np.save(f"{d}/text.npy", rng.standard_normal((n, 24)).astype(np.float32))
EOF
}

# write_test_config FILE SRCDIR STEPS: a small REED config (two sources, the
# curriculum phases all inside the run) that trains in seconds.
write_test_config() {
  cat >"$1" <<EOF
local c = preset "reed"
c.name = "test"
c.model = { preset = "custom", hidden = 32, depth = 2, heads = 2, patch = 7,
            in_channels = 1, image_size = 28, num_classes = 10 }
c.data.limit = 512
c.train.steps = $3
c.train.batch = 8
c.train.log_every = 1
c.train.sample_every = 0
c.train.ckpt_every = 0
c.train.threads = 2
c.curriculum.diffusion_start = 3
c.curriculum.diffusion_warmup = 4
c.curriculum.align_steps = 16
c.sample.n = 4
c.sample.steps = 4
c.sources[1].from = "file"
c.sources[1].file = "$2/enc.npy"
c.sources[1].projector_dim = 32
c.sources[2].from = "file"
c.sources[2].name = "text"
c.sources[2].file = "$2/text.npy"
c.sources[2].depth = 2
c.sources[2].projector_dim = 32
return c
EOF
}
