// CUDA elementwise kernels: grid-stride loops over contiguous arrays; a two-stage sum.
#include <vector>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/runtime.h"

namespace kernels::cuda {
namespace {

constexpr int kThreads = 256;
inline int grid_for(int64_t n) {
  return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, 65535 * 4));
}
#define GRID_STRIDE(i, n) \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (n); i += int64_t(gridDim.x) * blockDim.x)

template <UnaryOp OP, typename T>
__global__ void unary_forward_kernel(const T* x, T* y, int64_t n, T alpha) {
  GRID_STRIDE(i, n) y[i] = unary_forward_fn<OP>(x[i], alpha);
}
template <UnaryOp OP, typename T>
__global__ void unary_backward_kernel(const T* x, const T* y, const T* dy, T* dx, int64_t n, T alpha) {
  GRID_STRIDE(i, n) dx[i] = unary_backward_fn<OP>(x ? x[i] : T(0), y ? y[i] : T(0), dy[i], alpha);
}
template <BinaryOp OP, typename T>
__global__ void binary_forward_kernel(const T* a, const T* b, T* y, int64_t n) {
  GRID_STRIDE(i, n) y[i] = binary_forward_fn<OP>(a[i], b[i]);
}
template <BinaryOp OP, typename T>
__global__ void binary_backward_kernel(const T* a, const T* b, const T* y, const T* dy, T* da, T* db,
                                       int64_t n) {
  GRID_STRIDE(i, n) {
    T ga, gb;
    binary_backward_fn<OP>(a ? a[i] : T(0), b ? b[i] : T(0), y ? y[i] : T(0), dy[i], &ga, &gb);
    if (da) da[i] = ga;
    if (db) db[i] = gb;
  }
}
// Each block writes one partial sum (in double); the host adds the partials.
template <typename T>
__global__ void sum_kernel(const T* x, int64_t n, double* partial) {
  __shared__ double shared[kThreads];
  double acc = 0;
  GRID_STRIDE(i, n) acc += static_cast<double>(x[i]);
  shared[threadIdx.x] = acc;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) shared[threadIdx.x] += shared[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[blockIdx.x] = shared[0];
}

}  // namespace

template <UnaryOp OP, typename T> void unary_forward(const T* x, T* y, int64_t n, T alpha) {
  if (n <= 0) return;
  unary_forward_kernel<OP><<<grid_for(n), kThreads>>>(x, y, n, alpha);
  CUDA_CHECK_LAUNCH("unary_forward");
}
template <UnaryOp OP, typename T>
void unary_backward(const T* x, const T* y, const T* dy, T* dx, int64_t n, T alpha) {
  if (n <= 0) return;
  unary_backward_kernel<OP><<<grid_for(n), kThreads>>>(x, y, dy, dx, n, alpha);
  CUDA_CHECK_LAUNCH("unary_backward");
}
template <BinaryOp OP, typename T> void binary_forward(const T* a, const T* b, T* y, int64_t n) {
  if (n <= 0) return;
  binary_forward_kernel<OP><<<grid_for(n), kThreads>>>(a, b, y, n);
  CUDA_CHECK_LAUNCH("binary_forward");
}
template <BinaryOp OP, typename T>
void binary_backward(const T* a, const T* b, const T* y, const T* dy, T* da, T* db, int64_t n) {
  if (n <= 0) return;
  binary_backward_kernel<OP><<<grid_for(n), kThreads>>>(a, b, y, dy, da, db, n);
  CUDA_CHECK_LAUNCH("binary_backward");
}
template <typename T> double sum(const T* x, int64_t n) {
  if (n <= 0) return 0;
  int blocks = static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, 1024));
  double* partial = static_cast<double*>(device_malloc(blocks * sizeof(double)));
  sum_kernel<<<blocks, kThreads>>>(x, n, partial);
  std::vector<double> host(blocks);
  try {
    CUDA_CHECK_LAUNCH("sum");
    copy_device_to_host(host.data(), partial, blocks * sizeof(double));
  } catch (...) {
    device_free(partial);
    throw;
  }
  device_free(partial);
  double total = 0;
  for (double v : host) total += v;
  return total;
}

#define INSTANTIATE(T)                                                                          \
  template void unary_forward<UnaryOp::Relu, T>(const T*, T*, int64_t, T);                      \
  template void unary_forward<UnaryOp::Sigmoid, T>(const T*, T*, int64_t, T);                   \
  template void unary_forward<UnaryOp::Softplus, T>(const T*, T*, int64_t, T);                  \
  template void unary_forward<UnaryOp::Scale, T>(const T*, T*, int64_t, T);                     \
  template void unary_backward<UnaryOp::Relu, T>(const T*, const T*, const T*, T*, int64_t, T);  \
  template void unary_backward<UnaryOp::Sigmoid, T>(const T*, const T*, const T*, T*, int64_t, T); \
  template void unary_backward<UnaryOp::Softplus, T>(const T*, const T*, const T*, T*, int64_t, T); \
  template void unary_backward<UnaryOp::Scale, T>(const T*, const T*, const T*, T*, int64_t, T); \
  template void binary_forward<BinaryOp::Add, T>(const T*, const T*, T*, int64_t);              \
  template void binary_forward<BinaryOp::AddRelu, T>(const T*, const T*, T*, int64_t);          \
  template void binary_forward<BinaryOp::Sub, T>(const T*, const T*, T*, int64_t);              \
  template void binary_forward<BinaryOp::Mul, T>(const T*, const T*, T*, int64_t);              \
  template void binary_backward<BinaryOp::Add, T>(const T*, const T*, const T*, const T*, T*, T*, int64_t); \
  template void binary_backward<BinaryOp::AddRelu, T>(const T*, const T*, const T*, const T*, T*, T*, int64_t); \
  template void binary_backward<BinaryOp::Sub, T>(const T*, const T*, const T*, const T*, T*, T*, int64_t); \
  template void binary_backward<BinaryOp::Mul, T>(const T*, const T*, const T*, const T*, T*, T*, int64_t); \
  template double sum<T>(const T*, int64_t);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace kernels::cuda
