// Batch normalisation on the GPU: see batch_norm.h for the maths, the statistics scheme and
// the gradient rule. Kernels, then launchers:
//   moments_kernel / gradient_sums_kernel: per-(row chunk, channel) partial reductions
//   finalize_*_kernel: one block per channel merges the chunks in a fixed tree order and
//     writes the statistics, running averages, parameter gradients and the per-channel
//     constants of the elementwise pass
//   normalise_kernel / input_gradient_kernel: the elementwise passes (16-byte vectors when
//     channels and pointers allow)
#include <algorithm>
#include <cstdint>
#include <initializer_list>

#include "kernels/cuda/batch_norm.h"
#include "kernels/cuda/check.cuh"
#include "kernels/cuda/runtime.h"

namespace kernels::cuda {
namespace {

constexpr int kTileChannels = 32;   // threadIdx.x: one warp reads 32 consecutive channels of a row
constexpr int kRowLanes = 8;        // threadIdx.y: rows taken in turn by the block's 8 warps
constexpr int kGroupRows = 16;      // rows per shifted-sum group, loaded together (16 loads in flight)
constexpr int kTargetBlocks = 4096; // reduction blocks: several waves over 132 SMs x 8 blocks
constexpr int kFinalThreads = 256;  // threads of a per-channel finalize block
constexpr int kThreads = 256;
constexpr int kMaxGridStrideBlocks = 32768;

// Rounded arithmetic that the compiler may not contract into fused multiply-adds: the CPU
// kernels are compiled without contraction, so the same sequence of rounded operations gives
// the same result when the per-channel constants are equal.
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ float sub_rn(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ double sub_rn(double a, double b) { return __dsub_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }

// (count, mean, sum of squared deviations) of a set of values.
struct Moments {
  double count, mean, m2;
};

// Chan et al.'s pairwise update, as kernels/cpu/batch_norm.cpp merge_moments; either side
// may be empty.
__device__ __forceinline__ void merge(Moments& a, const Moments& b) {
  if (b.count == 0) return;
  if (a.count == 0) {
    a = b;
    return;
  }
  const double count = a.count + b.count;
  const double delta = b.mean - a.mean;
  a.mean += delta * (b.count / count);
  a.m2 += b.m2 + delta * delta * (a.count * b.count / count);
  a.count = count;
}

// Rows [begin, end) of reduction chunk k of `chunks` (balanced, as on the CPU).
__device__ __forceinline__ int64_t chunk_begin(int64_t rows, int64_t k, int64_t chunks) {
  return rows * k / chunks;
}

// Per-channel constants of the elementwise passes (device arrays of `channels` T each), as
// kernels/cpu/batch_norm.cpp ChannelConstants: the mean as hi + lo, and the multipliers.
template <typename T>
struct ChannelConstants {
  T *hi, *lo, *scale, *slope, *offset;
};

template <typename T>
__device__ __forceinline__ void set_mean(const ChannelConstants<T>& k, int64_t c, double mean) {
  const T hi = static_cast<T>(mean);
  k.hi[c] = hi;
  k.lo[c] = static_cast<T>(mean - static_cast<double>(hi));
}

// ---- reductions over rows ----

// Partial moments of x over the rows of chunk blockIdx.y, for channels tile blockIdx.x.
template <typename T>
__global__ void moments_kernel(const T* __restrict__ x, int64_t rows, int64_t channels,
                               double* __restrict__ partial_mean, double* __restrict__ partial_m2) {
  __shared__ double s_count[kRowLanes][kTileChannels];
  __shared__ double s_mean[kRowLanes][kTileChannels];
  __shared__ double s_m2[kRowLanes][kTileChannels];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kTileChannels + tx;
  const int64_t end = chunk_begin(rows, blockIdx.y + 1, gridDim.y);
  Moments m{0, 0, 0};
  if (c < channels) {
    for (int64_t r = chunk_begin(rows, blockIdx.y, gridDim.y) + ty; r < end;
         r += int64_t{kGroupRows} * kRowLanes) {
      T v[kGroupRows];
#pragma unroll
      for (int i = 0; i < kGroupRows; ++i) {
        const int64_t row = r + int64_t{i} * kRowLanes;
        v[i] = row < end ? x[row * channels + c] : T(0);
      }
      const int n = static_cast<int>(std::min<int64_t>(kGroupRows, (end - r + kRowLanes - 1) / kRowLanes));
      const double shift = static_cast<double>(v[0]);
      double s1 = 0, s2 = 0;
#pragma unroll
      for (int i = 0; i < kGroupRows; ++i)
        if (i < n) {
          const double d = static_cast<double>(v[i]) - shift;
          s1 += d;
          s2 += d * d;
        }
      const double mean_d = s1 / n;
      merge(m, Moments{static_cast<double>(n), shift + mean_d, fmax(0.0, s2 - s1 * mean_d)});
    }
  }
  s_count[ty][tx] = m.count;
  s_mean[ty][tx] = m.mean;
  s_m2[ty][tx] = m.m2;
  __syncthreads();
  if (ty == 0 && c < channels) {
    for (int lane = 1; lane < kRowLanes; ++lane)
      merge(m, Moments{s_count[lane][tx], s_mean[lane][tx], s_m2[lane][tx]});
    partial_mean[blockIdx.y * channels + c] = m.mean;
    partial_m2[blockIdx.y * channels + c] = m.m2;
  }
}

// Partial sum(dy) and sum(dy (x - mean)) per channel, dy masked by y > 0 when RELU.
template <typename T, bool RELU>
__global__ void gradient_sums_kernel(const T* __restrict__ x, const T* __restrict__ y,
                                     const T* __restrict__ dy, const double* __restrict__ mean,
                                     int64_t rows, int64_t channels, double* __restrict__ partial_dy,
                                     double* __restrict__ partial_dy_xmu) {
  __shared__ double s_dy[kRowLanes][kTileChannels];
  __shared__ double s_dy_xmu[kRowLanes][kTileChannels];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kTileChannels + tx;
  const int64_t end = chunk_begin(rows, blockIdx.y + 1, gridDim.y);
  double acc_dy = 0, acc_dy_xmu = 0;
  if (c < channels) {
    const double mean_c = mean[c];
    for (int64_t r = chunk_begin(rows, blockIdx.y, gridDim.y) + ty; r < end;
         r += int64_t{kGroupRows} * kRowLanes) {
      T xv[kGroupRows], gv[kGroupRows];
#pragma unroll
      for (int i = 0; i < kGroupRows; ++i) {
        const int64_t row = r + int64_t{i} * kRowLanes;
        const bool in = row < end;
        xv[i] = in ? x[row * channels + c] : T(0);
        gv[i] = in ? dy[row * channels + c] : T(0);
        if (RELU && in && !(y[row * channels + c] > T(0))) gv[i] = T(0);
      }
#pragma unroll
      for (int i = 0; i < kGroupRows; ++i) {
        // explicit fma: the result must not depend on the compiler's contraction choices,
        // which could differ between the RELU and plain instantiations
        const double g = static_cast<double>(gv[i]);
        acc_dy += g;
        acc_dy_xmu = fma(g, static_cast<double>(xv[i]) - mean_c, acc_dy_xmu);
      }
    }
  }
  s_dy[ty][tx] = acc_dy;
  s_dy_xmu[ty][tx] = acc_dy_xmu;
  __syncthreads();
  if (ty == 0 && c < channels) {
    for (int lane = 1; lane < kRowLanes; ++lane) {
      acc_dy += s_dy[lane][tx];
      acc_dy_xmu += s_dy_xmu[lane][tx];
    }
    partial_dy[blockIdx.y * channels + c] = acc_dy;
    partial_dy_xmu[blockIdx.y * channels + c] = acc_dy_xmu;
  }
}

// ---- per-channel finalisation (one block of kFinalThreads per channel) ----

template <typename T>
__global__ void finalize_train_kernel(const double* __restrict__ partial_mean,
                                      const double* __restrict__ partial_m2, int chunks, int64_t rows,
                                      int64_t channels, const T* __restrict__ gamma,
                                      double* save_mean, double* save_invstd, T* running_mean,
                                      T* running_var, double momentum, double eps,
                                      ChannelConstants<T> k) {
  __shared__ double s_count[kFinalThreads], s_mean[kFinalThreads], s_m2[kFinalThreads];
  const int t = threadIdx.x;
  const int64_t c = blockIdx.x;
  Moments m{0, 0, 0};
  for (int chunk = t; chunk < chunks; chunk += kFinalThreads) {
    const double count =
        static_cast<double>(chunk_begin(rows, chunk + 1, chunks) - chunk_begin(rows, chunk, chunks));
    merge(m, Moments{count, partial_mean[chunk * channels + c], partial_m2[chunk * channels + c]});
  }
  s_count[t] = m.count;
  s_mean[t] = m.mean;
  s_m2[t] = m.m2;
  __syncthreads();
  for (int stride = kFinalThreads / 2; stride > 0; stride /= 2) {
    if (t < stride) {
      merge(m, Moments{s_count[t + stride], s_mean[t + stride], s_m2[t + stride]});
      s_count[t] = m.count;
      s_mean[t] = m.mean;
      s_m2[t] = m.m2;
    }
    __syncthreads();
  }
  if (t != 0) return;
  const double mean = m.mean, var = m.m2 / static_cast<double>(rows);
  const double invstd = 1.0 / sqrt(var + eps);
  const double unbias = rows > 1 ? static_cast<double>(rows) / static_cast<double>(rows - 1) : 0.0;
  set_mean(k, c, mean);
  k.scale[c] = static_cast<T>(static_cast<double>(gamma[c]) * invstd);
  if (save_mean) save_mean[c] = mean;
  if (save_invstd) save_invstd[c] = invstd;
  // (1 - m) r + m b, rounded as on the CPU (no fused multiply-add)
  if (running_mean)
    running_mean[c] = static_cast<T>(add_rn(mul_rn(1 - momentum, static_cast<double>(running_mean[c])),
                                            mul_rn(momentum, mean)));
  if (running_var)
    running_var[c] = static_cast<T>(add_rn(mul_rn(1 - momentum, static_cast<double>(running_var[c])),
                                           mul_rn(mul_rn(momentum, var), unbias)));
}

// One thread per channel: evaluation constants from the running statistics.
template <typename T>
__global__ void finalize_eval_kernel(const T* __restrict__ gamma, const T* __restrict__ running_mean,
                                     const T* __restrict__ running_var, double eps, int64_t channels,
                                     double* save_mean, double* save_invstd, ChannelConstants<T> k) {
  const int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (c >= channels) return;
  const double invstd = 1.0 / sqrt(static_cast<double>(running_var[c]) + eps);
  set_mean(k, c, static_cast<double>(running_mean[c]));
  k.scale[c] = static_cast<T>(static_cast<double>(gamma[c]) * invstd);
  if (save_mean) save_mean[c] = static_cast<double>(running_mean[c]);
  if (save_invstd) save_invstd[c] = invstd;
}

// Merges the gradient partial sums of channel blockIdx.x (none when chunks == 0: evaluation
// mode with only dx wanted), writes dgamma / dbeta and the constants of the dx pass:
// dx = dy scale + (x - mean) slope + offset, slope = offset = 0 in evaluation mode.
template <typename T>
__global__ void finalize_backward_kernel(const double* __restrict__ partial_dy,
                                         const double* __restrict__ partial_dy_xmu, int chunks,
                                         int64_t rows, int64_t channels, const T* __restrict__ gamma,
                                         const double* __restrict__ mean,
                                         const double* __restrict__ invstd, bool training, T* dgamma,
                                         T* dbeta, ChannelConstants<T> k) {
  __shared__ double s_dy[kFinalThreads], s_dy_xmu[kFinalThreads];
  const int t = threadIdx.x;
  const int64_t c = blockIdx.x;
  double sum_dy = 0, sum_dy_xmu = 0;
  for (int chunk = t; chunk < chunks; chunk += kFinalThreads) {
    sum_dy += partial_dy[chunk * channels + c];
    sum_dy_xmu += partial_dy_xmu[chunk * channels + c];
  }
  s_dy[t] = sum_dy;
  s_dy_xmu[t] = sum_dy_xmu;
  __syncthreads();
  for (int stride = kFinalThreads / 2; stride > 0; stride /= 2) {
    if (t < stride) {
      sum_dy += s_dy[t + stride];
      sum_dy_xmu += s_dy_xmu[t + stride];
      s_dy[t] = sum_dy;
      s_dy_xmu[t] = sum_dy_xmu;
    }
    __syncthreads();
  }
  if (t != 0) return;
  if (dbeta) dbeta[c] = static_cast<T>(sum_dy);
  if (dgamma) dgamma[c] = static_cast<T>(sum_dy_xmu * invstd[c]);
  if (!k.hi) return;  // no dx wanted
  const double inv_rows = 1.0 / static_cast<double>(rows > 1 ? rows : 1);
  const double scale = static_cast<double>(gamma[c]) * invstd[c];
  set_mean(k, c, mean[c]);
  k.scale[c] = static_cast<T>(scale);
  k.slope[c] = training ? static_cast<T>(-scale * invstd[c] * invstd[c] * sum_dy_xmu * inv_rows) : T(0);
  k.offset[c] = training ? static_cast<T>(-scale * sum_dy * inv_rows) : T(0);
}

// ---- elementwise passes ----

// VEC consecutive elements, loaded and stored as one 16-byte access when VEC > 1.
template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
  T v[VEC];
};

// y = (x - hi - lo) * scale + beta per channel, then relu when RELU; VEC divides channels.
template <typename T, int VEC, bool RELU>
__global__ void normalise_kernel(const T* __restrict__ x, const T* __restrict__ hi,
                                 const T* __restrict__ lo, const T* __restrict__ scale,
                                 const T* __restrict__ beta, T* __restrict__ y, int64_t packs,
                                 int64_t channels) {
  for (int64_t p = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; p < packs;
       p += int64_t{gridDim.x} * blockDim.x) {
    const int64_t c0 = p * VEC % channels;
    Pack<T, VEC> in = reinterpret_cast<const Pack<T, VEC>*>(x)[p], out;
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const int64_t c = c0 + j;
      T v = add_rn(mul_rn(sub_rn(sub_rn(in.v[j], hi[c]), lo[c]), scale[c]), beta[c]);
      if (RELU) v = v < T(0) ? T(0) : v;  // a NaN stays NaN, as engine::relu
      out.v[j] = v;
    }
    reinterpret_cast<Pack<T, VEC>*>(y)[p] = out;
  }
}

// dx = dy scale + (x - hi - lo) slope + offset, dy masked by y > 0 when RELU.
template <typename T, int VEC, bool RELU>
__global__ void input_gradient_kernel(const T* __restrict__ x, const T* __restrict__ y,
                                      const T* __restrict__ dy, ChannelConstants<T> k,
                                      T* __restrict__ dx, int64_t packs, int64_t channels) {
  for (int64_t p = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; p < packs;
       p += int64_t{gridDim.x} * blockDim.x) {
    const int64_t c0 = p * VEC % channels;
    Pack<T, VEC> xp = reinterpret_cast<const Pack<T, VEC>*>(x)[p];
    Pack<T, VEC> gp = reinterpret_cast<const Pack<T, VEC>*>(dy)[p], out;
    if (RELU) {
      Pack<T, VEC> yp = reinterpret_cast<const Pack<T, VEC>*>(y)[p];
#pragma unroll
      for (int j = 0; j < VEC; ++j) gp.v[j] = yp.v[j] > T(0) ? gp.v[j] : T(0);
    }
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const int64_t c = c0 + j;
      const T xmu = sub_rn(sub_rn(xp.v[j], k.hi[c]), k.lo[c]);
      out.v[j] = add_rn(add_rn(mul_rn(gp.v[j], k.scale[c]), mul_rn(xmu, k.slope[c])), k.offset[c]);
    }
    reinterpret_cast<Pack<T, VEC>*>(dx)[p] = out;
  }
}

// ---- launch helpers ----

// Device memory released at scope exit. Work queued on the default stream before the release
// still owns the block: the caching allocator hands it out again only to later work on the
// same stream, which runs after it.
class Workspace {
 public:
  explicit Workspace(size_t bytes) : ptr_(bytes ? device_malloc(bytes) : nullptr) {}
  ~Workspace() { device_free(ptr_); }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  template <typename U> U* as(size_t offset_elements = 0) const {
    return static_cast<U*>(ptr_) + offset_elements;
  }

 private:
  void* ptr_;
};

// Grid of a row reduction: channel tiles x row chunks. Each thread gets at least
// kGroupRows rows where there are enough; about kTargetBlocks blocks in all.
dim3 reduction_grid(BatchNormShape s) {
  const int64_t tiles = (s.channels + kTileChannels - 1) / kTileChannels;
  const int64_t wanted = (s.rows + int64_t{kRowLanes} * kGroupRows - 1) / (int64_t{kRowLanes} * kGroupRows);
  const int64_t cap = std::max<int64_t>(1, std::min<int64_t>(65535, kTargetBlocks / tiles));
  return dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(std::clamp<int64_t>(wanted, 1, cap)));
}

int grid_stride_blocks(int64_t work) {
  return static_cast<int>(std::clamp<int64_t>((work + kThreads - 1) / kThreads, 1, kMaxGridStrideBlocks));
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Elements per 16-byte vector when channels and every pointer allow it, else 1.
template <typename T>
int vector_width(int64_t channels, std::initializer_list<const void*> pointers) {
  constexpr int kVec = 16 / sizeof(T);
  if (channels % kVec != 0) return 1;
  for (const void* p : pointers)
    if (p && !aligned16(p)) return 1;
  return kVec;
}

template <typename T>
ChannelConstants<T> constants_in(const Workspace& w, int64_t channels) {
  T* base = w.as<T>();
  return {base, base + channels, base + 2 * channels, base + 3 * channels, base + 4 * channels};
}

template <typename T, bool RELU>
void normalise(const T* x, const ChannelConstants<T>& k, const T* beta, T* y, BatchNormShape s) {
  const int64_t n = s.rows * s.channels;
  if (n == 0) return;
  if (vector_width<T>(s.channels, {x, y}) > 1) {
    constexpr int kVec = 16 / sizeof(T);
    normalise_kernel<T, kVec, RELU><<<grid_stride_blocks(n / kVec), kThreads>>>(
        x, k.hi, k.lo, k.scale, beta, y, n / kVec, s.channels);
  } else {
    normalise_kernel<T, 1, RELU><<<grid_stride_blocks(n), kThreads>>>(x, k.hi, k.lo, k.scale, beta, y, n,
                                                                      s.channels);
  }
  CUDA_CHECK_LAUNCH("batch_norm normalise");
}

template <typename T, bool RELU>
void forward_train(const T* x, const T* gamma, const T* beta, T* y, double* save_mean,
                   double* save_invstd, T* running_mean, T* running_var, double momentum, double eps,
                   BatchNormShape s) {
  if (s.channels == 0) return;
  const dim3 grid = reduction_grid(s);
  const size_t partials = static_cast<size_t>(grid.y) * s.channels;
  Workspace partial(2 * partials * sizeof(double));
  Workspace constants(5 * static_cast<size_t>(s.channels) * sizeof(T));
  const ChannelConstants<T> k = constants_in<T>(constants, s.channels);
  moments_kernel<T><<<grid, dim3(kTileChannels, kRowLanes)>>>(x, s.rows, s.channels, partial.as<double>(),
                                                              partial.as<double>(partials));
  CUDA_CHECK_LAUNCH("batch_norm statistics");
  finalize_train_kernel<T><<<static_cast<unsigned>(s.channels), kFinalThreads>>>(
      partial.as<double>(), partial.as<double>(partials), static_cast<int>(grid.y), s.rows, s.channels,
      gamma, save_mean, save_invstd, running_mean, running_var, momentum, eps, k);
  CUDA_CHECK_LAUNCH("batch_norm finalize statistics");
  normalise<T, RELU>(x, k, beta, y, s);
}

template <typename T, bool RELU>
void forward_eval(const T* x, const T* gamma, const T* beta, const T* running_mean, const T* running_var,
                  double eps, T* y, double* save_mean, double* save_invstd, BatchNormShape s) {
  if (s.channels == 0) return;
  Workspace constants(5 * static_cast<size_t>(s.channels) * sizeof(T));
  const ChannelConstants<T> k = constants_in<T>(constants, s.channels);
  finalize_eval_kernel<T><<<static_cast<unsigned>((s.channels + kThreads - 1) / kThreads), kThreads>>>(
      gamma, running_mean, running_var, eps, s.channels, save_mean, save_invstd, k);
  CUDA_CHECK_LAUNCH("batch_norm eval constants");
  normalise<T, RELU>(x, k, beta, y, s);
}

template <typename T, bool RELU>
void backward(const T* x, const T* y, const T* dy, const T* gamma, const double* mean,
              const double* invstd, bool training, T* dx, T* dgamma, T* dbeta, BatchNormShape s) {
  if (s.channels == 0 || !(dx || dgamma || dbeta)) return;
  const bool sums = dgamma || dbeta || (dx && training);
  const dim3 grid = reduction_grid(s);
  const size_t partials = sums ? static_cast<size_t>(grid.y) * s.channels : 0;
  Workspace partial(2 * partials * sizeof(double));
  Workspace constants(dx ? 5 * static_cast<size_t>(s.channels) * sizeof(T) : 0);
  const ChannelConstants<T> k =
      dx ? constants_in<T>(constants, s.channels) : ChannelConstants<T>{nullptr, nullptr, nullptr, nullptr, nullptr};
  if (sums) {
    gradient_sums_kernel<T, RELU><<<grid, dim3(kTileChannels, kRowLanes)>>>(
        x, y, dy, mean, s.rows, s.channels, partial.as<double>(), partial.as<double>(partials));
    CUDA_CHECK_LAUNCH("batch_norm backward sums");
  }
  finalize_backward_kernel<T><<<static_cast<unsigned>(s.channels), kFinalThreads>>>(
      partial.as<double>(), partial.as<double>(partials), sums ? static_cast<int>(grid.y) : 0, s.rows,
      s.channels, gamma, mean, invstd, training, dgamma, dbeta, k);
  CUDA_CHECK_LAUNCH("batch_norm backward finalize");
  const int64_t n = s.rows * s.channels;
  if (!dx || n == 0) return;
  if (vector_width<T>(s.channels, {x, RELU ? y : nullptr, dy, dx}) > 1) {
    constexpr int kVec = 16 / sizeof(T);
    input_gradient_kernel<T, kVec, RELU><<<grid_stride_blocks(n / kVec), kThreads>>>(x, y, dy, k, dx, n / kVec,
                                                                                       s.channels);
  } else {
    input_gradient_kernel<T, 1, RELU><<<grid_stride_blocks(n), kThreads>>>(x, y, dy, k, dx, n, s.channels);
  }
  CUDA_CHECK_LAUNCH("batch_norm backward dx");
}

}  // namespace

template <typename T>
void batch_norm_forward_train(const T* x, const T* gamma, const T* beta, T* y, double* save_mean,
                              double* save_invstd, T* running_mean, T* running_var, double momentum,
                              double eps, BatchNormShape shape) {
  forward_train<T, false>(x, gamma, beta, y, save_mean, save_invstd, running_mean, running_var, momentum,
                          eps, shape);
}
template <typename T>
void batch_norm_relu_forward_train(const T* x, const T* gamma, const T* beta, T* y,
                                   double* save_mean, double* save_invstd, T* running_mean,
                                   T* running_var, double momentum, double eps, BatchNormShape shape) {
  forward_train<T, true>(x, gamma, beta, y, save_mean, save_invstd, running_mean, running_var, momentum,
                         eps, shape);
}
template <typename T>
void batch_norm_forward_eval(const T* x, const T* gamma, const T* beta, const T* running_mean,
                             const T* running_var, double eps, T* y, double* save_mean,
                             double* save_invstd, BatchNormShape shape) {
  forward_eval<T, false>(x, gamma, beta, running_mean, running_var, eps, y, save_mean, save_invstd, shape);
}
template <typename T>
void batch_norm_relu_forward_eval(const T* x, const T* gamma, const T* beta, const T* running_mean,
                                  const T* running_var, double eps, T* y, double* save_mean,
                                  double* save_invstd, BatchNormShape shape) {
  forward_eval<T, true>(x, gamma, beta, running_mean, running_var, eps, y, save_mean, save_invstd, shape);
}
template <typename T>
void batch_norm_backward(const T* x, const T* dy, const T* gamma, const double* mean,
                         const double* invstd, bool training, T* dx, T* dgamma, T* dbeta,
                         BatchNormShape shape) {
  backward<T, false>(x, nullptr, dy, gamma, mean, invstd, training, dx, dgamma, dbeta, shape);
}
template <typename T>
void batch_norm_relu_backward(const T* x, const T* y, const T* dy, const T* gamma,
                              const double* mean, const double* invstd, bool training, T* dx,
                              T* dgamma, T* dbeta, BatchNormShape shape) {
  backward<T, true>(x, y, dy, gamma, mean, invstd, training, dx, dgamma, dbeta, shape);
}

#define INSTANTIATE_BATCH_NORM(T)                                                                       \
  template void batch_norm_forward_train<T>(const T*, const T*, const T*, T*, double*, double*, T*, T*, \
                                            double, double, BatchNormShape);                            \
  template void batch_norm_relu_forward_train<T>(const T*, const T*, const T*, T*, double*, double*,    \
                                                 T*, T*, double, double, BatchNormShape);               \
  template void batch_norm_forward_eval<T>(const T*, const T*, const T*, const T*, const T*, double,    \
                                           T*, double*, double*, BatchNormShape);                       \
  template void batch_norm_relu_forward_eval<T>(const T*, const T*, const T*, const T*, const T*,       \
                                                double, T*, double*, double*, BatchNormShape);          \
  template void batch_norm_backward<T>(const T*, const T*, const T*, const double*, const double*,      \
                                       bool, T*, T*, T*, BatchNormShape);                               \
  template void batch_norm_relu_backward<T>(const T*, const T*, const T*, const T*, const double*,      \
                                            const double*, bool, T*, T*, T*, BatchNormShape);
INSTANTIATE_BATCH_NORM(float)
INSTANTIATE_BATCH_NORM(double)
#undef INSTANTIATE_BATCH_NORM

}  // namespace kernels::cuda
