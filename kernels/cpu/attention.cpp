// Spatial-attention kernels on the CPU. Pixels are split across threads; within a pixel the
// channel row is reduced in kChains 64-byte vectors of independent lanes (GCC/Clang vector
// extensions, which compile to AVX-512 here and to narrower SIMD elsewhere). A plain loop is
// not vectorised: a serial float sum may not be reordered without -ffast-math, and GCC does
// not vectorise the argmax bookkeeping. Several vectors, because one would be bound by the
// latency of its add / compare chain (about 4 cycles per 64 bytes) instead of by memory.
// Bench: build/bench/bench_kernels --benchmark_filter='ChannelMeanMax|GateMul'
#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cstring>

#include "kernels/cpu/parallel.h"

namespace kernels::cpu {
namespace {

// One 64-byte vector of T, and of the same-width integers (comparison masks, channel indices).
template <typename T> struct Simd;
template <> struct Simd<float> {
  typedef float Value __attribute__((vector_size(64)));
  typedef int32_t Index __attribute__((vector_size(64)));
};
template <> struct Simd<double> {
  typedef double Value __attribute__((vector_size(64)));
  typedef int64_t Index __attribute__((vector_size(64)));
};
template <typename T> constexpr int kLanes = 64 / sizeof(T);

// Unaligned load of one vector. An out-parameter, not a return value: returning a 64-byte
// vector changes the ABI on targets without AVX-512 (GCC's -Wpsabi).
template <typename T> void load(const T* p, typename Simd<T>::Value* v) {
  std::memcpy(v, p, sizeof(*v));
}

// Pixels per thread chunk: about this many elements.
constexpr int64_t kAttentionGrainElements = 1 << 15;

template <typename F> void for_each_pixel_chunk(int64_t pixels, int64_t channels, F&& f) {
  parallel_for(pixels,
               std::max<int64_t>(1, kAttentionGrainElements / std::max<int64_t>(1, channels)),
               std::forward<F>(f));
}

// Independent vector accumulators per row reduction.
constexpr int kChains = 4;

// Mean, max and first argmax of one channel row of length channels >= 1.
template <typename T>
void mean_max_row(const T* x, int64_t channels, T* mean, T* max, int32_t* argmax) {
  using Value = typename Simd<T>::Value;
  using Index = typename Simd<T>::Index;
  constexpr int kBlock = kChains * kLanes<T>;  // channels per iteration
  const int64_t vector_end = channels / kBlock * kBlock;
  T total = 0, best = x[0];
  int64_t best_at = 0;
  int64_t c = 0;
  if (vector_end > 0) {
    // Slot s (lane s % kLanes of chain s / kLanes) sees channels s, s + kBlock, ...; strict >
    // keeps each slot's first maximum, so the row's first maximum is the smallest channel
    // among the slots holding the maximal value.
    Value sum[kChains], top[kChains], v;
    Index channel[kChains], top_at[kChains];
    for (int k = 0; k < kChains; ++k) {
      load(x + k * kLanes<T>, &sum[k]);
      top[k] = sum[k];
      for (int l = 0; l < kLanes<T>; ++l) channel[k][l] = k * kLanes<T> + l;
      top_at[k] = channel[k];
    }
    for (c = kBlock; c < vector_end; c += kBlock) {
      for (int k = 0; k < kChains; ++k) {
        load(x + c + k * kLanes<T>, &v);
        channel[k] += kBlock;
        sum[k] += v;
        Index greater = v > top[k];
        top[k] = greater ? v : top[k];
        top_at[k] = greater ? channel[k] : top_at[k];
      }
    }
    // Fold the chains into chain 0 with vector operations, then its lanes one by one: the
    // fold costs as much as a few iterations of the main loop on a 2048-channel row.
    for (int k = 1; k < kChains; ++k) {
      sum[0] += sum[k];
      Index take = (top[k] > top[0]) | ((top[k] == top[0]) & (top_at[k] < top_at[0]));
      top[0] = take ? top[k] : top[0];
      top_at[0] = take ? top_at[k] : top_at[0];
    }
    best = top[0][0];
    best_at = top_at[0][0];
    for (int l = 0; l < kLanes<T>; ++l) {
      total += sum[0][l];
      if (top[0][l] > best || (top[0][l] == best && top_at[0][l] < best_at)) {
        best = top[0][l];
        best_at = top_at[0][l];
      }
    }
  }
  // The tail (and short rows): later channels replace the maximum only when strictly greater.
  for (; c < channels; ++c) {
    total += x[c];
    if (x[c] > best) {
      best = x[c];
      best_at = c;
    }
  }
  *mean = total / static_cast<T>(channels);
  *max = best;
  if (argmax) *argmax = static_cast<int32_t>(best_at);
}

template <typename T> T dot_row(const T* a, const T* b, int64_t n) {
  constexpr int kBlock = kChains * kLanes<T>;
  const int64_t vector_end = n / kBlock * kBlock;
  typename Simd<T>::Value sum[kChains] = {}, va, vb;
  for (int64_t c = 0; c < vector_end; c += kBlock) {
    for (int k = 0; k < kChains; ++k) {
      load(a + c + k * kLanes<T>, &va);
      load(b + c + k * kLanes<T>, &vb);
      sum[k] += va * vb;
    }
  }
  for (int k = 1; k < kChains; ++k) sum[0] += sum[k];
  T total = 0;
  for (int l = 0; l < kLanes<T>; ++l) total += sum[0][l];
  for (int64_t c = vector_end; c < n; ++c) total += a[c] * b[c];
  return total;
}

}  // namespace

template <typename T>
void channel_mean_max_forward(const T* x, T* y, int32_t* argmax, int64_t pixels, int64_t channels) {
  for_each_pixel_chunk(pixels, channels, [=](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p)
      mean_max_row(x + p * channels, channels, &y[2 * p], &y[2 * p + 1],
                   argmax ? &argmax[p] : nullptr);
  });
}

template <typename T> void channel_mean_max_backward(const T* dy, const int32_t* argmax, T* dx,
                                                     int64_t pixels, int64_t channels) {
  const T inv_channels = T(1) / static_cast<T>(channels);
  for_each_pixel_chunk(pixels, channels, [=](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      T* row = dx + p * channels;
      const T dmean = dy[2 * p] * inv_channels;
      for (int64_t c = 0; c < channels; ++c) row[c] = dmean;
      row[argmax[p]] += dy[2 * p + 1];
    }
  });
}

template <typename T>
void gate_mul_forward(const T* x, const T* g, T* y, int64_t pixels, int64_t channels) {
  for_each_pixel_chunk(pixels, channels, [=](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const T gate = g[p];
      const T* xr = x + p * channels;
      T* yr = y + p * channels;
      for (int64_t c = 0; c < channels; ++c) yr[c] = xr[c] * gate;
    }
  });
}

template <typename T> void gate_mul_backward(const T* x, const T* g, const T* dy, T* dx, T* dg,
                                             int64_t pixels, int64_t channels) {
  for_each_pixel_chunk(pixels, channels, [=](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const T* dyr = dy + p * channels;
      if (dg) dg[p] = dot_row(dyr, x + p * channels, channels);
      if (dx) {
        const T gate = g[p];
        T* dxr = dx + p * channels;
        for (int64_t c = 0; c < channels; ++c) dxr[c] = dyr[c] * gate;
      }
    }
  });
}

#define INSTANTIATE_ATTENTION(T)                                                              \
  template void channel_mean_max_forward<T>(const T*, T*, int32_t*, int64_t, int64_t);        \
  template void channel_mean_max_backward<T>(const T*, const int32_t*, T*, int64_t, int64_t); \
  template void gate_mul_forward<T>(const T*, const T*, T*, int64_t, int64_t);                \
  template void gate_mul_backward<T>(const T*, const T*, const T*, T*, T*, int64_t, int64_t);
INSTANTIATE_ATTENTION(float)
INSTANTIATE_ATTENTION(double)
#undef INSTANTIATE_ATTENTION

}  // namespace kernels::cpu
