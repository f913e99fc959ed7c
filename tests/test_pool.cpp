// labels: cpu gradcheck
// max_pool2d and global_avg_pool: gradient checks, a brute-force reference, PyTorch's output
// sizes, tie and NaN handling, thread-count independence, input validation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "engine/ops.h"
#include "gradcheck.h"
#include "kernels/cpu/parallel.h"
#include "test_util.h"

using namespace engine;
using testing_util::gradcheck;
using testing_util::max_rel_error;

using testing_util::expect_error;
using testing_util::ThreadCountGuard;

namespace {

// Distinct values in [-1, 1), at least 2 / 57600 = 3.5e-5 apart, in a scrambled order: no
// ties within finite-difference reach (the gradcheck step is 1e-6), so max pooling has no kink
// near the sampled points.
Tensor distinct_values(const Shape& shape, DType dtype = DType::F64) {
  const int64_t n = shape_numel(shape);
  const int64_t multiplier = 7919;  // prime, and no shape below has a multiple of it elements
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = 2.0 * static_cast<double>((i * multiplier) % n) / n - 1.0;
  Tensor t = Tensor::from_vector(v, shape, dtype);
  t.set_requires_grad(dtype == DType::F64);
  return t;
}

struct PoolCase {
  Shape shape;
  int kernel, stride, pad;
};

// ResNet's stem pool (3x3 stride 2 pad 1), the 2x2 stride 2 pool, a stride-1 pool, padding on
// an even kernel; odd and non-square sizes where floor() drops the last row or column.
const PoolCase kPoolCases[] = {
    {{2, 9, 7, 5}, 3, 2, 1},  {{2, 8, 6, 3}, 3, 2, 1}, {{3, 6, 8, 3}, 2, 2, 0},
    {{2, 7, 9, 17}, 2, 2, 0}, {{2, 5, 4, 3}, 3, 1, 1}, {{2, 5, 7, 3}, 2, 2, 1},
};

// max over each window, straight from the definition
std::vector<double> reference_max_pool(const Tensor& x, int kernel, int stride, int pad) {
  const int64_t batch = x.dim(0), in_h = x.dim(1), in_w = x.dim(2), channels = x.dim(3);
  const int64_t out_h = (in_h + 2 * pad - kernel) / stride + 1;
  const int64_t out_w = (in_w + 2 * pad - kernel) / stride + 1;
  const std::vector<double> xv = x.to_vector();
  std::vector<double> out;
  for (int64_t n = 0; n < batch; ++n)
    for (int64_t p = 0; p < out_h; ++p)
      for (int64_t q = 0; q < out_w; ++q)
        for (int64_t c = 0; c < channels; ++c) {
          double best = -std::numeric_limits<double>::infinity();
          for (int64_t h = p * stride - pad; h < p * stride - pad + kernel; ++h)
            for (int64_t w = q * stride - pad; w < q * stride - pad + kernel; ++w)
              if (h >= 0 && h < in_h && w >= 0 && w < in_w)
                best = std::max(best, xv[((n * in_h + h) * in_w + w) * channels + c]);
          out.push_back(best);
        }
  return out;
}

}  // namespace

TEST(MaxPool, MatchesDefinitionAndPyTorchOutputSize) {
  for (const PoolCase& pc : kPoolCases) {
    SCOPED_TRACE(shape_str(pc.shape) + " kernel " + std::to_string(pc.kernel) + " stride " +
                 std::to_string(pc.stride) + " pad " + std::to_string(pc.pad));
    Tensor x = Tensor::randn(pc.shape, 1, 0, DType::F64);
    Tensor y = max_pool2d(x, pc.kernel, pc.stride, pc.pad);
    EXPECT_EQ(y.to_vector(), reference_max_pool(x, pc.kernel, pc.stride, pc.pad));
  }
  // output sizes as torch.nn.MaxPool2d computes them
  EXPECT_EQ(max_pool2d(Tensor::zeros({1, 112, 112, 1}), 3, 2, 1).shape(), (Shape{1, 56, 56, 1}));
  EXPECT_EQ(max_pool2d(Tensor::zeros({1, 7, 5, 1}), 2, 2, 0).shape(), (Shape{1, 3, 2, 1}));
  EXPECT_EQ(max_pool2d(Tensor::zeros({1, 5, 6, 1}), 3, 2, 1).shape(), (Shape{1, 3, 3, 1}));
  EXPECT_EQ(max_pool2d(Tensor::zeros({1, 3, 3, 1}), 3, 1, 0).shape(), (Shape{1, 1, 1, 1}));
}

TEST(MaxPoolGradcheck, OddShapesStrideAndPadding) {
  for (const PoolCase& pc : kPoolCases) {
    SCOPED_TRACE(shape_str(pc.shape) + " kernel " + std::to_string(pc.kernel));
    EXPECT_TRUE(gradcheck([&](auto& in) { return max_pool2d(in[0], pc.kernel, pc.stride, pc.pad); },
                          {distinct_values(pc.shape)}));
  }
}

// One image on three threads: the backward splits the image's 40 channels into blocks of
// 16, 16 and 8, so each block's bounds are exercised; the result must not change with the
// thread count.
TEST(MaxPoolGradcheck, ChannelBlocksAcrossThreads) {
  ThreadCountGuard guard;
  Tensor x = distinct_values({1, 40, 36, 40});
  Tensor r = Tensor::randn({1, 20, 18, 40}, 3, 0, DType::F64);
  std::vector<std::vector<double>> grads;
  for (int threads : {1, 3}) {
    kernels::cpu::set_num_threads(threads);
    x.zero_grad();
    sum(mul(max_pool2d(x, 3, 2, 1), r)).backward();
    grads.push_back(x.grad().to_vector());
  }
  EXPECT_EQ(grads[0], grads[1]);
  testing_util::GradcheckOptions options;
  options.max_checks = 100;  // every 576th element: channels 0, 16, 32, 8, 24, ... in all blocks
  EXPECT_TRUE(gradcheck([](auto& in) { return max_pool2d(in[0], 3, 2, 1); }, {x}, options));
}

TEST(MaxPool, TiesSendTheGradientToTheFirstMaximumInScanOrder) {
  for (const PoolCase& pc : kPoolCases) {
    SCOPED_TRACE(shape_str(pc.shape) + " kernel " + std::to_string(pc.kernel));
    Tensor x = Tensor::full(pc.shape, 0.5, DType::F64);
    x.set_requires_grad(true);
    Tensor y = max_pool2d(x, pc.kernel, pc.stride, pc.pad);
    sum(y).backward();
    // every window of a constant input is a tie: its first in-bounds element (top-left,
    // clipped to the image) takes the window's whole gradient
    const int64_t batch = x.dim(0), in_h = x.dim(1), in_w = x.dim(2), channels = x.dim(3);
    std::vector<double> expected(static_cast<size_t>(x.numel()), 0.0);
    for (int64_t n = 0; n < batch; ++n)
      for (int64_t p = 0; p < y.dim(1); ++p)
        for (int64_t q = 0; q < y.dim(2); ++q) {
          const int64_t h = std::max<int64_t>(0, p * pc.stride - pc.pad);
          const int64_t w = std::max<int64_t>(0, q * pc.stride - pc.pad);
          for (int64_t c = 0; c < channels; ++c) expected[((n * in_h + h) * in_w + w) * channels + c] += 1;
        }
    EXPECT_EQ(x.grad().to_vector(), expected);
  }
}

TEST(MaxPool, NaNPropagatesAndTakesTheGradient) {
  // one channel, 2x2 image, one 2x2 window: the NaN wins over larger numbers
  Tensor x = Tensor::from_vector({1, std::nan(""), 5, std::nan("")}, {1, 2, 2, 1}, DType::F64);
  x.set_requires_grad(true);
  Tensor y = max_pool2d(x, 2, 2, 0);
  EXPECT_TRUE(std::isnan(y.to_vector()[0]));
  sum(y).backward();
  // the first NaN in scan order takes the gradient (the loss is NaN, its gradient is not)
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{0, 1, 0, 0}));
}

TEST(MaxPool, Float32MatchesFloat64) {
  Tensor x64 = distinct_values({2, 9, 7, 5});
  Tensor x32 = distinct_values({2, 9, 7, 5}, DType::F32);
  x32.set_requires_grad(true);
  Tensor y64 = max_pool2d(x64, 3, 2, 1), y32 = max_pool2d(x32, 3, 2, 1);
  EXPECT_EQ(y32.to_vector(), y64.to(DType::F32).to_vector());  // max is exact
  Tensor r = Tensor::randn(y64.shape(), 5, 0, DType::F64);
  sum(mul(y64, r)).backward();
  sum(mul(y32, r.to(DType::F32))).backward();
  // Same routing. An input under overlapping windows sums their gradients (standard normals,
  // |r| < 5 here): float32 rounds each term and the sum, an absolute error below 1e-6.
  EXPECT_LT(max_rel_error(x32.grad(), x64.grad(), /*floor=*/1.0), 1e-6);
}

TEST(GlobalAvgPoolGradcheck, OddShapes) {
  for (const Shape& shape : {Shape{3, 5, 7, 17}, Shape{2, 1, 1, 3}, Shape{1, 4, 3, 5}}) {
    SCOPED_TRACE(shape_str(shape));
    EXPECT_TRUE(gradcheck([](auto& in) { return global_avg_pool(in[0]); }, {testing_util::param(shape, 20)}));
  }
}

TEST(GlobalAvgPool, MatchesDefinitionAndFloat32IsAccurate) {
  // large spatial extent with |mean| >> spread: a float32 accumulator would drift
  const Shape shape{2, 150, 130, 3};
  Tensor x64 =
      add(scale(Tensor::randn(shape, 30, 0, DType::F64), 0.1), Tensor::full(shape, 100.0, DType::F64));
  Tensor x32 = x64.to(DType::F32);
  Tensor y32 = global_avg_pool(x32), y64 = global_avg_pool(x32.to(DType::F64));
  EXPECT_EQ(y32.shape(), (Shape{2, 3}));
  const std::vector<double> xv = x32.to_vector();
  std::vector<double> expected(6, 0.0);
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t i = 0; i < 150 * 130; ++i)
      for (int64_t c = 0; c < 3; ++c)
        expected[n * 3 + c] += xv[(n * 150 * 130 + i) * 3 + c] / (150.0 * 130.0);
  for (size_t k = 0; k < 6; ++k) EXPECT_NEAR(y64.to_vector()[k], expected[k], 1e-11);
  EXPECT_LT(max_rel_error(y32, y64), 1e-7);  // float32 rounding of the result only
}

TEST(Pool, RejectsBadInputs) {
  Tensor x = Tensor::zeros({2, 4, 4, 3});
  expect_error([&] { max_pool2d(Tensor::zeros({4, 4, 3}), 2, 2, 0); },
               "max_pool2d: input x [N, H, W, C] must have 4 dimensions, got f32[4, 4, 3] cpu");
  expect_error([&] { max_pool2d(x, 5, 1, 0); },
               "max_pool2d: kernel 5 is larger than the padded input 4x4 of x f32[2, 4, 4, 3] cpu (pad 0)");
  expect_error([&] { max_pool2d(Tensor::zeros({1, 2, 6, 1}), 5, 1, 1); },
               "max_pool2d: kernel 5 is larger than the padded input 4x8");
  expect_error([&] { max_pool2d(x, 3, 2, 2); }, "max_pool2d: pad 2 must be at most half the kernel size 3");
  expect_error([&] { max_pool2d(x, 2, 2, 2); }, "max_pool2d: pad 2 must be at most half the kernel size 2");
  expect_error([&] { max_pool2d(x, 0, 1, 0); }, "max_pool2d: needs kernel > 0, stride > 0, pad >= 0");
  expect_error([&] { max_pool2d(x, 2, 0, 0); }, "max_pool2d: needs kernel > 0, stride > 0, pad >= 0");
  expect_error([&] { max_pool2d(Tensor::empty({1, 2, 2, 1}, DType::BF16), 2, 2, 0); },
               "max_pool2d: dtype bf16 is not supported");
  expect_error([&] { max_pool2d(Tensor(), 2, 2, 0); }, "max_pool2d: input x [N, H, W, C] is undefined");
  expect_error([&] { global_avg_pool(Tensor::zeros({2, 3})); },
               "global_avg_pool: input x [N, H, W, C] must have 4 dimensions, got f32[2, 3] cpu");
  expect_error([&] { global_avg_pool(Tensor::zeros({2, 0, 3, 4})); },
               "global_avg_pool: input x f32[2, 0, 3, 4] cpu has no spatial positions to average");
  expect_error([&] { global_avg_pool(Tensor::empty({1, 2, 2, 1}, DType::BF16)); },
               "global_avg_pool: dtype bf16 is not supported");
}
