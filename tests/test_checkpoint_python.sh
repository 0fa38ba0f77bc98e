#!/usr/bin/env bash
# Our checkpoint opens with Python's safetensors package, and its model
# tensors have exactly the names and shapes of the PyTorch reference model's
# state_dict (tests/fixtures/state_dict_tiny.json, written by
# tests/reference/make_fixtures.py). EMA and AdamW moments sit alongside
# with the same shapes; step, data cursor and config are in the metadata.
# The sample grid PNG carries its settings in tEXt chunks.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

if ! python3 -c 'import safetensors, numpy' 2>/dev/null; then
  echo "python3 with safetensors and numpy is not available (scripts/install-deps.sh installs them)"
  exit 77
fi

setup_tmp
python3 - "$tmp" <<'EOF'
import sys, numpy as np
d = sys.argv[1]
rng = np.random.default_rng(1)
np.save(f"{d}/enc.npy", rng.standard_normal((256, 49, 64)).astype(np.float32))
np.save(f"{d}/text.npy", rng.standard_normal((256, 64)).astype(np.float32))
EOF
# The `tiny` bench config: token 49×64 at depth 2, global 64 at depth 3, projector 256.
cat >"$tmp/cfg.lua" <<EOF
local c = preset "reed"
c.data.limit = 256
c.train.steps = 2
c.train.batch = 4
c.sample.n = 4
c.sample.steps = 2
c.sources[1].from = "file"
c.sources[1].file = "$tmp/enc.npy"
c.sources[2].from = "file"
c.sources[2].file = "$tmp/text.npy"
return c
EOF
"$REED_BIN" run "$tmp/cfg.lua" --run-dir "$tmp/run" >/dev/null

python3 - "$tmp/run" "$REED_SRC/tests/fixtures/state_dict_tiny.json" <<'EOF'
import glob, json, sys
from safetensors import safe_open
run, ref_path = sys.argv[1], sys.argv[2]
ckpt = sorted(glob.glob(f"{run}/checkpoints/*.safetensors"))[-1]
ref = json.load(open(ref_path))
with safe_open(ckpt, "np") as f:
    meta = f.metadata()
    names = list(f.keys())
    shapes = {k: list(f.get_slice(k).get_shape()) for k in names}
model = {k: v for k, v in shapes.items() if not k.startswith(("ema.", "optimizer."))}
extra = set(model) - set(ref)
missing = set(ref) - set(model)
assert not extra and not missing, f"extra {sorted(extra)} missing {sorted(missing)}"
for k, shape in ref.items():
    assert model[k] == shape, f"{k}: {model[k]} vs reference {shape}"
    for prefix in ("ema.", "optimizer.exp_avg.", "optimizer.exp_avg_sq."):
        if k != "pos_embed":  # frozen: no EMA or moments
            assert shapes[prefix + k] == shape, prefix + k
for key in ("format", "step", "data_epoch", "data_pos", "seed", "config"):
    assert key in meta, f"metadata {key} missing"
assert meta["step"] == "2", meta["step"]
assert "return {" in meta["config"], meta["config"][:80]
print(f"  {ckpt}: {len(model)} model tensors match the reference state_dict; "
      f"{len(names)} tensors in all; metadata {sorted(meta)}")

png = sorted(glob.glob(f"{run}/samples/*.png"))[-1]
data = open(png, "rb").read()
chunks, pos = {}, 8
while pos < len(data):
    n = int.from_bytes(data[pos:pos + 4], "big")
    kind = data[pos + 4:pos + 8].decode()
    if kind == "tEXt":
        k, v = data[pos + 8:pos + 8 + n].split(b"\0", 1)
        chunks[k.decode()] = v.decode()
    pos += 12 + n
for key in ("step", "sampler", "steps", "cfg", "seed", "weights"):
    assert key in chunks, f"PNG text chunk {key} missing: {chunks}"
print(f"  {png}: {chunks}")
EOF
echo "checkpoint and PNG: ok"
