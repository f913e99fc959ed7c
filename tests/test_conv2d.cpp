// labels: cpu gradcheck
// conv2d against a direct-loop reference (forward, dx, dw, db) over the ResNet50 kernel kinds
// and awkward shapes; finite-difference gradient checks; float32 against float64; input
// validation. Also the GEMM engine under it (kernels/cpu/gemm.h), in all its transposes.
#include <gtest/gtest.h>

#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "gradcheck.h"
#include "kernels/cpu/conv2d.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/parallel.h"
#include "test_util.h"

using namespace engine;
using testing_util::gradcheck;
using testing_util::param;

namespace {

struct Geometry {
  int64_t N, H, W, C, K, R, S, stride, pad;
  int64_t P() const { return (H + 2 * pad - R) / stride + 1; }
  int64_t Q() const { return (W + 2 * pad - S) / stride + 1; }
  std::string name() const {
    std::ostringstream os;
    os << "N" << N << " H" << H << " W" << W << " C" << C << " K" << K << " " << R << "x" << S
       << " stride " << stride << " pad " << pad;
    return os.str();
  }
};

// Direct loops over y[n,p,q,k] = sum_{r,s,c} x[n, p*stride-pad+r, q*stride-pad+s, c] w[k,r,s,c],
// calling visit(x index, w index, y index) for every term: forward and both gradients are
// then three ways of accumulating the same products.
template <typename F>
void for_each_term(const Geometry& g, F visit) {
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t p = 0; p < g.P(); ++p)
      for (int64_t q = 0; q < g.Q(); ++q)
        for (int64_t r = 0; r < g.R; ++r)
          for (int64_t s = 0; s < g.S; ++s) {
            int64_t h = p * g.stride - g.pad + r, w = q * g.stride - g.pad + s;
            if (h < 0 || h >= g.H || w < 0 || w >= g.W) continue;
            for (int64_t k = 0; k < g.K; ++k)
              for (int64_t c = 0; c < g.C; ++c)
                visit(((n * g.H + h) * g.W + w) * g.C + c, ((k * g.R + r) * g.S + s) * g.C + c,
                      ((n * g.P() + p) * g.Q() + q) * g.K + k);
          }
}

struct Reference {
  std::vector<double> y, dx, dw, db;
};

// Forward with bias b, and the gradients for output gradient dy.
Reference reference(const Geometry& g, const std::vector<double>& x, const std::vector<double>& w,
                    const std::vector<double>& b, const std::vector<double>& dy) {
  Reference ref;
  ref.y.assign(g.N * g.P() * g.Q() * g.K, 0.0);
  ref.dx.assign(x.size(), 0.0);
  ref.dw.assign(w.size(), 0.0);
  ref.db.assign(g.K, 0.0);
  for (size_t i = 0; i < ref.y.size(); ++i) {
    ref.y[i] = b[i % g.K];
    ref.db[i % g.K] += dy[i];
  }
  for_each_term(g, [&](int64_t xi, int64_t wi, int64_t yi) {
    ref.y[yi] += x[xi] * w[wi];
    ref.dx[xi] += dy[yi] * w[wi];
    ref.dw[wi] += dy[yi] * x[xi];
  });
  return ref;
}

// max |a - b| / max |b|: sums of many signed products land near zero, where an element-wise
// relative error measures cancellation rather than the kernel.
double normwise_error(const Tensor& a, const Tensor& b) {
  std::vector<double> av = a.to_vector(), bv = b.to_vector();
  double worst = 0, scale = 0;
  for (size_t i = 0; i < av.size(); ++i) {
    worst = std::max(worst, std::fabs(av[i] - bv[i]));
    scale = std::max(scale, std::fabs(bv[i]));
  }
  return worst / std::max(scale, 1e-300);
}

Tensor from(const std::vector<double>& v, const Shape& shape) {
  return Tensor::from_vector(v, shape, DType::F64);
}

// The op in `dtype` on the given data, against the reference in float64.
void check_against_reference(const Geometry& g, DType dtype, double tolerance) {
  SCOPED_TRACE(g.name() + (dtype == DType::F32 ? " f32" : " f64"));
  Shape xs{g.N, g.H, g.W, g.C}, ws{g.K, g.R, g.S, g.C}, ys{g.N, g.P(), g.Q(), g.K};
  std::vector<double> x = Tensor::randn(xs, 11, 0, DType::F64).to_vector();
  std::vector<double> w = Tensor::randn(ws, 12, 0, DType::F64).to_vector();
  std::vector<double> b = Tensor::randn({g.K}, 13, 0, DType::F64).to_vector();
  std::vector<double> dy = Tensor::randn(ys, 14, 0, DType::F64).to_vector();
  Reference ref = reference(g, x, w, b, dy);

  Tensor tx = from(x, xs).to(dtype), tw = from(w, ws).to(dtype), tb = from(b, {g.K}).to(dtype);
  tx.set_requires_grad(true), tw.set_requires_grad(true), tb.set_requires_grad(true);
  Tensor y = conv2d(tx, tw, tb, static_cast<int>(g.stride), static_cast<int>(g.pad));
  ASSERT_EQ(y.shape(), ys);
  sum(mul(y, from(dy, ys).to(dtype))).backward();
  EXPECT_LT(normwise_error(y, from(ref.y, ys)), tolerance) << "forward";
  EXPECT_LT(normwise_error(tx.grad(), from(ref.dx, xs)), tolerance) << "dx";
  EXPECT_LT(normwise_error(tw.grad(), from(ref.dw, ws)), tolerance) << "dw";
  EXPECT_LT(normwise_error(tb.grad(), from(ref.db, {g.K})), tolerance) << "db";
}

// C and K deliberately not multiples of the vector width; batch > 1; non-square. Below 16
// input channels the kernels take other paths (kernel-row segments, col2im): both are covered.
const std::vector<Geometry> kGeometries = {
    {2, 5, 7, 19, 23, 1, 1, 1, 0},    // 1x1 stride 1: a plain GEMM
    {3, 7, 6, 17, 70, 1, 1, 2, 0},    // 1x1 stride 2 (ResNet downsample); K over one tile
    {2, 9, 6, 13, 35, 3, 3, 1, 1},    // 3x3 stride 1 pad 1
    {2, 9, 8, 21, 18, 3, 3, 2, 1},    // 3x3 stride 2 pad 1, even input
    {1, 7, 5, 6, 9, 3, 3, 2, 1},      // 3x3 stride 2 pad 1, odd input
    {2, 15, 13, 3, 10, 7, 7, 2, 3},   // the 7x7 stride-2 stem
    {1, 12, 11, 15, 4, 11, 11, 1, 5}, // a kernel row longer than a reduction block
    {2, 6, 9, 5, 7, 3, 3, 1, 0},      // no padding
    {2, 8, 7, 4, 6, 5, 3, 2, 2},      // non-square kernel
    {2, 3, 4, 3, 5, 5, 3, 1, 1},      // kernel exactly as large as the padded input
    {2, 8, 7, 5, 4, 2, 2, 3, 0},      // stride above the kernel: some input pixels unused
    {2, 8, 7, 18, 4, 2, 2, 3, 0},     // the same with per-tap segments: phases with no taps
    {1, 1, 1, 1, 1, 1, 1, 1, 0},      // one of everything
    {2, 9, 7, 24, 5, 5, 5, 2, 2},     // enough channels for per-tap segments, wide padding
    {2, 10, 9, 160, 130, 3, 3, 1, 1}, // channels over a reduction block; threaded GEMMs
    {2, 40, 40, 16, 8, 3, 3, 1, 1},   // many pixels: backward-weight packs block by block
};

}  // namespace

// Tolerances are normwise (normwise_error), about 30x (f64) and 7x (f32) the worst error
// measured over these geometries (3.0e-15 and 7.5e-7); a wrong tap or channel costs ~1e-1.
TEST(Conv2d, MatchesDirectLoopsInFloat64) {
  for (const Geometry& g : kGeometries) check_against_reference(g, DType::F64, 1e-13);
}

TEST(Conv2d, MatchesDirectLoopsInFloat32) {
  for (const Geometry& g : kGeometries) check_against_reference(g, DType::F32, 5e-6);
}

TEST(Conv2d, Float32MatchesFloat64) {
  Tensor x = Tensor::randn({2, 11, 10, 24}, 21, 0, DType::F64);
  Tensor w = Tensor::randn({40, 3, 3, 24}, 22, 0, DType::F64);
  Tensor b = Tensor::randn({40}, 23, 0, DType::F64);
  Tensor y64 = conv2d(x, w, b, 2, 1);
  Tensor y32 = conv2d(x.to(DType::F32), w.to(DType::F32), b.to(DType::F32), 2, 1);
  EXPECT_EQ(y32.dtype(), DType::F32);
  EXPECT_LT(normwise_error(y32, y64), 1e-6);
}

TEST(Gradcheck, Conv2d) {
  struct Case {
    Shape x, w;
    int stride, pad;
  };
  const std::vector<Case> cases = {
      {{2, 5, 4, 3}, {4, 3, 3, 3}, 2, 1},  // 3x3 stride 2
      {{2, 4, 5, 3}, {5, 3, 3, 3}, 1, 1},  // 3x3 stride 1
      {{2, 5, 6, 4}, {3, 1, 1, 4}, 2, 0},  // 1x1 stride 2
      {{1, 7, 6, 2}, {3, 5, 3, 2}, 2, 2},  // non-square kernel
      {{1, 5, 4, 17}, {2, 3, 3, 17}, 1, 1},  // channels read per tap rather than per kernel row
  };
  uint64_t seed = 100;
  for (const Case& c : cases) {
    Tensor x = param(c.x, seed++), w = param(c.w, seed++), b = param({c.w[0]}, seed++);
    int stride = c.stride, pad = c.pad;
    EXPECT_TRUE(gradcheck([=](auto& in) { return conv2d(in[0], in[1], in[2], stride, pad); }, {x, w, b}))
        << "x " << shape_str(c.x) << " w " << shape_str(c.w);
    EXPECT_TRUE(gradcheck([=](auto& in) { return conv2d(in[0], in[1], Tensor(), stride, pad); }, {x, w}));
  }
}

TEST(Conv2d, GradientsOnlyWhereRequired) {
  Tensor x = Tensor::randn({1, 4, 4, 3}, 1, 0, DType::F64);
  Tensor w = param({2, 3, 3, 3}, 2);
  sum(conv2d(x, w, Tensor(), 1, 1)).backward();
  EXPECT_FALSE(x.grad().defined());
  EXPECT_TRUE(w.grad().defined());
  Tensor y;
  {
    NoGradGuard guard;
    y = conv2d(x, w, Tensor(), 1, 1);
  }
  EXPECT_FALSE(y.requires_grad());
}

TEST(Conv2d, EmptyBatch) {
  Tensor x = Tensor::zeros({0, 5, 5, 3}, DType::F64), w = param({4, 3, 3, 3}, 3), b = param({4}, 4);
  x.set_requires_grad(true);
  Tensor y = conv2d(x, w, b, 2, 1);
  EXPECT_EQ(y.shape(), (Shape{0, 3, 3, 4}));
  sum(y).backward();
  EXPECT_EQ(w.grad().to_vector(), std::vector<double>(w.numel(), 0.0));
  EXPECT_EQ(b.grad().to_vector(), std::vector<double>(4, 0.0));
}

TEST(Conv2d, RejectsBadInputs) {
  Tensor x = Tensor::zeros({2, 5, 5, 3}), w = Tensor::zeros({4, 3, 3, 3});
  auto expect_msg = [](auto fn, const std::string& needle) {
    try {
      fn();
      ADD_FAILURE() << "expected an error containing '" << needle << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_msg([&] { conv2d(Tensor::zeros({5, 5, 3}), w, Tensor(), 1, 1); },
             "conv2d: input x must have 4 dimensions, got f32[5, 5, 3] cpu");
  expect_msg([&] { conv2d(x, Tensor::zeros({4, 3, 3}), Tensor(), 1, 1); },
             "conv2d: weight must have 4 dimensions");
  expect_msg([&] { conv2d(x, Tensor::zeros({4, 3, 3, 2}), Tensor(), 1, 1); },
             "conv2d: input x f32[2, 5, 5, 3] cpu has 3 channels but weight [K, R, S, C] "
             "f32[4, 3, 3, 2] cpu expects 2");
  expect_msg([&] { conv2d(x, Tensor::zeros({4, 7, 3, 3}), Tensor(), 1, 0); },
             "conv2d: kernel 7x3 of weight f32[4, 7, 3, 3] cpu is larger than the padded input 5x5");
  expect_msg([&] { conv2d(x, w, Tensor(), 0, 1); }, "conv2d: stride must be at least 1, got 0");
  expect_msg([&] { conv2d(x, w, Tensor(), -2, 1); }, "conv2d: stride must be at least 1, got -2");
  expect_msg([&] { conv2d(x, w, Tensor(), 1, -1); }, "conv2d: padding must not be negative, got -1");
  expect_msg([&] { conv2d(x, w, Tensor::zeros({3}), 1, 1); }, "conv2d: bias f32[3] cpu must be [4]");
  expect_msg([&] { conv2d(x, w, Tensor::zeros({4, 1}), 1, 1); }, "conv2d: bias f32[4, 1] cpu must be [4]");
  expect_msg([&] { conv2d(x, Tensor::zeros({4, 3, 3, 3}, DType::F64), Tensor(), 1, 1); },
             "conv2d: dtype mismatch, f32[2, 5, 5, 3] cpu vs f64[4, 3, 3, 3] cpu");
  expect_msg([&] { conv2d(x, w, Tensor::zeros({4}, DType::F64), 1, 1); }, "conv2d: dtype mismatch");
  expect_msg([&] { conv2d(Tensor(), w, Tensor(), 1, 1); }, "conv2d: input x is undefined");
  expect_msg([&] { conv2d(Tensor::zeros({2, 5, 5, 0}), Tensor::zeros({4, 3, 3, 0}), Tensor(), 1, 1); },
             "conv2d: weight f32[4, 3, 3, 0] cpu has an empty dimension");
}

// ---- the GEMM engine ----

namespace {

// gemm() against a double-precision loop on the same (rounded) inputs, with padded leading
// dimensions; the padding columns of C must come through untouched. Returns the largest
// |error| / (1 + |expected|).
template <typename T>
double gemm_error(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, double beta) {
  const int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 5;
  auto values = [](int64_t n, uint64_t seed) {
    std::vector<double> v = Tensor::randn({n}, seed, 0, DType::F64).to_vector();
    return std::vector<T>(v.begin(), v.end());
  };
  const std::vector<T> a = values((ta ? K : M) * lda, 1), b = values((tb ? N : K) * ldb, 2);
  const std::vector<T> c0 = values(M * ldc, 3);
  std::vector<T> c = c0;
  kernels::cpu::gemm<T>(ta, tb, M, N, K, T(alpha), a.data(), lda, b.data(), ldb, T(beta), c.data(), ldc);
  std::vector<double> opb(K * N);  // op(B) row-major, so that the reference walks memory in order
  for (int64_t k = 0; k < K; ++k)
    for (int64_t n = 0; n < N; ++n) opb[k * N + n] = tb ? b[n * ldb + k] : b[k * ldb + n];
  double worst = 0;
  std::vector<double> dot(N);
  for (int64_t m = 0; m < M; ++m) {
    std::fill(dot.begin(), dot.end(), 0.0);
    for (int64_t k = 0; k < K; ++k) {
      const double amk = ta ? a[k * lda + m] : a[m * lda + k];
      for (int64_t n = 0; n < N; ++n) dot[n] += amk * opb[k * N + n];
    }
    for (int64_t n = 0; n < ldc; ++n) {
      double expect = c0[m * ldc + n];
      if (n < N) expect = alpha * dot[n] + (beta == 0 ? 0.0 : beta * expect);
      worst = std::max(worst, std::fabs(expect - c[m * ldc + n]) / (1 + std::fabs(expect)));
    }
  }
  return worst;
}

}  // namespace

TEST(Gemm, AllTransposesAgainstLoops) {
  struct Dims {
    int64_t M, N, K;
  };
  // single elements, partial tiles, several reduction blocks, and threaded sizes
  const std::vector<Dims> dims = {{1, 1, 1}, {7, 5, 3}, {13, 70, 300}, {200, 130, 33}, {6, 64, 128},
                                  {150, 131, 300}, {5, 1000, 96}};
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (const Dims& d : dims)
        for (double beta : {0.0, 1.0, -0.5}) {
          SCOPED_TRACE(::testing::Message() << "ta " << ta << " tb " << tb << " M " << d.M << " N "
                                            << d.N << " K " << d.K << " beta " << beta);
          EXPECT_LT(gemm_error<double>(ta, tb, d.M, d.N, d.K, 1.5, beta), 1e-12);
          EXPECT_LT(gemm_error<float>(ta, tb, d.M, d.N, d.K, -0.75, beta), 1e-4);
        }
}

TEST(Gemm, EmptyReductionScalesC) {
  std::vector<float> c = {1, 2, 3, 4}, none;
  kernels::cpu::gemm<float>(false, false, 2, 2, 0, 1.0f, none.data(), 1, none.data(), 2, 0.5f, c.data(), 2);
  EXPECT_EQ(c, (std::vector<float>{0.5f, 1, 1.5f, 2}));
  kernels::cpu::gemm<float>(false, false, 2, 2, 0, 1.0f, none.data(), 1, none.data(), 2, 0.0f, c.data(), 2);
  EXPECT_EQ(c, (std::vector<float>{0, 0, 0, 0}));
}

TEST(Gemm, LargeBPackedBlockByBlock) {
  // B too large to pack whole for the few rows of C: the reduction-blocks-outer loop order
  for (bool ta : {false, true}) {
    EXPECT_LT(gemm_error<double>(ta, false, 7, 1100, 1200, 1.0, 1.0), 1e-12);
    EXPECT_LT(gemm_error<float>(ta, true, 7, 1100, 1200, 1.0, 0.0), 1e-4);
  }
}

// The general contract of run_indirect_gemm: rows read through arbitrary addresses with a
// stride, several segments, a bias, accumulation into C.
TEST(Gemm, IndirectRowsSegmentsBiasAccumulate) {
  const int64_t M = 23, N = 70, segments = 3, len = 5, step = 3, K = segments * len;
  std::vector<double> a = Tensor::randn({M * K * step}, 4, 0, DType::F64).to_vector();
  std::vector<double> b = Tensor::randn({K * N}, 5, 0, DType::F64).to_vector();
  std::vector<double> bias = Tensor::randn({N}, 6, 0, DType::F64).to_vector();
  std::vector<double> c = Tensor::randn({M * N}, 7, 0, DType::F64).to_vector(), c0 = c;
  // row m, segment s lives at a[((m * 7 + s * 3) % (M * segments)) * len * step], strided by step
  auto where = [&](int64_t m, int64_t s) { return ((m * 7 + s * 3) % (M * segments)) * len * step; };
  kernels::cpu::IndirectGemm<double> g;
  g.M = M, g.N = N, g.segments = segments, g.segment_len = len, g.a_step = step;
  g.a_rows = [&](int64_t m0, int64_t count, int64_t s0, int64_t s1, const double** rows, int64_t ld) {
    for (int64_t i = 0; i < count; ++i)
      for (int64_t s = s0; s < s1; ++s) rows[i * ld + s - s0] = a.data() + where(m0 + i, s);
  };
  g.pack_b = [&](int64_t k0, int64_t kc, int64_t n0, int64_t nc, const kernels::cpu::PanelWriter<double>& dst) {
    for (int64_t k = 0; k < kc; ++k)
      for (int64_t j = 0; j < nc; ++j) *dst.at(k, j) = b[(k0 + k) * N + n0 + j];
  };
  g.c_rows = [&](int64_t m0, int64_t count, double** rows) {
    for (int64_t i = 0; i < count; ++i) rows[i] = c.data() + (m0 + i) * N;
  };
  g.bias = bias.data();
  g.accumulate = true;
  kernels::cpu::run_indirect_gemm(g);
  double worst = 0;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double expect = c0[m * N + n] + bias[n];
      for (int64_t s = 0; s < segments; ++s)
        for (int64_t e = 0; e < len; ++e) expect += a[where(m, s) + e * step] * b[(s * len + e) * N + n];
      worst = std::max(worst, std::fabs(expect - c[m * N + n]));
    }
  EXPECT_LT(worst, 1e-12);
}

// A weight gradient summed over many pixels (the reduction cut into fixed parts, gemm.cpp)
// gives the same bits on one thread as on all of them.
TEST(Conv2d, WeightGradientDoesNotDependOnTheThreadCount) {
  const kernels::Conv2dShape s = kernels::Conv2dShape::make(4, 40, 40, 32, 48, 1, 1, 1, 0);
  Tensor x = Tensor::randn({s.N, s.H, s.W, s.C}, 1), dy = Tensor::randn({s.N, s.P, s.Q, s.K}, 2);
  Tensor dw_all = Tensor::empty({s.K, 1, 1, s.C}), dw_one = Tensor::empty({s.K, 1, 1, s.C});
  kernels::cpu::conv2d_backward_weight<float>(s, x.data<float>(), dy.data<float>(), dw_all.data<float>());
  {
    testing_util::ThreadCountGuard guard;
    kernels::cpu::set_num_threads(1);
    kernels::cpu::conv2d_backward_weight<float>(s, x.data<float>(), dy.data<float>(), dw_one.data<float>());
  }
  EXPECT_EQ(dw_one.to_vector(), dw_all.to_vector());
}
