// Batch normalisation on the CPU: see batch_norm.h for the maths and the gradient rule.
// Bench: build/bench/bench_kernels --benchmark_filter=BatchNorm
#include "kernels/cpu/batch_norm.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/parallel.h"

namespace kernels::cpu {
namespace {

// A thread's share of the rows holds at least this many elements, so that small tensors
// (gradient checks, late ResNet layers at small batch) pay no threading overhead.
constexpr int64_t kChunkElements = 1 << 15;
// Statistics blocks: each block's sums are taken about its first row and merged into the
// chunk's moments. Shifting by a sample of the block bounds the cancellation in
// sum(d^2) - sum(d)^2 / n by n (the shift is within sqrt(n) standard deviations of the
// block mean), so with double sums at most 2 of 16 digits are lost; merging costs O(C) per
// block, negligible next to the block's 64 C elements.
constexpr int64_t kBlockRows = 64;

int64_t rows_per_chunk(int64_t channels) {
  return std::max<int64_t>(1, kChunkElements / std::max<int64_t>(1, channels));
}

// Number of contiguous row chunks for the reductions: one per thread at most, each holding
// at least rows_per_chunk rows.
int64_t chunk_count(BatchNormShape s) {
  if (omp_in_parallel()) return 1;
  return std::clamp<int64_t>(s.rows / rows_per_chunk(s.channels), 1, num_threads());
}

// Doubles per chunk slot holding `used` doubles: rounded up to whole 64-byte cache lines plus
// one spare line, so that threads' accumulators never share a line (whatever the base
// alignment).
int64_t slot_stride(int64_t used) { return (used + 7) / 8 * 8 + 8; }

// f(chunk, begin_row, end_row) on every chunk, in parallel. Each chunk reduces into its own
// slot and the slots are combined in chunk order, so results do not depend on scheduling.
template <typename F>
void for_each_chunk(int64_t chunks, int64_t rows, F&& f) {
#pragma omp parallel for num_threads(static_cast<int>(chunks)) schedule(static) if (chunks > 1)
  for (int64_t k = 0; k < chunks; ++k) f(k, rows * k / chunks, rows * (k + 1) / chunks);
}

// Chan et al.'s pairwise update: merges the moments (count_b, mean_b, m2_b) of one set of rows
// into those of another (count_a, mean_a, m2_a), where m2 is the sum of squared deviations
// from the mean. Exact in exact arithmetic and stable in floating point; count_a may be 0.
void merge_moments(double count_a, double* mean_a, double* m2_a, double count_b,
                   const double* mean_b, const double* m2_b, int64_t channels) {
  const double count = count_a + count_b;
  const double weight_b = count_b / count, cross = count_a * count_b / count;
#pragma omp simd
  for (int64_t c = 0; c < channels; ++c) {
    double delta = mean_b[c] - mean_a[c];
    mean_a[c] += delta * weight_b;
    m2_a[c] += m2_b[c] + delta * delta * cross;
  }
}

// sum_d[c] += sum over rows of d, sum_d2[c] += sum of d^2, with d = x[r, c] - shift[c] in
// double. Four rows per update of the accumulators, which would otherwise be loaded and
// stored once per element.
template <typename T>
void accumulate_shifted_sums(const T* x, int64_t rows, int64_t channels, const double* shift,
                             double* sum_d, double* sum_d2) {
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4) {
    const T* x0 = x + r * channels;
    const T* x1 = x0 + channels;
    const T* x2 = x1 + channels;
    const T* x3 = x2 + channels;
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) {
      const double d0 = static_cast<double>(x0[c]) - shift[c], d1 = static_cast<double>(x1[c]) - shift[c];
      const double d2 = static_cast<double>(x2[c]) - shift[c], d3 = static_cast<double>(x3[c]) - shift[c];
      sum_d[c] += (d0 + d1) + (d2 + d3);
      sum_d2[c] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3);
    }
  }
  for (; r < rows; ++r) {
    const T* xr = x + r * channels;
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) {
      const double d = static_cast<double>(xr[c]) - shift[c];
      sum_d[c] += d;
      sum_d2[c] += d * d;
    }
  }
}

// sum_dy[c] += sum over rows of dy, sum_dy_xmu[c] += sum of dy (x - mean), in double; four
// rows per accumulator update as in accumulate_shifted_sums.
template <typename T>
void accumulate_gradient_sums(const T* x, const T* dy, int64_t rows, int64_t channels,
                              const double* mean, double* sum_dy, double* sum_dy_xmu) {
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4) {
    const T* x0 = x + r * channels;
    const T* g0 = dy + r * channels;
    const int64_t s = channels;
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) {
      const double a0 = static_cast<double>(g0[c]), a1 = static_cast<double>(g0[c + s]);
      const double a2 = static_cast<double>(g0[c + 2 * s]), a3 = static_cast<double>(g0[c + 3 * s]);
      sum_dy[c] += (a0 + a1) + (a2 + a3);
      sum_dy_xmu[c] += (a0 * (static_cast<double>(x0[c]) - mean[c]) +
                        a1 * (static_cast<double>(x0[c + s]) - mean[c])) +
                       (a2 * (static_cast<double>(x0[c + 2 * s]) - mean[c]) +
                        a3 * (static_cast<double>(x0[c + 3 * s]) - mean[c]));
    }
  }
  for (; r < rows; ++r) {
    const T* xr = x + r * channels;
    const T* gr = dy + r * channels;
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) {
      const double a = static_cast<double>(gr[c]);
      sum_dy[c] += a;
      sum_dy_xmu[c] += a * (static_cast<double>(xr[c]) - mean[c]);
    }
  }
}

// Moments (mean, m2) of rows [begin, end), block by block. scratch holds 3 * channels doubles.
template <typename T>
void chunk_moments(const T* x, int64_t begin, int64_t end, int64_t channels, double* mean,
                   double* m2, double* scratch) {
  double* shift = scratch;
  double* block_mean = scratch + channels;  // holds sum(d) until converted
  double* block_m2 = scratch + 2 * channels;  // holds sum(d^2) until converted
  std::fill(mean, mean + channels, 0.0);
  std::fill(m2, m2 + channels, 0.0);
  double count = 0;
  for (int64_t b = begin; b < end; b += kBlockRows) {
    const int64_t rows = std::min(end - b, kBlockRows);
    const T* xb = x + b * channels;
    for (int64_t c = 0; c < channels; ++c) shift[c] = static_cast<double>(xb[c]);
    std::fill(block_mean, block_mean + 2 * channels, 0.0);
    accumulate_shifted_sums(xb, rows, channels, shift, block_mean, block_m2);
    const double n = static_cast<double>(rows);
    for (int64_t c = 0; c < channels; ++c) {
      const double mean_d = block_mean[c] / n;
      block_m2[c] = std::max(0.0, block_m2[c] - block_mean[c] * mean_d);
      block_mean[c] = shift[c] + mean_d;
    }
    merge_moments(count, mean, m2, n, block_mean, block_m2, channels);
    count += n;
  }
}

// Per-channel constants of the elementwise passes, in T: the mean as an unevaluated sum
// hi + lo (x - hi is exact for x near the mean, so x - hi - lo keeps the double mean's
// accuracy in float32), and the multipliers.
template <typename T>
struct ChannelConstants {
  std::vector<T> mean_hi, mean_lo, scale, slope, offset;
  explicit ChannelConstants(int64_t channels)
      : mean_hi(channels), mean_lo(channels), scale(channels), slope(channels, T(0)),
        offset(channels, T(0)) {}
  void set_mean(int64_t c, double mean) {
    mean_hi[c] = static_cast<T>(mean);
    mean_lo[c] = static_cast<T>(mean - static_cast<double>(mean_hi[c]));
  }
};

// y = (x - mean) * scale + beta, per channel. Subtracting the mean first (rather than folding
// it into one offset) keeps float32 outputs accurate when |mean| >> std.
template <typename T>
void normalise(const T* x, const ChannelConstants<T>& k, const T* beta, T* y, BatchNormShape s) {
  const int64_t channels = s.channels;
  const T* hi = k.mean_hi.data();
  const T* lo = k.mean_lo.data();
  const T* scale = k.scale.data();
  parallel_for(s.rows, rows_per_chunk(channels), [=](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = x + r * channels;
      T* yr = y + r * channels;
#pragma omp simd
      for (int64_t c = 0; c < channels; ++c) yr[c] = (xr[c] - hi[c] - lo[c]) * scale[c] + beta[c];
    }
  });
}

}  // namespace

template <typename T>
void batch_norm_statistics(const T* x, BatchNormShape s, double* mean, double* var) {
  const int64_t channels = s.channels;
  if (channels == 0) return;
  const int64_t chunks = chunk_count(s);
  // per chunk: mean, m2, and 3 * channels of scratch
  const int64_t stride = slot_stride(5 * channels);
  std::vector<double> partial(static_cast<size_t>(chunks * stride));
  for_each_chunk(chunks, s.rows, [&](int64_t k, int64_t begin, int64_t end) {
    double* slot = partial.data() + k * stride;
    chunk_moments(x, begin, end, channels, slot, slot + channels, slot + 2 * channels);
  });
  std::vector<double> m2(static_cast<size_t>(channels), 0.0);
  std::fill(mean, mean + channels, 0.0);
  for (int64_t k = 0; k < chunks; ++k) {
    const double* slot = partial.data() + k * stride;
    merge_moments(static_cast<double>(s.rows * k / chunks), mean, m2.data(),
                  static_cast<double>(s.rows * (k + 1) / chunks - s.rows * k / chunks), slot,
                  slot + channels, channels);
  }
  for (int64_t c = 0; c < channels; ++c) var[c] = m2[c] / static_cast<double>(s.rows);
}

template <typename T>
void batch_norm_forward_train(const T* x, const T* gamma, const T* beta, T* y, double* save_mean,
                              double* save_invstd, T* running_mean, T* running_var, double momentum,
                              double eps, BatchNormShape s) {
  const int64_t channels = s.channels;
  std::vector<double> mean(channels), var(channels);
  batch_norm_statistics(x, s, mean.data(), var.data());
  ChannelConstants<T> k(channels);
  const double unbias = s.rows > 1 ? static_cast<double>(s.rows) / static_cast<double>(s.rows - 1) : 0.0;
  for (int64_t c = 0; c < channels; ++c) {
    const double invstd = 1.0 / std::sqrt(var[c] + eps);
    k.set_mean(c, mean[c]);
    k.scale[c] = static_cast<T>(static_cast<double>(gamma[c]) * invstd);
    if (save_mean) save_mean[c] = mean[c];
    if (save_invstd) save_invstd[c] = invstd;
    if (running_mean)
      running_mean[c] = static_cast<T>((1 - momentum) * running_mean[c] + momentum * mean[c]);
    if (running_var)
      running_var[c] = static_cast<T>((1 - momentum) * running_var[c] + momentum * var[c] * unbias);
  }
  normalise(x, k, beta, y, s);
}

template <typename T>
void batch_norm_forward_eval(const T* x, const T* gamma, const T* beta, const T* running_mean,
                             const T* running_var, double eps, T* y, double* save_mean,
                             double* save_invstd, BatchNormShape s) {
  const int64_t channels = s.channels;
  ChannelConstants<T> k(channels);
  for (int64_t c = 0; c < channels; ++c) {
    const double invstd = 1.0 / std::sqrt(static_cast<double>(running_var[c]) + eps);
    k.set_mean(c, static_cast<double>(running_mean[c]));
    k.scale[c] = static_cast<T>(static_cast<double>(gamma[c]) * invstd);
    if (save_mean) save_mean[c] = static_cast<double>(running_mean[c]);
    if (save_invstd) save_invstd[c] = invstd;
  }
  normalise(x, k, beta, y, s);
}

template <typename T>
void batch_norm_backward(const T* x, const T* dy, const T* gamma, const double* mean,
                         const double* invstd, bool training, T* dx, T* dgamma, T* dbeta,
                         BatchNormShape s) {
  const int64_t channels = s.channels;
  std::vector<double> sum_dy(channels, 0.0), sum_dy_xmu(channels, 0.0);  // xmu = x - mean
  if (dgamma || dbeta || (dx && training)) {
    const int64_t chunks = chunk_count(s);
    const int64_t stride = slot_stride(2 * channels);
    std::vector<double> partial(static_cast<size_t>(chunks * stride), 0.0);
    for_each_chunk(chunks, s.rows, [&](int64_t k, int64_t begin, int64_t end) {
      double* acc_dy = partial.data() + k * stride;
      accumulate_gradient_sums(x + begin * channels, dy + begin * channels, end - begin, channels, mean,
                               acc_dy, acc_dy + channels);
    });
    for (int64_t k = 0; k < chunks; ++k)
      for (int64_t c = 0; c < channels; ++c) {
        sum_dy[c] += partial[k * stride + c];
        sum_dy_xmu[c] += partial[k * stride + channels + c];
      }
  }
  for (int64_t c = 0; c < channels; ++c) {
    if (dbeta) dbeta[c] = static_cast<T>(sum_dy[c]);
    if (dgamma) dgamma[c] = static_cast<T>(sum_dy_xmu[c] * invstd[c]);
  }
  if (!dx) return;
  // dx = dy * scale + (x - mean) * slope + offset: the training formula expanded per channel,
  // with slope = offset = 0 in evaluation mode.
  ChannelConstants<T> k(channels);
  const double inv_rows = 1.0 / static_cast<double>(std::max<int64_t>(1, s.rows));
  for (int64_t c = 0; c < channels; ++c) {
    const double scale = static_cast<double>(gamma[c]) * invstd[c];
    k.set_mean(c, mean[c]);
    k.scale[c] = static_cast<T>(scale);
    if (training) {
      k.slope[c] = static_cast<T>(-scale * invstd[c] * invstd[c] * sum_dy_xmu[c] * inv_rows);
      k.offset[c] = static_cast<T>(-scale * sum_dy[c] * inv_rows);
    }
  }
  const T* hi = k.mean_hi.data();
  const T* lo = k.mean_lo.data();
  const T* scale = k.scale.data();
  const T* slope = k.slope.data();
  const T* offset = k.offset.data();
  parallel_for(s.rows, rows_per_chunk(channels), [=](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = x + r * channels;
      const T* dyr = dy + r * channels;
      T* dxr = dx + r * channels;
#pragma omp simd
      for (int64_t c = 0; c < channels; ++c)
        dxr[c] = dyr[c] * scale[c] + (xr[c] - hi[c] - lo[c]) * slope[c] + offset[c];
    }
  });
}

#define INSTANTIATE_BATCH_NORM(T)                                                                  \
  template void batch_norm_statistics<T>(const T*, BatchNormShape, double*, double*);             \
  template void batch_norm_forward_train<T>(const T*, const T*, const T*, T*, double*, double*,   \
                                            T*, T*, double, double, BatchNormShape);              \
  template void batch_norm_forward_eval<T>(const T*, const T*, const T*, const T*, const T*,      \
                                           double, T*, double*, double*, BatchNormShape);         \
  template void batch_norm_backward<T>(const T*, const T*, const T*, const double*,               \
                                       const double*, bool, T*, T*, T*, BatchNormShape);
INSTANTIATE_BATCH_NORM(float)
INSTANTIATE_BATCH_NORM(double)
#undef INSTANTIATE_BATCH_NORM

}  // namespace kernels::cpu
