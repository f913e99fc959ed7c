// Bayesian linear layer on the GPU: the reparameterised sample fused into the tiled GEMM
// (linear_gemm.cuh), the bias and noise handled in its epilogues, and the closed-form KL.
//   forward  y  = x W^T + b  W sampled by the B-operand loader, b by the epilogue
//   backward dx = dy W       W sampled again by the B-operand loader
//            dW = dy^T x     the epilogue writes dmu = dW, drho = dW eps sigmoid(rho),
//                            deps = dW softplus(rho), drawing eps again
//            db = column sums of dy, the same three gradients for the bias
// A Philox block gives four normals; loaders and epilogues work on runs of four consecutive
// weights, so each block is drawn once per run (BayesNoiseReader). A weight is sampled once
// per 64-row tile of x that uses it (once in all for a batch of up to 64).
// Gradient rule (as kernels/cpu/bayes.h): every gradient is written, none accumulated.
// Tests: build-cuda/tests/test_cuda_bayes; bench: bench_kernels --benchmark_filter=CudaBayes
#include "kernels/cuda/bayes.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/linear_gemm.cuh"
#include "kernels/cuda/runtime.h"

namespace kernels::cuda {
namespace {

// B-operand loader: the sampled weight mu + softplus(rho) eps at storage index idx of [out, in].
template <typename T> struct SampledLoad {
  const T* mu;
  const T* rho;
  BayesNoise<T> noise;
  __device__ __forceinline__ void run(int64_t idx, int count, T* v) const {
    BayesNoiseReader<T> eps(noise);
#pragma unroll
    for (int i = 0; i < gemm::kRun; ++i)
      if (i < count) v[i] = bayes_sample_fn(mu[idx + i], rho[idx + i], eps(idx + i));
  }
};

// y[m, n] = sum + b_mu[n] + softplus(b_rho[n]) eps_b[n].
template <typename T> struct SampledBiasEpilogue {
  T* y;
  int64_t ldy;
  const T* b_mu;
  const T* b_rho;
  BayesNoise<T> noise;
  __device__ __forceinline__ void operator()(int m, int n, int count, const T* v) const {
    BayesNoiseReader<T> eps(noise);
    T* row = y + static_cast<int64_t>(m) * ldy + n;
#pragma unroll
    for (int j = 0; j < 4; ++j)
      if (j < count) row[j] = v[j] + bayes_sample_fn(b_mu[n + j], b_rho[n + j], eps(n + j));
  }
};

// The gradients of mu, rho and eps from dL/dW (or dL/db) of element idx.
template <typename T> struct SampleGrads {
  T* dmu;
  T* drho;
  T* deps;
  const T* rho;
  BayesNoise<T> noise;
  __device__ __forceinline__ void write(int64_t idx, T g, BayesNoiseReader<T>& eps) const {
    if (dmu) dmu[idx] = g;
    if (drho) drho[idx] = bayes_drho_fn(rho[idx], eps(idx), g);
    if (deps) deps[idx] = bayes_deps_fn(rho[idx], g);
  }
};

template <typename T> struct WeightGradEpilogue {
  SampleGrads<T> grads;
  int64_t ld;  // in
  __device__ __forceinline__ void operator()(int m, int n, int count, const T* v) const {
    BayesNoiseReader<T> eps(grads.noise);
    const int64_t idx = static_cast<int64_t>(m) * ld + n;
#pragma unroll
    for (int j = 0; j < 4; ++j)
      if (j < count) grads.write(idx + j, v[j], eps);
  }
};

template <typename T> struct BiasGradEpilogue {
  SampleGrads<T> grads;
  __device__ __forceinline__ void operator()(int64_t c, T g) const {
    BayesNoiseReader<T> eps(grads.noise);
    grads.write(c, g, eps);
  }
};

// One thread per Philox block of the draws first_draw .. first_draw + n - 1; each writes the
// lanes of its block that fall in that range.
template <typename T> __global__ void noise_fill_kernel(BayesNoise<T> noise, T* eps, int64_t n) {
  const uint64_t first = noise.first_draw, last = first + static_cast<uint64_t>(n) - 1;
  const uint64_t blocks = (last >> 2) - (first >> 2) + 1;
  for (uint64_t b = blockIdx.x * uint64_t(blockDim.x) + threadIdx.x; b < blocks;
       b += uint64_t(gridDim.x) * blockDim.x) {
    const uint64_t block = (first >> 2) + b;
    double normals[4];
    philox_normal4(noise.seed, noise.offset, block, normals);
#pragma unroll
    for (int lane = 0; lane < 4; ++lane) {
      const uint64_t draw = block * 4 + lane;
      if (draw >= first && draw <= last) eps[draw - first] = static_cast<T>(normals[lane]);
    }
  }
}

constexpr int kThreads = 256;
constexpr int kMaxKlBlocks = 1024;

// Per-block partial KL sums (double) over the weights then the biases.
template <typename T>
__global__ void kl_partial_kernel(const T* w_mu, const T* w_rho, int64_t nw, const T* b_mu, const T* b_rho,
                                  int64_t nb, T prior_sigma, double* partial) {
  __shared__ double shared[kThreads];
  const BayesPrior<T> prior(prior_sigma);
  double acc = 0;
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < nw + nb;
       j += int64_t(gridDim.x) * blockDim.x)
    acc += static_cast<double>(j < nw ? bayes_kl_fn(w_mu[j], w_rho[j], prior)
                                      : bayes_kl_fn(b_mu[j - nw], b_rho[j - nw], prior));
  shared[threadIdx.x] = acc;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) shared[threadIdx.x] += shared[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[blockIdx.x] = shared[0];
}

// kl[0] = the sum of `count` partials, by one block in a fixed order.
template <typename T> __global__ void kl_final_kernel(const double* partial, int count, T* kl) {
  __shared__ double shared[kThreads];
  double acc = 0;
  for (int i = threadIdx.x; i < count; i += kThreads) acc += partial[i];
  shared[threadIdx.x] = acc;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) shared[threadIdx.x] += shared[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) kl[0] = static_cast<T>(shared[0]);
}

template <typename T>
__global__ void kl_backward_kernel(const T* mu, const T* rho, int64_t n, T prior_sigma, const T* dkl,
                                   T* dmu, T* drho) {
  const BayesPrior<T> prior(prior_sigma);
  const T scale = *dkl;
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < n; j += int64_t(gridDim.x) * blockDim.x) {
    T gmu, grho;
    bayes_kl_grad_fn(mu[j], rho[j], prior, scale, &gmu, &grho);
    if (dmu) dmu[j] = gmu;
    if (drho) drho[j] = grho;
  }
}

int grid_for(int64_t work, int64_t max_blocks) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((work + kThreads - 1) / kThreads, max_blocks)));
}

}  // namespace

template <typename T>
void bayes_linear_forward(const T* x, const T* w_mu, const T* w_rho, const T* b_mu, const T* b_rho,
                          const BayesNoise<T>& w_noise, const BayesNoise<T>& b_noise, T* y, int64_t n,
                          int64_t in, int64_t out) {
  gemm::check_sizes("bayes_linear_forward", n, in, out);
  gemm::run<T, false, true>("bayes_linear_forward", static_cast<int>(n), static_cast<int>(out),
                            static_cast<int>(in), gemm::PlainLoad<T>{x}, in,
                            SampledLoad<T>{w_mu, w_rho, w_noise}, in,
                            SampledBiasEpilogue<T>{y, out, b_mu, b_rho, b_noise});
}

template <typename T>
void bayes_linear_backward(const T* x, const T* w_mu, const T* w_rho, const T* b_rho,
                           const BayesNoise<T>& w_noise, const BayesNoise<T>& b_noise, const T* dy,
                           const BayesLinearGrads<T>& grads, int64_t n, int64_t in, int64_t out) {
  gemm::check_sizes("bayes_linear_backward", n, in, out);
  const int N = static_cast<int>(n), IN = static_cast<int>(in), OUT = static_cast<int>(out);
  if (grads.dx)
    gemm::run<T, false, false>("bayes_linear_backward dx", N, IN, OUT, gemm::PlainLoad<T>{dy}, out,
                               SampledLoad<T>{w_mu, w_rho, w_noise}, in,
                               gemm::StoreEpilogue<T>{grads.dx, in, nullptr});
  if (grads.dw_mu || grads.dw_rho || grads.dw_eps)
    gemm::run<T, true, false>(
        "bayes_linear_backward dw", OUT, IN, N, gemm::PlainLoad<T>{dy}, out, gemm::PlainLoad<T>{x}, in,
        WeightGradEpilogue<T>{SampleGrads<T>{grads.dw_mu, grads.dw_rho, grads.dw_eps, w_rho, w_noise}, in});
  if ((grads.db_mu || grads.db_rho || grads.db_eps) && out > 0) {
    gemm::column_sum_kernel<<<static_cast<unsigned>((out + 31) / 32), dim3(32, 8)>>>(
        dy, n, out, BiasGradEpilogue<T>{SampleGrads<T>{grads.db_mu, grads.db_rho, grads.db_eps, b_rho, b_noise}});
    CUDA_CHECK_LAUNCH("bayes_linear_backward db");
  }
}

template <typename T> void bayes_noise_fill(const BayesNoise<T>& noise, T* eps, int64_t n) {
  if (n <= 0) return;
  noise_fill_kernel<<<grid_for((n + 7) / 4, 8192), kThreads>>>(noise, eps, n);
  CUDA_CHECK_LAUNCH("bayes_noise_fill");
}

template <typename T>
void bayes_kl(const T* w_mu, const T* w_rho, int64_t nw, const T* b_mu, const T* b_rho, int64_t nb,
              T prior_sigma, T* kl) {
  const int blocks = grid_for(nw + nb, kMaxKlBlocks);
  double* partial = static_cast<double*>(device_malloc(blocks * sizeof(double)));
  // Freed after the launches: the allocator hands the block out only to later work on the
  // same (default) stream.
  try {
    kl_partial_kernel<<<blocks, kThreads>>>(w_mu, w_rho, nw, b_mu, b_rho, nb, prior_sigma, partial);
    CUDA_CHECK_LAUNCH("bayes_kl");
    kl_final_kernel<<<1, kThreads>>>(partial, blocks, kl);
    CUDA_CHECK_LAUNCH("bayes_kl final sum");
  } catch (...) {
    device_free(partial);
    throw;
  }
  device_free(partial);
}

template <typename T>
void bayes_kl_backward(const T* mu, const T* rho, int64_t n, T prior_sigma, const T* dkl, T* dmu, T* drho) {
  if (n <= 0 || (!dmu && !drho)) return;
  kl_backward_kernel<<<grid_for(n, 8192), kThreads>>>(mu, rho, n, prior_sigma, dkl, dmu, drho);
  CUDA_CHECK_LAUNCH("bayes_kl_backward");
}

#define INSTANTIATE_BAYES(T)                                                                          \
  template void bayes_linear_forward<T>(const T*, const T*, const T*, const T*, const T*,             \
                                        const BayesNoise<T>&, const BayesNoise<T>&, T*, int64_t,      \
                                        int64_t, int64_t);                                            \
  template void bayes_linear_backward<T>(const T*, const T*, const T*, const T*, const BayesNoise<T>&, \
                                         const BayesNoise<T>&, const T*, const BayesLinearGrads<T>&,   \
                                         int64_t, int64_t, int64_t);                                  \
  template void bayes_noise_fill<T>(const BayesNoise<T>&, T*, int64_t);                               \
  template void bayes_kl<T>(const T*, const T*, int64_t, const T*, const T*, int64_t, T, T*);         \
  template void bayes_kl_backward<T>(const T*, const T*, int64_t, T, const T*, T*, T*);
INSTANTIATE_BAYES(float)
INSTANTIATE_BAYES(double)
#undef INSTANTIATE_BAYES

}  // namespace kernels::cuda
