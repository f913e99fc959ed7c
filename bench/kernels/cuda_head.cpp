// The detector heads and the optimiser step on the GPU (float32): linear and Bayesian linear
// (2048 -> 2 at batch 32 and 128, 2048 -> 1000 at batch 32 and 256), forward and backward,
// and SGD / Adam over ResNet50's 161 parameter tensors (25.5M values), one launch each, and
// over one tensor of the same size (the launch overhead's share). Times come from CUDA
// events (manual time). GB/s counts each array read or written once; the linear benchmarks
// also report cuBLAS's time for the same products (sgemm, FP32 math, no TF32) and ours as a
// percentage of it, when libcublas can be opened (it is loaded at run time: bench_kernels
// does not link it). Skipped, with the reason, where no GPU is usable.
//   build-cuda/bench/bench_kernels --benchmark_filter=Cuda
#include <benchmark/benchmark.h>

#ifdef ENGINE_WITH_CUDA
#include <cuda_runtime.h>
#include <dlfcn.h>
#if __has_include(<cublas_v2.h>)
#include <cublas_v2.h>
#define HAVE_CUBLAS_HEADER 1
#endif

#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "kernels/cuda/bayes.h"
#include "kernels/cuda/check.cuh"
#include "kernels/cuda/linear.h"
#include "kernels/cuda/optim.h"
#include "kernels/cuda/runtime.h"
#include "models/resnet.h"

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

// Seconds per call of f, from CUDA events around `reps` calls (after one warm-up call).
double seconds_per_call(const std::function<void()>& f, int reps) {
  cudaEvent_t start, stop;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
  f();
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

// Google Benchmark loop with each iteration's time taken from events around 10 calls.
void run_timed(benchmark::State& state, const std::function<void()>& f) {
  constexpr int kCallsPerIteration = 10;
  f();
  kernels::cuda::synchronize();
  for (auto _ : state) state.SetIterationTime(seconds_per_call(f, kCallsPerIteration));
}

#ifdef HAVE_CUBLAS_HEADER
// cuBLAS, opened at run time; null where the library cannot be found.
struct Cublas {
  cublasHandle_t handle = nullptr;
  decltype(&cublasSgemm_v2) sgemm = nullptr;

  static Cublas* get() {
    static Cublas* instance = [] {
      const char* names[] = {"libcublas.so.13", "libcublas.so", "/usr/local/cuda/lib64/libcublas.so"};
      void* lib = nullptr;
      for (const char* name : names)
        if ((lib = dlopen(name, RTLD_NOW | RTLD_LOCAL))) break;
      if (!lib) {
        std::fprintf(stderr, "cuBLAS not found (%s): no reference times\n", dlerror());
        return static_cast<Cublas*>(nullptr);
      }
      auto create = reinterpret_cast<decltype(&cublasCreate_v2)>(dlsym(lib, "cublasCreate_v2"));
      auto* c = new Cublas();
      c->sgemm = reinterpret_cast<decltype(&cublasSgemm_v2)>(dlsym(lib, "cublasSgemm_v2"));
      if (!create || !c->sgemm || create(&c->handle) != CUBLAS_STATUS_SUCCESS) {
        std::fprintf(stderr, "cuBLAS could not be initialised: no reference times\n");
        delete c;
        return static_cast<Cublas*>(nullptr);
      }
      return c;
    }();
    return instance;
  }
  // Row-major C[m, n] = op(A) op(B) through column-major sgemm: C^T = op(B)^T op(A)^T.
  void gemm_row_major(bool ta, bool tb, int m, int n, int k, const float* a, int lda, const float* b, int ldb,
                      float* c, int ldc) const {
    const float one = 1, zero = 0;
    cublasStatus_t status = sgemm(handle, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k,
                                  &one, b, ldb, a, lda, &zero, c, ldc);
    if (status != CUBLAS_STATUS_SUCCESS) throw std::runtime_error("cublasSgemm failed: " + std::to_string(status));
  }
};

// Our time as a percentage of cuBLAS's for the same products (cuBLAS time / ours).
void cublas_reference(benchmark::State& state, const std::function<void()>& ours,
                      const std::function<void(const Cublas&)>& theirs) {
  const Cublas* cublas = Cublas::get();
  if (!cublas) return;
  const double t_cublas = seconds_per_call([&] { theirs(*cublas); }, 50);
  const double t_ours = seconds_per_call(ours, 50);
  state.counters["cublas_us"] = t_cublas * 1e6;
  state.counters["pct_of_cublas"] = 100.0 * t_cublas / t_ours;
}
#define CUBLAS_REFERENCE(...) cublas_reference(__VA_ARGS__)
#else  // the toolkit here has no cuBLAS headers: no reference times
#define CUBLAS_REFERENCE(...) (void)0
#endif

// Random device arrays for a head in -> out at batch n.
struct Head {
  int64_t n, in, out;
  Tensor x, w, w_rho, b, b_rho, y, dy, dx, dw, dw_rho, db, db_rho;
  Head(int64_t n_, int64_t in_, int64_t out_) : n(n_), in(in_), out(out_) {
    auto make = [](engine::Shape s, uint64_t seed) { return Tensor::randn(s, seed, 0, DType::F32, Device::CUDA); };
    x = make({n, in}, 1), w = make({out, in}, 2), w_rho = make({out, in}, 3), b = make({out}, 4);
    b_rho = make({out}, 5), dy = make({n, out}, 6);
    y = Tensor::empty({n, out}, DType::F32, Device::CUDA), dx = Tensor::empty({n, in}, DType::F32, Device::CUDA);
    dw = Tensor::empty({out, in}, DType::F32, Device::CUDA), dw_rho = Tensor::empty({out, in}, DType::F32, Device::CUDA);
    db = Tensor::empty({out}, DType::F32, Device::CUDA), db_rho = Tensor::empty({out}, DType::F32, Device::CUDA);
  }
  float* p(const Tensor& t) const { return t.data<float>(); }
  double flops(int products) const { return 2.0 * n * in * out * products; }
  void counters(benchmark::State& state, double bytes, int products) const {
    state.counters["GB/s"] = benchmark::Counter(bytes, benchmark::Counter::kIsIterationInvariantRate);
    state.counters["GFLOP/s"] =
        benchmark::Counter(flops(products) / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  }
};

void BM_CudaLinearForward(benchmark::State& state) {
  if (!gpu_or_skip(state)) return;
  Head h(state.range(0), state.range(1), state.range(2));
  auto ours = [&] {
    kernels::cuda::linear_forward<float>(h.p(h.x), h.p(h.w), h.p(h.b), h.p(h.y), h.n, h.in, h.out);
  };
  run_timed(state, ours);
  h.counters(state, 4.0 * (h.n * h.in + h.out * h.in + h.out + h.n * h.out), 1);
  // cuBLAS computes x w^T without the bias: the bias adds n * out values to ~in times more work.
  CUBLAS_REFERENCE(state, ours, [&](const Cublas& c) {
    c.gemm_row_major(false, true, int(h.n), int(h.out), int(h.in), h.p(h.x), int(h.in), h.p(h.w), int(h.in),
                     h.p(h.y), int(h.out));
  });
}

void BM_CudaLinearBackward(benchmark::State& state) {
  if (!gpu_or_skip(state)) return;
  Head h(state.range(0), state.range(1), state.range(2));
  auto ours = [&] {
    kernels::cuda::linear_backward<float>(h.p(h.x), h.p(h.w), h.p(h.dy), h.p(h.dx), h.p(h.dw), h.p(h.db), h.n, h.in,
                                          h.out);
  };
  run_timed(state, ours);
  // reads dy twice (dx, dw) and once more for db, x and w once; writes dx, dw, db
  h.counters(state, 4.0 * (3 * h.n * h.out + h.n * h.in + h.out * h.in + h.n * h.in + h.out * h.in + h.out), 2);
  CUBLAS_REFERENCE(state, ours, [&](const Cublas& c) {  // dx = dy w and dw = dy^T x (no db)
    c.gemm_row_major(false, false, int(h.n), int(h.in), int(h.out), h.p(h.dy), int(h.out), h.p(h.w), int(h.in),
                     h.p(h.dx), int(h.in));
    c.gemm_row_major(true, false, int(h.out), int(h.in), int(h.n), h.p(h.dy), int(h.out), h.p(h.x), int(h.in),
                     h.p(h.dw), int(h.in));
  });
}

kernels::BayesNoise<float> philox(uint64_t first_draw) {
  kernels::BayesNoise<float> noise;
  noise.seed = 1234;
  noise.offset = 7;
  noise.first_draw = first_draw;
  return noise;
}

void BM_CudaBayesLinearForward(benchmark::State& state) {
  if (!gpu_or_skip(state)) return;
  Head h(state.range(0), state.range(1), state.range(2));
  run_timed(state, [&] {
    kernels::cuda::bayes_linear_forward<float>(h.p(h.x), h.p(h.w), h.p(h.w_rho), h.p(h.b), h.p(h.b_rho), philox(0),
                                               philox(uint64_t(h.out * h.in)), h.p(h.y), h.n, h.in, h.out);
  });
  h.counters(state, 4.0 * (h.n * h.in + 2 * h.out * h.in + 2 * h.out + h.n * h.out), 1);
  state.counters["weights/s"] =
      benchmark::Counter(double(h.out * (h.in + 1)), benchmark::Counter::kIsIterationInvariantRate);
}

void BM_CudaBayesLinearBackward(benchmark::State& state) {
  if (!gpu_or_skip(state)) return;
  Head h(state.range(0), state.range(1), state.range(2));
  kernels::cuda::BayesLinearGrads<float> grads;
  grads.dx = h.p(h.dx);
  grads.dw_mu = h.p(h.dw);
  grads.dw_rho = h.p(h.dw_rho);
  grads.db_mu = h.p(h.db);
  grads.db_rho = h.p(h.db_rho);
  run_timed(state, [&] {
    kernels::cuda::bayes_linear_backward<float>(h.p(h.x), h.p(h.w), h.p(h.w_rho), h.p(h.b_rho), philox(0),
                                                philox(uint64_t(h.out * h.in)), h.p(h.dy), grads, h.n, h.in, h.out);
  });
  // dx: dy, mu, rho -> dx; dW: dy, x, rho -> dmu, drho; db: dy, rho -> dmu, drho
  h.counters(state, 4.0 * (3 * h.n * h.out + 2 * h.out * h.in + 2 * h.n * h.in + 3 * h.out * h.in + 3 * h.out), 2);
}

// ResNet50's parameter shapes (161 tensors, 25,557,032 values), from the model itself.
const std::vector<engine::Shape>& resnet50_parameter_shapes() {
  static const std::vector<engine::Shape> shapes = [] {
    std::vector<engine::Shape> out;
    for (const auto& [name, p] : models::make_detector("resnet50")->named_parameters()) out.push_back(p.shape());
    return out;
  }();
  return shapes;
}

// range(0): 0 SGD with momentum, 1 Adam. range(1): 0 ResNet50's tensors, 1 one tensor of
// the same total size.
void BM_CudaOptimStep(benchmark::State& state) {
  if (!gpu_or_skip(state)) return;
  const bool adam = state.range(0) == 1;
  std::vector<engine::Shape> shapes = resnet50_parameter_shapes();
  int64_t total = 0;
  for (const auto& s : shapes) total += engine::shape_numel(s);
  if (state.range(1) == 1) shapes = {{total}};
  struct Slot {
    Tensor p, g, m, v;
  };
  // Made once per layout (Google Benchmark calls this function several times).
  static std::map<int64_t, std::vector<Slot>> cache;
  std::vector<Slot>& slots = cache[state.range(1)];
  if (slots.empty())
    for (size_t i = 0; i < shapes.size(); ++i) {
      auto make = [&](uint64_t k) { return Tensor::randn(shapes[i], 10 + i, k, DType::F32, Device::CUDA); };
      slots.push_back({make(0), make(1), make(2), Tensor::full(shapes[i], 0.5, DType::F32, Device::CUDA)});
    }
  const kernels::SgdCoeffs<float> sgd{0.01f, 0.9f, 1.0f, 1e-4f, false, false};
  const kernels::AdamCoeffs<float> adam_c{0.1f, 0.999f, 0.001f, 1e-3f, 0.03f, 1e-8f, 0.0f, 1.0f};
  run_timed(state, [&] {
    for (Slot& s : slots) {
      if (adam)
        kernels::cuda::adam_step<float>(s.p.data<float>(), s.g.data<float>(), s.m.data<float>(), s.v.data<float>(),
                                        s.p.numel(), adam_c);
      else
        kernels::cuda::sgd_step<float>(s.p.data<float>(), s.g.data<float>(), s.m.data<float>(), s.p.numel(), sgd);
    }
  });
  // SGD with momentum reads p, g, buf and writes p, buf; Adam reads p, g, m, v, writes p, m, v.
  const double bytes = 4.0 * total * (adam ? 7 : 5);
  state.counters["GB/s"] = benchmark::Counter(bytes, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["tensors"] = static_cast<double>(slots.size());
}

void head_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"n", "in", "out"});
  for (auto args : std::vector<std::vector<int64_t>>{{32, 2048, 2}, {128, 2048, 2}, {32, 2048, 1000}, {256, 2048, 1000}})
    b->Args(args);
  b->UseManualTime()->Unit(benchmark::kMicrosecond);
}

BENCHMARK(BM_CudaLinearForward)->Apply(head_shapes);
BENCHMARK(BM_CudaLinearBackward)->Apply(head_shapes);
BENCHMARK(BM_CudaBayesLinearForward)->Apply(head_shapes);
BENCHMARK(BM_CudaBayesLinearBackward)->Apply(head_shapes);
BENCHMARK(BM_CudaOptimStep)
    ->ArgNames({"adam", "one_tensor"})
    ->Args({0, 0})
    ->Args({1, 0})
    ->Args({0, 1})
    ->Args({1, 1})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace
#endif  // ENGINE_WITH_CUDA
