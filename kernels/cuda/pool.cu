// Pooling on the GPU: see pool.h for the semantics and the gradient rule. One thread per
// output element (forward) or input element (backward), channels fastest, so a warp reads
// 32 consecutive channels of one pixel.
#include <algorithm>
#include <cstdint>
#include <limits>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/pool.h"

namespace kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxGridStrideBlocks = 32768;
constexpr int kTileChannels = 32;  // global average pool: threadIdx.x over channels
constexpr int kSpatialLanes = 8;   // threadIdx.y over spatial positions

int grid_stride_blocks(int64_t work) {
  return static_cast<int>(std::clamp<int64_t>((work + kThreads - 1) / kThreads, 1, kMaxGridStrideBlocks));
}

#define GRID_STRIDE(i, n)                                                                          \
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < (n); i += int64_t{gridDim.x} * blockDim.x)

// As kernels/cpu/pool.cpp takes_over: strictly greater wins, so the first maximum stays; a
// NaN wins over any number, so the first NaN stays.
template <typename T>
__device__ __forceinline__ bool takes_over(T v, T best) {
  return v > best || (v != v && best == best);
}

// Whether x is its window's winner candidate: equal to the window's output, or NaN (then the
// output is NaN too).
template <typename T>
__device__ __forceinline__ bool matches(T x, T y) {
  return x == y || x != x;
}

template <typename T>
__global__ void max_pool_forward_kernel(const T* __restrict__ x, T* __restrict__ y, MaxPoolShape s,
                                        int64_t n) {
  GRID_STRIDE(i, n) {
    const int64_t c = i % s.channels;
    int64_t rest = i / s.channels;
    const int64_t q = rest % s.out_w;
    rest /= s.out_w;
    const int64_t p = rest % s.out_h;
    const int64_t image = rest / s.out_h;
    const int64_t h0 = p * s.stride - s.pad, w0 = q * s.stride - s.pad;
    const int64_t h_begin = h0 > 0 ? h0 : 0, h_end = min(h0 + s.kernel, s.in_h);
    const int64_t w_begin = w0 > 0 ? w0 : 0, w_end = min(w0 + s.kernel, s.in_w);
    T best = -std::numeric_limits<T>::infinity();
    for (int64_t h = h_begin; h < h_end; ++h)
      for (int64_t w = w_begin; w < w_end; ++w) {
        const T v = x[((image * s.in_h + h) * s.in_w + w) * s.channels + c];
        best = takes_over(v, best) ? v : best;
      }
    y[i] = best;
  }
}

// dx[image, h, w, c]: the sum, over the windows (p, q) that contain (h, w) and whose first
// matching element in scan order is (h, w), of dy[image, p, q, c]; p ascending, then q, as
// the CPU adds them.
template <typename T>
__global__ void max_pool_backward_kernel(const T* __restrict__ x, const T* __restrict__ y,
                                         const T* __restrict__ dy, T* __restrict__ dx, MaxPoolShape s,
                                         int64_t n) {
  GRID_STRIDE(i, n) {
    const int64_t c = i % s.channels;
    int64_t rest = i / s.channels;
    const int64_t w = rest % s.in_w;
    rest /= s.in_w;
    const int64_t h = rest % s.in_h;
    const int64_t image = rest / s.in_h;
    const T xv = x[i];
    // windows p with p*stride - pad <= h < p*stride - pad + kernel, within [0, out)
    const int64_t h_low = h + s.pad - s.kernel + 1, w_low = w + s.pad - s.kernel + 1;
    const int64_t p_begin = h_low > 0 ? (h_low + s.stride - 1) / s.stride : 0;
    const int64_t q_begin = w_low > 0 ? (w_low + s.stride - 1) / s.stride : 0;
    const int64_t p_end = min((h + s.pad) / s.stride + 1, s.out_h);
    const int64_t q_end = min((w + s.pad) / s.stride + 1, s.out_w);
    const T* x_image = x + image * s.in_h * s.in_w * s.channels + c;
    T grad = T(0);
    for (int64_t p = p_begin; p < p_end; ++p)
      for (int64_t q = q_begin; q < q_end; ++q) {
        const int64_t out = ((image * s.out_h + p) * s.out_w + q) * s.channels + c;
        const T yv = y[out];
        if (!matches(xv, yv)) continue;
        // first match in scan order? look at the window's elements before (h, w)
        const int64_t h0 = p * s.stride - s.pad, w0 = q * s.stride - s.pad;
        const int64_t w_begin = w0 > 0 ? w0 : 0, w_end = min(w0 + s.kernel, s.in_w);
        bool first = true;
        for (int64_t hh = h0 > 0 ? h0 : 0; hh <= h && first; ++hh)
          for (int64_t ww = w_begin; ww < (hh < h ? w_end : w); ++ww)
            if (matches(x_image[(hh * s.in_w + ww) * s.channels], yv)) {
              first = false;
              break;
            }
        if (first) grad += dy[out];
      }
    dx[i] = grad;
  }
}

// Block (channel tile blockIdx.x, image blockIdx.y): sums over spatial in double.
template <typename T>
__global__ void global_avg_pool_forward_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t spatial,
                                               int64_t channels) {
  __shared__ double s_sum[kSpatialLanes][kTileChannels];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kTileChannels + tx;
  const int64_t image = blockIdx.y;
  double acc = 0;
  if (c < channels)
    for (int64_t i = ty; i < spatial; i += kSpatialLanes)
      acc += static_cast<double>(x[(image * spatial + i) * channels + c]);
  s_sum[ty][tx] = acc;
  __syncthreads();
  if (ty == 0 && c < channels) {
    for (int lane = 1; lane < kSpatialLanes; ++lane) acc += s_sum[lane][tx];
    y[image * channels + c] = static_cast<T>(acc * (1.0 / static_cast<double>(spatial)));
  }
}

template <typename T>
__global__ void global_avg_pool_backward_kernel(const T* __restrict__ dy, T* __restrict__ dx, int64_t spatial,
                                                int64_t channels, T inv_spatial, int64_t n) {
  GRID_STRIDE(i, n) {
    const int64_t c = i % channels, image = i / (spatial * channels);
    dx[i] = dy[image * channels + c] * inv_spatial;
  }
}

}  // namespace

template <typename T>
void max_pool2d_forward(const T* x, T* y, const MaxPoolShape& s) {
  const int64_t n = s.batch * s.out_h * s.out_w * s.channels;
  if (n == 0) return;
  max_pool_forward_kernel<T><<<grid_stride_blocks(n), kThreads>>>(x, y, s, n);
  CUDA_CHECK_LAUNCH("max_pool2d forward");
}

template <typename T>
void max_pool2d_backward(const T* x, const T* y, const T* dy, T* dx, const MaxPoolShape& s) {
  const int64_t n = s.batch * s.in_h * s.in_w * s.channels;
  if (n == 0) return;
  max_pool_backward_kernel<T><<<grid_stride_blocks(n), kThreads>>>(x, y, dy, dx, s, n);
  CUDA_CHECK_LAUNCH("max_pool2d backward");
}

template <typename T>
void global_avg_pool_forward(const T* x, T* y, int64_t batch, int64_t spatial, int64_t channels) {
  if (batch == 0 || channels == 0) return;
  // one block per (channel tile, image); images beyond 65535 go in further launches
  const unsigned tiles = static_cast<unsigned>((channels + kTileChannels - 1) / kTileChannels);
  for (int64_t first = 0; first < batch; first += 65535) {
    const unsigned images = static_cast<unsigned>(std::min<int64_t>(65535, batch - first));
    global_avg_pool_forward_kernel<T><<<dim3(tiles, images), dim3(kTileChannels, kSpatialLanes)>>>(
        x + first * spatial * channels, y + first * channels, spatial, channels);
    CUDA_CHECK_LAUNCH("global_avg_pool forward");
  }
}

template <typename T>
void global_avg_pool_backward(const T* dy, T* dx, int64_t batch, int64_t spatial, int64_t channels) {
  const int64_t n = batch * spatial * channels;
  if (n == 0) return;
  const T inv_spatial = static_cast<T>(1.0 / static_cast<double>(spatial));  // as on the CPU
  global_avg_pool_backward_kernel<T><<<grid_stride_blocks(n), kThreads>>>(dy, dx, spatial, channels,
                                                                         inv_spatial, n);
  CUDA_CHECK_LAUNCH("global_avg_pool backward");
}

#define INSTANTIATE_POOL(T)                                                                    \
  template void max_pool2d_forward<T>(const T*, T*, const MaxPoolShape&);                      \
  template void max_pool2d_backward<T>(const T*, const T*, const T*, T*, const MaxPoolShape&); \
  template void global_avg_pool_forward<T>(const T*, T*, int64_t, int64_t, int64_t);           \
  template void global_avg_pool_backward<T>(const T*, T*, int64_t, int64_t, int64_t);
INSTANTIATE_POOL(float)
INSTANTIATE_POOL(double)
#undef INSTANTIATE_POOL

}  // namespace kernels::cuda
