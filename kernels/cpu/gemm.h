// Matrix products on the CPU: a register-blocked, cache-blocked GEMM with its own
// micro-kernel (AVX-512 where the compiler targets it, narrower vectors elsewhere), threaded
// with OpenMP when called outside a parallel region (inside one it runs on the calling thread).
//
// gemm(): row-major C = alpha * op(A) * op(B) + beta * C, op(X) = X or X^T. op(A) is [M, K],
// op(B) is [K, N], C is [M, N]; lda/ldb/ldc are row strides of the stored matrices.
//
// run_indirect_gemm(): the same engine with its operands described by callbacks, which is how
// the convolutions use it without materialising an im2col matrix:
//   C[m, n] = (accumulate ? C[m, n] : 0) + bias[n] + sum_k A[m, k] * B[k, n].
// The reduction index k is split into `segments` runs of `segment_len`: k = s * segment_len + c.
// Row m of A in segment s is at a_rows(m, s)[c * a_step], read in place when a_step is 1 (else
// copied block by block): for a convolution, s is a kernel tap and the pointer is the input
// pixel that tap reads (or a zero vector where it falls into the padding). B is copied into
// the kernel's panel layout by pack_b. C rows are addressed through c_rows, so a product may
// write rows scattered over a tensor.
// Bench: build/bench/bench_kernels --benchmark_filter=Gemm
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

namespace kernels::cpu {

template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

// Where pack_b puts B: column panels `width` wide (the micro-kernel's), `panel_stride` apart;
// element (k, j) of the block at panel j / width, row k, column j % width.
template <typename T>
struct PanelWriter {
  T* data;
  int64_t width, panel_stride;
  T* at(int64_t k, int64_t j) const { return data + (j / width) * panel_stride + k * width + j % width; }
  // how many columns from j on stay in j's panel
  int64_t run(int64_t j) const { return width - j % width; }
};

template <typename T>
struct IndirectGemm {
  int64_t M = 0, N = 0;
  int64_t segments = 1, segment_len = 0;  // the reduction length is segments * segment_len
  int64_t a_step = 1;                     // element stride of A along c within a segment
  // For rows m0 <= m < m0 + count and segments s0 <= s < s1:
  //   rows[(m - m0) * ld + (s - s0)] = address of A[m, (s, c = 0)],
  // readable for segment_len * a_step elements (point padding at a vector of zeros).
  std::function<void(int64_t m0, int64_t count, int64_t s0, int64_t s1, const T** rows, int64_t ld)>
      a_rows;
  // Writes B[k0 + k, n0 + j] to *dst.at(k, j) for k < kc, j < nc: one call per block of the
  // reduction covers all of a thread's columns, so that a source laid out by rows of B (an
  // input pixel's channels) can be read in order.
  std::function<void(int64_t k0, int64_t kc, int64_t n0, int64_t nc, const PanelWriter<T>& dst)> pack_b;
  // rows[i] = address of C[m0 + i, 0] for i < count.
  std::function<void(int64_t m0, int64_t count, T** rows)> c_rows;
  const T* bias = nullptr;  // [N] added to every row, or null
  bool accumulate = false;  // add to C instead of overwriting it
  // Epilogue, applied once to each finished element of C (after the whole reduction, the bias
  // and `accumulate`), for inference-time fusions such as a convolution followed by an
  // evaluation-mode batch normalisation, a residual join and a ReLU:
  //   C[m, n] = act((C[m, n] - out_center[n]) * out_scale[n] + out_shift[n] + R[m, n])
  // Each of out_center, out_scale, out_shift ([N]) may be null (0, 1, 0). R[m, n] is
  // residual_rows' row m (as c_rows: rows[i] = address of R[m0 + i, 0]), or 0 when it is empty.
  // act is max(v, 0) when out_relu (a NaN stays NaN), else the identity.
  const T* out_center = nullptr;
  const T* out_scale = nullptr;
  const T* out_shift = nullptr;
  std::function<void(int64_t m0, int64_t count, const T** rows)> residual_rows;
  bool out_relu = false;
  bool has_epilogue() const { return out_center || out_scale || out_shift || residual_rows || out_relu; }
  // B already in the engine's panel layout (PackedBLayout below, for this product's reduction
  // length and N), for one B multiplied by many A's (the Winograd products): pack_b is then
  // not called, and threads split the product by rows.
  const T* prepacked_b = nullptr;
  // How much packing an element of B costs against reading one of A, for splitting the
  // product between threads (a row split repeats B's packing in every thread): above 1 for a
  // pack_b that assembles short runs (the im2col of a convolution over few channels).
  double b_pack_cost = 1;
};

// Where each element of a [rows x N] B goes in the panel layout run_indirect_gemm reads
// through IndirectGemm::prepacked_b, for a product whose reduction is one segment of `rows`
// (segments = 1, segment_len = rows). Columns past N, up to a whole panel, must hold zeros
// (zero_padding writes them).
template <typename T>
class PackedBLayout {
 public:
  PackedBLayout(int64_t rows, int64_t N);
  int64_t size() const { return size_; }  // elements
  int64_t panel_width() const { return width_; }
  // offset of B[k, n]; columns n .. n + run - 1 follow it contiguously while they stay in n's
  // panel (run = panel_width() - n % panel_width())
  int64_t offset(int64_t k, int64_t n) const {
    return row_start_[static_cast<size_t>(k)] + (n / width_) * panel_stride_[static_cast<size_t>(k)] + n % width_;
  }
  void zero_padding(T* base) const;  // the columns past N of the last panel, in every row

 private:
  int64_t N_, width_, size_ = 0;
  std::vector<int64_t> row_start_, panel_stride_;  // per row k of B
};

template <typename T>
void run_indirect_gemm(const IndirectGemm<T>& problem);

// A pack_b for a B stored transposed (a weight read along its rows):
//   *dst.at(k, j) = scale * src[j * ld + k] for k < kc, j < nc.
template <typename T>
void pack_transposed(const T* src, int64_t ld, int64_t kc, int64_t nc, T scale, const PanelWriter<T>& dst);

}  // namespace kernels::cpu
