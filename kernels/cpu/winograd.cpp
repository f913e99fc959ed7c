// Winograd F(m x m, 3 x 3) convolution passes on the CPU: see winograd.h.
//
// Data flow of one group of tiles (all buffers per call, reused across calls):
//   input tiles  --B^T d B-->  U[xi][tile][C]      (xi: the (m+2)^2 points of the transform)
//   weights      --G g G^T-->  B_xi[C][K], packed once per call in the GEMM's panel layout
//   U[xi] x B_xi             = Mo[xi][tile][K]     ((m+2)^2 independent GEMMs)
//   Mo           --A^T M A-->  output tiles, with the epilogue (bias, batch norm, residual, ReLU)
// Backward-weight: U as above and Z[xi][tile][K] = A dy A^T, then dV[xi][K][C] += Z[xi]^T U[xi]
// over all groups, and dw = G^T dV G.
#include "kernels/cpu/winograd.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/simd.h"

namespace kernels::cpu {
namespace {

// ---- vectors over channels (simd.h) ----
using simd::kLanes;
using simd::Vec;

// A whole vector at p, or n < kLanes elements (the rest of the vector zero), and back. The
// tile transforms pick one or the other per chunk of channels (kFull below), so that whole
// vectors load and store straight from registers.
template <typename T>
inline Vec<T> load_full(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <typename T>
inline Vec<T> load_part(const T* p, int n) {
  Vec<T> v{};
  std::memcpy(&v, p, static_cast<size_t>(n) * sizeof(T));
  return v;
}
template <bool kFull, typename T>
inline Vec<T> load(const T* p, int n) {
  if constexpr (kFull) return load_full(p);
  else return load_part(p, n);
}
template <bool kFull, typename T>
inline void store(T* p, const Vec<T>& v, int n) {
  if constexpr (kFull) std::memcpy(p, &v, sizeof v);
  else std::memcpy(p, &v, static_cast<size_t>(n) * sizeof(T));
}
// f(std::true_type or std::false_type, c0, n) for each chunk [c0, c0 + n) of `count` channels
template <typename T, typename F>
inline void for_each_chunk(int64_t count, F&& f) {
  constexpr int L = kLanes<T>;
  int64_t c0 = 0;
  for (; c0 + L <= count; c0 += L) f(std::true_type{}, c0, L);
  if (c0 < count) f(std::false_type{}, c0, static_cast<int>(count - c0));
}

template <typename V>
inline V relu_keeping_nan(V v) {
  const V zero{};
  return v < zero ? zero : v;
}

// ---- the 1-D transforms of F(M, 3), on vectors (or scalars) d[0], d[ds], d[2 ds], ... ----
// input:        o = B^T d      (A = M + 2 values in, A out)
// output:       y = A^T m      (A in, M out)
// grad_output:  z = A dy       (M in, A out), the transpose of output
// filter:       o = G g        (3 in, A out)
// grad_filter:  r = G^T v      (A in, 3 out), the transpose of filter
template <int M> struct F;

template <> struct F<2> {
  static constexpr int A = 4;
  template <typename V> static void input(const V* d, int ds, V* o, int os) {
    const V d0 = d[0], d1 = d[ds], d2 = d[2 * ds], d3 = d[3 * ds];
    o[0] = d0 - d2;
    o[os] = d1 + d2;
    o[2 * os] = d2 - d1;
    o[3 * os] = d1 - d3;
  }
  template <typename V> static void output(const V* m, int ms, V* y, int ys) {
    const V m1 = m[ms], m2 = m[2 * ms];
    y[0] = m[0] + m1 + m2;
    y[ys] = m1 - m2 - m[3 * ms];
  }
  template <typename V> static void grad_output(const V* d, int ds, V* z, int zs) {
    const V d0 = d[0], d1 = d[ds];
    z[0] = d0;
    z[zs] = d0 + d1;
    z[2 * zs] = d0 - d1;
    z[3 * zs] = -d1;
  }
  template <typename V, typename S> static void filter(const V* g, int gs, V* o, int os) {
    const V g0 = g[0], g1 = g[gs], g2 = g[2 * gs];
    o[0] = g0;
    o[os] = (g0 + g1 + g2) * S(0.5);
    o[2 * os] = (g0 - g1 + g2) * S(0.5);
    o[3 * os] = g2;
  }
  template <typename V, typename S> static void grad_filter(const V* v, int vs, V* r, int rs) {
    const V v1 = v[vs], v2 = v[2 * vs];
    r[0] = v[0] + (v1 + v2) * S(0.5);
    r[rs] = (v1 - v2) * S(0.5);
    r[2 * rs] = (v1 + v2) * S(0.5) + v[3 * vs];
  }
};

// F(4, 3) on the points 0, 1, -1, 2, -1/2 and infinity rather than the usual 0, +-1, +-2
// (Lavin's): the same cost, and about 2.5 times less float32 rounding error, because the
// transforms' coefficients are smaller (Barabasz et al., "Error Analysis and Improving the
// Accuracy of Winograd Convolution for Deep Neural Networks", 2020). The matrices follow from
// the points by Toom-Cook (tests/test_winograd.cpp checks the result against the direct
// algorithm to float64 rounding):
//   A^T = [1 1  1 1    1   0]   G = [    1     0     0]   B^T = [1  3/2   -2 -3/2  1 0]
//         [0 1 -1 2 -1/2   0]       [ -1/3  -1/3  -1/3]         [0   -1 -5/2 -1/2  1 0]
//         [0 1  1 4  1/4   0]       [  1/3  -1/3   1/3]         [0    1  1/2 -5/2  1 0]
//         [0 1 -1 8 -1/8   1]       [ 1/15  2/15  4/15]         [0 -1/2   -1  1/2  1 0]
//                                   [-16/15 8/15 -4/15]         [0    2   -1   -2  1 0]
//                                   [    0     0     1]         [0    1  3/2   -2 -3/2 1]
template <> struct F<4> {
  static constexpr int A = 6;
  template <typename V> static void input(const V* d, int ds, V* o, int os) {
    using S = decltype(d[0][0] + 0);
    const V d0 = d[0], d1 = d[ds], d2 = d[2 * ds], d3 = d[3 * ds], d4 = d[4 * ds], d5 = d[5 * ds];
    o[0] = (d0 + d4) + (d1 - d3) * S(1.5) - d2 * S(2);
    o[os] = (d4 - d1) - d2 * S(2.5) - d3 * S(0.5);
    o[2 * os] = (d4 + d1) + d2 * S(0.5) - d3 * S(2.5);
    o[3 * os] = (d4 - d2) + (d3 - d1) * S(0.5);
    o[4 * os] = (d4 - d2) + (d1 - d3) * S(2);
    o[5 * os] = (d1 + d5) + (d2 - d4) * S(1.5) - d3 * S(2);
  }
  template <typename V> static void output(const V* m, int ms, V* y, int ys) {
    using S = decltype(m[0][0] + 0);
    const V m1 = m[ms], m2 = m[2 * ms], m3 = m[3 * ms], m4 = m[4 * ms];
    const V s12 = m1 + m2, d12 = m1 - m2;
    y[0] = m[0] + s12 + m3 + m4;
    y[ys] = d12 + m3 * S(2) - m4 * S(0.5);
    y[2 * ys] = s12 + m3 * S(4) + m4 * S(0.25);
    y[3 * ys] = d12 + m3 * S(8) - m4 * S(0.125) + m[5 * ms];
  }
  template <typename V> static void grad_output(const V* d, int ds, V* z, int zs) {
    using S = decltype(d[0][0] + 0);
    const V d0 = d[0], d1 = d[ds], d2 = d[2 * ds], d3 = d[3 * ds];
    const V s02 = d0 + d2, s13 = d1 + d3;
    z[0] = d0;
    z[zs] = s02 + s13;
    z[2 * zs] = s02 - s13;
    z[3 * zs] = d0 + d1 * S(2) + d2 * S(4) + d3 * S(8);
    z[4 * zs] = d0 - d1 * S(0.5) + d2 * S(0.25) - d3 * S(0.125);
    z[5 * zs] = d3;
  }
  template <typename V, typename S> static void filter(const V* g, int gs, V* o, int os) {
    const V g0 = g[0], g1 = g[gs], g2 = g[2 * gs];
    o[0] = g0;
    o[os] = (g0 + g1 + g2) * S(-1.0 / 3);
    o[2 * os] = (g0 - g1 + g2) * S(1.0 / 3);
    o[3 * os] = (g0 + g1 * S(2) + g2 * S(4)) * S(1.0 / 15);
    o[4 * os] = (g0 * S(-16) + g1 * S(8) - g2 * S(4)) * S(1.0 / 15);
    o[5 * os] = g2;
  }
  template <typename V, typename S> static void grad_filter(const V* v, int vs, V* r, int rs) {
    const V v1 = v[vs], v2 = v[2 * vs], v3 = v[3 * vs], v4 = v[4 * vs];
    r[0] = v[0] + (v2 - v1) * S(1.0 / 3) + (v3 - v4 * S(16)) * S(1.0 / 15);
    r[rs] = (v1 + v2) * S(-1.0 / 3) + (v3 * S(2) + v4 * S(8)) * S(1.0 / 15);
    r[2 * rs] = (v2 - v1) * S(1.0 / 3) + (v3 * S(4) - v4 * S(4)) * S(1.0 / 15) + v[5 * vs];
  }
};

// ---- the 2-D transforms: a 1-D transform down the columns, then along the rows ----
template <typename T, int M>
void input_2d(const Vec<T> (&d)[M + 2][M + 2], Vec<T> (&out)[(M + 2) * (M + 2)]) {
  constexpr int A = M + 2;
  Vec<T> tmp[A][A];
  for (int j = 0; j < A; ++j) F<M>::input(&d[0][j], A, &tmp[0][j], A);
  for (int i = 0; i < A; ++i) F<M>::input(&tmp[i][0], 1, &out[i * A], 1);
}
template <typename T, int M>
void output_2d(const Vec<T> (&m)[(M + 2) * (M + 2)], Vec<T> (&y)[M][M]) {
  constexpr int A = M + 2;
  Vec<T> tmp[M][A];
  for (int j = 0; j < A; ++j) F<M>::output(&m[j], A, &tmp[0][j], A);
  for (int a = 0; a < M; ++a) F<M>::output(&tmp[a][0], 1, &y[a][0], 1);
}
template <typename T, int M>
void grad_output_2d(const Vec<T> (&d)[M][M], Vec<T> (&z)[(M + 2) * (M + 2)]) {
  constexpr int A = M + 2;
  Vec<T> tmp[A][M];
  for (int b = 0; b < M; ++b) F<M>::grad_output(&d[0][b], M, &tmp[0][b], M);
  for (int i = 0; i < A; ++i) F<M>::grad_output(&tmp[i][0], 1, &z[i * A], 1);
}
template <typename T, int M>
void filter_2d(const Vec<T> (&g)[3][3], Vec<T> (&v)[(M + 2) * (M + 2)]) {
  constexpr int A = M + 2;
  Vec<T> tmp[A][3];
  for (int s = 0; s < 3; ++s) F<M>::template filter<Vec<T>, T>(&g[0][s], 3, &tmp[0][s], 3);
  for (int i = 0; i < A; ++i) F<M>::template filter<Vec<T>, T>(&tmp[i][0], 1, &v[i * A], 1);
}
template <typename T, int M>
void grad_filter_2d(const Vec<T> (&v)[(M + 2) * (M + 2)], Vec<T> (&g)[3][3]) {
  constexpr int A = M + 2;
  Vec<T> tmp[3][A];
  for (int j = 0; j < A; ++j) F<M>::template grad_filter<Vec<T>, T>(&v[j], A, &tmp[0][j], A);
  for (int r = 0; r < 3; ++r) F<M>::template grad_filter<Vec<T>, T>(&tmp[r][0], 1, &g[r][0], 1);
}

// ---- tiles ----
struct Tiles {
  int64_t per_row, per_image, count;  // tiles across a row of the output, per image, in all
  Tiles(int64_t N, int64_t P, int64_t Q, int m)
      : per_row((Q + m - 1) / m), per_image((P + m - 1) / m * per_row), count(N * per_image) {}
  // image, first output row and column of tile t
  void locate(int64_t t, int m, int64_t* n, int64_t* p0, int64_t* q0) const {
    *n = t / per_image;
    *p0 = t % per_image / per_row * m;
    *q0 = t % per_row * m;
  }
};

// Tiles per group. Forward and backward-data give each thread whole groups (transforms and
// products, in its own buffers), sized so that the group's transformed tiles, in and out,
// stay in its share of L2 (kGroupBytes), within [kMinGroupTiles, kMaxGroupTiles] (rows enough
// for the products to run at the GEMM's speed; the filters, read by every group, are then
// streamed at most once per that many tiles), and no larger than an equal share of the
// tiles.
constexpr int64_t kGroupBytes = int64_t{512} << 10;
constexpr int64_t kMinGroupTiles = 24, kMaxGroupTiles = 96;
int64_t group_tiles(int64_t tiles, int threads, int points, int64_t channels_in_and_out, int64_t element_bytes,
                    int64_t budget) {
  const int64_t fit = budget / (points * channels_in_and_out * element_bytes);
  const int64_t share = (tiles + threads - 1) / threads;
  int64_t g = std::clamp(fit, kMinGroupTiles, kMaxGroupTiles);
  g = (g + 5) / 6 * 6;  // whole register tiles of the GEMM (6 rows)
  return std::max<int64_t>(1, std::min({g, share, tiles}));
}

// Buffers that only grow, held by the calling thread (see gemm.cpp's Scratch).
template <typename T>
class Buffer {
 public:
  T* get(int64_t n) {
    if (n > capacity_) {
      const size_t bytes = (static_cast<size_t>(n) * sizeof(T) + 63) / 64 * 64;
      data_.reset(static_cast<T*>(std::aligned_alloc(64, bytes)));
      if (!data_) throw std::bad_alloc();
      capacity_ = n;
    }
    return data_.get();
  }

 private:
  std::unique_ptr<T, decltype(&std::free)> data_{nullptr, &std::free};
  int64_t capacity_ = 0;
};
template <typename T>
struct Workspace {
  Buffer<T> in, out, filter, transposed, grad;
};
template <typename T>
Workspace<T>& workspace() {
  static thread_local Workspace<T> w;
  return w;
}

// Elements between the (m + 2)^2 planes of a transformed buffer: whole cache lines plus one
// more. Planes of a power-of-two size (256 channels x 16 tiles, a 256 x 256 filter) would
// otherwise all map to the same cache sets, and the 16 or 36 streams of a tile transform would
// evict each other at every store (measured: 4x slower filter transforms).
template <typename T>
int64_t plane_stride(int64_t elements) {
  constexpr int64_t line = 64 / static_cast<int64_t>(sizeof(T));
  return (elements + line - 1) / line * line + line;
}

// The threads of one call: all, unless already inside a parallel region.
int call_threads() { return omp_in_parallel() ? 1 : num_threads(); }

// ---- tile transforms ----

// Input tile t of x [N, H, W, C] (zero padding pad) into u[xi * plane + c].
template <typename T, int M>
void transform_input_tile(const T* x, int64_t H, int64_t W, int64_t C, int64_t pad, const Tiles& tiles, int64_t t,
                          T* u, int64_t plane) {
  constexpr int A = M + 2;
  int64_t n, p0, q0;
  tiles.locate(t, M, &n, &p0, &q0);
  const T* pixel[A][A];
  for (int i = 0; i < A; ++i)
    for (int j = 0; j < A; ++j) {
      const int64_t h = p0 - pad + i, w = q0 - pad + j;
      pixel[i][j] = h >= 0 && h < H && w >= 0 && w < W ? x + ((n * H + h) * W + w) * C : nullptr;
    }
  for_each_chunk<T>(C, [&](auto full, int64_t c0, int nc) {
    constexpr bool kFull = decltype(full)::value;
    Vec<T> d[A][A];
    for (int i = 0; i < A; ++i)
      for (int j = 0; j < A; ++j) d[i][j] = pixel[i][j] ? load<kFull>(pixel[i][j] + c0, nc) : Vec<T>{};
    Vec<T> out[A * A];
    input_2d<T, M>(d, out);
    for (int xi = 0; xi < A * A; ++xi) store<kFull>(u + xi * plane + c0, out[xi], nc);
  });
}

// Output tile t of y [N, P, Q, K] from mo[xi * plane + k], with the epilogue.
template <typename T, int M>
void transform_output_tile(const T* mo, int64_t plane, int64_t P, int64_t Q, int64_t K, const Tiles& tiles,
                           int64_t t, const ConvEpilogue<T>& ep, T* y) {
  constexpr int A = M + 2;
  int64_t n, p0, q0;
  tiles.locate(t, M, &n, &p0, &q0);
  const int rows = static_cast<int>(std::min<int64_t>(M, P - p0)), cols = static_cast<int>(std::min<int64_t>(M, Q - q0));
  for_each_chunk<T>(K, [&](auto full, int64_t k0, int nk) {
    constexpr bool kFull = decltype(full)::value;
    Vec<T> m[A * A];
    for (int xi = 0; xi < A * A; ++xi) m[xi] = load<kFull>(mo + xi * plane + k0, nk);
    Vec<T> out[M][M];
    output_2d<T, M>(m, out);
    const Vec<T> bias = ep.bias ? load<kFull>(ep.bias + k0, nk) : Vec<T>{};
    const Vec<T> center = ep.center ? load<kFull>(ep.center + k0, nk) : Vec<T>{};
    const Vec<T> scale = ep.scale ? load<kFull>(ep.scale + k0, nk) : Vec<T>{};
    const Vec<T> shift = ep.shift ? load<kFull>(ep.shift + k0, nk) : Vec<T>{};
    for (int a = 0; a < rows; ++a)
      for (int b = 0; b < cols; ++b) {
        const int64_t at = ((n * P + p0 + a) * Q + q0 + b) * K + k0;
        Vec<T> v = out[a][b];
        if (ep.bias) v += bias;
        if (ep.center) v -= center;
        if (ep.scale) v *= scale;
        if (ep.shift) v += shift;
        if (ep.residual) v += load<kFull>(ep.residual + at, nk);
        if (ep.relu) v = relu_keeping_nan(v);
        store<kFull>(y + at, v, nk);
      }
  });
}

// The output gradient of tile t of dy [N, P, Q, K] (zero past the edges), A dy A^T, into
// z[xi * plane + k].
template <typename T, int M>
void transform_grad_output_tile(const T* dy, int64_t P, int64_t Q, int64_t K, const Tiles& tiles, int64_t t, T* z,
                                int64_t plane) {
  constexpr int A = M + 2;
  int64_t n, p0, q0;
  tiles.locate(t, M, &n, &p0, &q0);
  const T* pixel[M][M];
  for (int a = 0; a < M; ++a)
    for (int b = 0; b < M; ++b)
      pixel[a][b] = p0 + a < P && q0 + b < Q ? dy + ((n * P + p0 + a) * Q + q0 + b) * K : nullptr;
  for_each_chunk<T>(K, [&](auto full, int64_t k0, int nk) {
    constexpr bool kFull = decltype(full)::value;
    Vec<T> d[M][M];
    for (int a = 0; a < M; ++a)
      for (int b = 0; b < M; ++b) d[a][b] = pixel[a][b] ? load<kFull>(pixel[a][b] + k0, nk) : Vec<T>{};
    Vec<T> out[A * A];
    grad_output_2d<T, M>(d, out);
    for (int xi = 0; xi < A * A; ++xi) store<kFull>(z + xi * plane + k0, out[xi], nk);
  });
}

// ---- transformed filters, packed for the products ----

// The (m + 2)^2 transformed filters, each a B in the GEMM's panel layout, `plane` elements
// apart.
template <typename T>
struct PackedFilters {
  PackedBLayout<T> layout;
  int64_t plane;
  T* data;
  PackedFilters(int64_t rows, int64_t columns, int points)
      : layout(rows, columns), plane(plane_stride<T>(layout.size())),
        data(workspace<T>().filter.get(points * plane)) {}
  T* product(int xi) const { return data + xi * plane; }
};

// Writes every product's B, panel by panel down the rows (each product's panel is then one
// stream of contiguous stores), from a transform of B's row r for columns [n0, n0 + n):
// transform(full, r, n0, n, v) fills v[xi] (xi < points) with that vector of B_xi.
template <typename T, int kPoints, typename F>
void fill_filters(int64_t rows, int64_t columns, const PackedFilters<T>& f, F&& transform) {
  const int64_t width = f.layout.panel_width(), panels = (columns + width - 1) / width;
  // by panels and, when there are fewer panels than threads, by parts of the rows too
  const int64_t row_parts = panels >= num_threads() ? 1 : num_threads(), parts = panels * row_parts;
  parallel_for(parts, 1, [&](int64_t p_begin, int64_t p_end) {
    for (int64_t part = p_begin; part < p_end; ++part) {
      const int64_t n_begin = part / row_parts * width, n_end = std::min(columns, n_begin + width);
      const int64_t r_begin = rows * (part % row_parts) / row_parts, r_end = rows * (part % row_parts + 1) / row_parts;
      for (int64_t r = r_begin; r < r_end; ++r)
        for_each_chunk<T>(n_end - n_begin, [&](auto full, int64_t j0, int n) {
          Vec<T> v[kPoints];
          transform(full, r, n_begin + j0, n, v);
          const int64_t at = f.layout.offset(r, n_begin + j0);
          for (int xi = 0; xi < kPoints; ++xi) store<decltype(full)::value>(f.product(xi) + at, v[xi], n);
        });
    }
  });
  for (int xi = 0; xi < kPoints; ++xi) f.layout.zero_padding(f.product(xi));
}

// Forward: product xi multiplies by B_xi[c, k] = (G w[k, :, :, c] G^T)[xi], [C x K]. The weight
// is first transposed to [tap][c][k] so that the transform runs over vectors of k, along B's
// rows.
template <typename T, int M>
void pack_forward_filter(const Conv2dShape& s, const T* w, const PackedFilters<T>& f) {
  constexpr int A2 = (M + 2) * (M + 2);
  T* transposed = workspace<T>().transposed.get(9 * s.C * s.K);
  parallel_for(9, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t tap = t0; tap < t1; ++tap)  // transposed[tap][c][k] = w[k][tap][c]
      pack_transposed(w + tap * s.C, 9 * s.C, s.C, s.K, T(1), PanelWriter<T>{transposed + tap * s.C * s.K, s.K, s.C * s.K});
  });
  fill_filters<T, A2>(s.C, s.K, f, [&](auto full, int64_t c, int64_t k0, int nk, Vec<T>(&v)[A2]) {
    constexpr bool kFull = decltype(full)::value;
    Vec<T> g[3][3];
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j) g[i][j] = load<kFull>(transposed + ((i * 3 + j) * s.C + c) * s.K + k0, nk);
    filter_2d<T, M>(g, v);
  });
}

// Backward-data: product xi multiplies dy's transformed tiles by B_xi[k, c] =
// (G w'[c, :, :, k] G^T)[xi] with w'[c, r, q, k] = w[k, 2 - r, 2 - q, c], [K x C]: B's rows
// are the weight's, read along c as they lie.
template <typename T, int M>
void pack_backward_data_filter(const Conv2dShape& s, const T* w, const PackedFilters<T>& f) {
  constexpr int A2 = (M + 2) * (M + 2);
  fill_filters<T, A2>(s.K, s.C, f, [&](auto full, int64_t k, int64_t c0, int nc, Vec<T>(&v)[A2]) {
    constexpr bool kFull = decltype(full)::value;
    const T* wk = w + k * 9 * s.C;
    Vec<T> g[3][3];
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j) g[i][j] = load<kFull>(wk + ((2 - i) * 3 + (2 - j)) * s.C + c0, nc);
    filter_2d<T, M>(g, v);
  });
}

// ---- the correlation behind forward and backward-data ----

// y [N, P, Q, Cout] = the 3x3 correlation of x [N, H, W, Cin] (zero padding pad) with the
// packed filters f, then the epilogue.
struct Correlation {
  int64_t N, H, W, Cin, P, Q, Cout, pad;
};

template <typename T, int M>
void correlate(const Correlation& c, const T* x, const PackedFilters<T>& f, const ConvEpilogue<T>& ep, T* y) {
  constexpr int A2 = (M + 2) * (M + 2);
  const Tiles tiles(c.N, c.P, c.Q, M);
  const int threads = call_threads();
  const int64_t group = group_tiles(tiles.count, threads, A2, c.Cin + c.Cout, sizeof(T), kGroupBytes);
  const int64_t groups = (tiles.count + group - 1) / group;
  // each group whole on one thread, in that thread's buffers: nothing crosses between cores
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1) if (threads > 1)
  for (int64_t gi = 0; gi < groups; ++gi) {
    const int64_t t0 = gi * group, tc = std::min(group, tiles.count - t0);
    const int64_t in_plane = plane_stride<T>(tc * c.Cin), out_plane = plane_stride<T>(tc * c.Cout);
    Workspace<T>& ws = workspace<T>();
    T* u = ws.in.get(A2 * in_plane);
    T* mo = ws.out.get(A2 * out_plane);
    for (int64_t t = 0; t < tc; ++t)
      transform_input_tile<T, M>(x, c.H, c.W, c.Cin, c.pad, tiles, t0 + t, u + t * c.Cin, in_plane);
    for (int xi = 0; xi < A2; ++xi) {
      const T* a = u + xi * in_plane;
      T* out = mo + xi * out_plane;
      IndirectGemm<T> g;
      g.M = tc;
      g.N = c.Cout;
      g.segments = 1;
      g.segment_len = c.Cin;
      g.a_rows = [a, &c](int64_t m0, int64_t count, int64_t, int64_t, const T** rows, int64_t ld) {
        for (int64_t i = 0; i < count; ++i) rows[i * ld] = a + (m0 + i) * c.Cin;
      };
      g.prepacked_b = f.product(xi);
      g.c_rows = [out, &c](int64_t m0, int64_t count, T** rows) {
        for (int64_t i = 0; i < count; ++i) rows[i] = out + (m0 + i) * c.Cout;
      };
      run_indirect_gemm(g);  // on this thread (inside the parallel region)
    }
    for (int64_t t = 0; t < tc; ++t)
      transform_output_tile<T, M>(mo + t * c.Cout, out_plane, c.P, c.Q, c.Cout, tiles, t0 + t, ep, y);
  }
}

template <typename T, int M>
void forward(const Conv2dShape& s, const T* x, const T* w, const ConvEpilogue<T>& ep, T* y) {
  const PackedFilters<T> f(s.C, s.K, (M + 2) * (M + 2));
  pack_forward_filter<T, M>(s, w, f);
  correlate<T, M>(Correlation{s.N, s.H, s.W, s.C, s.P, s.Q, s.K, s.pad}, x, f, ep, y);
}

template <typename T, int M>
void backward_data(const Conv2dShape& s, const T* dy, const T* w, T* dx) {
  const PackedFilters<T> f(s.K, s.C, (M + 2) * (M + 2));
  pack_backward_data_filter<T, M>(s, w, f);
  // dx[h, w] = sum over taps of dy[h + pad - r, w + pad - q] w[r, q]: a correlation of dy with
  // the rotated filter, padding 2 - pad, whose output is H x W
  correlate<T, M>(Correlation{s.N, s.P, s.Q, s.K, s.H, s.W, s.C, 2 - s.pad}, dy, f, ConvEpilogue<T>{}, dx);
}

// Backward-weight: each thread sums its share of the tiles into a dV of its own (whole
// groups, as in correlate), and the final transform adds the shares in thread order.
template <typename T, int M>
void backward_weight(const Conv2dShape& s, const T* x, const T* dy, T* dw) {
  constexpr int A2 = (M + 2) * (M + 2);
  const Tiles tiles(s.N, s.P, s.Q, M);
  const int64_t group = group_tiles(tiles.count, call_threads(), A2, s.C + s.K, sizeof(T), kGroupBytes);
  const int64_t groups = (tiles.count + group - 1) / group;
  const int shares = static_cast<int>(std::min<int64_t>(call_threads(), groups));
  const int64_t dv_plane = plane_stride<T>(s.K * s.C), dv_size = A2 * dv_plane;
  T* dv = workspace<T>().grad.get(shares * dv_size);  // per share: dV[xi][k][c]
  // share i takes groups [groups * i / shares, groups * (i + 1) / shares): a fixed split, so
  // that the sums do not depend on scheduling
#pragma omp parallel for num_threads(shares) schedule(static, 1) if (shares > 1)
  for (int share = 0; share < shares; ++share) {
    T* my_dv = dv + share * dv_size;
    Workspace<T>& ws = workspace<T>();
    for (int64_t gi = groups * share / shares; gi < groups * (share + 1) / shares; ++gi) {
      const int64_t t0 = gi * group, tc = std::min(group, tiles.count - t0);
      const int64_t in_plane = plane_stride<T>(tc * s.C), grad_plane = plane_stride<T>(tc * s.K);
      T* u = ws.in.get(A2 * in_plane);
      T* z = ws.out.get(A2 * grad_plane);
      for (int64_t t = 0; t < tc; ++t) {
        transform_input_tile<T, M>(x, s.H, s.W, s.C, s.pad, tiles, t0 + t, u + t * s.C, in_plane);
        transform_grad_output_tile<T, M>(dy, s.P, s.Q, s.K, tiles, t0 + t, z + t * s.K, grad_plane);
      }
      const bool first = gi == groups * share / shares;
      for (int xi = 0; xi < A2; ++xi) {
        // dV[xi] (+)= Z[xi]^T U[xi]: [K x tc] x [tc x C]
        const T* zx = z + xi * grad_plane;
        const T* ux = u + xi * in_plane;
        T* out = my_dv + xi * dv_plane;
        IndirectGemm<T> g;
        g.M = s.K;
        g.N = s.C;
        g.segments = 1;
        g.segment_len = tc;
        g.a_step = s.K;  // A[k, t] = Z[xi][t][k]: row k is a column of Z
        g.a_rows = [zx](int64_t m0, int64_t count, int64_t, int64_t, const T** rows, int64_t ld) {
          for (int64_t i = 0; i < count; ++i) rows[i * ld] = zx + m0 + i;
        };
        g.pack_b = [ux, &s](int64_t k0, int64_t kc, int64_t n0, int64_t nc, const PanelWriter<T>& dst) {
          for (int64_t k = 0; k < kc; ++k) {
            const T* src = ux + (k0 + k) * s.C + n0;
            for (int64_t j = 0, run; j < nc; j += run) {
              run = std::min(dst.run(j), nc - j);
              std::memcpy(dst.at(k, j), src + j, static_cast<size_t>(run) * sizeof(T));
            }
          }
        };
        g.c_rows = [out, &s](int64_t m0, int64_t count, T** rows) {
          for (int64_t i = 0; i < count; ++i) rows[i] = out + (m0 + i) * s.C;
        };
        g.accumulate = !first;
        run_indirect_gemm(g);  // on this thread
      }
    }
  }
  // dw[k, r, q, c] = (G^T (sum of the shares' dV[.][k][c]) G)[r, q]
  parallel_for(s.K, 16, [&](int64_t k_begin, int64_t k_end) {
    for (int64_t k = k_begin; k < k_end; ++k)
      for_each_chunk<T>(s.C, [&](auto full, int64_t c0, int nc) {
        constexpr bool kFull = decltype(full)::value;
        Vec<T> v[A2];
        for (int xi = 0; xi < A2; ++xi) {
          const T* at = dv + xi * dv_plane + k * s.C + c0;
          v[xi] = load<kFull>(at, nc);
          for (int share = 1; share < shares; ++share) v[xi] += load<kFull>(at + share * dv_size, nc);
        }
        Vec<T> g[3][3];
        grad_filter_2d<T, M>(v, g);
        for (int r = 0; r < 3; ++r)
          for (int q = 0; q < 3; ++q) store<kFull>(dw + (k * 9 + r * 3 + q) * s.C + c0, g[r][q], nc);
      });
  });
}

void check_shape(const char* pass, const Conv2dShape& s, int m) {
  if (s.R != 3 || s.S != 3 || s.stride != 1 || s.pad < 0 || s.pad > 2 || (m != 2 && m != 4))
    throw std::invalid_argument(std::string("winograd_") + pass + ": needs a 3x3 kernel, stride 1, padding 0 to 2 and a "
                                "tile of 2 or 4; got " + std::to_string(s.R) + "x" + std::to_string(s.S) + ", stride " +
                                std::to_string(s.stride) + ", padding " + std::to_string(s.pad) + ", tile " +
                                std::to_string(m));
}

// -1: not read yet; else 0 or 1
std::atomic<int> g_winograd{-1};

}  // namespace

void set_winograd_enabled(bool enabled) { g_winograd.store(enabled ? 1 : 0); }

bool winograd_enabled() {
  int state = g_winograd.load();
  if (state < 0) {
    const char* env = std::getenv("ENGINE_CONV_WINOGRAD");
    state = env && std::string(env) == "0" ? 0 : 1;
    int expected = -1;
    g_winograd.compare_exchange_strong(expected, state);
    state = g_winograd.load();
  }
  return state == 1;
}

// The cost model, in multiply-adds per pair of input and output channels, calibrated on
// ResNet50's layers on a 2-core AVX-512 machine (bench/results/winograd-20261204-vm.md):
//   direct:   9 per output pixel, its efficiency falling on narrow images (by 1 + 2 / Q);
//   Winograd: (m + 2)^2 per tile for the products, plus the tile transforms (about 12 per
//             element moved, i.e. per pixel and channel, in and out), plus
//     forward and backward-data: the filter's transform, which does not shrink with the batch
//             (70 per point for m = 2, 100 for m = 4: written, then streamed through every
//             group's products);
//     backward-weight: products 1.3 times slower (A is packed, the reduction short), and each
//             thread's share of dV written and summed (114 per point and thread).
// The cheaper tile is taken if it saves at least 15% (the model's error).
int winograd_tile(const Conv2dShape& s, WinogradPass pass) {
  if (s.R != 3 || s.S != 3 || s.stride != 1 || s.pad > 2 || s.C < 16 || s.K < 16) return 0;
  const double direct = 9.0 * s.N * s.P * s.Q * (1.0 + 2.0 / s.Q);
  const double per_element = 12.0 * static_cast<double>(s.C + s.K) / (static_cast<double>(s.C) * s.K);
  double best = 0;
  int tile = 0;
  for (int m : {2, 4}) {
    const double tiles = static_cast<double>(Tiles(s.N, s.P, s.Q, m).count), points = (m + 2.0) * (m + 2.0);
    const double cost = pass == WinogradPass::BackwardWeight
                            ? tiles * points * (1.3 + per_element) + points * 114.0 * num_threads()
                            : tiles * points * (1.0 + per_element) + points * (m == 2 ? 70.0 : 100.0);
    if (tile == 0 || cost < best) best = cost, tile = m;
  }
  return best < 0.85 * direct ? tile : 0;
}

template <typename T>
void winograd_forward(const Conv2dShape& s, int m, const T* x, const T* w, const ConvEpilogue<T>& epilogue, T* y) {
  check_shape("forward", s, m);
  if (m == 2) forward<T, 2>(s, x, w, epilogue, y);
  else forward<T, 4>(s, x, w, epilogue, y);
}

template <typename T>
void winograd_backward_data(const Conv2dShape& s, int m, const T* dy, const T* w, T* dx) {
  check_shape("backward_data", s, m);
  if (m == 2) backward_data<T, 2>(s, dy, w, dx);
  else backward_data<T, 4>(s, dy, w, dx);
}

template <typename T>
void winograd_backward_weight(const Conv2dShape& s, int m, const T* x, const T* dy, T* dw) {
  check_shape("backward_weight", s, m);
  if (m == 2) backward_weight<T, 2>(s, x, dy, dw);
  else backward_weight<T, 4>(s, x, dy, dw);
}

#define INSTANTIATE(T)                                                                                          \
  template void winograd_forward<T>(const Conv2dShape&, int, const T*, const T*, const ConvEpilogue<T>&, T*); \
  template void winograd_backward_data<T>(const Conv2dShape&, int, const T*, const T*, T*);                  \
  template void winograd_backward_weight<T>(const Conv2dShape&, int, const T*, const T*, T*);
INSTANTIATE(float)
INSTANTIATE(double)
#undef INSTANTIATE

}  // namespace kernels::cpu
