// Batch normalisation at ResNet50's shapes (224x224 batch 8, 64x64 batch 32), float32.
// Memory-bound: GB/s counts the bytes the kernel's passes move (each full pass over a tensor
// reads or writes it once), to be compared with the machine's memory bandwidth:
//   train forward:  statistics read x, normalise reads x and writes y       3 x tensor
//   train backward: sums read x and dy, dx pass reads x and dy, writes dx  5 x tensor
//   eval forward:   reads x, writes y                                      2 x tensor
// Run: build/bench/bench_kernels --benchmark_filter=BatchNorm
#include <benchmark/benchmark.h>

#include "engine/tensor.h"
#include "kernels/cpu/batch_norm.h"

namespace {

using engine::Tensor;

struct BatchNormBuffers {
  kernels::cpu::BatchNormShape shape;
  Tensor x, y, dy, dx, gamma, beta, running_mean, running_var, mean, invstd, dgamma, dbeta;

  explicit BatchNormBuffers(const benchmark::State& state) {
    const int64_t n = state.range(0), h = state.range(1), w = state.range(2), c = state.range(3);
    shape = {n * h * w, c};
    x = Tensor::randn({n, h, w, c}, 1);
    dy = Tensor::randn({n, h, w, c}, 2);
    y = Tensor::empty({n, h, w, c});
    dx = Tensor::empty({n, h, w, c});
    gamma = Tensor::full({c}, 1.0);
    beta = Tensor::zeros({c});
    running_mean = Tensor::zeros({c});
    running_var = Tensor::full({c}, 1.0);
    mean = Tensor::empty({c}, engine::DType::F64);
    invstd = Tensor::empty({c}, engine::DType::F64);
    dgamma = Tensor::empty({c});
    dbeta = Tensor::empty({c});
  }
  void forward_train() {
    kernels::cpu::batch_norm_forward_train<float>(
        x.data<float>(), gamma.data<float>(), beta.data<float>(), y.data<float>(), mean.data<double>(),
        invstd.data<double>(), running_mean.data<float>(), running_var.data<float>(), 0.1, 1e-5, shape);
  }
};

void set_bandwidth(benchmark::State& state, const BatchNormBuffers& b, int tensor_passes) {
  const double bytes = static_cast<double>(b.x.nbytes()) * tensor_passes;
  state.counters["GB/s"] =
      benchmark::Counter(bytes * static_cast<double>(state.iterations()) / 1e9, benchmark::Counter::kIsRate);
}

void BM_BatchNormTrainForward(benchmark::State& state) {
  BatchNormBuffers b(state);
  for (auto _ : state) {
    b.forward_train();
    benchmark::DoNotOptimize(b.y.raw_data());
  }
  set_bandwidth(state, b, 3);
}

void BM_BatchNormTrainBackward(benchmark::State& state) {
  BatchNormBuffers b(state);
  b.forward_train();  // the saved statistics
  for (auto _ : state) {
    kernels::cpu::batch_norm_backward<float>(
        b.x.data<float>(), b.dy.data<float>(), b.gamma.data<float>(), b.mean.data<double>(),
        b.invstd.data<double>(), true, b.dx.data<float>(), b.dgamma.data<float>(), b.dbeta.data<float>(),
        b.shape);
    benchmark::DoNotOptimize(b.dx.raw_data());
  }
  set_bandwidth(state, b, 5);
}

void BM_BatchNormEvalForward(benchmark::State& state) {
  BatchNormBuffers b(state);
  for (auto _ : state) {
    kernels::cpu::batch_norm_forward_eval<float>(
        b.x.data<float>(), b.gamma.data<float>(), b.beta.data<float>(), b.running_mean.data<float>(),
        b.running_var.data<float>(), 1e-5, b.y.data<float>(), nullptr, nullptr, b.shape);
    benchmark::DoNotOptimize(b.y.raw_data());
  }
  set_bandwidth(state, b, 2);
}

// {N, H, W, C}: the stem and one BN per stage (its widest), at both training resolutions.
void resnet50_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"N", "H", "W", "C"});
  for (auto shape : {std::vector<int64_t>{8, 112, 112, 64}, {8, 56, 56, 256}, {8, 28, 28, 512},
                     {8, 14, 14, 1024}, {8, 7, 7, 2048}, {32, 32, 32, 64}, {32, 16, 16, 256},
                     {32, 8, 8, 512}, {32, 4, 4, 1024}, {32, 2, 2, 2048}})
    b->Args(shape);
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

BENCHMARK(BM_BatchNormTrainForward)->Apply(resnet50_shapes);
BENCHMARK(BM_BatchNormTrainBackward)->Apply(resnet50_shapes);
BENCHMARK(BM_BatchNormEvalForward)->Apply(resnet50_shapes);

}  // namespace
