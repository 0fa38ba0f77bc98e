#!/usr/bin/env bash
# Cross-checks our safetensors and .npy code against the reference Python
# implementations (safetensors.numpy and numpy):
#   1. test_formats --write-st / --write-npy write files; Python loads them
#      and checks names, shapes, values and metadata.
#   2. Python writes safetensors and .npy files (format versions 1-3, several
#      dtypes); test_formats --read-st / --read-npy print shapes and sums,
#      which must match numpy's; unsupported inputs must fail cleanly.
# Needs REED_BUILD (the build directory, set by ctest). Exits 77 (skipped)
# when python3 lacks numpy or safetensors.
set -euo pipefail

bin="${REED_BUILD:-build}/test_formats"
if [[ ! -x "$bin" ]]; then
    echo "FAIL: $bin not found (set REED_BUILD to the build directory)" >&2
    exit 1
fi
if ! python3 -c 'import numpy, safetensors.numpy' 2>/dev/null; then
    echo "skip: python3 cannot import numpy and safetensors" \
         "(pip install numpy safetensors)"
    exit 77
fi

tmp=$(mktemp -d /tmp/reed_formats_py.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

"$bin" --write-st "$tmp/ours.safetensors"
"$bin" --write-npy "$tmp"

python3 - "$bin" "$tmp" <<'EOF'
import subprocess
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

binary, tmp = sys.argv[1], sys.argv[2]
failures = 0


def check(ok, what):
    global failures
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures += 1


def run(*args):
    return subprocess.run([binary, *args], capture_output=True, text=True)


# --- 1. our writer, Python's reader -----------------------------------------
path = f"{tmp}/ours.safetensors"
want = {
    "weight": np.array([[-1.0, -0.5, 0.0], [0.5, 1.0, 1.5]], np.float32),
    "bias": np.array([0.25, -0.5, 1e-3], np.float32),
    "scalar": np.array(42.0, np.float32),
    "empty": np.zeros((0, 4), np.float32),
}
got = load_file(path)
check(sorted(got) == sorted(want), f"safetensors.numpy loads our file: {sorted(got)}")
for name, arr in want.items():
    g = got.get(name)
    check(g is not None and g.dtype == np.float32 and g.shape == arr.shape
          and np.array_equal(g, arr),
          f"tensor {name}: shape {arr.shape} float32 values equal")
with safe_open(path, "np") as f:
    meta = f.metadata()
want_meta = {"step": "100",
             "note": "quote \" backslash \\ newline \n tab \t ctrl \x01 utf8 é ✓"}
check(meta == want_meta, f"metadata equal: {meta!r}")

want_npy = {
    "m": np.array([[-1.5, 0.0, 2.25], [1e-20, 3e20, -0.0]], np.float32),
    "s": np.array(7.5, np.float32),
    "e": np.zeros((0, 5), np.float32),
}
for name, arr in want_npy.items():
    path = f"{tmp}/{name}.npy"
    g = np.load(path, allow_pickle=False)
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        np.lib.format.read_array_header_1_0(f)
        data_at = f.tell()
    check(g.dtype == np.dtype("<f4") and g.shape == arr.shape
          and np.array_equal(g, arr) and np.array_equal(np.signbit(g), np.signbit(arr))
          and version == (1, 0) and data_at % 64 == 0,
          f"np.load reads our {name}.npy: shape {g.shape}, version {version}, "
          f"data at byte {data_at}")


# --- 2. Python's writers, our readers -----------------------------------------
def parse_array_line(fields):
    shape = tuple(int(d) for d in fields[0].split(",")) if fields[0] else ()
    return shape, float(fields[1]), float(fields[2])


def expected(arr):
    flat = arr.astype(np.float32).astype(np.float64).ravel()
    return arr.shape, float(flat.sum()), float((flat * np.arange(1, flat.size + 1)).sum())


def close(a, b, scale):
    return abs(a - b) <= 1e-9 * max(1.0, scale)


def same_sums(got_line, arr):
    shape, s, w = got_line
    eshape, es, ew = expected(arr)
    flat = np.abs(arr.astype(np.float32).astype(np.float64).ravel())
    scale = float((flat * np.arange(1, flat.size + 1)).sum())
    return shape == eshape and close(s, es, scale) and close(w, ew, scale)


rng = np.random.default_rng(7)
tensors = {
    "f32": (np.arange(12, dtype=np.float32).reshape(3, 4) * 0.25),
    "f16": np.array([1.0, -2.5, 0.1, 65504.0, 6e-8], np.float16),
    "big": rng.standard_normal((64, 33)).astype(np.float32),
    "scalar": np.array(3.5, np.float32),
    "empty": np.zeros((0, 2), np.float32),
}
path = f"{tmp}/theirs.safetensors"
save_file(tensors, path, metadata={"a": "b", "uni": "é\n\"q\""})
r = run("--read-st", path, "a", "uni", "absent")
check(r.returncode == 0, f"test_formats --read-st reads a safetensors.numpy file {r.stderr.strip()}")
seen, meta = {}, {}
for line in r.stdout.splitlines():
    fields = line.split("\t")
    if fields[0] == "tensor":
        seen[fields[1]] = parse_array_line(fields[2:])
    elif fields[0] == "meta":
        meta[fields[1]] = None if fields[2] == "NULL" else bytes.fromhex(fields[2]).decode()
check(sorted(seen) == sorted(tensors), f"tensor names {sorted(seen)}")
for name, arr in tensors.items():
    check(name in seen and same_sums(seen[name], arr),
          f"tensor {name} ({arr.dtype}, shape {arr.shape}): {seen.get(name)} "
          f"vs numpy {expected(arr)}")
check(meta == {"a": "b", "uni": "é\n\"q\"", "absent": None}, f"metadata {meta!r}")

arrays = {
    "f32": rng.standard_normal((3, 4)).astype(np.float32),
    "f32_scalar": np.array(-7.25, np.float32),
    "u8": np.arange(250, 260, dtype=np.int64).astype(np.uint8).reshape(2, 5),
    "i64": np.array([-(2**40), -1, 0, 7, 2**40 + 3, 123456789], np.int64),
    "i32be": np.array([[-5, 6], [2**31 - 1, -(2**31)]], ">i4"),
    "f16": np.array([[[0.5, -1.0], [65504, 6e-8]], [[1e-3, 2], [3, -4]]], np.float16),
    "f32be": np.array([1.5, -2.0, 1e10], ">f4"),
    "empty": np.zeros((3, 0), np.float32),
    "f64": rng.standard_normal((2, 3)),
}
for name, arr in arrays.items():
    for version in ((1, 0), (2, 0), (3, 0)):
        path = f"{tmp}/{name}_v{version[0]}.npy"
        with open(path, "wb") as f:
            np.lib.format.write_array(f, arr, version=version)
        r = run("--read-npy", path)
        fields = r.stdout.strip().split("\t")
        ok = r.returncode == 0 and fields[0] == "npy"
        got_line = parse_array_line(fields[1:]) if ok else None
        check(ok and same_sums(got_line, arr),
              f"npy v{version[0]} {name} ({arr.dtype.str}, shape {arr.shape}): "
              f"{got_line} vs numpy {expected(arr)} {r.stderr.strip()}")
# np.save itself (picks the version).
path = f"{tmp}/saved.npy"
np.save(path, arrays["f32"])
r = run("--read-npy", path)
fields = r.stdout.strip().split("\t")
check(r.returncode == 0 and same_sums(parse_array_line(fields[1:]), arrays["f32"]),
      f"np.save float32 file: {r.stdout.strip()}")

# Inputs we must reject cleanly, naming the file and the problem.
bad = {
    "c16.npy": (np.arange(4, dtype=np.complex128), "'<c16'"),
    "fortran.npy": (np.asfortranarray(np.ones((2, 3), np.float32)), "fortran_order"),
    "bool.npy": (np.array([True, False]), "'|b1'"),
}
for fname, (arr, needle) in bad.items():
    path = f"{tmp}/{fname}"
    np.save(path, arr)
    r = run("--read-npy", path)
    check(r.returncode != 0 and path in r.stderr and needle in r.stderr,
          f"{fname} rejected: {r.stderr.strip()}")
path = f"{tmp}/i64.safetensors"
save_file({"x": np.arange(3, dtype=np.int64)}, path)
r = run("--read-st", path)
check(r.returncode != 0 and path in r.stderr and "'I64'" in r.stderr,
      f"safetensors I64 rejected: {r.stderr.strip()}")

print(f"{failures} failures")
sys.exit(1 if failures else 0)
EOF
