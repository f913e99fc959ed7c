// labels: cpu
// The Winograd convolution (kernels/cpu/winograd.h): exact in float64 against the direct
// algorithm for every pass, tile size, padding, odd channel counts and many groups of tiles;
// its float32 error measured against float64 and bounded; the epilogue; conv2d's choice of
// algorithm and its switch.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "kernels/cpu/conv2d.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/winograd.h"
#include "test_util.h"

using engine::DType;
using engine::Tensor;
using kernels::Conv2dShape;
namespace cpu = kernels::cpu;

namespace {

// Restores the algorithm switch when a test changes it.
struct WinogradSwitchGuard {
  bool saved = cpu::winograd_enabled();
  ~WinogradSwitchGuard() { cpu::set_winograd_enabled(saved); }
};
// conv2d's direct algorithm for the guard's lifetime.
struct DirectOnly : WinogradSwitchGuard {
  DirectOnly() { cpu::set_winograd_enabled(false); }
};

std::string name(const Conv2dShape& s) {
  std::ostringstream os;
  os << "N" << s.N << " " << s.H << "x" << s.W << " C" << s.C << " K" << s.K << " pad " << s.pad;
  return os.str();
}

// max |a - b| / max |b|: the error relative to the result's scale (a Winograd tile mixes
// values across its pixels, so elementwise relative errors of near-zero outputs mean nothing).
double scaled_error(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0, scale = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    if (!std::isfinite(a[i])) return HUGE_VAL;  // an unwritten (poisoned) or broken element
    worst = std::max(worst, std::fabs(a[i] - b[i]));
    scale = std::max(scale, std::fabs(b[i]));
  }
  return worst / std::max(scale, 1e-300);
}

template <typename T>
std::vector<double> to_vector(const std::vector<T>& v) {
  return std::vector<double>(v.begin(), v.end());
}

struct Data {
  Tensor x, w, dy;
};
Data conv_data(const Conv2dShape& s, DType dt, uint64_t seed) {
  return {Tensor::randn({s.N, s.H, s.W, s.C}, seed, 0, dt), Tensor::randn({s.K, 3, 3, s.C}, seed + 1, 0, dt),
          Tensor::randn({s.N, s.P, s.Q, s.K}, seed + 2, 0, dt)};
}

// The three passes of each algorithm on the same data, as vectors.
struct Passes {
  std::vector<double> y, dx, dw;
};
template <typename T>
Passes direct(const Conv2dShape& s, const Data& d) {
  const DType dt = engine::dtype_of<T>::value;
  Tensor y = Tensor::empty({s.N, s.P, s.Q, s.K}, dt), dx = Tensor::empty({s.N, s.H, s.W, s.C}, dt);
  Tensor dw = Tensor::empty({s.K, 3, 3, s.C}, dt);
  DirectOnly direct_only;
  cpu::conv2d_forward<T>(s, d.x.data<T>(), d.w.data<T>(), nullptr, y.data<T>());
  cpu::conv2d_backward_data<T>(s, d.dy.data<T>(), d.w.data<T>(), dx.data<T>());
  cpu::conv2d_backward_weight<T>(s, d.x.data<T>(), d.dy.data<T>(), dw.data<T>());
  return {y.to_vector(), dx.to_vector(), dw.to_vector()};
}
template <typename T>
Passes winograd(const Conv2dShape& s, int m, const Data& d) {
  const DType dt = engine::dtype_of<T>::value;
  Tensor y = Tensor::empty({s.N, s.P, s.Q, s.K}, dt), dx = Tensor::empty({s.N, s.H, s.W, s.C}, dt);
  Tensor dw = Tensor::empty({s.K, 3, 3, s.C}, dt);
  cpu::winograd_forward<T>(s, m, d.x.data<T>(), d.w.data<T>(), cpu::ConvEpilogue<T>{}, y.data<T>());
  cpu::winograd_backward_data<T>(s, m, d.dy.data<T>(), d.w.data<T>(), dx.data<T>());
  cpu::winograd_backward_weight<T>(s, m, d.x.data<T>(), d.dy.data<T>(), dw.data<T>());
  return {y.to_vector(), dx.to_vector(), dw.to_vector()};
}

// Partial tiles at the bottom and right (7, 9 not multiples of 2 or 4), every padding, channel
// counts off the vector width, a 1-pixel-wide image, and enough tiles for several groups per
// thread (the 40x40 image at 128 -> 80 channels: 100 tiles of 4x4 in groups of 24).
const Conv2dShape kShapes[] = {
    Conv2dShape::make(2, 7, 9, 17, 19, 3, 3, 1, 1),  Conv2dShape::make(1, 7, 9, 16, 33, 3, 3, 1, 0),
    Conv2dShape::make(2, 6, 5, 20, 16, 3, 3, 1, 2),  Conv2dShape::make(3, 1, 9, 16, 16, 3, 3, 1, 1),
    Conv2dShape::make(1, 40, 40, 128, 80, 3, 3, 1, 1),
};

}  // namespace

TEST(Winograd, Float64MatchesTheDirectAlgorithmExactly) {
  // In exact arithmetic both compute the same sums; float64 rounding leaves ~1e-15.
  for (const Conv2dShape& s : kShapes) {
    const Data d = conv_data(s, DType::F64, 1);
    const Passes ref = direct<double>(s, d);
    for (int m : {2, 4}) {
      const Passes got = winograd<double>(s, m, d);
      EXPECT_LT(scaled_error(got.y, ref.y), 1e-13) << name(s) << " F(" << m << ",3) forward";
      EXPECT_LT(scaled_error(got.dx, ref.dx), 1e-13) << name(s) << " F(" << m << ",3) backward-data";
      EXPECT_LT(scaled_error(got.dw, ref.dw), 1e-13) << name(s) << " F(" << m << ",3) backward-weight";
    }
  }
}

TEST(Winograd, OneThreadGivesTheSameResult) {
  testing_util::ThreadCountGuard guard;
  const Conv2dShape s = kShapes[4];
  const Data d = conv_data(s, DType::F64, 2);
  const Passes ref = direct<double>(s, d);
  cpu::set_num_threads(1);
  const Passes got = winograd<double>(s, 4, d);
  EXPECT_LT(scaled_error(got.y, ref.y), 1e-13);
  EXPECT_LT(scaled_error(got.dx, ref.dx), 1e-13);
  EXPECT_LT(scaled_error(got.dw, ref.dw), 1e-13);
}

// Float32 errors against the float64 result, next to the direct algorithm's, on ResNet50's
// stride-1 3x3 layer shapes (unit-variance data, as batch-normalised activations are):
// printed, and bounded. Measured on this machine (x86-64, AVX-512): direct 2-5e-7, F(2,3)
// 2-4e-7, F(4,3) 1-4e-6 (the transforms' coefficients, up to 8 and 1/15, amplify rounding).
// The bounds are 5 times the largest of those; a wrong transform coefficient shows as an
// error of the order of the coefficient's own error (1e-4 for a 1e-4 slip).
TEST(Winograd, Float32ErrorIsBounded) {
  const Conv2dShape shapes[] = {Conv2dShape::make(2, 16, 16, 64, 64, 3, 3, 1, 1),
                                Conv2dShape::make(2, 8, 8, 128, 128, 3, 3, 1, 1),
                                Conv2dShape::make(2, 7, 7, 512, 512, 3, 3, 1, 1)};
  for (const Conv2dShape& s : shapes) {
    const Data d64 = conv_data(s, DType::F64, 3);
    const Data d32{d64.x.to(DType::F32), d64.w.to(DType::F32), d64.dy.to(DType::F32)};
    const Passes exact = direct<double>(s, d64);
    const Passes ref32 = direct<float>(s, d32);
    std::printf("%-28s  direct f32: fwd %.1e  dx %.1e  dw %.1e\n", name(s).c_str(), scaled_error(ref32.y, exact.y),
                scaled_error(ref32.dx, exact.dx), scaled_error(ref32.dw, exact.dw));
    for (int m : {2, 4}) {
      const Passes got = winograd<float>(s, m, d32);
      const double fwd = scaled_error(got.y, exact.y), dx = scaled_error(got.dx, exact.dx),
                   dw = scaled_error(got.dw, exact.dw);
      std::printf("%-28s  F(%d,3)    f32: fwd %.1e  dx %.1e  dw %.1e\n", name(s).c_str(), m, fwd, dx, dw);
      const double bound = m == 2 ? 2e-6 : 2e-5;  // 5x the measured worst
      EXPECT_LT(fwd, bound) << name(s) << " F(" << m << ",3)";
      EXPECT_LT(dx, bound) << name(s) << " F(" << m << ",3)";
      EXPECT_LT(dw, bound) << name(s) << " F(" << m << ",3)";
    }
  }
}

TEST(Winograd, EpilogueMatchesPlainLoops) {
  const Conv2dShape s = Conv2dShape::make(2, 7, 9, 24, 40, 3, 3, 1, 1);
  const Data d = conv_data(s, DType::F64, 4);
  const std::vector<double> conv = direct<double>(s, d).y;
  const Tensor bias = Tensor::randn({s.K}, 5, 0, DType::F64), center = Tensor::randn({s.K}, 6, 0, DType::F64);
  const Tensor scale = Tensor::rand({s.K}, 7, 0, DType::F64), shift = Tensor::randn({s.K}, 8, 0, DType::F64);
  const Tensor residual = Tensor::randn({s.N, s.P, s.Q, s.K}, 9, 0, DType::F64);
  const std::vector<double> bv = bias.to_vector(), cv = center.to_vector(), sv = scale.to_vector(),
                            hv = shift.to_vector(), rv = residual.to_vector();
  for (int parts = 0; parts < 64; ++parts) {
    cpu::ConvEpilogue<double> ep;
    if (parts & 1) ep.bias = bias.data<double>();
    if (parts & 2) ep.center = center.data<double>();
    if (parts & 4) ep.scale = scale.data<double>();
    if (parts & 8) ep.shift = shift.data<double>();
    if (parts & 16) ep.residual = residual.data<double>();
    ep.relu = parts & 32;
    std::vector<double> expected(conv.size());
    for (size_t i = 0; i < conv.size(); ++i) {
      const size_t k = i % static_cast<size_t>(s.K);
      double v = conv[i];
      if (ep.bias) v += bv[k];
      if (ep.center) v -= cv[k];
      if (ep.scale) v *= sv[k];
      if (ep.shift) v += hv[k];
      if (ep.residual) v += rv[i];
      expected[i] = ep.relu ? std::max(v, 0.0) : v;
    }
    Tensor y = Tensor::full({s.N, s.P, s.Q, s.K}, 7.0, DType::F64);
    cpu::winograd_forward<double>(s, 4, d.x.data<double>(), d.w.data<double>(), ep, y.data<double>());
    EXPECT_LT(scaled_error(y.to_vector(), expected), 1e-13) << "parts " << parts;
  }
}

TEST(Winograd, ChoosesTilesByShape) {
  // ResNet50's stride-1 3x3 layers: 4x4 tiles on large images, 2x2 on small ones (less
  // padding waste and a cheaper filter transform), at 224x224 batch 8 and 64x64 batch 32
  auto tile = [](int64_t N, int64_t H, int64_t C) { return cpu::winograd_tile(Conv2dShape::make(N, H, H, C, C, 3, 3, 1, 1)); };
  EXPECT_EQ(tile(8, 56, 64), 4);
  EXPECT_EQ(tile(8, 28, 128), 4);
  EXPECT_EQ(tile(8, 14, 256), 2);
  EXPECT_EQ(tile(8, 7, 512), 2);
  EXPECT_EQ(tile(32, 16, 64), 4);
  EXPECT_EQ(tile(32, 8, 128), 4);
  EXPECT_EQ(tile(32, 4, 256), 2);
  EXPECT_EQ(tile(32, 2, 512), 2);
  // backward-weight: where each thread's share of dV is small next to the products
  auto weight_tile = [](int64_t N, int64_t H, int64_t C) {
    return cpu::winograd_tile(Conv2dShape::make(N, H, H, C, C, 3, 3, 1, 1), cpu::WinogradPass::BackwardWeight);
  };
  EXPECT_EQ(weight_tile(8, 56, 64), 4);
  EXPECT_EQ(weight_tile(8, 14, 256), 2);
  EXPECT_EQ(weight_tile(8, 7, 512), 0);
  EXPECT_EQ(weight_tile(32, 8, 128), 4);
  EXPECT_EQ(weight_tile(32, 4, 256), 0);
  // one image: the filter's transform is not repaid on the small layers
  EXPECT_EQ(tile(1, 56, 64), 4);
  EXPECT_EQ(tile(1, 7, 512), 0);
  // not 3x3 stride 1, too few channels, padding past 2: never
  EXPECT_EQ(cpu::winograd_tile(Conv2dShape::make(8, 56, 56, 64, 64, 3, 3, 2, 1)), 0);
  EXPECT_EQ(cpu::winograd_tile(Conv2dShape::make(8, 56, 56, 64, 64, 1, 1, 1, 0)), 0);
  EXPECT_EQ(cpu::winograd_tile(Conv2dShape::make(8, 56, 56, 3, 64, 3, 3, 1, 1)), 0);
  EXPECT_EQ(cpu::winograd_tile(Conv2dShape::make(8, 56, 56, 64, 64, 3, 3, 1, 3)), 0);
}

TEST(Winograd, Conv2dUsesItForFloat32OnlyAndTheSwitchTurnsItOff) {
  WinogradSwitchGuard guard;
  const Conv2dShape s = Conv2dShape::make(8, 16, 16, 32, 48, 3, 3, 1, 1);
  const int forward_tile = cpu::winograd_tile(s, cpu::WinogradPass::Forward);
  const int data_tile = cpu::winograd_tile(s, cpu::WinogradPass::BackwardData);
  const int weight_tile = cpu::winograd_tile(s, cpu::WinogradPass::BackwardWeight);
  ASSERT_EQ(forward_tile, 4);
  ASSERT_EQ(data_tile, 4);
  const Data d = conv_data(s, DType::F32, 10);
  const Passes plain = direct<float>(s, d);
  const Passes wino{winograd<float>(s, forward_tile, d).y, winograd<float>(s, data_tile, d).dx,
                    weight_tile ? winograd<float>(s, weight_tile, d).dw : plain.dw};
  auto through_conv2d = [&] {
    Tensor y = Tensor::empty({s.N, s.P, s.Q, s.K}), dx = Tensor::empty({s.N, s.H, s.W, s.C});
    Tensor dw = Tensor::empty({s.K, 3, 3, s.C});
    cpu::conv2d_forward<float>(s, d.x.data<float>(), d.w.data<float>(), nullptr, y.data<float>());
    cpu::conv2d_backward_data<float>(s, d.dy.data<float>(), d.w.data<float>(), dx.data<float>());
    cpu::conv2d_backward_weight<float>(s, d.x.data<float>(), d.dy.data<float>(), dw.data<float>());
    return Passes{y.to_vector(), dx.to_vector(), dw.to_vector()};
  };
  cpu::set_winograd_enabled(true);
  Passes got = through_conv2d();
  EXPECT_EQ(got.y, wino.y);
  EXPECT_EQ(got.dx, wino.dx);
  EXPECT_EQ(got.dw, wino.dw);
  ASSERT_NE(wino.y, plain.y);  // the two algorithms round differently: the comparison means something
  cpu::set_winograd_enabled(false);
  got = through_conv2d();
  EXPECT_EQ(got.y, plain.y);
  EXPECT_EQ(got.dx, plain.dx);
  EXPECT_EQ(got.dw, plain.dw);
  // float64 never takes it
  cpu::set_winograd_enabled(true);
  const Data d64 = conv_data(s, DType::F64, 11);
  const Passes plain64 = direct<double>(s, d64);
  Tensor y64 = Tensor::empty({s.N, s.P, s.Q, s.K}, DType::F64);
  cpu::conv2d_forward<double>(s, d64.x.data<double>(), d64.w.data<double>(), nullptr, y64.data<double>());
  EXPECT_EQ(y64.to_vector(), plain64.y);
}

TEST(Winograd, RefusesShapesItCannotCompute) {
  const Conv2dShape s = Conv2dShape::make(1, 8, 8, 16, 16, 3, 3, 2, 1);
  std::vector<float> x(8 * 8 * 16), w(16 * 9 * 16), y(16 * 16 * 16);
  EXPECT_THROW(cpu::winograd_forward<float>(s, 4, x.data(), w.data(), {}, y.data()), std::invalid_argument);
  const Conv2dShape ok = Conv2dShape::make(1, 8, 8, 16, 16, 3, 3, 1, 1);
  EXPECT_THROW(cpu::winograd_forward<float>(ok, 3, x.data(), w.data(), {}, y.data()), std::invalid_argument);
}
