#!/usr/bin/env bash
# On a GPU host (CUDA toolkit, no package access): configure, build (sm_90), run the CUDA
# tests and a short benchmark, and print a summary table last. Dependencies come from a
# prefix made on a Debian machine by ../shared/tools/gpu-host-deps.sh (default .gpudeps).
# Usage: bash tools/gpu-check.sh [PREFIX]
# Writes build-gpu/, and the raw outputs to ${OUT:-gpu-check-out}/.
set -uo pipefail
cd "$(dirname "$0")/.."
prefix=$(realpath "${1:-.gpudeps}")
out=${OUT:-gpu-check-out}
mkdir -p "$out"
export LD_LIBRARY_PATH="$prefix/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/device.txt"

start=$(date +%s)
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DENGINE_CUDA=ON -DENGINE_CUDA_ARCHS=90 \
  -DCMAKE_PREFIX_PATH="$prefix/usr" >"$out/configure.log" 2>&1 || { tail -30 "$out/configure.log"; exit 1; }
cmake --build build-gpu -j"$(nproc)" >"$out/build.log" 2>&1 || { grep -E "error" -A3 "$out/build.log" | head -40; exit 1; }
build_s=$(( $(date +%s) - start ))

ctest --test-dir build-gpu -L cuda --output-on-failure --timeout 300 >"$out/ctest-cuda.log" 2>&1
cuda_rc=$?
# Per-layer kernels: every ResNet50 conv at 224 (batch 128) in FP32 and TF32 against cuDNN,
# then the other op families at their batch-128 shapes; short timings to fit the device budget.
build-gpu/bench/bench_kernels --benchmark_filter='CudaConv2d/.*/b128_224/|Cuda[A-Z][A-Za-z]*/N:128|CudaLinear|CudaBayes|CudaOptim' \
  --benchmark_min_time=0.05 --benchmark_format=json --benchmark_out="$out/bench.json" >"$out/bench.txt" 2>&1
bench_rc=$?
# Whole detectors: training and inference images/s at 224x224, batch 128.
build-gpu/bench/bench_models --device cuda --size 224 --batch 128 --reps 5 --warmup 2 \
  --json "$out/models.json" >"$out/models.txt" 2>&1
models_rc=$?

echo
echo "=== gpu-check summary ($(cat "$out/device.txt"))"
printf '%-28s %s\n' "build (s)" "$build_s"
printf '%-28s %s\n' "cuda tests" "$(grep -E 'tests passed|tests failed' "$out/ctest-cuda.log" | tail -1) (rc $cuda_rc)"
grep -E "Failed|\*\*\*" "$out/ctest-cuda.log" | head -20
printf '%-28s %s\n' "bench_kernels rc" "$bench_rc"
grep -E "pct_cudnn|pct_of_cublas" "$out/bench.txt" | awk '{printf "  %-70s %s %s\n", $1, $2, $3}' | head -30
printf '%-28s %s\n' "bench_models rc" "$models_rc"
grep -E "img/s" "$out/models.txt" | head -12
exit $(( cuda_rc || bench_rc || models_rc ))
