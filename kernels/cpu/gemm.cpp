// The GEMM engine behind gemm() and the convolutions (see gemm.h for the contract).
//
// Structure (Goto/BLIS): the reduction is cut into blocks of about kBlockK; B is packed into
// kTileCols-wide column panels (contiguous, 64-byte aligned; a block's panel, 32 KiB, stays
// in L1), and the micro-kernel sweeps kTileRows-row tiles down a block of rows of A (which
// stays in L2), holding a kTileRows x kTileCols tile of C in registers. A is not packed when
// its rows are contiguous: the kernel broadcasts its elements straight from the row addresses
// the caller supplied, which is what lets a convolution read its input pixels in place (an
// "indirect GEMM"); strided rows (a transposed A) are packed block by block.
//
// Threads (OpenMP) each take a band of C, of rows or of columns, whichever keeps the busiest
// thread shortest (split_by_columns), and run the blocked loops on their own buffers, so they
// never wait on each other.
#include "kernels/cpu/gemm.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/simd.h"
#if defined(__AVX512F__)
// GCC 12 warns about its own intrinsics (they start from a deliberately undefined vector).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

namespace kernels::cpu {
namespace {

// ---- vectors (simd.h) ----
using simd::kLanes;
using simd::kVectorBytes;
using simd::Simd;

// Unaligned access (rows of C); memcpy compiles to one unaligned vector move.
template <typename Vec, typename T>
Vec load_unaligned(const T* p) {
  Vec v;
  std::memcpy(&v, p, sizeof(Vec));
  return v;
}
template <typename Vec, typename T>
void store_unaligned(T* p, const Vec& v) {
  std::memcpy(p, &v, sizeof(Vec));
}

// Register tile: kTileRows x kTileVectors accumulators (24 of the 32 AVX-512 registers, 12 of
// the 16 AVX ones), plus the B vectors and one broadcast.
constexpr int kTileRows = 6;
constexpr int kTileVectors = kVectorBytes == 64 ? 4 : 2;
template <typename T> constexpr int kTileCols = kTileVectors * kLanes<T>;

// Cache blocking: a kBlockK x kTileCols panel of B fills 32 KiB of the 48 KiB L1; a
// kBlockRows-row block of A (with its taps) stays in L2 while the panels stream past it.
template <typename T>
constexpr int64_t kBlockK = std::min<int64_t>(256, 32768 / (kTileCols<T> * sizeof(T)));
constexpr int64_t kBlockRows = 24 * kTileRows;
// With a packed (strided) A, taller blocks: each row of the stored matrix (a pixel of dy) is
// then copied whole in one pass, and the packed block still fits L2.
constexpr int64_t kBlockRowsPackedA = 86 * kTileRows;
// Largest B (bytes per thread) packed whole, up front, rather than one reduction block at a time.
constexpr int64_t kWholePackedB = int64_t{8} << 20;
// Data up to this size (bytes, half an L2) is assumed to stay in cache while it is reused.
constexpr int64_t kCacheResident = int64_t{512} << 10;
// Elements of a strided A requested from memory ahead of their packing.
constexpr int64_t kPrefetchAhead = 8;
// Below this many flops a product runs on one thread: forking would cost more than it saves.
constexpr double kMinParallelFlops = 4e6;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// ---- the micro-kernel ----
template <typename T>
struct TileArgs {
  int64_t pieces = 0, piece_len = 0;  // the reduction: pieces x piece_len
  const T* const* a = nullptr;        // a[i * a_ld + p] + a_offset: row i of piece p, contiguous
  const T* const* next_a = nullptr;   // the same for the next tile, prefetched; or null
  const T* a_panel = nullptr;         // or A packed: element c of row i at a_panel[c * a_panel_ld + i]
  int64_t a_panel_ld = 0;
  int64_t a_ld = 0, a_offset = 0;
  const T* b = nullptr;               // pieces * piece_len rows of kTileCols, packed
  T* const* c = nullptr;              // c[i] + c_col: row i of the C tile
  int64_t c_col = 0;
  int rows = 0, cols = 0;             // the valid part of the tile
  const T* init = nullptr;            // kTileCols starting values (the bias), or null for zero
  bool add = false;                   // C += tile instead of C = tile
  // The last reduction block of a product with an epilogue: the problem's epilogue is applied
  // to each element as it is stored (residual rows r[i] + c_col, or r null).
  const IndirectGemm<T>* epilogue = nullptr;
  const T* const* r = nullptr;
};

// The epilogue of g (gemm.h) on one finished element v of column n; residual: R[m, n] or null.
template <typename T>
inline T finish_element(const IndirectGemm<T>& g, int64_t n, T v, const T* residual) {
  if (g.out_center) v -= g.out_center[n];
  if (g.out_scale) v *= g.out_scale[n];
  if (g.out_shift) v += g.out_shift[n];
  if (residual) v += *residual;
  if (g.out_relu) v = v < T(0) ? T(0) : v;
  return v;
}

// acc[i][:] += A[i, c] * B[c, :] for one element c of the reduction; a(i) reads A[i, c].
template <typename T, typename Vec, typename ReadA>
inline void rank1_update(Vec (&acc)[kTileRows][kTileVectors], const T* b, ReadA a) {
  constexpr int L = kLanes<T>;
  Vec bv[kTileVectors];
  for (int j = 0; j < kTileVectors; ++j) bv[j] = *reinterpret_cast<const Vec*>(b + j * L);
  for (int i = 0; i < kTileRows; ++i) {
    T av = a(i);
    for (int j = 0; j < kTileVectors; ++j) acc[i][j] += av * bv[j];
  }
}

// C tile = init + sum over pieces p, elements c of A[i, p, c] * B[p, c, :]. kPanelA: A comes
// packed in t.a_panel; otherwise its rows are read in place through t.a.
template <typename T, bool kPanelA>
void micro_kernel(const TileArgs<T>& t) {
  using Vec = typename Simd<T>::Vec;
  constexpr int MR = kTileRows, NV = kTileVectors, L = kLanes<T>, NR = kTileCols<T>;
  Vec acc[MR][NV];
  for (int j = 0; j < NV; ++j) {
    Vec v = t.init ? *reinterpret_cast<const Vec*>(t.init + j * L) : Vec{};
    for (int i = 0; i < MR; ++i) acc[i][j] = v;
  }
  // Start fetching the C tile (read-for-ownership even when only written) and, piece by
  // piece, the next tile's rows of A: both would otherwise stall on memory.
  for (int i = 0; i < MR; ++i) {
    if (i >= t.rows) break;
    for (int j = 0; j < NV; ++j) __builtin_prefetch(t.c[i] + t.c_col + j * L, 1);
  }
  const T* b = t.b;
  if constexpr (kPanelA) {
    const T* a = t.a_panel;
    for (int64_t c = 0; c < t.pieces * t.piece_len; ++c, b += NR, a += t.a_panel_ld)
      rank1_update<T>(acc, b, [a](int i) { return a[i]; });
  } else {
    for (int64_t p = 0; p < t.pieces; ++p) {
      const T* a[MR];
      for (int i = 0; i < MR; ++i) a[i] = t.a[i * t.a_ld + p] + t.a_offset;
      if (t.next_a) {
        for (int i = 0; i < MR; ++i) {
          const T* next = t.next_a[i * t.a_ld + p] + t.a_offset;
          for (int64_t c = 0; c < t.piece_len; c += 64 / sizeof(T)) __builtin_prefetch(next + c);
        }
      }
      for (int64_t c = 0; c < t.piece_len; ++c, b += NR)
        rank1_update<T>(acc, b, [&a, c](int i) { return a[i][c]; });
    }
  }
  if (t.epilogue) {  // rare (inference fusions): through a row buffer, element by element
    for (int i = 0; i < MR; ++i) {
      if (i >= t.rows) break;
      T* crow = t.c[i] + t.c_col;
      const T* rrow = t.r ? t.r[i] + t.c_col : nullptr;
      alignas(64) T tile_row[NR];
      for (int j = 0; j < NV; ++j) *reinterpret_cast<Vec*>(tile_row + j * L) = acc[i][j];
      for (int n = 0; n < t.cols; ++n)
        crow[n] = finish_element(*t.epilogue, t.c_col + n, t.add ? crow[n] + tile_row[n] : tile_row[n],
                                 rrow ? rrow + n : nullptr);
    }
    return;
  }
  // Stores: indices stay compile-time constants so that acc lives in registers throughout.
  for (int i = 0; i < MR; ++i) {
    if (i >= t.rows) break;
    T* crow = t.c[i] + t.c_col;
    if (t.cols == NR) {
      for (int j = 0; j < NV; ++j) {
        T* dst = crow + j * L;
        store_unaligned(dst, t.add ? load_unaligned<Vec>(dst) + acc[i][j] : acc[i][j]);
      }
    } else {
      alignas(64) T tile_row[NR];
      for (int j = 0; j < NV; ++j) *reinterpret_cast<Vec*>(tile_row + j * L) = acc[i][j];
      for (int n = 0; n < t.cols; ++n) crow[n] = t.add ? crow[n] + tile_row[n] : tile_row[n];
    }
  }
}

// A block of the reduction: segments [s0, s1), elements [c0, c0 + len) of each.
struct ReductionBlock {
  int64_t s0, s1, c0, len;
};

// Whole segments per block when they are short (a 3x3 convolution over 64 channels: two taps
// per block), else each segment cut into near-equal chunks.
std::vector<ReductionBlock> reduction_blocks(int64_t segments, int64_t len, int64_t max_len) {
  std::vector<ReductionBlock> blocks;
  if (len <= max_len) {
    int64_t count = ceil_div(segments, std::max<int64_t>(1, max_len / len));
    for (int64_t b = 0; b < count; ++b)
      blocks.push_back({segments * b / count, segments * (b + 1) / count, 0, len});
  } else {
    int64_t chunks = ceil_div(len, max_len);
    for (int64_t s = 0; s < segments; ++s)
      for (int64_t ch = 0; ch < chunks; ++ch)
        blocks.push_back({s, s + 1, len * ch / chunks, len * (ch + 1) / chunks - len * ch / chunks});
  }
  return blocks;
}

// Packs rows [0, mc) of a strided A (element c of row i, piece p at
// rows[i * ld + p][(blk.c0 + c) * step]) for reduction block blk, element-major: element
// (p, c) of row i at packed[(p * blk.len + c) * tiled_rows + i], rows past mc zero. When the
// rows are adjacent in memory (a transposed matrix; the columns of dy), each element is one
// contiguous copy across all rows, following the memory's own layout.
template <typename T>
void pack_strided_a(const T* const* rows, int64_t ld, int64_t mc, int64_t tiled_rows,
                    const ReductionBlock& blk, int64_t step, T* packed) {
  for (int64_t p = 0; p < blk.s1 - blk.s0; ++p) {
    const T* first = rows[p] + blk.c0 * step;
    bool adjacent = true;
    for (int64_t i = 1; i < mc; ++i) adjacent = adjacent && rows[i * ld + p] + blk.c0 * step == first + i;
    for (int64_t c = 0; c < blk.len; ++c) {
      T* dst = packed + (p * blk.len + c) * tiled_rows;
      if (adjacent && c + kPrefetchAhead < blk.len) {
        for (int64_t i = 0; i < mc; i += 64 / sizeof(T)) __builtin_prefetch(first + (c + kPrefetchAhead) * step + i);
      }
      if (adjacent) {
        std::memcpy(dst, first + c * step, mc * sizeof(T));
      } else {
        for (int64_t i = 0; i < mc; ++i) dst[i] = rows[i * ld + p][(blk.c0 + c) * step];
      }
      std::fill(dst + mc, dst + tiled_rows, T(0));
    }
  }
}

// Per-thread scratch that only grows: OpenMP keeps its threads, so steady-state products
// allocate nothing (and take no page faults on fresh memory).
template <typename T>
T* scratch(std::unique_ptr<T, decltype(&std::free)>& buffer, int64_t& capacity, int64_t n) {
  if (n > capacity) {
    const size_t bytes = static_cast<size_t>(round_up(n * static_cast<int64_t>(sizeof(T)), 64));
    buffer.reset(static_cast<T*>(std::aligned_alloc(64, bytes)));
    if (!buffer) throw std::bad_alloc();
    capacity = n;
  }
  return buffer.get();
}

template <typename T>
struct Scratch {
  std::unique_ptr<T, decltype(&std::free)> packed_b{nullptr, &std::free}, packed_a{nullptr, &std::free},
      bias{nullptr, &std::free};
  std::unique_ptr<const T*, decltype(&std::free)> a_table{nullptr, &std::free};
  std::unique_ptr<T*, decltype(&std::free)> c_table{nullptr, &std::free};
  std::unique_ptr<const T*, decltype(&std::free)> r_table{nullptr, &std::free};
  int64_t packed_b_size = 0, packed_a_size = 0, bias_size = 0, a_table_size = 0, c_table_size = 0,
          r_table_size = 0;
};

// Two loop orders (see run_part). Packing B whole lets each block of C rows be finished
// before the next, but streams all of B once per block of rows; packing it one reduction block
// at a time sweeps all of C once per reduction block. Estimates the bytes each moves beyond
// what stays in cache, and picks the cheaper (whole only where the buffer stays modest).
bool pack_b_whole(int64_t b_bytes, int64_t c_bytes, int64_t reduction_blocks, int64_t row_blocks) {
  if (b_bytes > kWholePackedB) return false;
  const double whole = b_bytes <= kCacheResident ? 0.0 : double(b_bytes) * (1 + row_blocks);
  const double by_block = c_bytes <= kCacheResident ? 0.0 : 2.0 * c_bytes * (reduction_blocks - 1);
  return whole <= by_block;
}

// One thread's share: rows [m_begin, m_end) x columns [n_begin, n_end) of C.
//
// Two loop orders. Whole: all of this thread's B is packed once and each block of rows of C is
// finished before the next: its tiles stay in cache across the reduction blocks and A's row
// addresses are built once (convolution weights). By block: the reduction blocks are the
// outer loop and B is packed one block at a time (a backward-weight im2col over many pixels,
// whose C, the weight gradient, stays in cache anyway).
template <typename T>
void run_part(const IndirectGemm<T>& g, const std::vector<ReductionBlock>& blocks, int64_t m_begin,
              int64_t m_end, int64_t n_begin, int64_t n_end) {
  constexpr int MR = kTileRows, NR = kTileCols<T>;
  if (m_begin >= m_end || n_begin >= n_end) return;
  static thread_local Scratch<T> mem;
  const int64_t panels = ceil_div(n_end - n_begin, NR);
  const int64_t block_rows = g.a_step != 1 ? kBlockRowsPackedA : kBlockRows;
  const bool whole_b = g.prepacked_b ||
                       pack_b_whole(panels * g.segments * g.segment_len * NR * sizeof(T),
                                    (m_end - m_begin) * (n_end - n_begin) * sizeof(T),
                                    static_cast<int64_t>(blocks.size()), ceil_div(m_end - m_begin, block_rows));
  // offsets of each block's panels in the packed buffer (all blocks, or one at a time)
  std::vector<int64_t> block_offset(blocks.size(), 0);
  int64_t packed_size = 0;
  for (size_t bi = 0; bi < blocks.size(); ++bi) {
    const int64_t block_size = panels * (blocks[bi].s1 - blocks[bi].s0) * blocks[bi].len * NR;
    block_offset[bi] = whole_b ? packed_size : 0;
    packed_size = whole_b ? packed_size + block_size : std::max(packed_size, block_size);
  }
  T* packed_b = g.prepacked_b ? const_cast<T*>(g.prepacked_b)  // only read: pack_block is not called
                              : scratch(mem.packed_b, mem.packed_b_size, packed_size);
  T* bias = nullptr;  // this thread's columns of the bias, zero padded to whole panels
  if (g.bias) {
    bias = scratch(mem.bias, mem.bias_size, panels * NR);
    std::fill(bias, bias + panels * NR, T(0));
    std::copy(g.bias + n_begin, g.bias + n_end, bias);
  }
  const int64_t table_rows = round_up(block_rows, MR);
  // A's addresses: rows x (all segments when whole_b, else the widest block's)
  int64_t table_ld = 0;
  for (const ReductionBlock& blk : blocks) table_ld = std::max(table_ld, blk.s1 - blk.s0);
  if (whole_b) table_ld = g.segments;
  const T** a_table = scratch(mem.a_table, mem.a_table_size, table_rows * table_ld);
  T** c_table = scratch(mem.c_table, mem.c_table_size, table_rows);
  const bool epilogue = g.has_epilogue();
  const T** r_table = g.residual_rows ? scratch(mem.r_table, mem.r_table_size, table_rows) : nullptr;
  // C's rows (and the residual's) for rows [m0, m0 + mc)
  auto fill_c_table = [&](int64_t m0, int64_t mc) {
    g.c_rows(m0, mc, c_table);
    if (r_table) g.residual_rows(m0, mc, r_table);
  };
  // Strided A (a transposed operand; a column of dy in backward-weight) is packed block by
  // block (pack_strided_a): read in place it would cost a cache line per element.
  T* packed_a = nullptr;
  if (g.a_step != 1) {
    int64_t max_kc = 0;
    for (const ReductionBlock& blk : blocks) max_kc = std::max(max_kc, (blk.s1 - blk.s0) * blk.len);
    packed_a = scratch(mem.packed_a, mem.packed_a_size, table_rows * max_kc);
  }

  auto pack_block = [&](size_t bi) {
    const ReductionBlock& blk = blocks[bi];
    const int64_t kc = (blk.s1 - blk.s0) * blk.len;
    T* dst = packed_b + block_offset[bi];
    if ((n_end - n_begin) % NR != 0) {  // the last panel's columns past n_end stay zero
      T* last = dst + (panels - 1) * kc * NR;
      std::fill(last, last + kc * NR, T(0));
    }
    g.pack_b(blk.s0 * g.segment_len + blk.c0, kc, n_begin, n_end - n_begin, PanelWriter<T>{dst, NR, kc * NR});
  };
  // Addresses of rows [m0, m0 + mc) for segments [s0, s1), padded to whole tiles: rows past
  // the end re-read the last valid row (they are computed, not stored).
  auto fill_a_table = [&](int64_t m0, int64_t mc, int64_t s0, int64_t s1) {
    g.a_rows(m0, mc, s0, s1, a_table, table_ld);
    for (int64_t i = mc; i < round_up(mc, MR); ++i)
      std::copy_n(a_table + (mc - 1) * table_ld, s1 - s0, a_table + i * table_ld);
  };
  // All tiles of rows [0, mc) of the current C block for reduction block bi; the table
  // holds segment blk.s0 at column `first_column`.
  auto sweep = [&](size_t bi, int64_t mc, int64_t first_column) {
    const ReductionBlock& blk = blocks[bi];
    const int64_t pieces = blk.s1 - blk.s0, kc = pieces * blk.len, tiled_rows = round_up(mc, MR);
    TileArgs<T> t;
    t.pieces = pieces;
    t.piece_len = blk.len;
    t.add = bi > 0 || g.accumulate;
    const T* const* rows = a_table + first_column;
    t.a_ld = table_ld;
    t.a_offset = blk.c0;
    if (packed_a) pack_strided_a(rows, table_ld, mc, tiled_rows, blk, g.a_step, packed_a);
    for (int64_t p = 0; p < panels; ++p) {
      t.b = packed_b + block_offset[bi] + p * kc * NR;
      t.c_col = n_begin + p * NR;
      t.cols = static_cast<int>(std::min<int64_t>(NR, n_end - t.c_col));
      t.init = (bi == 0 && bias) ? bias + p * NR : nullptr;
      t.epilogue = epilogue && bi + 1 == blocks.size() ? &g : nullptr;
      for (int64_t i0 = 0; i0 < mc; i0 += MR) {
        t.c = c_table + i0;
        t.r = r_table ? r_table + i0 : nullptr;
        t.rows = static_cast<int>(std::min<int64_t>(MR, mc - i0));
        if (packed_a) {
          t.a_panel = packed_a + i0;
          t.a_panel_ld = tiled_rows;
          micro_kernel<T, true>(t);
        } else {
          t.a = rows + i0 * t.a_ld;
          t.next_a = i0 + MR < mc ? t.a + MR * t.a_ld : nullptr;
          micro_kernel<T, false>(t);
        }
      }
    }
  };

  if (whole_b) {
    if (!g.prepacked_b)
      for (size_t bi = 0; bi < blocks.size(); ++bi) pack_block(bi);
    for (int64_t m0 = m_begin; m0 < m_end; m0 += block_rows) {
      const int64_t mc = std::min(block_rows, m_end - m0);
      fill_a_table(m0, mc, 0, g.segments);
      fill_c_table(m0, mc);
      for (size_t bi = 0; bi < blocks.size(); ++bi) sweep(bi, mc, blocks[bi].s0);
    }
  } else {
    for (size_t bi = 0; bi < blocks.size(); ++bi) {
      pack_block(bi);
      for (int64_t m0 = m_begin; m0 < m_end; m0 += block_rows) {
        const int64_t mc = std::min(block_rows, m_end - m0);
        fill_a_table(m0, mc, blocks[bi].s0, blocks[bi].s1);
        fill_c_table(m0, mc);
        sweep(bi, mc, 0);
      }
    }
  }
}

// C = (accumulate ? C : 0) + bias, then the epilogue, when the reduction is empty: in
// threads, and a plain fill where C is simply zeroed (the phases of a strided convolution's
// backward-data that no tap reaches: three quarters of dx at stride 2).
template <typename T>
void fill_without_reduction(const IndirectGemm<T>& g) {
  const bool zeros = !g.accumulate && !g.bias && !g.has_epilogue();
  const int64_t blocks = ceil_div(g.M, kBlockRows);
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(1, kBlockRows * g.N));
  parallel_for(blocks, grain, [&](int64_t b_begin, int64_t b_end) {
    std::vector<T*> rows(static_cast<size_t>(kBlockRows));
    std::vector<const T*> residual(g.residual_rows ? rows.size() : 0);
    for (int64_t b = b_begin; b < b_end; ++b) {
      const int64_t m0 = b * kBlockRows, mc = std::min(kBlockRows, g.M - m0);
      g.c_rows(m0, mc, rows.data());
      if (zeros) {
        for (int64_t i = 0; i < mc; ++i) std::fill_n(rows[i], g.N, T(0));
        continue;
      }
      if (g.residual_rows) g.residual_rows(m0, mc, residual.data());
      for (int64_t i = 0; i < mc; ++i)
        for (int64_t n = 0; n < g.N; ++n) {
          T v = (g.accumulate ? rows[i][n] : T(0)) + (g.bias ? g.bias[n] : T(0));
          rows[i][n] = g.has_epilogue() ? finish_element(g, n, v, g.residual_rows ? residual[i] + n : nullptr) : v;
        }
    }
  });
}

// Whether threads should split C by columns rather than rows: the estimated time of the
// busiest thread, per element of the reduction, in multiply-adds: its whole register tiles,
// the packing of its columns of B and the reading of its rows of A from memory (about
// kMoveCost multiply-adds per element each, times b_pack_cost for B). A row split repeats B's
// packing in every thread, a column split A's reading.
bool split_by_columns(int64_t row_tiles, int64_t col_tiles, int threads, int tile_rows, int tile_cols,
                      double b_pack_cost) {
  constexpr double kMoveCost = 4;
  if (col_tiles < threads) return false;
  auto busiest = [&](int64_t rows, int64_t cols) {
    return double(rows) * cols + kMoveCost * (rows + b_pack_cost * cols);
  };
  const int64_t all_rows = row_tiles * tile_rows, all_cols = col_tiles * tile_cols;
  return busiest(all_rows, ceil_div(col_tiles, threads) * tile_cols) <=
         busiest(ceil_div(row_tiles, threads) * tile_rows, all_cols);
}

// A long reduction into a small C (a weight gradient: [K x RSC] summed over every output
// pixel) is cut into kReductionParts parts, each summed into a C of its own and the parts
// then added in order: each part packs only its share of A and B, where a split of C's rows
// or columns would have every thread pack all of one of them. The parts do not depend on
// the number of threads (up to kReductionParts), so neither do the sums.
constexpr int kReductionParts = 4;
constexpr int64_t kSmallC = int64_t{1} << 19;  // elements

template <typename T>
bool split_reduction(const IndirectGemm<T>& g, size_t blocks) {
  return !g.prepacked_b && g.M * g.N <= kSmallC && blocks >= 4 * static_cast<size_t>(kReductionParts);
}

template <typename T>
void run_split_reduction(const IndirectGemm<T>& g, const std::vector<ReductionBlock>& blocks, int threads) {
  const int parts = std::max(kReductionParts, threads);  // more than 4 threads: more parts
  const int64_t size = g.M * g.N;
  static thread_local std::unique_ptr<T, decltype(&std::free)> buffer{nullptr, &std::free};
  static thread_local int64_t capacity = 0;
  T* partial = scratch(buffer, capacity, parts * size);
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int p = 0; p < parts; ++p) {
    IndirectGemm<T> part = g;  // the same operands, into this part's C, without bias or epilogue
    T* out = partial + p * size;
    const int64_t N = g.N;
    part.c_rows = [out, N](int64_t m0, int64_t count, T** rows) {
      for (int64_t i = 0; i < count; ++i) rows[i] = out + (m0 + i) * N;
    };
    part.accumulate = false;
    part.bias = nullptr;
    part.out_center = part.out_scale = part.out_shift = nullptr;
    part.residual_rows = nullptr;
    part.out_relu = false;
    const std::vector<ReductionBlock> mine(blocks.begin() + static_cast<int64_t>(blocks.size()) * p / parts,
                                           blocks.begin() + static_cast<int64_t>(blocks.size()) * (p + 1) / parts);
    run_part(part, mine, 0, g.M, 0, g.N);
  }
  // C = (accumulate ? C : 0) + bias + the parts in order, then the epilogue
  const int64_t row_blocks = ceil_div(g.M, kBlockRows);
  parallel_for(row_blocks, 1, [&](int64_t b_begin, int64_t b_end) {
    std::vector<T*> rows(static_cast<size_t>(kBlockRows));
    std::vector<const T*> residual(g.residual_rows ? rows.size() : 0);
    for (int64_t b = b_begin; b < b_end; ++b) {
      const int64_t m0 = b * kBlockRows, mc = std::min(kBlockRows, g.M - m0);
      g.c_rows(m0, mc, rows.data());
      if (g.residual_rows) g.residual_rows(m0, mc, residual.data());
      for (int64_t i = 0; i < mc; ++i) {
        T* c = rows[i];
        const T* first = partial + (m0 + i) * g.N;
        for (int64_t n = 0; n < g.N; ++n) {
          T v = first[n];
          for (int p = 1; p < parts; ++p) v += first[p * size + n];
          if (g.bias) v = g.bias[n] + v;
          if (g.accumulate) v = c[n] + v;
          c[n] = g.has_epilogue() ? finish_element(g, n, v, g.residual_rows ? residual[i] + n : nullptr) : v;
        }
      }
    }
  });
}

}  // namespace

template <typename T>
void run_indirect_gemm(const IndirectGemm<T>& g) {
  constexpr int MR = kTileRows, NR = kTileCols<T>;
  if (g.M <= 0 || g.N <= 0) return;
  if (g.segments <= 0 || g.segment_len <= 0) return fill_without_reduction(g);
  const std::vector<ReductionBlock> blocks = reduction_blocks(g.segments, g.segment_len, kBlockK<T>);
  const int64_t row_tiles = ceil_div(g.M, MR), col_tiles = ceil_div(g.N, NR);
  const double flops = 2.0 * g.M * g.N * g.segments * g.segment_len;
  int threads = 1;
  if (flops >= kMinParallelFlops && !omp_in_parallel())
    threads = static_cast<int>(std::min<int64_t>(num_threads(), std::max(row_tiles, col_tiles)));
  // (on one thread too, so that the sums do not depend on the thread count)
  if (split_reduction(g, blocks.size())) return run_split_reduction(g, blocks, threads);
  if (threads == 1) return run_part(g, blocks, 0, g.M, 0, g.N);
  // a prepacked B is laid out for all columns: rows are split
  const bool split_columns = !g.prepacked_b && split_by_columns(row_tiles, col_tiles, threads, MR, NR, g.b_pack_cost);
#pragma omp parallel num_threads(threads)
  {
    const int64_t part = omp_get_thread_num();
    const int64_t tiles = split_columns ? col_tiles : row_tiles;
    const int64_t tile = split_columns ? NR : MR, extent = split_columns ? g.N : g.M;
    const int64_t begin = std::min(extent, tiles * part / threads * tile);
    const int64_t end = std::min(extent, tiles * (part + 1) / threads * tile);
    if (split_columns) run_part(g, blocks, 0, g.M, begin, end);
    else run_part(g, blocks, begin, end, 0, g.N);
  }
}

#if defined(__AVX512F__)
namespace {
// dst[i * dst_ld + j] = scale * src[j * ld + i] for a 16 x 16 block, through registers.
void transpose_16x16(const float* src, int64_t ld, float* dst, int64_t dst_ld, float scale) {
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * ld);
  for (int i = 0; i < 8; ++i) {  // interleave elements of row pairs
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {  // then element pairs
    __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
    __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
    r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  for (int i = 0; i < 2; ++i) {  // then 128-bit lanes, twice
    for (int j = 0; j < 4; ++j) {
      t[8 * i + j] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + j + 4], 0x88);
      t[8 * i + j + 4] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + j + 4], 0xdd);
    }
  }
  const __m512 factor = _mm512_set1_ps(scale);
  for (int j = 0; j < 8; ++j) {
    _mm512_storeu_ps(dst + j * dst_ld, _mm512_mul_ps(factor, _mm512_shuffle_f32x4(t[j], t[j + 8], 0x88)));
    _mm512_storeu_ps(dst + (j + 8) * dst_ld, _mm512_mul_ps(factor, _mm512_shuffle_f32x4(t[j], t[j + 8], 0xdd)));
  }
}
}  // namespace
#endif

template <typename T>
void pack_transposed(const T* src, int64_t ld, int64_t kc, int64_t nc, T scale, const PanelWriter<T>& dst) {
  int64_t j0 = 0;
#if defined(__AVX512F__)
  // 16 x 16 blocks (a panel is a whole number of them wide), in registers: a scalar transpose
  // would cost about a tenth of a forward convolution's time where the batch is small
  if constexpr (std::is_same_v<T, float>) {
    for (; j0 + 16 <= nc; j0 += 16) {
      int64_t k0 = 0;
      for (; k0 + 16 <= kc; k0 += 16) transpose_16x16(src + j0 * ld + k0, ld, dst.at(k0, j0), dst.width, scale);
      for (; k0 < kc; ++k0)
        for (int64_t j = j0; j < j0 + 16; ++j) *dst.at(k0, j) = scale * src[j * ld + k0];
    }
  }
#endif
  for (int64_t j = j0; j < nc; ++j) {
    const T* row = src + j * ld;
    T* out = dst.at(0, j);
    for (int64_t k = 0; k < kc; ++k) out[k * dst.width] = scale * row[k];
  }
}

template <typename T>
PackedBLayout<T>::PackedBLayout(int64_t rows, int64_t N)
    : N_(N), width_(kTileCols<T>), row_start_(static_cast<size_t>(rows)), panel_stride_(static_cast<size_t>(rows)) {
  // as run_part lays out a whole B of one segment over all columns
  const int64_t panels = ceil_div(N, width_);
  for (const ReductionBlock& b : reduction_blocks(1, rows, kBlockK<T>)) {
    for (int64_t k = b.c0; k < b.c0 + b.len; ++k) {
      row_start_[static_cast<size_t>(k)] = size_ + (k - b.c0) * width_;
      panel_stride_[static_cast<size_t>(k)] = b.len * width_;
    }
    size_ += panels * b.len * width_;
  }
}

template <typename T>
void PackedBLayout<T>::zero_padding(T* base) const {
  if (N_ % width_ == 0) return;
  const int64_t last = N_ / width_ * width_;
  for (size_t k = 0; k < row_start_.size(); ++k)
    std::fill(base + offset(static_cast<int64_t>(k), last) + N_ % width_, base + offset(static_cast<int64_t>(k), last) + width_,
              T(0));
}

template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (beta != T(0) && beta != T(1)) {
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) C[m * ldc + n] *= beta;
  }
  if (K <= 0 || alpha == T(0)) {
    if (beta == T(0)) {  // overwrite, even where C held NaN
      for (int64_t m = 0; m < M; ++m) std::fill(C + m * ldc, C + m * ldc + N, T(0));
    }
    return;
  }
  IndirectGemm<T> g;
  g.M = M;
  g.N = N;
  g.segments = 1;
  g.segment_len = K;
  g.a_step = trans_a ? lda : 1;  // op(A)[m, k] = A[k * lda + m]: row m starts at A + m
  g.a_rows = [=](int64_t m0, int64_t count, int64_t, int64_t, const T** rows, int64_t ld) {
    for (int64_t i = 0; i < count; ++i) rows[i * ld] = trans_a ? A + m0 + i : A + (m0 + i) * lda;
  };
  g.pack_b = [=](int64_t k0, int64_t kc, int64_t n0, int64_t nc, const PanelWriter<T>& dst) {
    if (!trans_b) {
      for (int64_t k = 0; k < kc; ++k) {
        const T* src = B + (k0 + k) * ldb + n0;
        for (int64_t j = 0, run; j < nc; j += run) {
          run = std::min(dst.run(j), nc - j);
          T* out = dst.at(k, j);
          for (int64_t e = 0; e < run; ++e) out[e] = alpha * src[j + e];
        }
      }
    } else {  // op(B)[k, n] = B[n * ldb + k]
      pack_transposed(B + n0 * ldb + k0, ldb, kc, nc, alpha, dst);
    }
  };
  g.c_rows = [=](int64_t m0, int64_t count, T** rows) {
    for (int64_t i = 0; i < count; ++i) rows[i] = C + (m0 + i) * ldc;
  };
  g.accumulate = beta != T(0);
  run_indirect_gemm(g);
}

template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t,
                          const float*, int64_t, float, float*, int64_t);
template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t,
                           const double*, int64_t, double, double*, int64_t);
template void run_indirect_gemm<float>(const IndirectGemm<float>&);
template void run_indirect_gemm<double>(const IndirectGemm<double>&);
template class PackedBLayout<float>;
template class PackedBLayout<double>;
template void pack_transposed<float>(const float*, int64_t, int64_t, int64_t, float, const PanelWriter<float>&);
template void pack_transposed<double>(const double*, int64_t, int64_t, int64_t, double, const PanelWriter<double>&);

}  // namespace kernels::cpu
