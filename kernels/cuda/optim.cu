// Optimiser updates on the GPU: memory-bound (SGD with momentum moves 20 bytes per float
// parameter, Adam 28), so each kernel is one grid-stride pass with enough blocks in flight to
// cover the memory latency; the update of each element is the shared sgd_update_fn /
// adam_update_fn, so CPU and GPU results agree to the last bit but for fused multiply-adds.
// Bench: bench_kernels --benchmark_filter=CudaOptim (ResNet50's 161 parameter tensors).
#include "kernels/cuda/optim.h"

#include <algorithm>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/runtime.h"

namespace kernels::cuda {
namespace {

constexpr int kThreads = 256;

int grid_for(int64_t n) {
  // 16 blocks of 256 threads per multiprocessor keep enough loads in flight; more only adds
  // scheduling.
  const int64_t cap = static_cast<int64_t>(multiprocessor_count()) * 16;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, cap)));
}

template <typename T>
__global__ void sgd_kernel(T* param, const T* grad, T* buffer, int64_t n, SgdCoeffs<T> c) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    sgd_update_fn(param + i, grad[i], buffer ? buffer + i : nullptr, c);
}

template <typename T>
__global__ void adam_kernel(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, int64_t n, AdamCoeffs<T> c) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    adam_update_fn(param + i, grad[i], exp_avg + i, exp_avg_sq + i, c);
}

}  // namespace

template <typename T>
void sgd_step(T* param, const T* grad, T* momentum_buffer, int64_t n, const SgdCoeffs<T>& c) {
  if (n <= 0) return;
  sgd_kernel<<<grid_for(n), kThreads>>>(param, grad, c.momentum != T(0) ? momentum_buffer : nullptr, n, c);
  CUDA_CHECK_LAUNCH("sgd_step");
}

template <typename T>
void adam_step(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, int64_t n, const AdamCoeffs<T>& c) {
  if (n <= 0) return;
  adam_kernel<<<grid_for(n), kThreads>>>(param, grad, exp_avg, exp_avg_sq, n, c);
  CUDA_CHECK_LAUNCH("adam_step");
}

template void sgd_step<float>(float*, const float*, float*, int64_t, const SgdCoeffs<float>&);
template void sgd_step<double>(double*, const double*, double*, int64_t, const SgdCoeffs<double>&);
template void adam_step<float>(float*, const float*, float*, float*, int64_t, const AdamCoeffs<float>&);
template void adam_step<double>(double*, const double*, double*, double*, int64_t, const AdamCoeffs<double>&);

}  // namespace kernels::cuda
