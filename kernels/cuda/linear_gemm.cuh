// The tiled shared-memory GEMM behind the CUDA linear and Bayesian linear layers (CUDA
// sources only). One kernel template serves every product they need:
//   C[M, N] = sum_k A(m, k) B(k, n)
// with A and B read from row-major storage, each transposed or not (a template flag), through
// loaders that may compute an operand element instead of reading it (the Bayesian weight
// sample mu + softplus(rho) eps, drawn from Philox on the fly), and an epilogue that receives
// the finished sums four columns at a time (bias, sampled bias, the rho and eps gradients).
//
// Tiling: a 256-thread block computes a 64 x 64 tile of C, each thread a 4 x 4 sub-tile (rows
// ty*4.., columns tx*4..), stepping through K 16 at a time via shared-memory tiles of A and B.
// Each thread loads runs of 4 elements along an operand's contiguous dimension, so warps read
// global memory in whole segments and the Bayesian loader draws each Philox block (4 normals)
// once per run. Skinny problems (a 2048 -> 2 head: one tile, K = 2048) split K across blocks
// (split-K): each split writes its partial tile to a workspace, and a second kernel adds the
// splits in a fixed order (deterministic) and applies the epilogue. Bias gradients are column
// sums of dy (column_sum_kernel), also in a fixed order.
#pragma once
#include <algorithm>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/runtime.h"

namespace kernels::cuda::gemm {

constexpr int kBM = 64, kBN = 64, kBK = 16, kThreads = 256;
constexpr int kRun = 4;  // elements per thread per load, and per epilogue call
static_assert(kBM * kBK == kThreads * kRun && kBN * kBK == kThreads * kRun, "one run per thread per tile");

// Operand element loaders: fill v[0..count) from storage indices idx, idx+1, ... (count <= 4).
// Loops over runs go to 4 with a test against count, never to count: an array indexed by a
// value unknown at compile time would leave registers for local memory.
template <typename T> struct PlainLoad {
  const T* p;
  __device__ __forceinline__ void run(int64_t idx, int count, T* v) const {
#pragma unroll
    for (int i = 0; i < kRun; ++i)
      if (i < count) v[i] = p[idx + i];
  }
};

// C[m, n] = sum (+ bias[n]); row length `ldc`.
template <typename T> struct StoreEpilogue {
  T* c;
  int64_t ldc;
  const T* bias;  // may be null
  __device__ __forceinline__ void operator()(int m, int n, int count, const T* v) const {
    T* row = c + static_cast<int64_t>(m) * ldc + n;
#pragma unroll
    for (int j = 0; j < 4; ++j)
      if (j < count) row[j] = bias ? v[j] + bias[n + j] : v[j];
  }
};

// Loads one operand tile [kBK][X + pad] (k-major) from storage rows of length `ld`.
// K_CONTIG: element (x, k) lives at x * ld + k (a row of the stored matrix runs along k);
// else at k * ld + x. Elements past x_end or k_end are zero.
template <typename T, bool K_CONTIG, int X, int LDS, class Load>
__device__ __forceinline__ void load_tile(const Load& load, int64_t ld, int x0, int x_end, int k0,
                                          int k_end, T (*tile)[LDS]) {
  const int t = threadIdx.x;
  T v[kRun];
  if (K_CONTIG) {
    const int x = t / (kBK / kRun), kq = (t % (kBK / kRun)) * kRun;
    const int gx = x0 + x, gk = k0 + kq;
    const int count = gx < x_end ? max(0, min(kRun, k_end - gk)) : 0;
    load.run(static_cast<int64_t>(gx) * ld + gk, count, v);
#pragma unroll
    for (int i = 0; i < kRun; ++i) tile[kq + i][x] = i < count ? v[i] : T(0);
  } else {
    const int k = t / (X / kRun), xq = (t % (X / kRun)) * kRun;
    const int gk = k0 + k, gx = x0 + xq;
    const int count = gk < k_end ? max(0, min(kRun, x_end - gx)) : 0;
    load.run(static_cast<int64_t>(gk) * ld + gx, count, v);
#pragma unroll
    for (int i = 0; i < kRun; ++i) tile[k][xq + i] = i < count ? v[i] : T(0);
  }
}

// v[0..3] = p[0..3] from shared memory in 16-byte loads (p 16-byte aligned): one float4 or
// two double2, where four scalar loads would make shared memory the bottleneck.
__device__ __forceinline__ void load4_shared(const float* p, float* v) {
  const float4 q = *reinterpret_cast<const float4*>(p);
  v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
}
__device__ __forceinline__ void load4_shared(const double* p, double* v) {
  const double2 a = *reinterpret_cast<const double2*>(p), b = *reinterpret_cast<const double2*>(p + 2);
  v[0] = a.x, v[1] = a.y, v[2] = b.x, v[3] = b.y;
}

// One block: the 64 x 64 tile (blockIdx.y, blockIdx.x) of C over k in [z k_chunk, (z+1) k_chunk)
// with z = blockIdx.z. partial == nullptr: the epilogue gets the sums; else they go to
// partial[z][M][N] for gemm_reduce_kernel.
template <typename T, bool TA, bool TB, class LoadA, class LoadB, class Epilogue>
__global__ void __launch_bounds__(kThreads)
    gemm_kernel(int M, int N, int K, LoadA a, int64_t lda, LoadB b, int64_t ldb, Epilogue ep,
                int k_chunk, T* partial) {
  constexpr int kPad = 4;  // keeps rows 16-byte aligned and spreads the transposing stores
  __shared__ __align__(16) T As[kBK][kBM + kPad];
  __shared__ __align__(16) T Bs[kBK][kBN + kPad];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int m0 = blockIdx.y * kBM, n0 = blockIdx.x * kBN;
  const int k_begin = blockIdx.z * k_chunk, k_end = min(K, k_begin + k_chunk);

  T acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = T(0);
  for (int k0 = k_begin; k0 < k_end; k0 += kBK) {
    load_tile<T, !TA, kBM>(a, lda, m0, M, k0, k_end, As);
    load_tile<T, TB, kBN>(b, ldb, n0, N, k0, k_end, Bs);
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kBK; ++kk) {
      T av[4], bv[4];
      load4_shared(&As[kk][ty * 4], av);
      load4_shared(&Bs[kk][tx * 4], bv);
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fma(av[i], bv[j], acc[i][j]);
    }
    __syncthreads();
  }

  const int n = n0 + tx * 4;
  if (n >= N) return;
  const int count = min(4, N - n);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int m = m0 + ty * 4 + i;
    if (m >= M) break;
    if (partial) {
      T* row = partial + (static_cast<int64_t>(blockIdx.z) * M + m) * N + n;
#pragma unroll
      for (int j = 0; j < 4; ++j)
        if (j < count) row[j] = acc[i][j];
    } else {
      ep(m, n, count, acc[i]);
    }
  }
}

// Adds the `splits` partial products in split order and applies the epilogue, four
// consecutive columns per thread.
template <typename T, class Epilogue>
__global__ void gemm_reduce_kernel(int M, int N, int splits, const T* partial, Epilogue ep) {
  const int quads = (N + 3) / 4;
  const int64_t total = static_cast<int64_t>(M) * quads;
  for (int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; r < total;
       r += int64_t(gridDim.x) * blockDim.x) {
    const int m = static_cast<int>(r / quads), n = static_cast<int>(r % quads) * 4;
    const int count = min(4, N - n);
    T sum[4] = {T(0), T(0), T(0), T(0)};
    for (int z = 0; z < splits; ++z) {
      const T* row = partial + (static_cast<int64_t>(z) * M + m) * N + n;
#pragma unroll
      for (int j = 0; j < 4; ++j)
        if (j < count) sum[j] += row[j];
    }
    ep(m, n, count, sum);
  }
}

// Column sums of dy [rows, cols], handed to ep(c, sum): a block of 32 x 8 threads covers 32
// columns; thread row ty adds rows ty, ty + 8, ..., then thread row 0 adds the 8 partial sums
// in order. Deterministic.
template <typename T, class Epilogue>
__global__ void column_sum_kernel(const T* dy, int64_t rows, int64_t cols, Epilogue ep) {
  __shared__ T partial[8][33];
  const int64_t c = blockIdx.x * int64_t(32) + threadIdx.x;
  T sum = T(0);
  if (c < cols)
    for (int64_t r = threadIdx.y; r < rows; r += 8) sum += dy[r * cols + c];
  partial[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.y != 0 || c >= cols) return;
  T total = partial[0][threadIdx.x];
  for (int i = 1; i < 8; ++i) total += partial[i][threadIdx.x];
  ep(c, total);
}

// How many ways to split K: enough blocks to cover the GPU twice where the output has few
// tiles, each split keeping at least 256 values of k (16 tile steps) to amortise its partial
// tile's store and reload.
inline int choose_splits(int M, int N, int K) {
  const int64_t tiles = static_cast<int64_t>((M + kBM - 1) / kBM) * ((N + kBN - 1) / kBN);
  const int64_t sms = multiprocessor_count();
  if (tiles >= sms) return 1;
  const int64_t by_k = K / 256;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((2 * sms + tiles - 1) / tiles, by_k)));
}

// The kernels index rows and columns with int and the grid's y dimension with tiles of M.
inline void check_sizes(const char* op, int64_t n, int64_t in, int64_t out) {
  constexpr int64_t kMax = std::numeric_limits<int>::max();
  if (n > kMax || in > kMax || out > kMax || (n + kBM - 1) / kBM > 65535 || (out + kBM - 1) / kBM > 65535)
    throw std::runtime_error(std::string(op) + ": sizes beyond this GEMM's limits (n " + std::to_string(n) +
                             ", in " + std::to_string(in) + ", out " + std::to_string(out) +
                             "; at most 2^31 - 1 each and 4,194,240 rows)");
}

// C = A B through `ep`, on the default stream. `op` names the caller in launch errors.
template <typename T, bool TA, bool TB, class LoadA, class LoadB, class Epilogue>
void run(const char* op, int M, int N, int K, const LoadA& a, int64_t lda, const LoadB& b, int64_t ldb,
         const Epilogue& ep) {
  if (M <= 0 || N <= 0) return;
  int splits = choose_splits(M, N, K);
  int k_chunk = K;
  if (splits > 1) {
    k_chunk = ((K + splits - 1) / splits + kBK - 1) / kBK * kBK;
    splits = (K + k_chunk - 1) / k_chunk;
  }
  dim3 grid((N + kBN - 1) / kBN, (M + kBM - 1) / kBM, splits);
  if (splits == 1) {
    gemm_kernel<T, TA, TB><<<grid, kThreads>>>(M, N, K, a, lda, b, ldb, ep, k_chunk, static_cast<T*>(nullptr));
    CUDA_CHECK_LAUNCH(op);
    return;
  }
  const size_t bytes = static_cast<size_t>(splits) * M * N * sizeof(T);
  T* partial = static_cast<T*>(device_malloc(bytes));
  // Freed right after the launches: the caching allocator hands the block out again only to
  // work queued after these kernels on the same (default) stream.
  try {
    gemm_kernel<T, TA, TB><<<grid, kThreads>>>(M, N, K, a, lda, b, ldb, ep, k_chunk, partial);
    CUDA_CHECK_LAUNCH(op);
    const int64_t quads = static_cast<int64_t>(M) * ((N + 3) / 4);
    const int blocks = static_cast<int>(std::min<int64_t>((quads + 255) / 256, 4096));
    gemm_reduce_kernel<T><<<blocks, 256>>>(M, N, splits, partial, ep);
    CUDA_CHECK_LAUNCH(op);
  } catch (...) {
    device_free(partial);
    throw;
  }
  device_free(partial);
}

}  // namespace kernels::cuda::gemm
