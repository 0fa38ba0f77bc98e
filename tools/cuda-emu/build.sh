#!/bin/bash
# tools/cuda-emu/build.sh [SRC] — builds tests/test_cuda_ops.c against the
# real .cu sources of the CUDA backend, run on the CPU by a small emulator
# (emu.cpp: every CUDA thread a fiber, __syncthreads and warp shuffles as
# context switches; simple reference loops stand in for cuBLAS, cuBLASLt
# and cuDNN), under ASan and UBSan. A development aid for sessions without a GPU: it
# checks the kernels' indexing, synchronisation and arithmetic, not real
# hardware, cuBLAS/cuDNN or performance. About 8 minutes on 2 cores:
#   bash tools/cuda-emu/build.sh, then from the source tree: $OUT/test_emu
# Output goes to $OUT (default /tmp/reed-cuda-emu). launch.py rewrites
# kernel<<<grid, block>>>(args) launches into emulator calls and has each
# static __shared__ array poisoned per block. EMU_ORDER=reverse runs the
# threads and blocks last to first: run the tests in both orders to catch
# races (a read of another thread's write with no barrier between).
set -e
EMU=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "${1:-$EMU/../..}" && pwd)
OUT=${OUT:-/tmp/reed-cuda-emu}
SAN=${SAN:--fsanitize=address,undefined}
mkdir -p "$OUT"
cd "$OUT"
rm -rf ./*.o model test_emu test_parity_emu
jobs=()
# wait_job PID: a failed compile stops the build (it would leave an old .o to link).
wait_job() { wait "$1" || { echo "build.sh: a compile failed (see above)" >&2; exit 1; }; }
# The rewritten header sits next to the .cpp files, so their #include finds it first.
python3 "$EMU/launch.py" "$SRC/src/kernels/cuda/cuda_internal.h" > cuda_internal.h
for f in cuda_ops cuda_memory cuda_lazy cuda_kernels cuda_model_ops cuda_conv cuda_attention cuda_profile cuda_lt cuda_zero cuda_view cuda_flash; do
  python3 "$EMU/launch.py" "$SRC/src/kernels/cuda/$f.cu" > $f.cpp
  g++ -std=c++17 -g -O1 $SAN -Wall -Wextra -Wno-unused-parameter -DREED_CUDNN=1 -DREED_CUDA_EMU=1 -D__CUDACC__ -I"$EMU/include" -I"$SRC/src/kernels" -I"$SRC/src/kernels/cuda" -c $f.cpp -o $f.o &
  jobs+=($!)
done
g++ -std=c++17 -g -O1 $SAN -I"$EMU/include" -c "$EMU/emu.cpp" -o emu.o &
jobs+=($!)
g++ -std=c++17 -g -O1 $SAN -I"$EMU/include" -c "$EMU/cublaslt.cpp" -o cublaslt.o &
jobs+=($!)
for f in cpu_ops cpu_model_ops cpu_conv; do
  gcc -std=c11 -g -O1 $SAN -D_GNU_SOURCE -fopenmp -fno-trapping-math -I"$SRC/src/kernels" -I/usr/include/x86_64-linux-gnu/openblas-openmp -c "$SRC/src/kernels/cpu/$f.c" -o $f.o &
  jobs+=($!)
done
gcc -std=c11 -g -O1 $SAN -D_GNU_SOURCE -DREED_CUDA_EMU_TEST=1 -Wall -Wextra -I"$SRC/src/kernels" -I"$SRC/src/kernels/cuda" -c "$SRC/tests/test_cuda_ops.c" -o test_cuda_ops.o
for j in "${jobs[@]}"; do wait_job "$j"; done
BLAS="-L/usr/lib/x86_64-linux-gnu/openblas-openmp -Wl,-rpath,/usr/lib/x86_64-linux-gnu/openblas-openmp -lopenblas"
g++ $SAN ./*.o $BLAS -fopenmp -lm -o test_emu
echo "built $OUT/test_emu (run it from the source tree: ASAN_OPTIONS=detect_stack_use_after_return=0:detect_leaks=0 $OUT/test_emu)"

# The whole model on the emulated backend: tests/test_parity.c with the
# engine (its cuda-bf16 mode runs the bf16 views, sole views and attention
# paths through SiT steps), in a folder of its own so test_emu's link above
# keeps only the op tests.
mkdir -p model
jobs=()
for f in "$SRC"/src/engine/*.c "$SRC"/src/lua/*.c "$SRC"/tests/test_parity.c; do
  gcc -std=c11 -g -O1 $SAN -D_GNU_SOURCE -DREED_CUDA=1 -DREED_VERSION='"emu"' -fopenmp -fno-trapping-math \
    -I"$SRC/src" -I"$SRC/src/engine" -I"$SRC/src/kernels" -I"$SRC/src/kernels/cuda" \
    -I/usr/include/x86_64-linux-gnu/openblas-openmp $(pkg-config --cflags lua5.4 libpng) \
    -c "$f" -o "model/$(basename "$f" .c).o" &
  jobs+=($!)
  if [ ${#jobs[@]} -ge 4 ]; then wait_job "${jobs[0]}"; jobs=("${jobs[@]:1}"); fi
done
for j in "${jobs[@]}"; do wait_job "$j"; done
g++ $SAN model/*.o $(ls ./*.o | grep -v test_cuda_ops.o) $BLAS $(pkg-config --libs lua5.4 libpng) -lz -fopenmp -lm -o test_parity_emu
echo "built $OUT/test_parity_emu (from the source tree: ... $OUT/test_parity_emu cuda-bf16)"
