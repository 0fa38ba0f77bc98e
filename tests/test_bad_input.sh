#!/usr/bin/env bash
# Bad input gets a clear message naming the file and the problem and a
# non-zero exit, never a crash (run under ASan/UBSan in `make asan`).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

setup_tmp
make_sources "$tmp" 512
write_test_config "$tmp/cfg.lua" "$tmp" 4
checks=0

# expect_error WHAT PATTERN... -- CMD...: CMD must exit 1 or 2 (not crash) and
# its stderr must match every PATTERN (extended regex).
expect_error() {
  local what=$1; shift
  local patterns=()
  while [ "$1" != "--" ]; do patterns+=("$1"); shift; done
  shift
  local rc=0
  "$@" >"$tmp/out" 2>"$tmp/err" || rc=$?
  if [ "$rc" -ne 1 ] && [ "$rc" -ne 2 ]; then
    cat "$tmp/err" >&2
    fail "$what: exit code $rc (expected 1 or 2)"
  fi
  grep -q "Sanitizer" "$tmp/err" && { cat "$tmp/err" >&2; fail "$what: sanitizer report"; }
  for p in "${patterns[@]}"; do
    grep -Eq -- "$p" "$tmp/err" || { cat "$tmp/err" >&2; fail "$what: message lacks /$p/"; }
  done
  echo "  ok  $what: $(head -c 200 "$tmp/err" | head -n 1)"
  checks=$((checks + 1))
}

# A good checkpoint to damage.
"$REED_BIN" run "$tmp/cfg.lua" --run-dir "$tmp/good" >/dev/null
ckpt=$(ls "$tmp"/good/checkpoints/*.safetensors | tail -n 1)

head -c 1000 "$ckpt" >"$tmp/trunc.safetensors"
expect_error "truncated checkpoint" "trunc.safetensors" -- \
  "$REED_BIN" sample "$tmp/trunc.safetensors" --out "$tmp/x.png"
head -c 4096 /dev/urandom >"$tmp/garbage.safetensors"
expect_error "garbage checkpoint" "garbage.safetensors" -- \
  "$REED_BIN" sample "$tmp/garbage.safetensors" --out "$tmp/x.png"
: >"$tmp/empty.safetensors"
expect_error "empty checkpoint" "empty.safetensors" -- \
  "$REED_BIN" sample "$tmp/empty.safetensors" --out "$tmp/x.png"

# A checkpoint from another config: a wider model resumed from it.
expect_error "checkpoint from another config" "another config" "has shape \\(32,.*needs \\(48," -- \
  "$REED_BIN" run "$tmp/cfg.lua" --resume "$ckpt" --set model.hidden=48 --set model.heads=2

# .npy sources with the wrong shape, the wrong dtype, NaN values.
python3 - "$tmp" <<'PY'
import sys, numpy as np
d = sys.argv[1]
np.save(f"{d}/flat.npy", np.zeros((512, 16), np.float32))          # token source needs 3 dims
np.save(f"{d}/short.npy", np.zeros((10, 49, 16), np.float32))      # fewer rows than examples
np.save(f"{d}/complex.npy", np.zeros((512, 49, 16), np.complex64)) # unsupported dtype
a = np.random.default_rng(0).standard_normal((512, 49, 16)).astype(np.float32)
a[:] = np.nan
np.save(f"{d}/nan.npy", a)
open(f"{d}/notnpy.npy", "wb").write(b"hello, this is not a numpy file")
PY
expect_error ".npy with wrong shape" "flat.npy" "\(N, T, D\)" -- \
  "$REED_BIN" run "$tmp/cfg.lua" --run-dir "$tmp/r1" --set "sources.enc.file=$tmp/flat.npy"
expect_error ".npy with too few rows" "short.npy" "N >= 512" -- \
  "$REED_BIN" run "$tmp/cfg.lua" --run-dir "$tmp/r2" --set "sources.enc.file=$tmp/short.npy"
expect_error ".npy with unsupported dtype" "complex.npy" "dtype|c8" -- \
  "$REED_BIN" run "$tmp/cfg.lua" --run-dir "$tmp/r3" --set "sources.enc.file=$tmp/complex.npy"
expect_error "not an .npy file" "notnpy.npy" -- \
  "$REED_BIN" run "$tmp/cfg.lua" --run-dir "$tmp/r4" --set "sources.enc.file=$tmp/notnpy.npy"
expect_error "NaN targets stop the run" "step 0" "non-finite enc " -- \
  "$REED_BIN" run "$tmp/cfg.lua" --run-dir "$tmp/r5" --set "sources.enc.file=$tmp/nan.npy"

# IDX files with a wrong magic; a missing dataset directory.
mkdir -p "$tmp/badidx"
printf '\x00\x00\x09\x03\x00\x00\x00\x01' | gzip >"$tmp/badidx/train-images-idx3-ubyte.gz"
cp "$tmp/badidx/train-images-idx3-ubyte.gz" "$tmp/badidx/train-labels-idx1-ubyte.gz"
expect_error "IDX with a wrong magic" "train-images-idx3-ubyte.gz" "magic" -- \
  "$REED_BIN" run "$tmp/cfg.lua" --run-dir "$tmp/r6" --set "data.dir=$tmp/badidx"
expect_error "missing dataset directory" "no-such-dir" "not found" -- \
  "$REED_BIN" run "$tmp/cfg.lua" --run-dir "$tmp/r7" --set "data.dir=$tmp/no-such-dir"

# Configs: an unknown key, a wrong type, a syntax error, a missing file.
printf 'return { train = { stpes = 10 } }\n' >"$tmp/unknown.lua"
expect_error "config with an unknown key" "unknown.lua:1" "train.stpes" "unknown key" -- \
  "$REED_BIN" run "$tmp/unknown.lua"
printf 'return {\n  train = {\n    lr = "fast",\n  },\n}\n' >"$tmp/wrongtype.lua"
expect_error "config with a wrong type" "wrongtype.lua:3" "train.lr" "expected a number" -- \
  "$REED_BIN" run "$tmp/wrongtype.lua"
printf 'return { train = { \n' >"$tmp/syntax.lua"
expect_error "config with a syntax error" "syntax.lua" -- "$REED_BIN" run "$tmp/syntax.lua"
expect_error "missing config" "nope.lua" -- "$REED_BIN" run "$tmp/nope.lua"
expect_error "--set with a wrong type" "train.steps" -- \
  "$REED_BIN" run "$tmp/cfg.lua" --set train.steps=many

# Usage errors name the bad argument.
expect_error "unknown command" "frobnicate" -- "$REED_BIN" frobnicate
expect_error "unknown option" "--bogus" -- "$REED_BIN" run "$tmp/cfg.lua" --bogus
expect_error "bad --steps" "--steps" -- "$REED_BIN" run "$tmp/cfg.lua" --steps -3
expect_error "bad sampler" "--sampler" -- "$REED_BIN" sample "$ckpt" --sampler magic

echo "bad input: $checks checks passed"
