// Pooling on the CPU: see pool.h for the semantics and the gradient rule.
// Bench: build/bench/bench_kernels --benchmark_filter=Pool
#include "kernels/cpu/pool.h"

#include <algorithm>
#include <limits>
#include <vector>

#include "kernels/cpu/parallel.h"

namespace kernels::cpu {
namespace {

// Work per thread at least this many elements, so small tensors stay on one thread.
constexpr int64_t kGrainElements = 1 << 15;
// Threads that split one image's channels take multiples of 16 channels: whole 64-byte cache
// lines of float32 when C is a multiple of 16 (as in ResNet), so they write disjoint lines.
constexpr int64_t kChannelAlign = 16;

int64_t grain_for(int64_t elements_per_item) {
  return std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, elements_per_item));
}

// The input rows (or columns) [begin, end) under output position `out`, clipped to the input:
// the clipped-off positions are padding, which never wins a max.
struct WindowRange {
  int64_t begin, end;
};
WindowRange window(int64_t out, int kernel, int stride, int pad, int64_t in_size) {
  const int64_t start = out * stride - pad;
  return {std::max<int64_t>(start, 0), std::min<int64_t>(start + kernel, in_size)};
}

// Takes v over the running maximum best: strictly greater wins, so the first maximum in scan
// order stays; a NaN wins over any number, so the first NaN stays.
template <typename T>
inline bool takes_over(T v, T best) {
  return v > best || (v != v && best == best);
}

}  // namespace

template <typename T>
void max_pool2d_forward(const T* x, T* y, const MaxPoolShape& s) {
  const int64_t channels = s.channels;
  const int64_t out_rows = s.batch * s.out_h;
  const int64_t work_per_row = s.out_w * channels * s.kernel * s.kernel;
  parallel_for(out_rows, grain_for(work_per_row), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / s.out_h, p = row % s.out_h;
      const WindowRange rows = window(p, s.kernel, s.stride, s.pad, s.in_h);
      for (int64_t q = 0; q < s.out_w; ++q) {
        const WindowRange cols = window(q, s.kernel, s.stride, s.pad, s.in_w);
        T* yr = y + (row * s.out_w + q) * channels;
        std::fill(yr, yr + channels, -std::numeric_limits<T>::infinity());
        for (int64_t h = rows.begin; h < rows.end; ++h)
          for (int64_t w = cols.begin; w < cols.end; ++w) {
            const T* xr = x + ((n * s.in_h + h) * s.in_w + w) * channels;
#pragma omp simd
            for (int64_t c = 0; c < channels; ++c) yr[c] = takes_over(xr[c], yr[c]) ? xr[c] : yr[c];
          }
      }
    }
  });
}

template <typename T>
void max_pool2d_backward(const T* x, const T* y, const T* dy, T* dx, const MaxPoolShape& s) {
  const int64_t channels = s.channels;
  if (s.batch == 0 || channels == 0) return;
  // Overlapping windows scatter into the same dx rows, so threads split images, and split
  // each image's channels when there are fewer images than threads.
  const int64_t channel_blocks =
      std::min<int64_t>((channels + kChannelAlign - 1) / kChannelAlign,
                        std::max<int64_t>(1, (num_threads() + s.batch - 1) / s.batch));
  const int64_t block_width =
      ((channels + channel_blocks - 1) / channel_blocks + kChannelAlign - 1) / kChannelAlign * kChannelAlign;
  const int64_t items = s.batch * channel_blocks;
  const int64_t work_per_item = s.in_h * s.in_w * block_width;
  parallel_for(items, grain_for(work_per_item), [&](int64_t begin, int64_t end) {
    // pending[c]: the gradient of the current output not yet handed to an input; the first
    // input equal to the output (in scan order) takes it, later ties get zero.
    std::vector<T> pending(static_cast<size_t>(block_width));
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / channel_blocks;
      const int64_t c0 = (item % channel_blocks) * block_width;
      const int64_t c1 = std::min(channels, c0 + block_width);
      if (c0 >= c1) continue;
      const int64_t width = c1 - c0;
      // dx rows are zeroed just before the first window reaches them, while they are in cache
      // for the scatter that follows (zeroing the whole image first would evict them).
      T* dx_image = dx + n * s.in_h * s.in_w * channels;
      int64_t zeroed_rows = 0;
      auto zero_rows_until = [&](int64_t end_row) {
        for (; zeroed_rows < end_row; ++zeroed_rows)
          for (int64_t w = 0; w < s.in_w; ++w) {
            T* dxr = dx_image + (zeroed_rows * s.in_w + w) * channels;
            std::fill(dxr + c0, dxr + c1, T(0));
          }
      };
      for (int64_t p = 0; p < s.out_h; ++p) {
        const WindowRange rows = window(p, s.kernel, s.stride, s.pad, s.in_h);
        zero_rows_until(rows.end);
        for (int64_t q = 0; q < s.out_w; ++q) {
          const WindowRange cols = window(q, s.kernel, s.stride, s.pad, s.in_w);
          const int64_t out_offset = ((n * s.out_h + p) * s.out_w + q) * channels + c0;
          const T* yr = y + out_offset;
          std::copy(dy + out_offset, dy + out_offset + width, pending.begin());
          T* pend = pending.data();
          for (int64_t h = rows.begin; h < rows.end; ++h)
            for (int64_t w = cols.begin; w < cols.end; ++w) {
              const int64_t in_offset = ((n * s.in_h + h) * s.in_w + w) * channels + c0;
              const T* xr = x + in_offset;
              T* dxr = dx + in_offset;
#pragma omp simd
              for (int64_t c = 0; c < width; ++c) {
                // a NaN input means the window's output is NaN, so it matches
                const bool winner = xr[c] == yr[c] || xr[c] != xr[c];
                dxr[c] += winner ? pend[c] : T(0);
                pend[c] = winner ? T(0) : pend[c];
              }
            }
        }
      }
      zero_rows_until(s.in_h);  // rows below the last window (dropped by the floor)
    }
  });
}

template <typename T>
void global_avg_pool_forward(const T* x, T* y, int64_t batch, int64_t spatial, int64_t channels) {
  const double inv_spatial = 1.0 / static_cast<double>(spatial);
  parallel_for(batch, grain_for(spatial * channels), [=](int64_t begin, int64_t end) {
    std::vector<double> acc(static_cast<size_t>(channels));
    double* a = acc.data();
    for (int64_t n = begin; n < end; ++n) {
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t i = 0; i < spatial; ++i) {
        const T* xr = x + (n * spatial + i) * channels;
#pragma omp simd
        for (int64_t c = 0; c < channels; ++c) a[c] += static_cast<double>(xr[c]);
      }
      for (int64_t c = 0; c < channels; ++c) y[n * channels + c] = static_cast<T>(a[c] * inv_spatial);
    }
  });
}

template <typename T>
void global_avg_pool_backward(const T* dy, T* dx, int64_t batch, int64_t spatial, int64_t channels) {
  const T inv_spatial = static_cast<T>(1.0 / static_cast<double>(spatial));
  parallel_for(batch * spatial, grain_for(channels), [=](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const T* dyr = dy + (row / spatial) * channels;
      T* dxr = dx + row * channels;
#pragma omp simd
      for (int64_t c = 0; c < channels; ++c) dxr[c] = dyr[c] * inv_spatial;
    }
  });
}

#define INSTANTIATE_POOL(T)                                                                    \
  template void max_pool2d_forward<T>(const T*, T*, const MaxPoolShape&);                      \
  template void max_pool2d_backward<T>(const T*, const T*, const T*, T*, const MaxPoolShape&); \
  template void global_avg_pool_forward<T>(const T*, T*, int64_t, int64_t, int64_t);           \
  template void global_avg_pool_backward<T>(const T*, T*, int64_t, int64_t, int64_t);
INSTANTIATE_POOL(float)
INSTANTIATE_POOL(double)
#undef INSTANTIATE_POOL

}  // namespace kernels::cpu
