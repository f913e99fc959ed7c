// Memory-bound CUDA kernels at ResNet50's shapes, float32: batch norm (training forward,
// backward, the fused batch norm + ReLU forward and backward, evaluation forward) at every
// batch-norm shape (batch 128 at 224x224, batch 32 at 64x64), the spatial-attention branch
// (channel mean/max and the gate multiply at layer4's output), max pooling (the stem pool),
// global average pooling, and softmax cross-entropy (2 and 1000 classes). Times come from
// CUDA events around 10 calls (manual time). GB/s counts the bytes each kernel's passes move
// (each pass reads or writes a whole tensor once), to be compared with the GPU's memory
// bandwidth (H200: about 4.8 TB/s):
//   batch norm train forward   statistics read x; normalise reads x, writes y     3 tensors
//   batch norm train backward  sums read x, dy; dx pass reads x, dy, writes dx    5 tensors
//   (+ReLU: both passes also read y)                                              +2 tensors
//   batch norm eval forward    reads x, writes y                                  2 tensors
// Skipped, with the reason, where no GPU is usable.
//   build/bench/bench_kernels --benchmark_filter=Cuda
#include <benchmark/benchmark.h>

#ifdef ENGINE_WITH_CUDA
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/batch_norm.h"
#include "kernels/cuda/check.cuh"
#include "kernels/cuda/pool.h"
#include "kernels/cuda/runtime.h"
#include "kernels/cuda/softmax.h"

namespace {

using engine::Device;
using engine::DType;
using engine::Tensor;

bool gpu_or_skip(benchmark::State& state) {
  std::string why;
  if (kernels::cuda::available(&why)) return true;
  state.SkipWithError(("no usable GPU: " + why).c_str());
  return false;
}

// Seconds per call of f, from CUDA events around `reps` calls.
double seconds_per_call(const std::function<void()>& f, int reps) {
  cudaEvent_t start, stop;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
  CUDA_CHECK(cudaEventRecord(start, 0));
  for (int i = 0; i < reps; ++i) f();
  CUDA_CHECK(cudaEventRecord(stop, 0));
  CUDA_CHECK(cudaEventSynchronize(stop));
  float ms = 0;
  CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
  CUDA_CHECK(cudaEventDestroy(start));
  CUDA_CHECK(cudaEventDestroy(stop));
  return ms * 1e-3 / reps;
}

// The benchmark loop (one warm-up call first); GB/s from `bytes` moved per call.
void run_timed(benchmark::State& state, double bytes, const std::function<void()>& f) {
  f();
  kernels::cuda::synchronize();
  for (auto _ : state) state.SetIterationTime(seconds_per_call(f, 10));
  state.counters["GB/s"] = benchmark::Counter(bytes / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}

// A float32 device tensor of normal values (a block of 1M host values, tiled) times `scale`
// plus `offset`: realistic values without drawing 100M normals on the host.
Tensor device_values(const engine::Shape& shape, uint64_t seed, double scale = 1, double offset = 0) {
  Tensor t = Tensor::empty(shape, DType::F32, Device::CUDA);
  const int64_t n = t.numel(), block = std::min<int64_t>(n, 1 << 20);
  std::vector<double> v = Tensor::randn({std::max<int64_t>(block, 1)}, seed, 0, DType::F64).to_vector();
  std::vector<float> host(v.size());
  for (size_t i = 0; i < v.size(); ++i) host[i] = static_cast<float>(v[i] * scale + offset);
  for (int64_t done = 0; done < n; done += block)
    kernels::cuda::copy_host_to_device(t.data<float>() + done, host.data(),
                                       static_cast<size_t>(std::min(block, n - done)) * sizeof(float));
  return t;
}

// ---- batch norm ----

struct BatchNormBuffers {
  kernels::cuda::BatchNormShape shape;
  Tensor x, y, dy, dx, gamma, beta, running_mean, running_var, mean, invstd, dgamma, dbeta;
  double tensor_bytes;

  explicit BatchNormBuffers(const benchmark::State& state) {
    const int64_t n = state.range(0), h = state.range(1), w = state.range(2), c = state.range(3);
    shape = {n * h * w, c};
    x = device_values({n, h, w, c}, 1, 1.5, 0.3);
    dy = device_values({n, h, w, c}, 2);
    y = Tensor::empty({n, h, w, c}, DType::F32, Device::CUDA);
    dx = Tensor::empty({n, h, w, c}, DType::F32, Device::CUDA);
    gamma = device_values({c}, 3, 0.2, 1);
    beta = device_values({c}, 4, 0.2);
    running_mean = Tensor::zeros({c}, DType::F32, Device::CUDA);
    running_var = Tensor::full({c}, 1.0, DType::F32, Device::CUDA);
    mean = Tensor::empty({c}, DType::F64, Device::CUDA);
    invstd = Tensor::empty({c}, DType::F64, Device::CUDA);
    dgamma = Tensor::empty({c}, DType::F32, Device::CUDA);
    dbeta = Tensor::empty({c}, DType::F32, Device::CUDA);
    tensor_bytes = static_cast<double>(x.nbytes());
  }
  void forward_train(bool relu) {
    auto f = relu ? kernels::cuda::batch_norm_relu_forward_train<float> : kernels::cuda::batch_norm_forward_train<float>;
    f(x.data<float>(), gamma.data<float>(), beta.data<float>(), y.data<float>(), mean.data<double>(),
      invstd.data<double>(), running_mean.data<float>(), running_var.data<float>(), 0.1, 1e-5, shape);
  }
  void backward_train(bool relu) {
    if (relu)
      kernels::cuda::batch_norm_relu_backward<float>(x.data<float>(), y.data<float>(), dy.data<float>(),
                                                     gamma.data<float>(), mean.data<double>(), invstd.data<double>(),
                                                     true, dx.data<float>(), dgamma.data<float>(),
                                                     dbeta.data<float>(), shape);
    else
      kernels::cuda::batch_norm_backward<float>(x.data<float>(), dy.data<float>(), gamma.data<float>(),
                                                mean.data<double>(), invstd.data<double>(), true, dx.data<float>(),
                                                dgamma.data<float>(), dbeta.data<float>(), shape);
  }
};

void BM_CudaBatchNormTrainForward(benchmark::State& state) {
  if (!gpu_or_skip(state)) return;
  BatchNormBuffers b(state);
  run_timed(state, 3 * b.tensor_bytes, [&] { b.forward_train(false); });
}

void BM_CudaBatchNormTrainBackward(benchmark::State& state) {
  if (!gpu_or_skip(state)) return;
  BatchNormBuffers b(state);
  b.forward_train(false);  // the saved statistics
  run_timed(state, 5 * b.tensor_bytes, [&] { b.backward_train(false); });
}

// One training step of the fused batch norm + ReLU: forward then backward.
void BM_CudaBatchNormReluTrainStep(benchmark::State& state) {
  if (!gpu_or_skip(state)) return;
  BatchNormBuffers b(state);
  run_timed(state, (3 + 7) * b.tensor_bytes, [&] {
    b.forward_train(true);
    b.backward_train(true);
  });
}

void BM_CudaBatchNormEvalForward(benchmark::State& state) {
  if (!gpu_or_skip(state)) return;
  BatchNormBuffers b(state);
  run_timed(state, 2 * b.tensor_bytes, [&] {
    kernels::cuda::batch_norm_forward_eval<float>(b.x.data<float>(), b.gamma.data<float>(), b.beta.data<float>(),
                                                  b.running_mean.data<float>(), b.running_var.data<float>(), 1e-5,
                                                  b.y.data<float>(), b.mean.data<double>(), b.invstd.data<double>(),
                                                  b.shape);
  });
}

// {N, H, W, C}: every batch-norm shape of ResNet50 (stem; per stage the 1x1-reduce, 3x3 and
// expand outputs), batch 128 at 224x224 and batch 32 at 64x64.
void resnet50_batch_norm_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"N", "H", "W", "C"});
  const int64_t table[][2] = {{112, 64}, {56, 64},   {56, 256}, {56, 128}, {28, 128}, {28, 512},
                              {28, 256}, {14, 256},  {14, 1024}, {14, 512}, {7, 512},  {7, 2048}};
  for (auto [input, batch] : {std::pair<int64_t, int64_t>{224, 128}, {64, 32}})
    for (const auto& bn : table) {
      const int64_t side = bn[0] * input / 224;
      b->Args({batch, side, side, bn[1]});
    }
  b->UseManualTime()->Unit(benchmark::kMicrosecond);
}

BENCHMARK(BM_CudaBatchNormTrainForward)->Apply(resnet50_batch_norm_shapes);
BENCHMARK(BM_CudaBatchNormTrainBackward)->Apply(resnet50_batch_norm_shapes);
BENCHMARK(BM_CudaBatchNormReluTrainStep)->Apply(resnet50_batch_norm_shapes);
BENCHMARK(BM_CudaBatchNormEvalForward)->Apply(resnet50_batch_norm_shapes);

// ---- spatial attention: layer4's output [N, 7, 7, 2048] (224x224) and [N, 2, 2, 2048] ----

struct AttentionBuffers {
  int64_t pixels, channels;
  Tensor x, g, y, dy, dx, dg, pooled, dpooled;
  std::shared_ptr<engine::Storage> argmax;  // int32 per pixel
  explicit AttentionBuffers(const benchmark::State& state)
      : pixels(state.range(0) * state.range(1) * state.range(2)), channels(state.range(3)) {
    const engine::Shape shape{state.range(0), state.range(1), state.range(2), state.range(3)};
    const engine::Shape map{state.range(0), state.range(1), state.range(2), 1};
    x = device_values(shape, 1);
    dy = device_values(shape, 2);
    g = device_values(map, 3, 0.1, 0.5);
    y = Tensor::empty(shape, DType::F32, Device::CUDA);
    dx = Tensor::empty(shape, DType::F32, Device::CUDA);
    dg = Tensor::empty(map, DType::F32, Device::CUDA);
    pooled = Tensor::empty({state.range(0), state.range(1), state.range(2), 2}, DType::F32, Device::CUDA);
    dpooled = device_values({state.range(0), state.range(1), state.range(2), 2}, 4);
    argmax = std::make_shared<engine::Storage>(Device::CUDA, static_cast<size_t>(pixels) * sizeof(int32_t));
  }
  int32_t* argmax_ptr() { return static_cast<int32_t*>(argmax->data()); }
  double row_bytes() const { return 4.0 * static_cast<double>(pixels * channels); }
};

void BM_CudaAttentionChannelMeanMaxForward(benchmark::State& state) {
  if (!gpu_or_skip(state)) return;
  AttentionBuffers b(state);
  run_timed(state, b.row_bytes() + 12.0 * b.pixels, [&] {
    kernels::cuda::channel_mean_max_forward<float>(b.x.data<float>(), b.pooled.data<float>(), b.argmax_ptr(),
                                                   b.pixels, b.channels);
  });
}

void BM_CudaAttentionChannelMeanMaxBackward(benchmark::State& state) {
  if (!gpu_or_skip(state)) return;
  AttentionBuffers b(state);
  kernels::cuda::channel_mean_max_forward<float>(b.x.data<float>(), b.pooled.data<float>(), b.argmax_ptr(), b.pixels,
                                                 b.channels);
  run_timed(state, b.row_bytes() + 12.0 * b.pixels, [&] {
    kernels::cuda::channel_mean_max_backward<float>(b.dpooled.data<float>(), b.argmax_ptr(), b.dx.data<float>(),
                                                    b.pixels, b.channels);
  });
}

void BM_CudaAttentionGateMulForward(benchmark::State& state) {
  if (!gpu_or_skip(state)) return;
  AttentionBuffers b(state);
  run_timed(state, 2 * b.row_bytes() + 4.0 * b.pixels, [&] {
    kernels::cuda::gate_mul_forward<float>(b.x.data<float>(), b.g.data<float>(), b.y.data<float>(), b.pixels,
                                           b.channels);
  });
}

void BM_CudaAttentionGateMulBackward(benchmark::State& state) {
  if (!gpu_or_skip(state)) return;
  AttentionBuffers b(state);
  run_timed(state, 3 * b.row_bytes() + 8.0 * b.pixels, [&] {
    kernels::cuda::gate_mul_backward<float>(b.x.data<float>(), b.g.data<float>(), b.dy.data<float>(),
                                            b.dx.data<float>(), b.dg.data<float>(), b.pixels, b.channels);
  });
}

void attention_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"N", "H", "W", "C"});
  b->Args({128, 7, 7, 2048})->Args({32, 2, 2, 2048});
  b->UseManualTime()->Unit(benchmark::kMicrosecond);
}

BENCHMARK(BM_CudaAttentionChannelMeanMaxForward)->Apply(attention_shapes);
BENCHMARK(BM_CudaAttentionChannelMeanMaxBackward)->Apply(attention_shapes);
BENCHMARK(BM_CudaAttentionGateMulForward)->Apply(attention_shapes);
BENCHMARK(BM_CudaAttentionGateMulBackward)->Apply(attention_shapes);

// ---- pooling ----

kernels::cuda::MaxPoolShape stem_pool(const benchmark::State& state) {
  const int64_t n = state.range(0), h = state.range(1), w = state.range(2), c = state.range(3);
  return {n, h, w, c, 3, 2, 1, (h + 2 - 3) / 2 + 1, (w + 2 - 3) / 2 + 1};
}

void BM_CudaPoolMaxForward(benchmark::State& state) {
  if (!gpu_or_skip(state)) return;
  const kernels::cuda::MaxPoolShape s = stem_pool(state);
  Tensor x = device_values({s.batch, s.in_h, s.in_w, s.channels}, 1);
  Tensor y = Tensor::empty({s.batch, s.out_h, s.out_w, s.channels}, DType::F32, Device::CUDA);
  run_timed(state, static_cast<double>(x.nbytes() + y.nbytes()),
            [&] { kernels::cuda::max_pool2d_forward<float>(x.data<float>(), y.data<float>(), s); });
}

void BM_CudaPoolMaxBackward(benchmark::State& state) {
  if (!gpu_or_skip(state)) return;
  const kernels::cuda::MaxPoolShape s = stem_pool(state);
  Tensor x = device_values({s.batch, s.in_h, s.in_w, s.channels}, 1);
  Tensor y = Tensor::empty({s.batch, s.out_h, s.out_w, s.channels}, DType::F32, Device::CUDA);
  Tensor dy = device_values(y.shape(), 2), dx = Tensor::empty(x.shape(), DType::F32, Device::CUDA);
  kernels::cuda::max_pool2d_forward<float>(x.data<float>(), y.data<float>(), s);
  // reads x, y, dy, writes dx
  run_timed(state, static_cast<double>(2 * x.nbytes() + 2 * y.nbytes()), [&] {
    kernels::cuda::max_pool2d_backward<float>(x.data<float>(), y.data<float>(), dy.data<float>(), dx.data<float>(), s);
  });
}

void stem_pool_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"N", "H", "W", "C"});
  b->Args({128, 112, 112, 64})->Args({32, 32, 32, 64});
  b->UseManualTime()->Unit(benchmark::kMicrosecond);
}

BENCHMARK(BM_CudaPoolMaxForward)->Apply(stem_pool_shapes);
BENCHMARK(BM_CudaPoolMaxBackward)->Apply(stem_pool_shapes);

void BM_CudaPoolGlobalAvgForward(benchmark::State& state) {
  if (!gpu_or_skip(state)) return;
  const int64_t n = state.range(0), spatial = state.range(1) * state.range(2), c = state.range(3);
  Tensor x = device_values({n, state.range(1), state.range(2), c}, 1);
  Tensor y = Tensor::empty({n, c}, DType::F32, Device::CUDA);
  run_timed(state, static_cast<double>(x.nbytes() + y.nbytes()), [&] {
    kernels::cuda::global_avg_pool_forward<float>(x.data<float>(), y.data<float>(), n, spatial, c);
  });
}

void BM_CudaPoolGlobalAvgBackward(benchmark::State& state) {
  if (!gpu_or_skip(state)) return;
  const int64_t n = state.range(0), spatial = state.range(1) * state.range(2), c = state.range(3);
  Tensor dy = device_values({n, c}, 1);
  Tensor dx = Tensor::empty({n, state.range(1), state.range(2), c}, DType::F32, Device::CUDA);
  run_timed(state, static_cast<double>(dx.nbytes() + dy.nbytes()), [&] {
    kernels::cuda::global_avg_pool_backward<float>(dy.data<float>(), dx.data<float>(), n, spatial, c);
  });
}

BENCHMARK(BM_CudaPoolGlobalAvgForward)->Apply(attention_shapes);
BENCHMARK(BM_CudaPoolGlobalAvgBackward)->Apply(attention_shapes);

// ---- softmax cross-entropy: forward (returns the loss to the host) and backward ----

void BM_CudaSoftmaxCrossEntropy(benchmark::State& state) {
  if (!gpu_or_skip(state)) return;
  const int64_t rows = state.range(0), cols = state.range(1);
  Tensor logits = device_values({rows, cols}, 1, 3);
  Tensor row_log_sum = Tensor::empty({rows}, DType::F32, Device::CUDA);
  Tensor dlogits = Tensor::empty({rows, cols}, DType::F32, Device::CUDA);
  std::vector<int64_t> host_labels(static_cast<size_t>(rows));
  for (int64_t i = 0; i < rows; ++i) host_labels[i] = (i * 7) % cols;
  engine::Storage labels(Device::CUDA, host_labels.size() * sizeof(int64_t));
  kernels::cuda::copy_host_to_device(labels.data(), host_labels.data(), host_labels.size() * sizeof(int64_t));
  const int64_t* label_data = static_cast<const int64_t*>(labels.data());
  // forward reads the logits, backward reads them and writes dlogits
  run_timed(state, 3.0 * static_cast<double>(logits.nbytes()), [&] {
    double loss = kernels::cuda::cross_entropy_forward<float>(logits.data<float>(), label_data,
                                                             row_log_sum.data<float>(), rows, cols);
    benchmark::DoNotOptimize(loss);
    kernels::cuda::cross_entropy_backward<float>(logits.data<float>(), label_data, row_log_sum.data<float>(),
                                                 1.0f / static_cast<float>(rows), dlogits.data<float>(), rows, cols);
  });
}

BENCHMARK(BM_CudaSoftmaxCrossEntropy)
    ->ArgNames({"N", "K"})
    ->Args({128, 2})
    ->Args({32, 2})
    ->Args({256, 1000})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace
#endif  // ENGINE_WITH_CUDA
