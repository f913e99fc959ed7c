// GEMM throughput: the machine's float32 rate, the yardstick for the convolution kernels.
#include <benchmark/benchmark.h>

#include <vector>

#include "engine/tensor.h"
#include "kernels/cpu/gemm.h"

namespace {

// The machine's float32 GEMM rate: the yardstick for the convolution kernels.
void BM_Gemm(benchmark::State& state) {
  int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  std::vector<float> a(m * k, 0.5f), b(k * n, 0.25f), c(m * n);
  for (auto _ : state) {
    kernels::cpu::gemm<float>(false, false, m, n, k, 1.0f, a.data(), k, b.data(), n, 0.0f, c.data(), n);
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * m * n * k * state.iterations() / 1e9, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Gemm)->Args({1024, 1024, 1024})->Args({3136, 256, 64})->Args({784, 128, 1152})
    ->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace


