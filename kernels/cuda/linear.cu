// Fully connected layer on the GPU: three products on one tiled GEMM (linear_gemm.cuh) and a
// column sum for the bias gradient.
//   forward  y  = x w^T + b   A = x [n, in],     B(k, n) = w[n, k]   (B transposed)
//   backward dx = dy w        A = dy [n, out],   B = w [out, in]
//            dw = dy^T x      A(m, k) = dy[k, m] (A transposed), B = x [n, in]
//            db = column sums of dy
// Gradient rule (as kernels/cpu/linear.h): every gradient is written, none accumulated.
// Tests: build-cuda/tests/test_cuda_linear; bench: bench_kernels --benchmark_filter=CudaLinear
#include "kernels/cuda/linear.h"


#include "kernels/cuda/check.cuh"
#include "kernels/cuda/linear_gemm.cuh"
#include "kernels/cuda/runtime.h"

namespace kernels::cuda {
namespace {

template <typename T> struct WriteColumn {
  T* out;
  __device__ __forceinline__ void operator()(int64_t c, T v) const { out[c] = v; }
};

}  // namespace

template <typename T> void column_sums(const T* dy, T* db, int64_t rows, int64_t cols) {
  if (cols <= 0) return;
  const int64_t blocks = (cols + 31) / 32;
  gemm::column_sum_kernel<<<static_cast<unsigned>(blocks), dim3(32, 8)>>>(dy, rows, cols, WriteColumn<T>{db});
  CUDA_CHECK_LAUNCH("column_sums");
}

template <typename T>
void linear_forward(const T* x, const T* w, const T* b, T* y, int64_t n, int64_t in, int64_t out) {
  gemm::check_sizes("linear_forward", n, in, out);
  gemm::run<T, false, true>("linear_forward", static_cast<int>(n), static_cast<int>(out),
                            static_cast<int>(in), gemm::PlainLoad<T>{x}, in, gemm::PlainLoad<T>{w}, in,
                            gemm::StoreEpilogue<T>{y, out, b});
}

template <typename T>
void linear_backward(const T* x, const T* w, const T* dy, T* dx, T* dw, T* db, int64_t n,
                     int64_t in, int64_t out) {
  gemm::check_sizes("linear_backward", n, in, out);
  const int N = static_cast<int>(n), IN = static_cast<int>(in), OUT = static_cast<int>(out);
  if (dx)
    gemm::run<T, false, false>("linear_backward dx", N, IN, OUT, gemm::PlainLoad<T>{dy}, out,
                               gemm::PlainLoad<T>{w}, in, gemm::StoreEpilogue<T>{dx, in, nullptr});
  if (dw)
    gemm::run<T, true, false>("linear_backward dw", OUT, IN, N, gemm::PlainLoad<T>{dy}, out,
                              gemm::PlainLoad<T>{x}, in, gemm::StoreEpilogue<T>{dw, in, nullptr});
  if (db) column_sums(dy, db, n, out);
}

#define INSTANTIATE_LINEAR(T)                                                                       \
  template void linear_forward<T>(const T*, const T*, const T*, T*, int64_t, int64_t, int64_t);    \
  template void linear_backward<T>(const T*, const T*, const T*, T*, T*, T*, int64_t, int64_t,     \
                                   int64_t);                                                        \
  template void column_sums<T>(const T*, T*, int64_t, int64_t);
INSTANTIATE_LINEAR(float)
INSTANTIATE_LINEAR(double)
#undef INSTANTIATE_LINEAR

}  // namespace kernels::cuda
