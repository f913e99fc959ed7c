// Spatial-attention kernels on the GPU: see attention.h. One warp per pixel: the lanes read
// the pixel's channel row together (16-byte vectors when the channel count and pointers
// allow) and combine their partial results with butterfly shuffles, so every lane ends with
// the row's result and no shared memory or block barrier is needed.
#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <limits>

#include "kernels/cuda/attention.h"
#include "kernels/cuda/check.cuh"

namespace kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = kThreads / kWarp;
constexpr int kMaxBlocks = 32768;
constexpr unsigned kFullMask = 0xffffffffu;

// Rounded arithmetic that may not be contracted into a fused multiply-add: the CPU rounds
// dy / channels before adding the max's share.
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }

template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
  T v[VEC];
};

// Grid-stride loop over pixels, one warp each; every lane of a warp runs the same iterations,
// so the shuffles inside see all 32 lanes.
#define FOR_EACH_PIXEL_OF_WARP(p, pixels)                                                      \
  for (int64_t p = (blockIdx.x * int64_t{blockDim.x} + threadIdx.x) / kWarp; p < (pixels);     \
       p += int64_t{gridDim.x} * blockDim.x / kWarp)

__device__ __forceinline__ double warp_sum(double v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

// A channel's claim to be the row's maximum, as the CPU's sequential scan decides it: channel
// 0 starts as the maximum, a later channel replaces it only when strictly greater (so ties go
// to the first channel and a NaN never replaces; a NaN in channel 0 stays). at < 0: no claim.
template <typename T>
struct MaxClaim {
  T value;
  int64_t at;
};

// Whether claim b wins over claim a in that scan.
template <typename T>
__device__ __forceinline__ bool beats(const MaxClaim<T>& b, const MaxClaim<T>& a) {
  if (b.at < 0) return false;
  if (a.at < 0) return true;
  if (a.at == 0 && a.value != a.value) return false;  // NaN in channel 0: kept by the scan
  if (b.at == 0 && b.value != b.value) return true;
  return b.value > a.value || (b.value == a.value && b.at < a.at);
}

template <typename T, int VEC>
__global__ void channel_mean_max_kernel(const T* __restrict__ x, T* __restrict__ y,
                                        int32_t* __restrict__ argmax, int64_t pixels,
                                        int64_t channels) {
  const int lane = threadIdx.x % kWarp;
  const int64_t packs = channels / VEC;
  FOR_EACH_PIXEL_OF_WARP(p, pixels) {
    const Pack<T, VEC>* row = reinterpret_cast<const Pack<T, VEC>*>(x + p * channels);
    double sum = 0;
    MaxClaim<T> best{-std::numeric_limits<T>::infinity(), -1};
    for (int64_t j = lane; j < packs; j += kWarp) {
      const Pack<T, VEC> v = row[j];
#pragma unroll
      for (int e = 0; e < VEC; ++e) {
        const int64_t c = j * VEC + e;
        sum += static_cast<double>(v.v[e]);
        if (c == 0 || v.v[e] > best.value) best = {v.v[e], c};
      }
    }
    sum = warp_sum(sum);
    for (int offset = kWarp / 2; offset > 0; offset /= 2) {
      MaxClaim<T> other{__shfl_xor_sync(kFullMask, best.value, offset),
                        __shfl_xor_sync(kFullMask, best.at, offset)};
      if (beats(other, best)) best = other;
    }
    if (lane == 0) {
      y[2 * p] = static_cast<T>(sum / static_cast<double>(channels));
      y[2 * p + 1] = best.value;
      if (argmax) argmax[p] = static_cast<int32_t>(best.at);
    }
  }
}

template <typename T, int VEC>
__global__ void channel_mean_max_backward_kernel(const T* __restrict__ dy, const int32_t* __restrict__ argmax,
                                                 T* __restrict__ dx, int64_t pixels, int64_t channels,
                                                 T inv_channels) {
  const int lane = threadIdx.x % kWarp;
  const int64_t packs = channels / VEC;
  FOR_EACH_PIXEL_OF_WARP(p, pixels) {
    const T dmean = mul_rn(dy[2 * p], inv_channels), dmax = dy[2 * p + 1];
    const int64_t at = argmax[p];
    Pack<T, VEC>* row = reinterpret_cast<Pack<T, VEC>*>(dx + p * channels);
    for (int64_t j = lane; j < packs; j += kWarp) {
      Pack<T, VEC> out;
#pragma unroll
      for (int e = 0; e < VEC; ++e) out.v[e] = j * VEC + e == at ? add_rn(dmean, dmax) : dmean;  // CPU: =, then +=
      row[j] = out;
    }
  }
}

template <typename T, int VEC>
__global__ void gate_mul_kernel(const T* __restrict__ x, const T* __restrict__ g, T* __restrict__ y,
                                int64_t pixels, int64_t channels) {
  const int lane = threadIdx.x % kWarp;
  const int64_t packs = channels / VEC;
  FOR_EACH_PIXEL_OF_WARP(p, pixels) {
    const T gate = g[p];
    const Pack<T, VEC>* in = reinterpret_cast<const Pack<T, VEC>*>(x + p * channels);
    Pack<T, VEC>* out = reinterpret_cast<Pack<T, VEC>*>(y + p * channels);
    for (int64_t j = lane; j < packs; j += kWarp) {
      Pack<T, VEC> v = in[j];
#pragma unroll
      for (int e = 0; e < VEC; ++e) v.v[e] *= gate;
      out[j] = v;
    }
  }
}

template <typename T, int VEC>
__global__ void gate_mul_backward_kernel(const T* __restrict__ x, const T* __restrict__ g,
                                         const T* __restrict__ dy, T* __restrict__ dx, T* __restrict__ dg,
                                         int64_t pixels, int64_t channels) {
  const int lane = threadIdx.x % kWarp;
  const int64_t packs = channels / VEC;
  FOR_EACH_PIXEL_OF_WARP(p, pixels) {
    const Pack<T, VEC>* dy_row = reinterpret_cast<const Pack<T, VEC>*>(dy + p * channels);
    if (dx) {
      const T gate = g[p];
      Pack<T, VEC>* dx_row = reinterpret_cast<Pack<T, VEC>*>(dx + p * channels);
      for (int64_t j = lane; j < packs; j += kWarp) {
        Pack<T, VEC> v = dy_row[j];
#pragma unroll
        for (int e = 0; e < VEC; ++e) v.v[e] *= gate;
        dx_row[j] = v;
      }
    }
    if (dg) {
      const Pack<T, VEC>* x_row = reinterpret_cast<const Pack<T, VEC>*>(x + p * channels);
      double sum = 0;
      for (int64_t j = lane; j < packs; j += kWarp) {
        const Pack<T, VEC> a = dy_row[j], b = x_row[j];
#pragma unroll
        for (int e = 0; e < VEC; ++e) sum += static_cast<double>(a.v[e]) * static_cast<double>(b.v[e]);
      }
      sum = warp_sum(sum);
      if (lane == 0) dg[p] = static_cast<T>(sum);
    }
  }
}

int blocks_for(int64_t pixels) {
  return static_cast<int>(std::clamp<int64_t>((pixels + kWarpsPerBlock - 1) / kWarpsPerBlock, 1, kMaxBlocks));
}

// Elements per 16-byte vector when the channel count and every pointer allow it, else 1.
template <typename T>
bool vectorisable(int64_t channels, std::initializer_list<const void*> pointers) {
  if (channels % (16 / sizeof(T)) != 0) return false;
  for (const void* p : pointers)
    if (p && reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  return true;
}

// Launches KERNEL<T, 16 / sizeof(T)> or KERNEL<T, 1>.
#define LAUNCH_VECTORISED(KERNEL, T, vector, pixels, ...)                                      \
  do {                                                                                         \
    if (vector)                                                                                \
      KERNEL<T, 16 / sizeof(T)><<<blocks_for(pixels), kThreads>>>(__VA_ARGS__);                \
    else                                                                                       \
      KERNEL<T, 1><<<blocks_for(pixels), kThreads>>>(__VA_ARGS__);                             \
  } while (0)

}  // namespace

template <typename T>
void channel_mean_max_forward(const T* x, T* y, int32_t* argmax, int64_t pixels, int64_t channels) {
  if (pixels == 0 || channels == 0) return;
  LAUNCH_VECTORISED(channel_mean_max_kernel, T, vectorisable<T>(channels, {x}), pixels, x, y, argmax, pixels,
                    channels);
  CUDA_CHECK_LAUNCH("channel_mean_max forward");
}

template <typename T>
void channel_mean_max_backward(const T* dy, const int32_t* argmax, T* dx, int64_t pixels, int64_t channels) {
  if (pixels == 0 || channels == 0) return;
  const T inv_channels = T(1) / static_cast<T>(channels);  // as on the CPU
  LAUNCH_VECTORISED(channel_mean_max_backward_kernel, T, vectorisable<T>(channels, {dx}), pixels, dy, argmax,
                    dx, pixels, channels, inv_channels);
  CUDA_CHECK_LAUNCH("channel_mean_max backward");
}

template <typename T>
void gate_mul_forward(const T* x, const T* g, T* y, int64_t pixels, int64_t channels) {
  if (pixels == 0 || channels == 0) return;
  LAUNCH_VECTORISED(gate_mul_kernel, T, vectorisable<T>(channels, {x, y}), pixels, x, g, y, pixels, channels);
  CUDA_CHECK_LAUNCH("gate_mul forward");
}

template <typename T>
void gate_mul_backward(const T* x, const T* g, const T* dy, T* dx, T* dg, int64_t pixels, int64_t channels) {
  if (pixels == 0 || !(dx || dg)) return;  // channels == 0: dg is written 0, the empty sum
  LAUNCH_VECTORISED(gate_mul_backward_kernel, T, vectorisable<T>(channels, {x, dy, dx}), pixels, x, g, dy, dx,
                    dg, pixels, channels);
  CUDA_CHECK_LAUNCH("gate_mul backward");
}

#define INSTANTIATE_ATTENTION(T)                                                              \
  template void channel_mean_max_forward<T>(const T*, T*, int32_t*, int64_t, int64_t);        \
  template void channel_mean_max_backward<T>(const T*, const int32_t*, T*, int64_t, int64_t); \
  template void gate_mul_forward<T>(const T*, const T*, T*, int64_t, int64_t);                \
  template void gate_mul_backward<T>(const T*, const T*, const T*, T*, T*, int64_t, int64_t);
INSTANTIATE_ATTENTION(float)
INSTANTIATE_ATTENTION(double)
#undef INSTANTIATE_ATTENTION

}  // namespace kernels::cuda
