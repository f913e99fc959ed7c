// Pooling at ResNet50's shapes (224x224 batch 8, 64x64 batch 32), float32. Memory-bound:
// GB/s counts each tensor the kernel reads or writes once (max pool forward: x, y; backward:
// x, y, dy, dx; global average pool: x, y), for comparison with the memory bandwidth.
// Run: build/bench/bench_kernels --benchmark_filter=Pool
#include <benchmark/benchmark.h>

#include "engine/tensor.h"
#include "kernels/cpu/pool.h"

namespace {

using engine::Tensor;

void set_bandwidth(benchmark::State& state, double bytes) {
  state.counters["GB/s"] =
      benchmark::Counter(bytes * static_cast<double>(state.iterations()) / 1e9, benchmark::Counter::kIsRate);
}

// ResNet's stem pool: 3x3, stride 2, pad 1 on {N, H, W, C}.
kernels::cpu::MaxPoolShape stem_pool(const benchmark::State& state) {
  const int64_t n = state.range(0), h = state.range(1), w = state.range(2), c = state.range(3);
  return {n, h, w, c, 3, 2, 1, kernels::cpu::pool_output_size(h, 3, 2, 1),
          kernels::cpu::pool_output_size(w, 3, 2, 1)};
}

void BM_MaxPoolForward(benchmark::State& state) {
  const kernels::cpu::MaxPoolShape s = stem_pool(state);
  Tensor x = Tensor::randn({s.batch, s.in_h, s.in_w, s.channels}, 1);
  Tensor y = Tensor::empty({s.batch, s.out_h, s.out_w, s.channels});
  for (auto _ : state) {
    kernels::cpu::max_pool2d_forward<float>(x.data<float>(), y.data<float>(), s);
    benchmark::DoNotOptimize(y.raw_data());
  }
  set_bandwidth(state, static_cast<double>(x.nbytes() + y.nbytes()));
}

void BM_MaxPoolBackward(benchmark::State& state) {
  const kernels::cpu::MaxPoolShape s = stem_pool(state);
  Tensor x = Tensor::randn({s.batch, s.in_h, s.in_w, s.channels}, 1);
  Tensor y = Tensor::empty({s.batch, s.out_h, s.out_w, s.channels});
  Tensor dy = Tensor::randn(y.shape(), 2);
  Tensor dx = Tensor::empty(x.shape());
  kernels::cpu::max_pool2d_forward<float>(x.data<float>(), y.data<float>(), s);
  for (auto _ : state) {
    kernels::cpu::max_pool2d_backward<float>(x.data<float>(), y.data<float>(), dy.data<float>(),
                                             dx.data<float>(), s);
    benchmark::DoNotOptimize(dx.raw_data());
  }
  set_bandwidth(state, static_cast<double>(2 * x.nbytes() + 2 * y.nbytes()));
}

void BM_GlobalAvgPoolForward(benchmark::State& state) {
  const int64_t n = state.range(0), h = state.range(1), w = state.range(2), c = state.range(3);
  Tensor x = Tensor::randn({n, h, w, c}, 1);
  Tensor y = Tensor::empty({n, c});
  for (auto _ : state) {
    kernels::cpu::global_avg_pool_forward<float>(x.data<float>(), y.data<float>(), n, h * w, c);
    benchmark::DoNotOptimize(y.raw_data());
  }
  set_bandwidth(state, static_cast<double>(x.nbytes() + y.nbytes()));
}

// the stem pool's input at both training resolutions
void stem_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"N", "H", "W", "C"})->Args({8, 112, 112, 64})->Args({32, 32, 32, 64});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}
// the head's input at both training resolutions
void head_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"N", "H", "W", "C"})->Args({8, 7, 7, 2048})->Args({32, 2, 2, 2048});
  b->Unit(benchmark::kMicrosecond)->UseRealTime();
}

BENCHMARK(BM_MaxPoolForward)->Apply(stem_shapes);
BENCHMARK(BM_MaxPoolBackward)->Apply(stem_shapes);
BENCHMARK(BM_GlobalAvgPoolForward)->Apply(head_shapes);

}  // namespace
