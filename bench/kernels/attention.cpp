// Spatial-attention kernels at the shapes of the attention head: layer4's output at 224x224
// ([8, 7, 7, 2048], batch 8) and at 64x64 ([32, 2, 2, 2048], batch 32). Memory-bound:
// reported in GB/s of compulsory traffic (each array read or written once).
//   build/bench/bench_kernels --benchmark_filter='ChannelMeanMax|GateMul'
#include <benchmark/benchmark.h>

#include <cstdint>
#include <vector>

#include "engine/tensor.h"
#include "kernels/cpu/attention.h"

namespace {

struct Nhwc {
  int64_t pixels, channels;
};
Nhwc shape_of(const benchmark::State& state) {
  return {state.range(0) * state.range(1) * state.range(2), state.range(3)};
}

std::vector<float> random_values(int64_t n, uint64_t seed) {
  std::vector<double> values = engine::Tensor::randn({n}, seed).to_vector();
  return std::vector<float>(values.begin(), values.end());
}

void report_bytes(benchmark::State& state, double bytes_per_iteration) {
  state.counters["GB/s"] = benchmark::Counter(bytes_per_iteration * state.iterations() / 1e9,
                                              benchmark::Counter::kIsRate);
}

void BM_ChannelMeanMaxForward(benchmark::State& state) {
  Nhwc s = shape_of(state);
  std::vector<float> x = random_values(s.pixels * s.channels, 1), y(2 * s.pixels);
  std::vector<int32_t> argmax(s.pixels);
  for (auto _ : state) {
    kernels::cpu::channel_mean_max_forward<float>(x.data(), y.data(), argmax.data(), s.pixels,
                                                  s.channels);
    benchmark::DoNotOptimize(y.data());
  }
  report_bytes(state, 4.0 * (s.pixels * s.channels + 3 * s.pixels));
}

void BM_ChannelMeanMaxBackward(benchmark::State& state) {
  Nhwc s = shape_of(state);
  std::vector<float> dy = random_values(2 * s.pixels, 2), dx(s.pixels * s.channels);
  std::vector<int32_t> argmax(s.pixels);
  for (int64_t p = 0; p < s.pixels; ++p) argmax[p] = static_cast<int32_t>((p * 37) % s.channels);
  for (auto _ : state) {
    kernels::cpu::channel_mean_max_backward<float>(dy.data(), argmax.data(), dx.data(), s.pixels,
                                                   s.channels);
    benchmark::DoNotOptimize(dx.data());
  }
  report_bytes(state, 4.0 * (s.pixels * s.channels + 3 * s.pixels));
}

void BM_GateMulForward(benchmark::State& state) {
  Nhwc s = shape_of(state);
  std::vector<float> x = random_values(s.pixels * s.channels, 3), g = random_values(s.pixels, 4);
  std::vector<float> y(x.size());
  for (auto _ : state) {
    kernels::cpu::gate_mul_forward<float>(x.data(), g.data(), y.data(), s.pixels, s.channels);
    benchmark::DoNotOptimize(y.data());
  }
  report_bytes(state, 4.0 * (2 * s.pixels * s.channels + s.pixels));
}

void BM_GateMulBackward(benchmark::State& state) {
  Nhwc s = shape_of(state);
  std::vector<float> x = random_values(s.pixels * s.channels, 5), g = random_values(s.pixels, 6);
  std::vector<float> dy = random_values(s.pixels * s.channels, 7), dx(x.size()), dg(s.pixels);
  for (auto _ : state) {
    kernels::cpu::gate_mul_backward<float>(x.data(), g.data(), dy.data(), dx.data(), dg.data(),
                                           s.pixels, s.channels);
    benchmark::DoNotOptimize(dx.data());
  }
  report_bytes(state, 4.0 * (3 * s.pixels * s.channels + 2 * s.pixels));
}

#define ATTENTION_SHAPES(bm)          \
  BENCHMARK(bm)                       \
      ->Args({8, 7, 7, 2048})         \
      ->Args({32, 2, 2, 2048})        \
      ->Unit(benchmark::kMicrosecond) \
      ->UseRealTime()
ATTENTION_SHAPES(BM_ChannelMeanMaxForward);
ATTENTION_SHAPES(BM_ChannelMeanMaxBackward);
ATTENTION_SHAPES(BM_GateMulForward);
ATTENTION_SHAPES(BM_GateMulBackward);
#undef ATTENTION_SHAPES

}  // namespace
