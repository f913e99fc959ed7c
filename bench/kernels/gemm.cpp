// GEMM throughput: the machine's float32 rate, the yardstick for the convolution kernels.
// Square, and the [pixels x channels] x [channels x channels] products of ResNet50 layers.
//   build/bench/bench_kernels --benchmark_filter=Gemm
#include <benchmark/benchmark.h>

#include <vector>

#include "kernels/cpu/gemm.h"

namespace {

// C[M,N] = op(A) op(B), op = transpose when range(3) / range(4) is 1.
void BM_Gemm(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  const bool trans_a = state.range(3) != 0, trans_b = state.range(4) != 0;
  std::vector<float> a(m * k, 0.5f), b(k * n, 0.25f), c(m * n);
  for (auto _ : state) {
    kernels::cpu::gemm<float>(trans_a, trans_b, m, n, k, 1.0f, a.data(), trans_a ? m : k, b.data(),
                              trans_b ? k : n, 0.0f, c.data(), n);
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * m * n * k * state.iterations() / 1e9, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Gemm)
    ->ArgNames({"M", "N", "K", "ta", "tb"})
    ->Args({1024, 1024, 1024, 0, 0})
    ->Args({1024, 1024, 1024, 1, 0})
    ->Args({1024, 1024, 1024, 0, 1})
    ->Args({25088, 64, 64, 0, 0})
    ->Args({25088, 256, 64, 0, 0})
    ->Args({25088, 64, 256, 0, 0})
    ->Args({3136, 512, 128, 0, 0})
    ->Args({784, 1024, 256, 0, 0})
    ->Args({256, 1000, 2048, 0, 1})  // x w^T, as a linear layer computes it
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
