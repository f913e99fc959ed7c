// Convolution passes as implicit GEMMs on the GPU (formulation and contract in conv2d.h).
//
// One tiled GEMM, C[M, Ng] = sum_kk A[M, kk] B[kk, Ng], serves all three passes; a pass only
// says how each operand's elements are found in memory (the "views" below) and where row m of
// C is stored. A block computes a BM x BN tile of C, stepping through the reduction in BK-wide
// slices that go global memory -> registers -> shared memory, double-buffered: the next slice
// is fetched into registers while the current one is multiplied from shared memory. In shared
// memory both operands are k-major (As[kk][m], Bs[kk][n]), so a thread reads 4 consecutive m
// (or n) as one vector. A view has one of two orientations:
//   along-k   its V consecutive kk are contiguous in memory (forward's input and weight,
//             backward-data's dy); a thread keeps one row for the whole reduction, so the row's
//             pixel is decoded once; the slice is stored transposed.
//   along-mn  V consecutive rows (columns) are contiguous (backward-data's weight,
//             backward-weight's dy and input); a thread keeps V columns for the whole reduction.
// V = 16 bytes (float4, double2) where channel counts and pointers allow a vector load; scalar
// loads with bounds on every element otherwise (the RGB stem, odd channel counts). Zero padding
// and tile overhangs load zeros, so the multiply loop has no branches.
// Math: float32 and float64 on CUDA cores (a thread owns an 8x8 (f32) or 4x4 (f64) sub-tile of
// fused multiply-adds); TF32 on tensor cores through wmma (m16n16k8, float32 accumulation),
// with each input rounded to TF32 (cvt.rna) after it is loaded into a fragment.
// Split-K (few output tiles, long reduction: backward-weight, the late layers at small batch):
// grid.z slices of the reduction write partial tiles to a workspace that a second kernel sums
// in slice order, so results are deterministic.
// Backward-data by stride phases: input rows h = ph + stride*i receive gradient only from taps
// r = r0 + stride*jr with r0 = (ph + pad) mod stride, from output row p = i + dh - jr with
// dh = (ph + pad - r0) / stride; one GEMM per phase (ph, pw) over just those taps (stride 1:
// a single phase). A phase with no taps (stride > kernel) gets a GEMM with an empty reduction,
// which writes its zeros.
// Gradient rule: dx, dw and db are written (=), as on the CPU.
// Tests: build/tests/test_cuda_conv2d. Bench: build/bench/bench_kernels --benchmark_filter=CudaConv2d
#include <mma.h>

#include <algorithm>
#include <atomic>
#include <cassert>
#include <climits>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/conv2d.h"
#include "kernels/cuda/conv2d_views.cuh"
#include "kernels/cuda/runtime.h"

namespace kernels::cuda {

namespace {
std::atomic<ConvMath> g_conv_math{ConvMath::FP32};
}  // namespace

void set_conv_math(ConvMath math) { g_conv_math.store(math); }
ConvMath conv_math() { return g_conv_math.load(); }

namespace {

using namespace conv;

// ---- one operand's tile: global memory -> registers -> shared memory ----
// Shared layout: tile[kk * LD + row], LD = ROWS + pad.
// along-k:  thread -> kk offset (tid % (BK/V)) * V, rows tid / (BK/V) + it * (THREADS / (BK/V))
// along-mn: thread -> columns (tid % (ROWS/V)) * V .., kk tid / (ROWS/V) + it * (THREADS / (ROWS/V))
template <class View, int ROWS, int BK, int THREADS>
struct TileLoader {
  using T = typename View::T;
  static constexpr int V = kVec<T>;
  static constexpr int LD = ROWS + V;
  static constexpr int kIters = ROWS * BK / (THREADS * V);
  static constexpr int kPerLine = View::kAlongK ? BK / V : ROWS / V;  // threads per line
  static constexpr int kLinesPerIter = THREADS / kPerLine;
  static_assert(kIters >= 1 && kIters * THREADS * V == ROWS * BK, "tile does not split evenly");
  static_assert(THREADS % kPerLine == 0, "threads do not cover whole lines");
  static_assert(kLinesPerIter * kIters == (View::kAlongK ? ROWS : BK), "lines do not cover the tile");

  typename View::Line lines[View::kAlongK ? kIters : 1];
  T regs[kIters][V];
  int offset, first;

  __device__ void init(const View& view, int origin, int tid) {
    offset = (tid % kPerLine) * V;
    first = tid / kPerLine;
    if constexpr (View::kAlongK) {
#pragma unroll
      for (int it = 0; it < kIters; ++it) lines[it] = view.line(origin + first + it * kLinesPerIter);
    } else {
      lines[0] = view.line(origin + offset);
    }
  }
  __device__ void load(const View& view, int k0) {
#pragma unroll
    for (int it = 0; it < kIters; ++it) {
      if constexpr (View::kAlongK) view.load(lines[it], k0 + offset, regs[it]);
      else view.load(lines[0], k0 + first + it * kLinesPerIter, regs[it]);
    }
  }
  __device__ void store(T* tile) const {
#pragma unroll
    for (int it = 0; it < kIters; ++it) {
      if constexpr (View::kAlongK) {
#pragma unroll
        for (int i = 0; i < V; ++i) tile[(offset + i) * LD + first + it * kLinesPerIter] = regs[it][i];
      } else {
        store_vec(tile + (first + it * kLinesPerIter) * LD + offset, regs[it]);
      }
    }
  }
};

// The k-tiles [begin, end) of this block's reduction slice (blockIdx.z).
struct KRange {
  int begin, end;
};
__device__ __forceinline__ KRange k_range(int depth, int bk, int tiles_per_split) {
  const int tiles = (depth + bk - 1) / bk;
  const int begin = static_cast<int>(blockIdx.z) * tiles_per_split;
  return {begin, begin + tiles_per_split < tiles ? begin + tiles_per_split : tiles};
}

// Writes C[m, n .. n+3] (the part below Ng) to row `dst` (plus bias); vec: 16-byte stores.
template <typename T>
__device__ __forceinline__ void store_row4(T* dst, int n, int Ng, const T* v, const T* bias, bool vec) {
  if (n >= Ng) return;
  T o[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) o[j] = v[j] + (bias && n + j < Ng ? bias[n + j] : T(0));
  if (vec && n + 3 < Ng) {
    store4(dst + n, o);
    return;
  }
#pragma unroll
  for (int j = 0; j < 4; ++j)
    if (n + j < Ng) dst[n + j] = o[j];
}

// Destination of row m: the workspace slice of this block's split, or the pass's output.
template <class Pass>
__device__ __forceinline__ typename Pass::T* row_dst(const Pass& pass, typename Pass::T* workspace, int m) {
  if (workspace)
    return workspace + (static_cast<int64_t>(blockIdx.z) * pass.M + m) * pass.Ng;
  return pass.out.ptr + pass.out.row(m);
}

// ---- the GEMM on CUDA cores ----
// BM x BN tile per block, (BM/TM) x (BN/TN) threads, each a TM x TN sub-tile made of 4x4
// blocks spread BM/(TM/4) rows (BN/(TN/4) columns) apart, so that the shared-memory reads of a
// warp are broadcasts (A) and consecutive 16-byte vectors (B).
template <int BM, int BN, int BK, int TM, int TN, class Pass>
__global__ void __launch_bounds__((BM / TM) * (BN / TN), 2)
gemm_cuda_cores(const Pass pass, typename Pass::T* workspace, int tiles_per_split, bool vec_out) {
  using T = typename Pass::T;
  constexpr int THREADS = (BM / TM) * (BN / TN);
  using LoadA = TileLoader<typename Pass::A, BM, BK, THREADS>;
  using LoadB = TileLoader<typename Pass::B, BN, BK, THREADS>;
  constexpr int GM = TM / 4, GN = TN / 4;
  __shared__ __align__(16) T As[2][BK * LoadA::LD];
  __shared__ __align__(16) T Bs[2][BK * LoadB::LD];

  const int tid = static_cast<int>(threadIdx.x);
  const int m0 = static_cast<int>(blockIdx.x) * BM, n0 = static_cast<int>(blockIdx.y) * BN;
  const int tx = tid % (BN / TN), ty = tid / (BN / TN);
  const KRange kr = k_range(pass.Kg, BK, tiles_per_split);

  T acc[TM][TN];
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) acc[i][j] = T(0);

  if (kr.begin < kr.end) {  // the same for the whole block
    LoadA load_a;
    LoadB load_b;
    load_a.init(pass.a, m0, tid);
    load_b.init(pass.b, n0, tid);
    load_a.load(pass.a, kr.begin * BK);
    load_b.load(pass.b, kr.begin * BK);
    load_a.store(As[0]);
    load_b.store(Bs[0]);
    __syncthreads();
    for (int kt = kr.begin; kt < kr.end; ++kt) {
      const int buf = (kt - kr.begin) & 1;
      const bool more = kt + 1 < kr.end;
      if (more) {  // fetch the next slice while this one is multiplied
        load_a.load(pass.a, (kt + 1) * BK);
        load_b.load(pass.b, (kt + 1) * BK);
      }
      const T* as = As[buf];
      const T* bs = Bs[buf];
#pragma unroll
      for (int k = 0; k < BK; ++k) {
        T a[TM], b[TN];
#pragma unroll
        for (int g = 0; g < GM; ++g) load4(as + k * LoadA::LD + g * (BM / GM) + ty * 4, a + 4 * g);
#pragma unroll
        for (int g = 0; g < GN; ++g) load4(bs + k * LoadB::LD + g * (BN / GN) + tx * 4, b + 4 * g);
#pragma unroll
        for (int i = 0; i < TM; ++i)
#pragma unroll
          for (int j = 0; j < TN; ++j) acc[i][j] = madd(a[i], b[j], acc[i][j]);
      }
      if (more) {  // the other buffer was last read before the previous barrier
        load_a.store(As[buf ^ 1]);
        load_b.store(Bs[buf ^ 1]);
      }
      __syncthreads();
    }
  }

  const T* bias = workspace ? nullptr : pass.out.bias;
#pragma unroll
  for (int g = 0; g < GM; ++g)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int m = m0 + g * (BM / GM) + ty * 4 + i;
      if (m >= pass.M) continue;
      T* dst = row_dst(pass, workspace, m);
#pragma unroll
      for (int h = 0; h < GN; ++h) {
        const T v[4] = {acc[g * 4 + i][h * 4], acc[g * 4 + i][h * 4 + 1], acc[g * 4 + i][h * 4 + 2],
                        acc[g * 4 + i][h * 4 + 3]};
        store_row4(dst, n0 + h * (BN / GN) + tx * 4, pass.Ng, v, bias, vec_out);
      }
    }
}

// ---- the GEMM on tensor cores (TF32 inputs, float32 accumulation) ----
// 128 x 128 tile, BK = 16, 8 warps as 2 x 4, each warp 64 x 32 of C as 4 x 2 wmma fragments
// (m16n16k8). Results leave through a 16x16 staging tile per warp.
namespace tf32 {
constexpr int BM = 128, BN = 128, BK = 16, THREADS = 256;
constexpr int WARP_M = 64, WARP_N = 32, FM = WARP_M / 16, FN = WARP_N / 16;
}  // namespace tf32

template <class Pass>
__global__ void __launch_bounds__(tf32::THREADS, 2)
gemm_tensor_cores(const Pass pass, float* workspace, int tiles_per_split, bool vec_out) {
  namespace wmma = nvcuda::wmma;
  using namespace tf32;
  static_assert(std::is_same<typename Pass::T, float>::value, "TF32 needs float operands");
  using LoadA = TileLoader<typename Pass::A, BM, BK, THREADS>;
  using LoadB = TileLoader<typename Pass::B, BN, BK, THREADS>;
  // wmma wants 32-byte aligned fragment pointers and a leading dimension of whole 16 bytes:
  // LD = 132 floats, fragments start at rows 0 and 8 (8 * 132 * 4 bytes) and columns in 16s.
  static_assert(LoadA::LD % 4 == 0 && LoadB::LD % 4 == 0, "wmma leading dimension");
  __shared__ __align__(128) float As[2][BK * LoadA::LD];
  __shared__ __align__(128) float Bs[2][BK * LoadB::LD];
  __shared__ __align__(128) float stage[THREADS / 32][16 * 16];

  const int tid = static_cast<int>(threadIdx.x), warp = tid / 32, lane = tid % 32;
  const int m0 = static_cast<int>(blockIdx.x) * BM, n0 = static_cast<int>(blockIdx.y) * BN;
  const int wm = (warp / (BN / WARP_N)) * WARP_M, wn = (warp % (BN / WARP_N)) * WARP_N;
  const KRange kr = k_range(pass.Kg, BK, tiles_per_split);

  wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc[FM][FN];
#pragma unroll
  for (int i = 0; i < FM; ++i)
#pragma unroll
    for (int j = 0; j < FN; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

  if (kr.begin < kr.end) {
    LoadA load_a;
    LoadB load_b;
    load_a.init(pass.a, m0, tid);
    load_b.init(pass.b, n0, tid);
    load_a.load(pass.a, kr.begin * BK);
    load_b.load(pass.b, kr.begin * BK);
    load_a.store(As[0]);
    load_b.store(Bs[0]);
    __syncthreads();
    for (int kt = kr.begin; kt < kr.end; ++kt) {
      const int buf = (kt - kr.begin) & 1;
      const bool more = kt + 1 < kr.end;
      if (more) {
        load_a.load(pass.a, (kt + 1) * BK);
        load_b.load(pass.b, (kt + 1) * BK);
      }
#pragma unroll
      for (int k = 0; k < BK; k += 8) {
        // As[kk][m] is A column-major; Bs[kk][n] is B row-major
        wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::col_major> a[FM];
        wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> b[FN];
#pragma unroll
        for (int i = 0; i < FM; ++i) {
          wmma::load_matrix_sync(a[i], As[buf] + k * LoadA::LD + wm + i * 16, LoadA::LD);
#pragma unroll
          for (int e = 0; e < a[i].num_elements; ++e) a[i].x[e] = wmma::__float_to_tf32(a[i].x[e]);
        }
#pragma unroll
        for (int j = 0; j < FN; ++j) {
          wmma::load_matrix_sync(b[j], Bs[buf] + k * LoadB::LD + wn + j * 16, LoadB::LD);
#pragma unroll
          for (int e = 0; e < b[j].num_elements; ++e) b[j].x[e] = wmma::__float_to_tf32(b[j].x[e]);
        }
#pragma unroll
        for (int i = 0; i < FM; ++i)
#pragma unroll
          for (int j = 0; j < FN; ++j) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
      }
      if (more) {
        load_a.store(As[buf ^ 1]);
        load_b.store(Bs[buf ^ 1]);
      }
      __syncthreads();
    }
  }

  // lane -> row lane / 2, columns (lane % 2) * 8 .. + 8 of each 16x16 fragment
  const float* bias = workspace ? nullptr : pass.out.bias;
  float* st = stage[warp];
  const int r = lane / 2, c = (lane % 2) * 8;
#pragma unroll
  for (int i = 0; i < FM; ++i)
#pragma unroll
    for (int j = 0; j < FN; ++j) {
      wmma::store_matrix_sync(st, acc[i][j], 16, wmma::mem_row_major);
      __syncwarp();
      const int m = m0 + wm + i * 16 + r, n = n0 + wn + j * 16 + c;
      if (m < pass.M) {
        float* dst = row_dst(pass, workspace, m);
        store_row4(dst, n, pass.Ng, st + r * 16 + c, bias, vec_out);
        store_row4(dst, n + 4, pass.Ng, st + r * 16 + c + 4, bias, vec_out);
      }
      __syncwarp();  // the staging tile is rewritten by the next fragment
    }
}

// Sums the split-K partial tiles in slice order (deterministic) into the pass's output.
template <class Pass>
__global__ void splitk_reduce(const Pass pass, const typename Pass::T* workspace, int splits) {
  using T = typename Pass::T;
  const int64_t total = static_cast<int64_t>(pass.M) * pass.Ng;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    T sum = workspace[i];
    for (int z = 1; z < splits; ++z) sum += workspace[z * total + i];
    const int m = static_cast<int>(i / pass.Ng), n = static_cast<int>(i - int64_t(m) * pass.Ng);
    if (pass.out.bias) sum += pass.out.bias[n];
    pass.out.ptr[pass.out.row(m) + n] = sum;
  }
}

// db: per column block of 32 channels and chunk of rows, a partial sum in double; then the
// partials of each channel summed in chunk order (deterministic).
template <typename T>
__global__ void bias_partial(const T* dy, int64_t rows, int K, int64_t rows_per_chunk, double* partial) {
  __shared__ double sums[8][33];
  const int k = static_cast<int>(blockIdx.x) * 32 + static_cast<int>(threadIdx.x);
  const int64_t begin = blockIdx.y * rows_per_chunk;
  const int64_t end = begin + rows_per_chunk < rows ? begin + rows_per_chunk : rows;
  double s = 0;
  if (k < K)
    for (int64_t m = begin + threadIdx.y; m < end; m += 8) s += static_cast<double>(dy[m * K + k]);
  sums[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && k < K) {
    double t = 0;
    for (int y = 0; y < 8; ++y) t += sums[y][threadIdx.x];
    partial[blockIdx.y * int64_t(K) + k] = t;
  }
}
template <typename T>
__global__ void bias_final(const double* partial, int chunks, int K, T* db) {
  for (int k = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x); k < K;
       k += static_cast<int>(gridDim.x * blockDim.x)) {
    double t = 0;
    for (int c = 0; c < chunks; ++c) t += partial[int64_t(c) * K + k];
    db[k] = static_cast<T>(t);
  }
}

// ---- host side ----

int sm_count() {
  static const int count = [] {
    int device = 0, sms = 0;
    CUDA_CHECK(cudaGetDevice(&device));
    CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    return sms;
  }();
  return count;
}

// Device scratch memory for one call, back to the caching allocator at scope exit. Later
// work on the (default) stream runs after the kernels that use it, so reuse is safe.
class Scratch {
 public:
  explicit Scratch(size_t bytes) : ptr_(device_malloc(bytes)) {}
  ~Scratch() { device_free(ptr_); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  template <typename T> T* as() const { return static_cast<T*>(ptr_); }

 private:
  void* ptr_;
};

template <typename T>
bool aligned16(const T* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Sizes are checked here once so that the kernels can index with int (offsets are 64-bit).
int checked_int(int64_t v, const char* op, const char* what) {
  if (v < 0 || v > INT_MAX)
    throw std::runtime_error(std::string(op) + ": " + what + " = " + std::to_string(v) +
                             " is beyond the 32-bit range of the CUDA convolution kernels");
  return static_cast<int>(v);
}

struct Split {
  int splits, tiles_per_split;
};

// Enough reduction slices to give the GPU about `blocks_per_sm` blocks per multiprocessor,
// each slice at least kMinTiles k-tiles long. Depends only on the shape and the GPU model.
Split choose_split(int64_t blocks, int k_tiles, int blocks_per_sm) {
  constexpr int kMinTiles = 16;
  const int64_t target = int64_t(sm_count()) * blocks_per_sm;
  int64_t splits = 1;
  if (blocks < target && k_tiles >= 2 * kMinTiles)
    splits = std::min<int64_t>({ceil_div(target, blocks), k_tiles / kMinTiles, 65535});
  const int per = static_cast<int>(std::max<int64_t>(1, ceil_div(k_tiles, splits)));
  return {k_tiles == 0 ? 1 : static_cast<int>(ceil_div(k_tiles, per)), per};
}

template <class Pass>
using GemmKernel = void (*)(const Pass, typename Pass::T*, int, bool);

template <class Pass>
void launch_gemm(const Pass& pass, GemmKernel<Pass> kernel, int bm, int bn, int bk, int threads,
                 int blocks_per_sm, const char* op) {
  using T = typename Pass::T;
  if (pass.M == 0 || pass.Ng == 0) return;
  const int64_t tiles_m = ceil_div(pass.M, bm), tiles_n = ceil_div(pass.Ng, bn);
  if (tiles_n > 65535) throw std::runtime_error(std::string(op) + ": too many output columns for the grid");
  const int k_tiles = static_cast<int>(ceil_div(pass.Kg, bk));
  const Split split = choose_split(tiles_m * tiles_n, k_tiles, blocks_per_sm);
  const dim3 grid(static_cast<unsigned>(tiles_m), static_cast<unsigned>(tiles_n), split.splits);
  const bool vec_rows = pass.Ng % kVec<T> == 0;  // every row start stays 16-byte aligned
  if (split.splits == 1) {
    const bool vec = vec_rows && aligned16(pass.out.ptr);
    kernel<<<grid, threads>>>(pass, nullptr, split.tiles_per_split, vec);
    CUDA_CHECK_LAUNCH(op);
    return;
  }
  const int64_t total = int64_t(pass.M) * pass.Ng;
  Scratch partial(sizeof(T) * split.splits * total);
  kernel<<<grid, threads>>>(pass, partial.as<T>(), split.tiles_per_split, vec_rows);
  CUDA_CHECK_LAUNCH(op);
  const int reduce_blocks = static_cast<int>(std::min<int64_t>(ceil_div(total, 256), 8 * sm_count()));
  splitk_reduce<<<reduce_blocks, 256>>>(pass, partial.as<T>(), split.splits);
  CUDA_CHECK_LAUNCH(op);
}

// Picks the kernel by dtype and the float32 math setting.
template <class Pass>
void run_gemm(const Pass& pass, const char* op) {
  using T = typename Pass::T;
  if constexpr (std::is_same<T, float>::value) {
    if (conv_math() == ConvMath::TF32) {
      launch_gemm(pass, gemm_tensor_cores<Pass>, tf32::BM, tf32::BN, tf32::BK, tf32::THREADS, 2, op);
      return;
    }
    // 128x128x8 tiles, 256 threads of 8x8: at most 128 registers each, two blocks per SM
    launch_gemm(pass, gemm_cuda_cores<128, 128, 8, 8, 8, Pass>, 128, 128, 8, 256, 2, op);
  } else {
    launch_gemm(pass, gemm_cuda_cores<64, 64, 8, 4, 4, Pass>, 64, 64, 8, 256, 2, op);
  }
}

struct Dims {  // the shape as ints (checked)
  int N, H, W, C, K, R, S, P, Q, stride, pad;
};
Dims checked_dims(const Conv2dShape& s, const char* op) {
  checked_int(s.input_size(), op, "input elements");
  checked_int(s.output_size(), op, "output elements");
  checked_int(s.weight_size(), op, "weight elements");
  return {checked_int(s.N, op, "N"), checked_int(s.H, op, "H"), checked_int(s.W, op, "W"),
          checked_int(s.C, op, "C"), checked_int(s.K, op, "K"), checked_int(s.R, op, "R"),
          checked_int(s.S, op, "S"), checked_int(s.P, op, "P"), checked_int(s.Q, op, "Q"),
          checked_int(s.stride, op, "stride"), checked_int(s.pad, op, "pad")};
}

}  // namespace

template <typename T>
void conv2d_forward(const Conv2dShape& s, const T* x, const T* w, const T* bias, T* y) {
  const char* op = "conv2d_forward (CUDA)";
  const Dims d = checked_dims(s, op);
  const int M = d.N * d.P * d.Q, depth = d.R * d.S * d.C;
  constexpr int V = kVec<T>;
  ForwardInput<T> a{x, M, depth, d.H, d.W, d.C, d.S, d.P, d.Q, d.stride, d.pad,
                    d.C % V == 0 && aligned16(x)};
  ForwardWeight<T> b{w, d.K, depth, depth % V == 0 && aligned16(w)};
  using Pass = GemmPass<ForwardInput<T>, ForwardWeight<T>, DenseOut<T>>;
  run_gemm(Pass{a, b, DenseOut<T>{y, d.K, bias}, M, d.K, depth}, op);
}

template <typename T>
void conv2d_backward_data(const Conv2dShape& s, const T* dy, const T* w, T* dx) {
  const char* op = "conv2d_backward_data (CUDA)";
  const Dims d = checked_dims(s, op);
  constexpr int V = kVec<T>;
  const int st = d.stride;
  for (int ph = 0; ph < st; ++ph)
    for (int pw = 0; pw < st; ++pw) {
      Phase f;
      f.ph = ph, f.pw = pw;
      f.Hp = d.H > ph ? (d.H - ph + st - 1) / st : 0;
      f.Wp = d.W > pw ? (d.W - pw + st - 1) / st : 0;
      if (f.Hp == 0 || f.Wp == 0) continue;
      f.r0 = (ph + d.pad) % st, f.s0 = (pw + d.pad) % st;
      f.nr = d.R > f.r0 ? (d.R - f.r0 + st - 1) / st : 0;
      f.ns = d.S > f.s0 ? (d.S - f.s0 + st - 1) / st : 0;
      f.dh = (ph + d.pad - f.r0) / st, f.dw = (pw + d.pad - f.s0) / st;
      const int M = d.N * f.Hp * f.Wp, depth = f.nr * f.ns * d.K;
      BackwardDataGrad<T> a{dy, M, depth, d.P, d.Q, d.K, f, d.K % V == 0 && aligned16(dy)};
      BackwardDataWeight<T> b{w, d.C, depth, d.R, d.S, d.K, st, f, d.C % V == 0 && aligned16(w)};
      PhaseOut<T> out{dx, d.H, d.W, d.C, st, f, nullptr};
      using Pass = GemmPass<BackwardDataGrad<T>, BackwardDataWeight<T>, PhaseOut<T>>;
      run_gemm(Pass{a, b, out, M, d.C, depth}, op);
    }
}

template <typename T>
void conv2d_backward_weight(const Conv2dShape& s, const T* x, const T* dy, T* dw) {
  const char* op = "conv2d_backward_weight (CUDA)";
  const Dims d = checked_dims(s, op);
  constexpr int V = kVec<T>;
  const int pixels = d.N * d.P * d.Q, cols = d.R * d.S * d.C;
  BackwardWeightGrad<T> a{dy, d.K, pixels, d.K % V == 0 && aligned16(dy)};
  BackwardWeightInput<T> b{x, cols, pixels, d.H, d.W, d.C, d.S, d.P, d.Q, d.stride, d.pad,
                           d.C % V == 0 && aligned16(x)};
  using Pass = GemmPass<BackwardWeightGrad<T>, BackwardWeightInput<T>, DenseOut<T>>;
  run_gemm(Pass{a, b, DenseOut<T>{dw, cols, nullptr}, d.K, cols, pixels}, op);
}

template <typename T>
void conv2d_backward_bias(const Conv2dShape& s, const T* dy, T* db) {
  const char* op = "conv2d_backward_bias (CUDA)";
  const Dims d = checked_dims(s, op);
  if (d.K == 0) return;
  const int64_t rows = int64_t(d.N) * d.P * d.Q;
  const int64_t col_blocks = ceil_div(d.K, 32);
  // about eight blocks per multiprocessor, each at least 64 rows
  const int64_t chunks = std::max<int64_t>(
      1, std::min<int64_t>({ceil_div(8 * sm_count(), col_blocks), ceil_div(rows, 64), 65535}));
  const int64_t rows_per_chunk = ceil_div(rows, chunks);
  Scratch partial(sizeof(double) * chunks * d.K);
  bias_partial<<<dim3(static_cast<unsigned>(col_blocks), static_cast<unsigned>(chunks)), dim3(32, 8)>>>(dy, rows, d.K, rows_per_chunk, partial.as<double>());
  CUDA_CHECK_LAUNCH(op);
  const int blocks = static_cast<int>(std::min<int64_t>(ceil_div(d.K, 256), 1024));
  bias_final<<<blocks, 256>>>(partial.as<double>(), static_cast<int>(chunks), d.K, db);
  CUDA_CHECK_LAUNCH(op);
}

#define INSTANTIATE(T)                                                                         \
  template void conv2d_forward<T>(const Conv2dShape&, const T*, const T*, const T*, T*);       \
  template void conv2d_backward_data<T>(const Conv2dShape&, const T*, const T*, T*);           \
  template void conv2d_backward_weight<T>(const Conv2dShape&, const T*, const T*, T*);         \
  template void conv2d_backward_bias<T>(const Conv2dShape&, const T*, T*);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace kernels::cuda
