// Softmax family on the GPU: see softmax.h. One warp per row; lanes stride over the row's
// columns and combine the row max and the double row sums with butterfly shuffles, so every
// lane holds the row's values and no block barrier is needed.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/runtime.h"
#include "kernels/cuda/softmax.h"

namespace kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = kThreads / kWarp;
constexpr int kMaxBlocks = 32768;
constexpr unsigned kFullMask = 0xffffffffu;

// Rounded arithmetic that may not be contracted into fused multiply-adds (the CPU kernels
// are compiled without contraction).
__device__ __forceinline__ float sub_rn(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double sub_rn(double a, double b) { return __dsub_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float exp_of(float v) { return expf(v); }
__device__ __forceinline__ double exp_of(double v) { return exp(v); }

// Grid-stride loop over rows, one warp each; all lanes of a warp run the same iterations.
#define FOR_EACH_ROW_OF_WARP(r, rows)                                                          \
  for (int64_t r = (blockIdx.x * int64_t{blockDim.x} + threadIdx.x) / kWarp; r < (rows);       \
       r += int64_t{gridDim.x} * blockDim.x / kWarp)
// The columns of one lane.
#define FOR_EACH_COLUMN_OF_LANE(c, cols) for (int64_t c = threadIdx.x % kWarp; c < (cols); c += kWarp)

__device__ __forceinline__ double warp_sum(double v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

// The row's maximum, in every lane (as the CPU's x[c] > m ? x[c] : m for rows without NaN).
template <typename T>
__device__ __forceinline__ T row_max(const T* x, int64_t cols) {
  T m = -std::numeric_limits<T>::infinity();
  FOR_EACH_COLUMN_OF_LANE(c, cols) m = x[c] > m ? x[c] : m;
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    const T other = __shfl_xor_sync(kFullMask, m, offset);
    m = other > m ? other : m;
  }
  return m;
}

// sum over the row of exp(x - m), in double (exp in T, as on the CPU), in every lane.
template <typename T>
__device__ __forceinline__ double row_exp_sum(const T* x, T m, int64_t cols) {
  double total = 0;
  FOR_EACH_COLUMN_OF_LANE(c, cols) total += static_cast<double>(exp_of(x[c] - m));
  return warp_sum(total);
}

template <typename T>
__global__ void softmax_forward_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t rows, int64_t cols) {
  FOR_EACH_ROW_OF_WARP(r, rows) {
    const T* xr = x + r * cols;
    T* yr = y + r * cols;
    const T m = row_max(xr, cols);
    double total = 0;
    FOR_EACH_COLUMN_OF_LANE(c, cols) {
      yr[c] = exp_of(xr[c] - m);
      total += static_cast<double>(yr[c]);
    }
    const T inv = static_cast<T>(1.0 / warp_sum(total));
    FOR_EACH_COLUMN_OF_LANE(c, cols) yr[c] = mul_rn(yr[c], inv);  // this lane's own writes
  }
}

template <typename T>
__global__ void softmax_backward_kernel(const T* __restrict__ y, const T* __restrict__ dy, T* __restrict__ dx,
                                        int64_t rows, int64_t cols) {
  FOR_EACH_ROW_OF_WARP(r, rows) {
    const T* yr = y + r * cols;
    const T* dyr = dy + r * cols;
    double dot = 0;
    FOR_EACH_COLUMN_OF_LANE(c, cols) dot += static_cast<double>(dyr[c]) * static_cast<double>(yr[c]);
    const T dot_t = static_cast<T>(warp_sum(dot));
    FOR_EACH_COLUMN_OF_LANE(c, cols) dx[r * cols + c] = mul_rn(yr[c], sub_rn(dyr[c], dot_t));
  }
}

template <typename T>
__global__ void log_softmax_forward_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t rows,
                                           int64_t cols) {
  FOR_EACH_ROW_OF_WARP(r, rows) {
    const T* xr = x + r * cols;
    const T m = row_max(xr, cols);
    const T log_sum = static_cast<T>(log(row_exp_sum(xr, m, cols)));
    FOR_EACH_COLUMN_OF_LANE(c, cols) y[r * cols + c] = sub_rn(sub_rn(xr[c], m), log_sum);
  }
}

template <typename T>
__global__ void log_softmax_backward_kernel(const T* __restrict__ y, const T* __restrict__ dy,
                                            T* __restrict__ dx, int64_t rows, int64_t cols) {
  FOR_EACH_ROW_OF_WARP(r, rows) {
    const T* dyr = dy + r * cols;
    double total = 0;
    FOR_EACH_COLUMN_OF_LANE(c, cols) total += static_cast<double>(dyr[c]);
    const T total_t = static_cast<T>(warp_sum(total));
    FOR_EACH_COLUMN_OF_LANE(c, cols)
    dx[r * cols + c] = sub_rn(dyr[c], mul_rn(exp_of(y[r * cols + c]), total_t));
  }
}

template <typename T>
__global__ void cross_entropy_forward_kernel(const T* __restrict__ logits, const int64_t* __restrict__ labels,
                                             T* __restrict__ row_log_sum, double* __restrict__ row_loss,
                                             int64_t rows, int64_t cols) {
  FOR_EACH_ROW_OF_WARP(r, rows) {
    const T* xr = logits + r * cols;
    const T m = row_max(xr, cols);
    const double log_sum = log(row_exp_sum(xr, m, cols));
    if (threadIdx.x % kWarp == 0) {
      const int64_t label = labels[r];
      row_log_sum[r] = static_cast<T>(log_sum);
      row_loss[r] = label >= 0 && label < cols
                        ? (static_cast<double>(m) - static_cast<double>(xr[label])) + log_sum
                        : std::numeric_limits<double>::quiet_NaN();
    }
  }
}

template <typename T>
__global__ void cross_entropy_backward_kernel(const T* __restrict__ logits, const int64_t* __restrict__ labels,
                                              const T* __restrict__ row_log_sum, T scale,
                                              T* __restrict__ dlogits, int64_t rows, int64_t cols) {
  FOR_EACH_ROW_OF_WARP(r, rows) {
    const T* xr = logits + r * cols;
    const T m = row_max(xr, cols);
    const T log_sum = row_log_sum[r];
    const int64_t label = labels[r];
    FOR_EACH_COLUMN_OF_LANE(c, cols) {
      T d = mul_rn(exp_of(sub_rn(sub_rn(xr[c], m), log_sum)), scale);
      if (c == label) d = sub_rn(d, scale);  // as the CPU: written, then -= scale
      dlogits[r * cols + c] = d;
    }
  }
}

int blocks_for(int64_t rows) {
  return static_cast<int>(std::clamp<int64_t>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock, 1, kMaxBlocks));
}

}  // namespace

template <typename T> void softmax_forward(const T* x, T* y, int64_t rows, int64_t cols) {
  if (rows == 0 || cols == 0) return;
  softmax_forward_kernel<T><<<blocks_for(rows), kThreads>>>(x, y, rows, cols);
  CUDA_CHECK_LAUNCH("softmax forward");
}

template <typename T> void softmax_backward(const T* y, const T* dy, T* dx, int64_t rows, int64_t cols) {
  if (rows == 0 || cols == 0) return;
  softmax_backward_kernel<T><<<blocks_for(rows), kThreads>>>(y, dy, dx, rows, cols);
  CUDA_CHECK_LAUNCH("softmax backward");
}

template <typename T> void log_softmax_forward(const T* x, T* y, int64_t rows, int64_t cols) {
  if (rows == 0 || cols == 0) return;
  log_softmax_forward_kernel<T><<<blocks_for(rows), kThreads>>>(x, y, rows, cols);
  CUDA_CHECK_LAUNCH("log_softmax forward");
}

template <typename T> void log_softmax_backward(const T* y, const T* dy, T* dx, int64_t rows, int64_t cols) {
  if (rows == 0 || cols == 0) return;
  log_softmax_backward_kernel<T><<<blocks_for(rows), kThreads>>>(y, dy, dx, rows, cols);
  CUDA_CHECK_LAUNCH("log_softmax backward");
}

template <typename T>
double cross_entropy_forward(const T* logits, const int64_t* labels, T* row_log_sum, int64_t rows, int64_t cols) {
  if (rows == 0) return 0;
  const size_t bytes = static_cast<size_t>(rows) * sizeof(double);
  double* row_loss = static_cast<double*>(device_malloc(bytes));
  std::vector<double> host(static_cast<size_t>(rows));
  try {
    cross_entropy_forward_kernel<T><<<blocks_for(rows), kThreads>>>(logits, labels, row_log_sum, row_loss, rows,
                                                                    cols);
    CUDA_CHECK_LAUNCH("cross_entropy forward");
    copy_device_to_host(host.data(), row_loss, bytes);
  } catch (...) {
    device_free(row_loss);
    throw;
  }
  device_free(row_loss);
  double total = 0;
  for (double v : host) total += v;  // in row order, as the CPU
  return total;
}

template <typename T>
void cross_entropy_backward(const T* logits, const int64_t* labels, const T* row_log_sum, T scale, T* dlogits,
                            int64_t rows, int64_t cols) {
  if (rows == 0 || cols == 0) return;
  cross_entropy_backward_kernel<T><<<blocks_for(rows), kThreads>>>(logits, labels, row_log_sum, scale, dlogits,
                                                                   rows, cols);
  CUDA_CHECK_LAUNCH("cross_entropy backward");
}

#define INSTANTIATE_SOFTMAX(T)                                                                \
  template void softmax_forward<T>(const T*, T*, int64_t, int64_t);                           \
  template void softmax_backward<T>(const T*, const T*, T*, int64_t, int64_t);                \
  template void log_softmax_forward<T>(const T*, T*, int64_t, int64_t);                       \
  template void log_softmax_backward<T>(const T*, const T*, T*, int64_t, int64_t);            \
  template double cross_entropy_forward<T>(const T*, const int64_t*, T*, int64_t, int64_t);   \
  template void cross_entropy_backward<T>(const T*, const int64_t*, const T*, T, T*, int64_t, \
                                          int64_t);
INSTANTIATE_SOFTMAX(float)
INSTANTIATE_SOFTMAX(double)
#undef INSTANTIATE_SOFTMAX

}  // namespace kernels::cuda
