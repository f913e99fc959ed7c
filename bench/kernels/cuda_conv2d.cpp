// CUDA convolution throughput (kernels/cuda/conv2d.h): forward, backward-data and
// backward-weight of every distinct ResNet50 convolution at 224x224 batch 128 and 64x64 batch 32,
// float32 with FP32 and with TF32 math. In the same run, on the same shape, layout (NHWC/KRSC)
// and math, cuDNN's time with the algorithm cudnnFind* measures fastest (FMA-only kernels for
// FP32, tensor cores allowed for TF32), and for 1x1 stride-1 forwards cuBLAS's SGEMM.
// Counters: GFLOP/s (2*N*P*Q*K*R*S*C per pass), ours_ms and cudnn_ms (mean of the same number of
// back-to-back runs), pct_cudnn = 100 * cudnn_ms / ours_ms (100: as fast as cuDNN), pct_cublas,
// and "uses", how often ResNet50 has the shape. Times are CUDA-event times on the default stream.
// Names: CudaConv2d/<pass>/<fp32|tf32>/<batch config>/<input HxW>_<C>to<K>_<R>x<S>s<stride>.
// Without a GPU one entry, CudaConv2d/unavailable, says why, and nothing else is registered.
// Run: build/bench/bench_kernels --benchmark_filter='CudaConv2d/fwd/fp32/b32_64'
#ifdef ENGINE_WITH_CUDA
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "engine/tensor.h"
#include "kernels/common/conv2d_shape.h"
#include "kernels/cuda/conv2d.h"
#include "kernels/cuda/runtime.h"
#include "tests/gpu_reference.h"

namespace {

namespace kc = kernels::cuda;
using kernels::Conv2dShape;

void cuda_check(cudaError_t status, const char* call) {
  if (status != cudaSuccess) throw std::runtime_error(std::string(call) + ": " + cudaGetErrorString(status));
}
#define BENCH_CUDA(call) cuda_check((call), #call)

// The ResNet50 convolutions of bench/kernels/conv2d.cpp (input size = image / downscale).
struct LayerShape {
  int downscale;
  int64_t C, K, R, stride, pad;
  int uses;
};
const LayerShape kResNet50Convs[] = {
    {1, 3, 64, 7, 2, 3, 1},
    {4, 64, 64, 1, 1, 0, 1},    {4, 64, 64, 3, 1, 1, 3},      {4, 64, 256, 1, 1, 0, 4},
    {4, 256, 64, 1, 1, 0, 2},   {4, 256, 128, 1, 1, 0, 1},    {4, 128, 128, 3, 2, 1, 1},
    {4, 256, 512, 1, 2, 0, 1},  {8, 128, 128, 3, 1, 1, 3},    {8, 128, 512, 1, 1, 0, 4},
    {8, 512, 128, 1, 1, 0, 3},  {8, 512, 256, 1, 1, 0, 1},    {8, 256, 256, 3, 2, 1, 1},
    {8, 512, 1024, 1, 2, 0, 1}, {16, 256, 256, 3, 1, 1, 5},   {16, 256, 1024, 1, 1, 0, 6},
    {16, 1024, 256, 1, 1, 0, 5}, {16, 1024, 512, 1, 1, 0, 1}, {16, 512, 512, 3, 2, 1, 1},
    {16, 1024, 2048, 1, 2, 0, 1}, {32, 512, 512, 3, 1, 1, 2}, {32, 512, 2048, 1, 1, 0, 3},
    {32, 2048, 512, 1, 1, 0, 2},
};

struct BatchConfig {
  const char* name;
  int64_t batch, image;
};
const BatchConfig kConfigs[] = {{"b128_224", 128, 224}, {"b32_64", 32, 64}};

enum class Pass { Forward, BackwardData, BackwardWeight };

// x, w and y on the device; y doubles as dy, x as dx and w as dw.
struct Buffers {
  engine::Tensor xt, wt, yt;
  float *x, *w, *y;
  explicit Buffers(const Conv2dShape& s)
      : xt(device_tensor(s.input_size(), 0.5f)), wt(device_tensor(s.weight_size(), 0.01f)),
        yt(device_tensor(s.output_size(), 0.25f)), x(xt.data<float>()), w(wt.data<float>()),
        y(yt.data<float>()) {}
  // values do not change the work done
  static engine::Tensor device_tensor(int64_t n, float value) {
    engine::Tensor t = engine::Tensor::empty({n}, engine::DType::F32, engine::Device::CUDA);
    kc::fill_f32(t.data<float>(), value, n);
    return t;
  }
};

// Mean milliseconds of n back-to-back runs of f, between two events on the default stream.
template <class F>
double mean_ms(F&& f, int n) {
  cudaEvent_t start, stop;
  BENCH_CUDA(cudaEventCreate(&start));
  BENCH_CUDA(cudaEventCreate(&stop));
  BENCH_CUDA(cudaEventRecord(start, 0));
  for (int i = 0; i < n; ++i) f();
  BENCH_CUDA(cudaEventRecord(stop, 0));
  BENCH_CUDA(cudaEventSynchronize(stop));
  float ms = 0;
  BENCH_CUDA(cudaEventElapsedTime(&ms, start, stop));
  BENCH_CUDA(cudaEventDestroy(start));
  BENCH_CUDA(cudaEventDestroy(stop));
  return ms / n;
}

void run_pass(benchmark::State& state, const Conv2dShape& s, Pass pass, kc::ConvMath math, int uses) {
  try {
    const kc::ConvMathScope scope(math);
    Buffers b(s);
    auto ours = [&] {
      switch (pass) {
        case Pass::Forward: kc::conv2d_forward<float>(s, b.x, b.w, nullptr, b.y); break;
        case Pass::BackwardData: kc::conv2d_backward_data<float>(s, b.y, b.w, b.x); break;
        case Pass::BackwardWeight: kc::conv2d_backward_weight<float>(s, b.x, b.y, b.w); break;
      }
    };
    ours();  // warm-up; surfaces launch errors before timing
    BENCH_CUDA(cudaDeviceSynchronize());
    for (auto _ : state) {
      const double ms = mean_ms(ours, 1);
      state.SetIterationTime(ms / 1e3);
    }
    state.counters["GFLOP/s"] =
        benchmark::Counter(2.0 * s.macs() * state.iterations() / 1e9, benchmark::Counter::kIsRate);
    state.counters["uses"] = uses;

    // the vendors against the same number of back-to-back runs of ours (about 50 ms of ours)
    const double first_ms = mean_ms(ours, 1);
    const int n = static_cast<int>(std::clamp(50.0 / std::max(first_ms, 1e-3), 3.0, 200.0));
    const double ours_ms = mean_ms(ours, n);
    state.counters["ours_ms"] = ours_ms;
#ifdef ENGINE_HAVE_CUDNN
    gpu_reference::CudnnConv conv(s, math == kc::ConvMath::TF32, /*fastest=*/true);
    auto cudnn = [&] {
      switch (pass) {
        case Pass::Forward: conv.forward(b.x, b.w, b.y); break;
        case Pass::BackwardData: conv.backward_data(b.y, b.w, b.x); break;
        case Pass::BackwardWeight: conv.backward_weight(b.x, b.y, b.w); break;
      }
    };
    cudnn();  // finds the algorithm
    BENCH_CUDA(cudaDeviceSynchronize());
    const double cudnn_ms = mean_ms(cudnn, n);
    state.counters["cudnn_ms"] = cudnn_ms;
    state.counters["pct_cudnn"] = 100.0 * cudnn_ms / ours_ms;
#endif
#ifdef ENGINE_HAVE_CUBLAS
    if (pass == Pass::Forward && s.R == 1 && s.S == 1 && s.stride == 1 && s.pad == 0) {
      auto gemm = [&] { gpu_reference::conv1x1_gemm(s, b.x, b.w, b.y, math == kc::ConvMath::TF32); };
      gemm();
      BENCH_CUDA(cudaDeviceSynchronize());
      state.counters["pct_cublas"] = 100.0 * mean_ms(gemm, n) / ours_ms;
    }
#endif
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

std::string shape_name(const Conv2dShape& s) {
  return std::to_string(s.H) + "x" + std::to_string(s.W) + "_" + std::to_string(s.C) + "to" +
         std::to_string(s.K) + "_" + std::to_string(s.R) + "x" + std::to_string(s.S) + "s" +
         std::to_string(s.stride);
}

bool register_all() {
  std::string why;
  if (!kc::available(&why)) {
    benchmark::RegisterBenchmark("CudaConv2d/unavailable", [why](benchmark::State& st) {
      st.SkipWithError(("no usable GPU: " + why).c_str());
    });
    return false;
  }
  const std::pair<Pass, const char*> passes[] = {
      {Pass::Forward, "fwd"}, {Pass::BackwardData, "bwd_data"}, {Pass::BackwardWeight, "bwd_weight"}};
  const std::pair<kc::ConvMath, const char*> maths[] = {{kc::ConvMath::FP32, "fp32"}, {kc::ConvMath::TF32, "tf32"}};
  for (const auto& [pass, pass_name] : passes)
    for (const auto& [math, math_name] : maths)
      for (const BatchConfig& cfg : kConfigs)
        for (const LayerShape& l : kResNet50Convs) {
          const int64_t in = cfg.image / l.downscale;
          const Conv2dShape s = Conv2dShape::make(cfg.batch, in, in, l.C, l.K, l.R, l.R, l.stride, l.pad);
          const std::string name = std::string("CudaConv2d/") + pass_name + "/" + math_name + "/" + cfg.name +
                                   "/" + shape_name(s);
          const Pass p = pass;
          const kc::ConvMath m = math;
          const int uses = l.uses;
          benchmark::RegisterBenchmark(name.c_str(), [s, p, m, uses](benchmark::State& st) { run_pass(st, s, p, m, uses); })
              ->Unit(benchmark::kMillisecond)
              ->UseManualTime();
        }
  return true;
}

const bool kRegistered = register_all();

}  // namespace
#endif  // ENGINE_WITH_CUDA
