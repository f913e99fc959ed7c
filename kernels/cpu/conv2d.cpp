// Convolution passes as indirect GEMMs (see conv2d.h for the formulation and gemm.h for the
// engine). Each pass only says, per block of GEMM rows, which memory each row reads for each
// kernel tap, and how to pack the other operand.
#include "kernels/cpu/conv2d.h"

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/winograd.h"

namespace kernels::cpu {
namespace {

// Steps through output pixels (n, p, q) in row-major order, starting at flat index m.
struct PixelWalk {
  int64_t n, p, q;
  const int64_t P, Q;
  PixelWalk(int64_t m, int64_t P_, int64_t Q_) : n(m / (P_ * Q_)), p(m / Q_ % P_), q(m % Q_), P(P_), Q(Q_) {}
  void next() {
    if (++q == Q) {
      q = 0;
      if (++p == P) p = 0, ++n;
    }
  }
};

// Address of input pixel (n, h, w), or `zero` where (h, w) falls into the padding.
template <typename T>
const T* pixel_or_zero(const T* base, int64_t n, int64_t h, int64_t w, int64_t H, int64_t W,
                       int64_t C, const T* zero) {
  if (h < 0 || h >= H || w < 0 || w >= W) return zero;
  return base + ((n * H + h) * W + w) * C;
}

}  // namespace

// With few input channels (the RGB stem, a 2-channel attention map) a tap's C elements are
// too short a run for the kernel: there, a reduction segment is a whole kernel row instead,
// S * C contiguous elements of one input row.
constexpr int64_t kRowSegmentsBelowChannels = 16;

namespace {

// The forward product into y; g arrives with its bias or epilogue set.
template <typename T>
void run_forward(const Conv2dShape& s, const T* x, const T* w, T* y, IndirectGemm<T>& g) {
  const int64_t rsc = s.R * s.S * s.C, span = s.S * s.C;
  const bool row_segments = s.C < kRowSegmentsBelowChannels;
  const std::vector<T> zeros(static_cast<size_t>(row_segments ? span : s.C), T(0));
  g.M = s.N * s.P * s.Q;
  g.N = s.K;
  // A[(n,p,q), (r,s,c)] = x[n, p*stride - pad + r, q*stride - pad + s, c]
  if (row_segments) {
    g.segments = s.R;
    g.segment_len = span;
    g.a_rows = [&](int64_t m0, int64_t count, int64_t r0, int64_t r1, const T** rows, int64_t ld) {
      // windows that overhang the left or right edge, assembled with their zeros; this
      // thread's table uses them until its next call
      static thread_local std::vector<T> edge_windows;
      if (static_cast<int64_t>(edge_windows.size()) < count * (r1 - r0) * span)
        edge_windows.resize(count * (r1 - r0) * span);
      T* next_window = edge_windows.data();
      PixelWalk at(m0, s.P, s.Q);
      for (int64_t i = 0; i < count; ++i, at.next()) {
        const int64_t h0 = at.p * s.stride - s.pad, w0 = at.q * s.stride - s.pad;
        for (int64_t r = r0; r < r1; ++r) {
          const int64_t h = h0 + r;
          const T*& row = rows[i * ld + r - r0];
          if (h < 0 || h >= s.H) {
            row = zeros.data();
          } else if (w0 >= 0 && w0 + s.S <= s.W) {
            row = x + ((at.n * s.H + h) * s.W + w0) * s.C;
          } else {
            for (int64_t sc = 0; sc < s.S; ++sc) {
              const T* pixel = pixel_or_zero(x, at.n, h, w0 + sc, s.H, s.W, s.C, zeros.data());
              std::copy_n(pixel, s.C, next_window + sc * s.C);
            }
            row = next_window;
            next_window += span;
          }
        }
      }
    };
  } else {
    g.segments = s.R * s.S;
    g.segment_len = s.C;
    g.a_rows = [&](int64_t m0, int64_t count, int64_t t0, int64_t t1, const T** rows, int64_t ld) {
      PixelWalk at(m0, s.P, s.Q);
      for (int64_t i = 0; i < count; ++i, at.next()) {
        const int64_t h0 = at.p * s.stride - s.pad, w0 = at.q * s.stride - s.pad;
        for (int64_t t = t0; t < t1; ++t)
          rows[i * ld + t - t0] = pixel_or_zero(x, at.n, h0 + t / s.S, w0 + t % s.S, s.H, s.W, s.C, zeros.data());
      }
    };
  }
  // B[(r,s,c), k] = w[k, r, s, c]: the weight, transposed.
  g.pack_b = [&](int64_t k0, int64_t kc, int64_t n0, int64_t nc, const PanelWriter<T>& dst) {
    pack_transposed(w + n0 * rsc + k0, rsc, kc, nc, T(1), dst);
  };
  g.c_rows = [&](int64_t m0, int64_t count, T** rows) {
    for (int64_t i = 0; i < count; ++i) rows[i] = y + (m0 + i) * s.K;
  };
  run_indirect_gemm(g);
}

// The Winograd tile for s (winograd.h) where conv2d takes that algorithm: float32 only, and
// not when switched off; 0 for the direct algorithm.
template <typename T>
int winograd_choice(const Conv2dShape& s, WinogradPass pass) {
  if constexpr (std::is_same_v<T, float>) return winograd_enabled() ? winograd_tile(s, pass) : 0;
  return 0;
}

}  // namespace

template <typename T>
void conv2d_forward(const Conv2dShape& s, const T* x, const T* w, const T* bias, T* y) {
  if (const int m = winograd_choice<T>(s, WinogradPass::Forward)) {
    ConvEpilogue<T> ep;
    ep.bias = bias;
    return winograd_forward(s, m, x, w, ep, y);
  }
  IndirectGemm<T> g;
  g.bias = bias;
  run_forward(s, x, w, y, g);
}

template <typename T>
void conv2d_forward_fused(const Conv2dShape& s, const T* x, const T* w, const T* center, const T* scale,
                          const T* shift, const T* residual, bool relu, T* y) {
  if (const int m = winograd_choice<T>(s, WinogradPass::Forward)) {
    ConvEpilogue<T> ep;
    ep.center = center;
    ep.scale = scale;
    ep.shift = shift;
    ep.residual = residual;
    ep.relu = relu;
    return winograd_forward(s, m, x, w, ep, y);
  }
  IndirectGemm<T> g;
  g.out_center = center;
  g.out_scale = scale;
  g.out_shift = shift;
  g.out_relu = relu;
  if (residual) {
    g.residual_rows = [&](int64_t m0, int64_t count, const T** rows) {
      for (int64_t i = 0; i < count; ++i) rows[i] = residual + (m0 + i) * s.K;
    };
  }
  run_forward(s, x, w, y, g);
}

namespace {

// Backward-data with few input channels (the stem, an attention map): by stride phases each
// GEMM would be only C columns wide, mostly padding of the register tile. Instead, as in the
// textbook: dcol = dy w, [output pixels] x [(r, s, c)], scattered back into dx (col2im), a few
// output rows at a time; threads take whole images, whose dx they alone write.
template <typename T>
void backward_data_col2im(const Conv2dShape& s, const T* dy, const T* w, T* dx) {
  const int64_t rsc = s.R * s.S * s.C, image = s.H * s.W * s.C;
  constexpr int64_t kChunkElements = int64_t{1} << 17;  // of dcol: 512 KiB in float
  const int64_t rows_per_chunk = std::clamp<int64_t>(kChunkElements / (s.Q * rsc), 1, s.P);
  parallel_for(s.N, 1, [&](int64_t n_begin, int64_t n_end) {
    std::vector<T> dcol(static_cast<size_t>(rows_per_chunk * s.Q * rsc));
    for (int64_t n = n_begin; n < n_end; ++n) {
      T* dx_image = dx + n * image;
      std::fill(dx_image, dx_image + image, T(0));
      for (int64_t p0 = 0; p0 < s.P; p0 += rows_per_chunk) {
        const int64_t rows = std::min(rows_per_chunk, s.P - p0);
        gemm<T>(false, false, rows * s.Q, rsc, s.K, T(1), dy + (n * s.P + p0) * s.Q * s.K, s.K, w, rsc,
                T(0), dcol.data(), rsc);
        for (int64_t p = p0; p < p0 + rows; ++p)
          for (int64_t q = 0; q < s.Q; ++q) {
            const T* col = dcol.data() + ((p - p0) * s.Q + q) * rsc;
            for (int64_t r = 0; r < s.R; ++r) {
              const int64_t h = p * s.stride - s.pad + r;
              if (h < 0 || h >= s.H) continue;
              for (int64_t c = 0; c < s.S; ++c) {
                const int64_t x_col = q * s.stride - s.pad + c;
                if (x_col < 0 || x_col >= s.W) continue;
                T* out = dx_image + (h * s.W + x_col) * s.C;
                const T* in = col + (r * s.S + c) * s.C;
                for (int64_t ch = 0; ch < s.C; ++ch) out[ch] += in[ch];
              }
            }
          }
      }
    }
  });
}

}  // namespace

template <typename T>
void conv2d_backward_data(const Conv2dShape& s, const T* dy, const T* w, T* dx) {
  if (const int m = winograd_choice<T>(s, WinogradPass::BackwardData)) return winograd_backward_data(s, m, dy, w, dx);
  if (s.C < kRowSegmentsBelowChannels) return backward_data_col2im(s, dy, w, dx);
  const int64_t st = s.stride, rsc = s.R * s.S * s.C;
  const std::vector<T> zeros(static_cast<size_t>(s.K), T(0));
  // Kernel rows (or columns) that reach input phase `ph`, with the output offset each reads.
  struct PhaseTap {
    int64_t index, offset;
  };
  auto phase_taps = [&](int64_t ph, int64_t extent) {
    std::vector<PhaseTap> taps;
    for (int64_t r = 0; r < extent; ++r)
      if ((ph + s.pad - r) % st == 0) taps.push_back({r, (ph + s.pad - r) / st});
    return taps;
  };
  for (int64_t ph = 0; ph < std::min(st, s.H); ++ph) {
    for (int64_t pw = 0; pw < std::min(st, s.W); ++pw) {
      const std::vector<PhaseTap> tap_r = phase_taps(ph, s.R), tap_s = phase_taps(pw, s.S);
      const int64_t rows_h = (s.H - ph + st - 1) / st, cols_w = (s.W - pw + st - 1) / st;
      const int64_t taps_s = static_cast<int64_t>(tap_s.size());
      IndirectGemm<T> g;
      g.M = s.N * rows_h * cols_w;
      g.N = s.C;
      g.segments = static_cast<int64_t>(tap_r.size()) * taps_s;  // zero: these rows of dx are 0
      g.segment_len = s.K;
      // A[(n,i,j), (tap, k)] = dy[n, i + offset_r, j + offset_s, k]
      g.a_rows = [&](int64_t m0, int64_t count, int64_t t0, int64_t t1, const T** rows, int64_t ld) {
        PixelWalk at(m0, rows_h, cols_w);
        for (int64_t i = 0; i < count; ++i, at.next()) {
          for (int64_t t = t0; t < t1; ++t) {
            const PhaseTap& tr = tap_r[t / taps_s];
            const PhaseTap& ts = tap_s[t % taps_s];
            rows[i * ld + t - t0] = pixel_or_zero(dy, at.n, at.p + tr.offset, at.q + ts.offset, s.P,
                                                  s.Q, s.K, zeros.data());
          }
        }
      };
      // B[(tap, k), c] = w[k, r, s, c]: rows of the weight, copied as they are.
      g.pack_b = [&](int64_t k0, int64_t kc, int64_t n0, int64_t nc, const PanelWriter<T>& dst) {
        for (int64_t k = 0; k < kc; ++k) {
          const int64_t t = (k0 + k) / s.K, out_channel = (k0 + k) % s.K;
          const int64_t tap = tap_r[t / taps_s].index * s.S + tap_s[t % taps_s].index;
          const T* src = w + out_channel * rsc + tap * s.C + n0;
          for (int64_t j = 0, run; j < nc; j += run) {
            run = std::min(dst.run(j), nc - j);
            std::memcpy(dst.at(k, j), src + j, run * sizeof(T));
          }
        }
      };
      g.c_rows = [&](int64_t m0, int64_t count, T** rows) {
        PixelWalk at(m0, rows_h, cols_w);
        for (int64_t i = 0; i < count; ++i, at.next())
          rows[i] = dx + ((at.n * s.H + ph + st * at.p) * s.W + pw + st * at.q) * s.C;
      };
      run_indirect_gemm(g);
    }
  }
}

template <typename T>
void conv2d_backward_weight(const Conv2dShape& s, const T* x, const T* dy, T* dw) {
  if (const int m = winograd_choice<T>(s, WinogradPass::BackwardWeight)) return winograd_backward_weight(s, m, x, dy, dw);
  const int64_t rsc = s.R * s.S * s.C;
  IndirectGemm<T> g;
  g.M = s.K;
  g.N = rsc;
  g.segments = 1;
  g.segment_len = s.N * s.P * s.Q;  // the reduction runs over output pixels
  g.a_step = s.K;                   // A[k, m] = dy[m, k]: row k is a column of dy
  g.a_rows = [&](int64_t m0, int64_t count, int64_t, int64_t, const T** rows, int64_t ld) {
    for (int64_t i = 0; i < count; ++i) rows[i * ld] = dy + m0 + i;
  };
  // B[m, (r,s,c)]: the im2col matrix, one block at a time. A 1x1 convolution's is the input
  // pixels (strided), each row copied whole; otherwise within a kernel row r its columns (s, c)
  // are S * C contiguous elements of one input row, copied in such runs, with zeros where the
  // window overhangs the image. Short runs (few channels: the RGB stem) cost several times a
  // plain copy per element: the threads then split the columns, so that each packs its own.
  const int64_t span = s.S * s.C;
  if (span < 64) g.b_pack_cost = 8;
  if (s.R == 1 && s.S == 1 && s.pad == 0) {
    g.pack_b = [&](int64_t k0, int64_t kc, int64_t n0, int64_t nc, const PanelWriter<T>& dst) {
      PixelWalk at(k0, s.P, s.Q);
      for (int64_t k = 0; k < kc; ++k, at.next()) {
        const T* src = x + ((at.n * s.H + at.p * s.stride) * s.W + at.q * s.stride) * s.C + n0;
        for (int64_t j = 0, run; j < nc; j += run) {
          run = std::min(dst.run(j), nc - j);
          std::memcpy(dst.at(k, j), src + j, static_cast<size_t>(run) * sizeof(T));
        }
      }
    };
  } else {
  g.pack_b = [&](int64_t k0, int64_t kc, int64_t n0, int64_t nc, const PanelWriter<T>& dst) {
    const int64_t first_r = n0 / span, first_offset = n0 % span;
    PixelWalk at(k0, s.P, s.Q);
    for (int64_t k = 0; k < kc; ++k, at.next()) {
      const int64_t h0 = at.p * s.stride - s.pad, w0 = at.q * s.stride - s.pad;
      // the part of a kernel row's span inside the image: [inside_lo, inside_hi)
      const int64_t inside_lo = std::max<int64_t>(0, -w0 * s.C), inside_hi = std::min(span, (s.W - w0) * s.C);
      // column j holds span element e of kernel row r; runs end at a kernel row or a panel
      for (int64_t j = 0, r = first_r, e = first_offset, run; j < nc; j += run, e += run) {
        if (e == span) e = 0, ++r;
        run = std::min({span - e, dst.run(j), nc - j});
        T* out = dst.at(k, j);  // out[i] receives span element e + i
        const int64_t h = h0 + r;
        const int64_t lo = std::clamp(inside_lo, e, e + run), hi = std::clamp(inside_hi, lo, e + run);
        if (h < 0 || h >= s.H) {
          std::fill(out, out + run, T(0));
          continue;
        }
        const T* src = x + ((at.n * s.H + h) * s.W) * s.C + (w0 * s.C + lo);  // span element lo
        std::fill(out, out + (lo - e), T(0));
        std::copy_n(src, hi - lo, out + (lo - e));
        std::fill(out + (hi - e), out + run, T(0));
      }
    }
  };
  }
  g.c_rows = [&](int64_t m0, int64_t count, T** rows) {
    for (int64_t i = 0; i < count; ++i) rows[i] = dw + (m0 + i) * rsc;
  };
  run_indirect_gemm(g);
}

template <typename T>
void conv2d_backward_bias(const Conv2dShape& s, const T* dy, T* db) {
  const int64_t rows = s.N * s.P * s.Q, K = s.K;
  const int threads = std::max(1, std::min<int>(num_threads(), static_cast<int>(rows * K / (1 << 16))));
  std::vector<T> partial(static_cast<size_t>(threads * K), T(0));
  // Each thread sums a contiguous range of rows; the partial sums are added in a fixed order.
  parallel_for(threads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t part = begin; part < end; ++part) {
      T* sum = partial.data() + part * K;
      for (int64_t m = rows * part / threads; m < rows * (part + 1) / threads; ++m)
        for (int64_t k = 0; k < K; ++k) sum[k] += dy[m * K + k];
    }
  });
  for (int64_t k = 0; k < K; ++k) {
    T total = T(0);
    for (int part = 0; part < threads; ++part) total += partial[part * K + k];
    db[k] = total;
  }
}

#define INSTANTIATE(T)                                                                          \
  template void conv2d_forward<T>(const Conv2dShape&, const T*, const T*, const T*, T*);      \
  template void conv2d_forward_fused<T>(const Conv2dShape&, const T*, const T*, const T*, const T*, \
                                        const T*, const T*, bool, T*);                          \
  template void conv2d_backward_data<T>(const Conv2dShape&, const T*, const T*, T*);           \
  template void conv2d_backward_weight<T>(const Conv2dShape&, const T*, const T*, T*);         \
  template void conv2d_backward_bias<T>(const Conv2dShape&, const T*, T*);
INSTANTIATE(float)
INSTANTIATE(double)
#undef INSTANTIATE

}  // namespace kernels::cpu
