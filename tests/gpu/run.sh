#!/usr/bin/env bash
# tests/gpu/run.sh — the one prepared script for a GPU machine (H100 / H200):
# build with CUDA, run the CUDA tests, time full training steps of the engine
# against PyTorch, print a short table last. Finishes within GPU_RUN_BUDGET_S
# (default 470 s, i.e. under 8 minutes): every item has an estimate and a
# cap, runs under timeout(1), and an item that no longer fits is reported as
# "skipped: time budget" instead of overrunning. No step aborts the others.
#
# On the GPU machine (the device tool), from the repository root:
#   command: bash tests/gpu/run.sh        timeout_s: 540
#   carry:   ["build-gpu-deps"]           (only where that folder exists here)
# Raw output goes to stdout and, when $OUT is set, to $OUT/gpu_run.log (the
# full build output to $OUT/build.log).
#
# Build dependencies: the GPU image has CUDA, CMake, PyTorch and numpy but
# perhaps not OpenBLAS, Lua 5.4, libpng, ncurses, readline or pkg-config.
# Where one is missing and build-gpu-deps/debs/*.deb exist, the needed .debs
# are unpacked into /tmp/reed-deps (never into /) and CMake, pkg-config, the
# compiler and the loader are pointed there; runtime libraries the system
# already has are not unpacked. Make that folder here, with network access:
#   bash tests/gpu/run.sh --fetch-deps    (Debian 12 packages, ~16 MB)
# REED_GPU_DEPS=auto (default) | force (use the .debs even if the system
# seems complete) | off.
#
# Items, in order of priority: nvidia-smi; configure + build (build-gpu);
# ctest -R cuda (test_cuda_ops, test_cuda_train); bench_train_step and
# bench/train_step.py on CUDA for B2 bf16 (the engine's line names the
# attention path it chose and both timings), then a per-op profile of 3
# B2 steps (REED_CUDA_PROFILE=2), B2 with REED_CUDA_LAZY=0,
# REED_CUDA_LT_TUNE=1 and REED_CUDA_LAZY_ZERO=0, with
# REED_CUDA_VIEWS=0, REED_CUDA_LN_VEC=0 and with REED_CUDA_ATTENTION=gemm; sitS
# bf16, sitS fp32; ctest test_parity (CPU); PyTorch B2 bf16 under
# torch.compile (given up after 60 s of compiling + first step, then
# reported as "—").
set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT" || exit 1
DEPS_DIR="$ROOT/build-gpu-deps"
DEPS_PREFIX=/tmp/reed-deps
MULTIARCH=x86_64-linux-gnu

# package -> the soname whose presence on the system makes unpacking it unneeded
declare -A RUNTIME_SONAME=(
  [libpkgconf3]=libpkgconf.so.3 [liblua5.4-0]=liblua5.4.so.0
  [libgfortran5]=libgfortran.so.5 [libquadmath0]=libquadmath.so.0
  [libpng16-16]=libpng16.so.16 [libncursesw6]=libncursesw.so.6
  [libncurses6]=libncurses.so.6 [libtinfo6]=libtinfo.so.6
  [libreadline8]=libreadline.so.8
)
# dependency -> its packages
declare -A DEP_PACKAGES=(
  [pkg-config]="pkgconf pkgconf-bin libpkgconf3"
  [lua5.4]="liblua5.4-dev liblua5.4-0"
  [openblas]="libopenblas-openmp-dev libopenblas0-openmp libgfortran5 libquadmath0"
  [libpng]="libpng-dev libpng16-16"
  [zlib]="zlib1g-dev"
  [ncursesw]="libncurses-dev libncursesw6 libncurses6 libtinfo6"
  [readline]="libreadline-dev libreadline8 readline-common"
)
DEP_ORDER="pkg-config lua5.4 openblas libpng zlib ncursesw readline"

if [[ ${1:-} == --fetch-deps ]]; then
  mkdir -p "$DEPS_DIR/debs" && cd "$DEPS_DIR/debs" || exit 1
  pkgs=""
  for d in $DEP_ORDER; do pkgs+=" ${DEP_PACKAGES[$d]}"; done
  # shellcheck disable=SC2086
  apt-get download $pkgs || exit 1
  ls -l "$DEPS_DIR/debs"
  echo "carry build-gpu-deps in the device call (it is ignored by git: build-*/)"
  exit 0
fi

BUDGET=${GPU_RUN_BUDGET_S:-470}
WORK=$(mktemp -d /tmp/reed_gpu_run.XXXXXX)
RESULTS="$WORK/results.tsv"   # key <TAB> status <TAB> json-or-message
: >"$RESULTS"
export PYTHONUNBUFFERED=1

TEE_PID=""
if [[ -n ${OUT:-} ]] && mkdir -p "$OUT" 2>/dev/null; then
  exec > >(tee -a "$OUT/gpu_run.log") 2>&1
  TEE_PID=$!
  BUILD_LOG="$OUT/build.log"
else
  BUILD_LOG="$WORK/build.log"
fi

left() { echo $((BUDGET - SECONDS)); }
note() { echo "[$(printf '%3d' "$SECONDS") s] $*"; }
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RESULTS"; }

# fits NAME EST: 0 when EST seconds are left (plus 10 for the table), else
# records NAME as skipped. GPU_RUN_ITEMS (an extended regex over the item
# names, e.g. "build|ctest cuda|reed B2") runs only the items it matches.
fits() {
  if [[ -n ${GPU_RUN_ITEMS:-} && ! $1 =~ $GPU_RUN_ITEMS ]]; then
    record "$1" skipped "not in GPU_RUN_ITEMS"
    return 1
  fi
  if (($(left) < $2 + 10)); then
    note "skipped: time budget ($1 needs ~$2 s, $(left) s left)"
    record "$1" skipped "time budget"
    return 1
  fi
}

# cap CAP: the timeout for an item: CAP, or what is left minus 10 s.
cap() {
  local c=$1 l=$(($(left) - 10))
  ((l < c)) && c=$l
  ((c < 5)) && c=5
  echo "$c"
}

echo "=== REED GPU run — $(date -u '+%Y-%m-%d %H:%M:%S UTC'), budget ${BUDGET} s ==="
if git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1; then
  echo "commit: $(git -C "$ROOT" log -1 --format='%h %s') (+$(git -C "$ROOT" status --short | wc -l) changed files)"
fi

# --- the card ------------------------------------------------------------------------
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
DRIVER=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1)
case $GPU_NAME in
  *H100*PCIe*) PEAK=756 ;;          # H100 PCIe dense bf16
  *H100* | *H200*) PEAK=989 ;;      # H100 SXM / H200 dense bf16
  *) PEAK="?" ;;
esac
# Only this card's architecture is compiled (halves nvcc's time); the
# project's default stays 80 and 90.
case $GPU_NAME in *H100* | *H200*) CUDA_ARCH=${CUDA_ARCH:-90} ;; esac
echo "gpu: ${GPU_NAME:-none found} (driver ${DRIVER:-?}); dense bf16 peak ${PEAK} TFLOP/s"
nvidia-smi --query-gpu=memory.total,memory.used,clocks.max.sm --format=csv 2>/dev/null
echo "host: $(nproc) CPUs; $(uname -r); cmake $(cmake --version 2>/dev/null | head -n 1 | awk '{print $3}');" \
  "nvcc $(nvcc --version 2>/dev/null | sed -n 's/.*release \([0-9.]*\).*/\1/p'); gcc $(gcc -dumpversion 2>/dev/null)"
python3 -c 'import torch; print(f"torch {torch.__version__}, cuda {torch.version.cuda}, available {torch.cuda.is_available()}")' 2>&1 | tail -n 1

# --- build dependencies ------------------------------------------------------------------
have_header() { local h; for h in "$@"; do [[ -e $h ]] && return 0; done; return 1; }
have_soname() { ldconfig -p 2>/dev/null | grep -q "[[:space:]]$1 "; }
dep_present() {
  case $1 in
    pkg-config) command -v pkg-config >/dev/null ;;
    lua5.4) command -v pkg-config >/dev/null && pkg-config --exists lua5.4 ;;
    ncursesw) command -v pkg-config >/dev/null && pkg-config --exists ncursesw ;;
    openblas)
      have_header /usr/include/cblas.h /usr/include/openblas/cblas.h \
        /usr/include/$MULTIARCH/cblas.h /usr/include/$MULTIARCH/openblas-openmp/cblas.h \
        /usr/include/$MULTIARCH/openblas-pthread/cblas.h &&
        have_header /usr/lib/$MULTIARCH/libopenblas.so /usr/lib/$MULTIARCH/openblas-openmp/libopenblas.so \
          /usr/lib/$MULTIARCH/openblas-pthread/libopenblas.so /usr/lib/libopenblas.so /usr/lib64/libopenblas.so ;;
    libpng) have_header /usr/include/png.h /usr/include/libpng16/png.h ;;
    zlib) have_header /usr/include/zlib.h ;;
    readline) have_header /usr/include/readline/readline.h ;;
  esac
}

CMAKE_DEPS_ARGS=()
# use_deps DEP...: unpacks those dependencies' .debs into $DEPS_PREFIX and
# points the build there. Returns 1 when there are no .debs.
use_deps() {
  local debs=("$DEPS_DIR"/debs/*.deb)
  if [[ ! -e ${debs[0]} ]]; then
    note "no .debs in $DEPS_DIR/debs (make them here with: bash tests/gpu/run.sh --fetch-deps; carry build-gpu-deps)"
    return 1
  fi
  local want=" " d f pkg
  for d in "$@"; do want+="${DEP_PACKAGES[$d]} "; done
  mkdir -p "$DEPS_PREFIX"
  for f in "${debs[@]}"; do
    pkg=$(dpkg-deb -f "$f" Package 2>/dev/null) || pkg=$(basename "$f" | cut -d_ -f1)
    [[ $want == *" $pkg "* ]] || continue
    if [[ -n ${RUNTIME_SONAME[$pkg]:-} ]] && have_soname "${RUNTIME_SONAME[$pkg]}"; then
      echo "  $pkg: the system has ${RUNTIME_SONAME[$pkg]}, not unpacked"
      continue
    fi
    if command -v dpkg-deb >/dev/null; then
      dpkg-deb -x "$f" "$DEPS_PREFIX" || echo "  $pkg: dpkg-deb -x failed"
    else
      (cd "$WORK" && rm -f data.tar.* && ar x "$f" && tar -xf data.tar.* -C "$DEPS_PREFIX") ||
        echo "  $pkg: ar/tar failed"
    fi
    echo "  $pkg: unpacked"
  done
  local L=$DEPS_PREFIX/usr/lib/$MULTIARCH
  # .pc files name /usr: point them at the prefix.
  for f in "$L"/pkgconfig/*.pc "$L"/openblas-openmp/pkgconfig/*.pc "$DEPS_PREFIX"/usr/share/pkgconfig/*.pc; do
    [[ -f $f ]] && sed -i -e "s#=/usr#=$DEPS_PREFIX/usr#g" -e "s#-L/usr#-L$DEPS_PREFIX/usr#g" \
      -e "s#-I/usr#-I$DEPS_PREFIX/usr#g" "$f"
  done
  # Development symlinks to a versioned library that was not unpacked (the
  # system has it): point them at the system's (libpng.so -> libpng16.so
  # chains then resolve through the fixed link).
  local so target
  for f in "$L"/*.so "$DEPS_PREFIX"/lib/$MULTIARCH/*.so; do
    [[ -L $f && ! -e $f && $(readlink "$f") == *.so.[0-9]* ]] || continue
    so=$(basename "$(readlink "$f")" | sed 's/\(\.so\.[0-9]*\).*/\1/')
    target=$(ldconfig -p 2>/dev/null | awk -v s="$so" '$1 == s {print $NF; exit}')
    [[ -n $target ]] && ln -sf "$target" "$f" && echo "  $(basename "$f") -> $target"
  done
  [[ -x $DEPS_PREFIX/usr/bin/pkgconf && ! -e $DEPS_PREFIX/usr/bin/pkg-config ]] &&
    ln -s pkgconf "$DEPS_PREFIX/usr/bin/pkg-config"
  export PATH="$PATH:$DEPS_PREFIX/usr/bin"   # after the system's own tools
  export PKG_CONFIG_PATH="$L/pkgconfig:$DEPS_PREFIX/usr/share/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
  export CPATH="$DEPS_PREFIX/usr/include:$DEPS_PREFIX/usr/include/$MULTIARCH${CPATH:+:$CPATH}"
  export LIBRARY_PATH="$L:$DEPS_PREFIX/lib/$MULTIARCH${LIBRARY_PATH:+:$LIBRARY_PATH}"
  # Only libraries the system lacks are in there, so this shadows nothing.
  export LD_LIBRARY_PATH="$L:$DEPS_PREFIX/lib/$MULTIARCH${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  CMAKE_DEPS_ARGS=(-DCMAKE_PREFIX_PATH="$DEPS_PREFIX/usr")
  if [[ -e $L/openblas-openmp/libopenblas.so ]]; then
    CMAKE_DEPS_ARGS+=(-DOPENBLAS_LIB="$L/openblas-openmp/libopenblas.so"
      -DOPENBLAS_INC="$DEPS_PREFIX/usr/include/$MULTIARCH/openblas-openmp")
  fi
  return 0
}

MISSING=""
for d in $DEP_ORDER; do dep_present "$d" || MISSING+="$d "; done
DEPS_USED=no
case ${REED_GPU_DEPS:-auto} in
  force) note "REED_GPU_DEPS=force: using the carried .debs for: $DEP_ORDER"
    use_deps $DEP_ORDER && DEPS_USED="forced" ;;
  off) [[ -n $MISSING ]] && note "missing build dependencies: $MISSING(REED_GPU_DEPS=off)" ;;
  *) if [[ -n $MISSING ]]; then
       note "missing build dependencies: $MISSING— unpacking the carried .debs"
       # shellcheck disable=SC2086
       use_deps $MISSING && DEPS_USED="for: $MISSING"
     else
       note "build dependencies: all found on the system"
     fi ;;
esac

# cuDNN: where the system has no cudnn.h, PyTorch's wheel (nvidia/cudnn, with
# include/ and lib/) serves, for the build and at run time.
if [[ -z ${CUDNN_ROOT:-} ]] && ! have_header /usr/include/cudnn.h /usr/include/$MULTIARCH/cudnn.h \
  /usr/local/cuda/include/cudnn.h; then
  d=$(python3 -c 'import nvidia.cudnn as m; print(list(m.__path__)[0])' 2>/dev/null)
  if [[ -n $d && -e $d/include/cudnn.h ]]; then
    export CUDNN_ROOT=$d
    export LD_LIBRARY_PATH="$d/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    note "cuDNN: PyTorch's wheel at $d"
  else
    note "cuDNN: not found (convolutions will use im2col + cuBLAS)"
  fi
fi

# --- configure and build -----------------------------------------------------------------
BUILD_OK=0
configure() { # configure [fresh]: fresh drops the CMake cache (the libraries changed)
  [[ ${1:-} == fresh ]] && rm -f build-gpu/CMakeCache.txt
  timeout -k 5 "$(cap 120)" cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release "${CMAKE_DEPS_ARGS[@]}" \
    ${CUDA_ARCH:+-DCMAKE_CUDA_ARCHITECTURES=$CUDA_ARCH} \
    >>"$BUILD_LOG" 2>&1
}
if fits build 200; then
  note "configure + build (cmake, -j${GPU_RUN_JOBS:-16}; full output in $BUILD_LOG)"
  : >"$BUILD_LOG"
  t0=$SECONDS
  configure
  rc=$?
  if ((rc != 0)) && [[ $DEPS_USED == no && ${REED_GPU_DEPS:-auto} != off ]]; then
    note "configure failed (exit $rc) with the system's libraries; retrying with all carried .debs"
    tail -n 15 "$BUILD_LOG"
    if use_deps $DEP_ORDER; then
      DEPS_USED="all (after a failed configure)"
      configure fresh
      rc=$?
    fi
  fi
  grep -iE "cuda|openblas" "$BUILD_LOG" | grep -E "^--" | head -n 8
  if ((rc == 0)); then
    timeout -k 5 "$(cap 330)" cmake --build build-gpu -j"${GPU_RUN_JOBS:-16}" >>"$BUILD_LOG" 2>&1
    rc=$?
  fi
  nwarn=$(grep -c "warning" "$BUILD_LOG")
  if ((rc == 0)) && [[ -x build-gpu/reed && -x build-gpu/bench_train_step ]]; then
    BUILD_OK=1
    note "build: ok in $((SECONDS - t0)) s ($nwarn warning lines; .debs used: $DEPS_USED)"
    record build ok "$((SECONDS - t0)) s, $nwarn warning lines"
  else
    ((rc == 124 || rc == 137)) && rc="timeout"
    note "build: FAILED ($rc) after $((SECONDS - t0)) s; the last lines:"
    grep -E "error|Error" "$BUILD_LOG" | head -n 20
    tail -n 30 "$BUILD_LOG"
    record build FAILED "exit $rc"
  fi
  if [[ -x build-gpu/reed ]]; then
    echo "reed links to:"
    ldd build-gpu/reed 2>/dev/null | grep -E "cuda|cublas|openblas|lua|not found" | sed 's/^/  /'
  fi
fi

# --- tests ---------------------------------------------------------------------------------
# run_ctest KEY EST CAP REGEX
run_ctest() {
  local key=$1 est=$2 cp=$3 re=$4
  if ((!BUILD_OK)); then
    record "$key" skipped "no build"
    return
  fi
  fits "$key" "$est" || return
  note "ctest -R '$re'"
  local out="$WORK/$key.log" rc
  timeout -k 5 "$(cap "$cp")" ctest --test-dir build-gpu -R "$re" --output-on-failure --timeout "$cp" \
    >"$out" 2>&1
  rc=$?
  cat "$out"
  local summary
  summary=$(grep -E "tests passed|tests failed" "$out" | tail -n 1)
  local skipped
  skipped=$(grep -cE "\*\*\*Skipped|Not Run" "$out")
  ((skipped > 0)) && summary+=", $skipped skipped"
  if ((rc == 0 && skipped > 0)); then
    # This script runs on a GPU machine: a GPU test that skips did not run.
    record "$key" FAILED "${summary}: a GPU test skipped on a GPU machine"
  elif ((rc == 0)); then
    record "$key" ok "${summary:-ok}"
  elif ((rc == 124 || rc == 137)); then
    record "$key" FAILED "timeout after $(cap "$cp") s"
  else
    record "$key" FAILED "${summary:-exit $rc}: $(grep -E 'Failed|\*\*\*' "$out" | sed 's/^ *//' | tr '\n' ';' | cut -c1-200)"
  fi
}

# --- benchmarks ------------------------------------------------------------------------------
# bench KEY EST CAP COMMAND...: records the command's last JSON line.
bench() {
  local key=$1 est=$2 cp=$3; shift 3
  fits "$key" "$est" || return
  local out="$WORK/$key.out" err="$WORK/$key.err" rc json t0=$SECONDS
  note "$key: $*"
  timeout -k 5 "$(cap "$cp")" "$@" >"$out" 2>"$err"
  rc=$?
  json=$(grep '^{' "$out" | tail -n 1)
  sed 's/^/    /' "$err" | tail -n "${BENCH_ERR_LINES:-12}"
  if ((rc == 0)) && [[ -n $json ]]; then
    echo "    $json"
    note "$key: done in $((SECONDS - t0)) s"
    record "$key" ok "$json"
  else
    local why="exit $rc" status=FAILED
    ((rc == 124 || rc == 137)) && why="timeout after $((SECONDS - t0)) s"
    if ((rc == 77)); then
      status=skipped why="exit 77, no usable GPU: $(grep -v '^\s*$' "$err" | head -n 1 | cut -c1-200)"
    else
      why+=": $(grep -v '^\s*$' "$err" | tail -n 2 | tr '\n' ' ' | cut -c1-200)"
    fi
    note "$key: $status — $why"
    record "$key" "$status" "$why"
  fi
}

# show KEY EST CAP COMMAND...: runs a program of the build, prints all its
# output and records its last line.
show() {
  local key=$1 est=$2 cp=$3 out="$WORK/$1.show" rc; shift 3
  if ((!BUILD_OK)); then
    record "$key" skipped "no build"
    return
  fi
  fits "$key" "$est" || return
  note "$key: $*"
  timeout -k 5 "$(cap "$cp")" "$@" >"$out" 2>&1
  rc=$?
  sed 's/^/    /' "$out"
  if ((rc == 0)); then record "$key" ok "$(tail -n 1 "$out")"; else record "$key" FAILED "exit $rc"; fi
}

REED_BENCH=build-gpu/bench_train_step
TORCH_BENCH=bench/train_step.py
T=$(nproc)
# reed_bench KEY EST CAP CONFIG PRECISION WARMUP STEPS
reed_bench() {
  if ((!BUILD_OK)); then
    record "$1" skipped "no build"
    return
  fi
  local args=(--config "$4" --device cuda --precision "$5" --threads "$T" --warmup "$6"
    --steps "$7" --data random)
  bench "$1" "$2" "$3" "$REED_BENCH" "${args[@]}"
  # A newer CUDA path failing on this GPU should not cost the comparison:
  # once more with the conservative ones (GEMM attention, the bias-seeded
  # cuBLAS linear, a cudaMalloc per buffer); the failure stays in the summary.
  if [[ $(tail -n 1 "$RESULTS" | cut -f2) == FAILED ]]; then
    record "$1 (all paths)" FAILED "$(tail -n 1 "$RESULTS" | cut -f3)"
    note "$1: again with REED_CUDA_ATTENTION=gemm REED_CUDA_LT=0 REED_CUDA_ARENA=0 REED_CUDA_BF16_OPERANDS=0 REED_CUDA_LAZY_ZERO=0 REED_CUDA_VIEWS=0"
    REED_CUDA_ATTENTION=gemm REED_CUDA_LT=0 REED_CUDA_ARENA=0 REED_CUDA_BF16_OPERANDS=0 REED_CUDA_LAZY_ZERO=0 REED_CUDA_VIEWS=0 \
      bench "$1" "$2" "$3" "$REED_BENCH" "${args[@]}"
  fi
}
# torch_bench KEY EST CAP CONFIG PRECISION WARMUP STEPS [--compile]
torch_bench() {
  bench "$1" "$2" "$3" python3 "$TORCH_BENCH" --config "$4" --device cuda --precision "$5" \
    --threads "$T" --warmup "$6" --steps "$7" "${@:8}"
}

REED_CUDA_TEST_LARGE=1 run_ctest "ctest cuda" 60 150 "cuda"
# REED_CUDA_VERBOSE: the "CUDA attention ..." line gives the times of the
# attention paths at B2's shape and the one the run keeps; the "cuBLASLt"
# lines whether each linear shape found its bias, BGRADB and GELU epilogues.
REED_CUDA_VERBOSE=1 BENCH_ERR_LINES=60 reed_bench "reed B2 bf16" 45 120 B2 bf16 2 10
torch_bench "torch B2 bf16" 35 90 B2 bf16 3 10
# Where the step's time goes: GPU and host time per op over 3 steps, and
# the linear ops by shape with their TFLOP/s (against "gemm ceiling").
REED_CUDA_PROFILE=2 BENCH_ERR_LINES=120 reed_bench "reed B2 bf16 profile" 30 90 B2 bf16 1 3
# Buffers backed on first use (cuda_lazy.cu) against plain allocations:
# the memory held after the steps, and the time (mapping happens in the
# first steps, before the timed ones).
REED_CUDA_LAZY=0 reed_bench "reed B2 bf16 lazy off" 15 60 B2 bf16 2 10
# The GEMM algorithms timed per shape (cuda_lt.cu, lt_tune; off by
# default) against the cuBLASLt heuristic's first, untimed.
REED_CUDA_LT_TUNE=1 reed_bench "reed B2 bf16 tuned GEMMs" 15 60 B2 bf16 2 10
# The lazy zero op (cuda_zero.cu) against plain memsets, on the same card.
REED_CUDA_LAZY_ZERO=0 reed_bench "reed B2 bf16 memsets" 15 60 B2 bf16 2 10
# The bf16 views (cuda_view.cu) against a copy per GEMM operand.
REED_CUDA_VIEWS=0 reed_bench "reed B2 bf16 no views" 15 60 B2 bf16 2 10
# Sole views (producers skip fp32 outputs only GEMMs read) against writing
# every fp32 output, views on in both.
REED_CUDA_VIEW_SOLE=0 reed_bench "reed B2 bf16 no sole views" 15 60 B2 bf16 2 10
# The bias gradients in the dw GEMM's epilogue (cuBLASLt BGRADB) against a
# column sum of our own.
REED_CUDA_LT_BGRAD=0 reed_bench "reed B2 bf16 no BGRADB" 15 60 B2 bf16 2 10
# The MLP's GELU in cuBLASLt's epilogues (GELU_AUX_BIAS, DGELU) against
# our GELU kernels between the GEMMs.
REED_CUDA_LT_GELU=0 reed_bench "reed B2 bf16 no GELU epilogue" 15 60 B2 bf16 2 10
# The vectorized LayerNorm rows (float4, float sums) against the scalar
# kernels with double sums.
REED_CUDA_LN_VEC=0 reed_bench "reed B2 bf16 scalar LayerNorm" 15 60 B2 bf16 2 10
# The whole step with attention forced onto the GEMM path (the auto choice
# above weighs the paths on attention alone, at batch 32).
REED_CUDA_ATTENTION=gemm reed_bench "reed B2 bf16 gemm attention" 15 60 B2 bf16 2 10
REED_CUDA_ATTENTION=flash reed_bench "reed B2 bf16 flash attention" 15 60 B2 bf16 2 10
# The flash path's other kernels (reed_cuda.h: reed_cuda_set_flash):
# 1, the wide forward (32 query rows a warp, cp.async) and the key kernel at
# 32 queries a pass; 2, the forward by cp.async at 16 rows a warp, and the
# query and key kernels by cp.async. The auto line above shows the times of
# each and which the timing kept.
REED_CUDA_ATTENTION=flash REED_CUDA_FLASH_FWD=1 REED_CUDA_FLASH_BWD=1 \
  reed_bench "reed B2 bf16 flash kernels 1" 15 60 B2 bf16 2 10
REED_CUDA_ATTENTION=flash REED_CUDA_FLASH_FWD=2 REED_CUDA_FLASH_BWD=2 \
  reed_bench "reed B2 bf16 flash kernels 2" 15 60 B2 bf16 2 10
# The cuBLAS ceiling at B2's linear shapes: fp32 operands (FAST_16BF, as
# the engine) against bf16 operands.
show "gemm ceiling" 20 60 build-gpu/bench_gemm_cuda 65536 10
reed_bench "reed sitS bf16" 20 60 sitS bf16 3 20
torch_bench "torch sitS bf16" 20 60 sitS bf16 3 20
reed_bench "reed sitS fp32" 20 60 sitS fp32 3 20
torch_bench "torch sitS fp32" 20 60 sitS fp32 3 20
run_ctest "ctest parity" 25 90 "test_parity"
torch_bench "torch B2 bf16 compiled" 100 160 B2 bf16 3 10 --compile --compile-limit 60
# Nsight Compute on the flash attention kernels (the last layer's forward,
# then the first backward's query and key kernels, on the flash path) and
# the LayerNorm backward: throughput against the card's peaks, occupancy,
# and where the warps stall. Where ncu is missing, skipped.
NCU_ARGS=(--clock-control none --section SpeedOfLight --section Occupancy --section LaunchStats
  --section WarpStateStats)
B2_ONE_STEP=(--config B2 --device cuda --precision bf16 --threads "$T" --warmup 0 --steps 1
  --data random)
if command -v ncu >/dev/null; then
  for v in 0 1 2; do # kernels 0 as "ncu flash", then "ncu flash 1" and "ncu flash 2"
    name="ncu flash"
    ((v)) && name+=" $v"
    REED_CUDA_ATTENTION=flash REED_CUDA_FLASH_FWD=$v REED_CUDA_FLASH_BWD=$v \
      show "$name" 60 120 ncu "${NCU_ARGS[@]}" -k "regex:flash_(forward|bwd)" \
      --launch-skip 11 --launch-count 3 "$REED_BENCH" "${B2_ONE_STEP[@]}"
  done
  show "ncu layernorm" 40 90 ncu "${NCU_ARGS[@]}" -k "regex:ln_vec_backward" --launch-count 1 \
    "$REED_BENCH" "${B2_ONE_STEP[@]}"
  show "ncu layernorm forward" 40 90 ncu "${NCU_ARGS[@]}" -k "regex:ln_vec_forward" \
    --launch-count 1 "$REED_BENCH" "${B2_ONE_STEP[@]}"
else
  record "ncu flash" skipped "no ncu"
  record "ncu flash 1" skipped "no ncu"
  record "ncu flash 2" skipped "no ncu"
  record "ncu layernorm" skipped "no ncu"
  record "ncu layernorm forward" skipped "no ncu"
fi

# --- summary and table ----------------------------------------------------------------------------
echo
echo "=== summary (${SECONDS} s of ${BUDGET} s; gpu: ${GPU_NAME:-?}) ==="
python3 - "$RESULTS" "$PEAK" <<'EOF' || { echo "(python3 failed; raw results:)"; cat "$RESULTS"; }
import json, sys

rows = {}
for line in open(sys.argv[1]):
    key, status, rest = line.rstrip("\n").split("\t", 2)
    rows[key] = (status, rest)
peak = None if sys.argv[2] == "?" else float(sys.argv[2])

for key in ("build", "ctest cuda", "ctest parity", "gemm ceiling"):
    status, rest = rows.get(key, ("not run", ""))
    print(f"{key:13s} {status}{': ' + rest if rest else ''}")
for key, (status, rest) in rows.items():
    if status != "ok" and key not in ("build", "ctest cuda", "ctest parity", "gemm ceiling"):
        print(f"{key:24s} {status}: {rest}")

def result(key):
    status, rest = rows.get(key, ("not run", ""))
    return json.loads(rest) if status == "ok" else status

def cell(r, fmt="{:.1f}"):
    return fmt.format(r["imgs_per_s"]) if isinstance(r, dict) else r

head = ["config", "precision", "reed img/s", "torch img/s (eager)", "torch img/s (compiled)",
        "reed/best torch", "reed TFLOP/s", "% of bf16 peak"]
table = []
for cfg, prec in (("B2", "bf16"), ("sitS", "bf16"), ("sitS", "fp32")):
    reed, eager = result(f"reed {cfg} {prec}"), result(f"torch {cfg} {prec}")
    comp = result(f"torch {cfg} {prec} compiled") if cfg == "B2" else "—"
    if isinstance(comp, dict) and not comp.get("compiled"):
        note = comp.get("compile_note", "")
        comp = "— (compile > 60 s)" if "took over" in note else "— (compile failed)"
    elif comp in ("not run",):
        comp = "—"
    torches = [r["imgs_per_s"] for r in (eager, comp) if isinstance(r, dict)]
    ratio = (f"{reed['imgs_per_s'] / max(torches):.2f}"
             if isinstance(reed, dict) and torches else "n/a")
    if isinstance(reed, dict):
        tf = reed["flops_per_step"] / (reed["ms_per_step"] / 1000) / 1e12
        tfs, pct = f"{tf:.1f}", (f"{100 * tf / peak:.1f}%" if peak else "?")
    else:
        tfs = pct = "n/a"
    table.append([cfg, prec, cell(reed), cell(eager), cell(comp), ratio, tfs, pct])

table_keys = {f"{side} {cfg} {prec}" for side in ("reed", "torch")
              for cfg, prec in (("B2", "bf16"), ("sitS", "bf16"), ("sitS", "fp32"))}
for key, (status, rest) in rows.items():
    if status == "ok" and key.startswith(("reed ", "torch ")) and key not in table_keys:
        r = json.loads(rest)
        held = r.get("backend_mb", -1)
        print(f"{key:24s} {r['imgs_per_s']:.1f} img/s"
              + (f", {held / 1024:.1f} GiB held" if held >= 0 else ""))

for cfg, prec in (("B2", "bf16"), ("sitS", "bf16"), ("sitS", "fp32")):
    reed, eager = result(f"reed {cfg} {prec}"), result(f"torch {cfg} {prec}")
    if isinstance(reed, dict) and reed.get("backend_mb", -1) >= 0:
        torch_peak = eager.get("peak_gpu_mb") if isinstance(eager, dict) else None
        torch_mem = (f"{torch_peak / 1024:.1f} GiB peak"
                     f" (reed / torch {reed['backend_mb'] / torch_peak:.2f})"
                     if isinstance(torch_peak, (int, float)) and torch_peak > 0 else "?")
        print(f"memory {cfg} {prec}: reed {reed['backend_mb'] / 1024:.1f} GiB held after the steps,"
              f" torch eager {torch_mem}")

print()
print(f"img/s: images per second over the timed steps (batch B2 256, sitS 32);"
      f" TFLOP/s from the analytic FLOP count; peak {'?' if peak is None else f'{peak:g}'}"
      " TFLOP/s dense bf16")
widths = [max(len(str(x)) for x in col) for col in zip(head, *table)]
fmt = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
print(fmt(head))
print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
for r in table:
    print(fmt(r))
EOF

rm -rf "$WORK"
if [[ -n $TEE_PID ]]; then
  exec >&- 2>&-
  wait "$TEE_PID" 2>/dev/null
fi
exit 0
