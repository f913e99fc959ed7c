// labels: cuda
// CUDA linear (the project's tiled GEMM) against the CPU backend, forward and backward (dx,
// dw, db), float32 and float64, on fresh random data with every device allocation poisoned
// (NaN) so an unwritten output element fails. Shapes: the detector heads (2048 -> 2 and
// 2048 -> 1000) at batch 1 to 256, and odd sizes that end mid-tile (tiles are 64 x 64 x 16;
// runs of 4) or leave a dimension at 1 or 0.
// Error measure (tests/cuda_compare.h): |gpu - cpu| / (sum_k |a_k b_k| + |cpu|) per element.
// Tolerance: 32 unit roundoffs (f32 1.9e-6, f64 3.6e-15). Two correct summation orders
// differ by about 5 u at most on these sizes; a wrong, missing or doubled term costs more
// than 7e-4 (K <= 2048), so the margin costs no sensitivity.
#include <gtest/gtest.h>

#include <cstdio>
#include <vector>

#include "cuda_compare.h"
#include "cuda_util.h"
#include "engine/autograd.h"
#include "engine/ops.h"

using namespace engine;
using testing_util::scaled_error;

namespace {

struct Shape3 {
  int64_t n, in, out;
};

// The detector heads, batch 1..256, and odd sizes: tile edges +-1, a single row or column,
// K = 1, K = 0 (y = b), and a skinny K-split problem with K not a multiple of the tile.
const std::vector<Shape3> kShapes = {
    {1, 2048, 2},   {32, 2048, 2},  {128, 2048, 2}, {256, 2048, 2}, {1, 2048, 1000}, {32, 2048, 1000},
    {256, 2048, 1000}, {7, 33, 5},  {65, 129, 63},  {64, 64, 64},   {3, 1, 4},       {1, 5, 1},
    {2, 0, 3},      {17, 3001, 3},  {200, 17, 300},
};

void check(const char* what, const Tensor& gpu, const Tensor& cpu, const std::vector<double>& scale, double tol,
           const Shape3& s) {
  ASSERT_TRUE(gpu.defined()) << what;
  EXPECT_EQ(gpu.device(), Device::CUDA) << what;
  ASSERT_EQ(gpu.shape(), cpu.shape()) << what;
  double err = scaled_error(gpu, cpu, scale);
  EXPECT_LE(err, tol) << what << " of " << dtype_name(cpu.dtype()) << " linear " << s.n << " x " << s.in << " -> "
                      << s.out << ": scaled error " << err;
}

// y = linear(x, w, b) on both backends; then the gradients of sum(y * r) for every input.
void compare(const Shape3& s, DType dtype, bool with_bias) {
  testing_util::PoisonDeviceAllocations poison;
  const double tol = 32 * testing_util::unit_roundoff(dtype);
  const uint64_t seed = static_cast<uint64_t>(s.n * 131 + s.in * 7 + s.out);
  Tensor x = Tensor::randn({s.n, s.in}, seed, 0, dtype);
  Tensor w = Tensor::randn({s.out, s.in}, seed, 1, dtype);
  Tensor b = with_bias ? Tensor::randn({s.out}, seed, 2, dtype) : Tensor();
  Tensor r = Tensor::randn({s.n, s.out}, seed, 3, dtype);

  auto run = [&](Device device) {
    // detach(): fresh leaves even on the CPU, where to() returns the tensor itself
    Tensor xd = x.to(device).detach().set_requires_grad(true), wd = w.to(device).detach().set_requires_grad(true);
    Tensor bd = with_bias ? b.to(device).detach().set_requires_grad(true) : Tensor();
    Tensor y = linear(xd, wd, bd);
    sum(mul(y, r.to(device))).backward();
    return std::vector<Tensor>{y.detach(), xd.grad(), wd.grad(), with_bias ? bd.grad() : Tensor()};
  };
  std::vector<Tensor> cpu = run(Device::CPU), gpu = run(Device::CUDA);
  testing_util::LinearScales sc = testing_util::linear_scales(x, w, b, r);
  check("y", gpu[0], cpu[0], sc.y, tol, s);
  check("dx", gpu[1], cpu[1], sc.dx, tol, s);
  check("dw", gpu[2], cpu[2], sc.dw, tol, s);
  if (with_bias) check("db", gpu[3], cpu[3], sc.db, tol, s);
}

}  // namespace

TEST(CudaLinear, MatchesCpuFloat32) {
  REQUIRE_GPU();
  for (const Shape3& s : kShapes) compare(s, DType::F32, true);
}

TEST(CudaLinear, MatchesCpuFloat64) {
  REQUIRE_GPU();
  for (const Shape3& s : kShapes) compare(s, DType::F64, true);
}

TEST(CudaLinear, WithoutBias) {
  REQUIRE_GPU();
  for (DType dtype : {DType::F32, DType::F64})
    for (const Shape3& s : {Shape3{5, 2048, 2}, Shape3{70, 100, 130}}) compare(s, dtype, false);
}

TEST(CudaLinear, OnlyTheWantedGradientsAreComputed) {
  REQUIRE_GPU();
  testing_util::PoisonDeviceAllocations poison;
  // x needs no gradient (the first layer's input): dw and db only, and the other way round.
  Tensor x = Tensor::randn({9, 70}, 1, 0, DType::F64, Device::CUDA);
  Tensor w = Tensor::randn({3, 70}, 2, 0, DType::F64, Device::CUDA).set_requires_grad(true);
  Tensor b = Tensor::randn({3}, 3, 0, DType::F64, Device::CUDA).set_requires_grad(true);
  sum(linear(x, w, b)).backward();
  EXPECT_FALSE(x.grad().defined());
  ASSERT_TRUE(w.grad().defined());
  // d sum(y) / dw[o, i] = sum_n x[n, i]; d sum(y) / db = n.
  std::vector<double> xv = x.to_vector(), gw = w.grad().to_vector(), gb = b.grad().to_vector();
  for (int64_t o = 0; o < 3; ++o) {
    EXPECT_DOUBLE_EQ(gb[o], 9.0);
    for (int64_t i = 0; i < 70; ++i) {
      double expected = 0;
      for (int64_t n = 0; n < 9; ++n) expected += xv[n * 70 + i];
      EXPECT_NEAR(gw[o * 70 + i], expected, 1e-13) << o << ", " << i;
    }
  }
  Tensor x2 = Tensor::randn({9, 70}, 4, 0, DType::F32, Device::CUDA).set_requires_grad(true);
  Tensor w2 = Tensor::randn({3, 70}, 5, 0, DType::F32, Device::CUDA);
  sum(linear(x2, w2, Tensor())).backward();
  ASSERT_TRUE(x2.grad().defined());
  EXPECT_FALSE(w2.grad().defined());
  // d sum(y) / dx[n, i] = sum_o w[o, i]
  std::vector<double> wv = w2.to_vector(), gx = x2.grad().to_vector();
  for (int64_t n = 0; n < 9; ++n)
    for (int64_t i = 0; i < 70; ++i)
      EXPECT_NEAR(gx[n * 70 + i], wv[i] + wv[70 + i] + wv[140 + i], 1e-5) << n << ", " << i;
}

TEST(CudaLinear, RepeatedRunsAreBitIdentical) {
  REQUIRE_GPU();
  // Split-K adds its partial sums in a fixed order: no atomics, the same bits every time.
  Tensor x = Tensor::randn({32, 2048}, 6, 0, DType::F32, Device::CUDA);
  Tensor w = Tensor::randn({2, 2048}, 7, 0, DType::F32, Device::CUDA);
  Tensor b = Tensor::randn({2}, 8, 0, DType::F32, Device::CUDA);
  std::vector<double> first = linear(x, w, b).to_vector();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(linear(x, w, b).to_vector(), first);
}

TEST(CudaLinear, MixedDevicesAreRejected) {
  REQUIRE_GPU();
  Tensor x = Tensor::zeros({2, 3}, DType::F32, Device::CUDA), w = Tensor::zeros({4, 3});
  try {
    linear(x, w, Tensor());
    ADD_FAILURE() << "expected a device mismatch error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("linear: device mismatch"), std::string::npos) << e.what();
  }
}
