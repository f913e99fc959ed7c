// labels: cpu gradcheck
// batch_norm2d: gradient checks in both modes, running statistics against hand-computed
// values, accuracy of float32 statistics, thread-count independence, input validation.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "engine/ops.h"
#include "gradcheck.h"
#include "kernels/cpu/parallel.h"
#include "test_util.h"

using namespace engine;
using testing_util::gradcheck;
using testing_util::max_rel_error;
using testing_util::param;

using testing_util::expect_error;
using testing_util::ThreadCountGuard;

namespace {

Tensor positive_variance(int64_t channels, uint64_t seed) {
  // uniform (0.5, 1.5]: well away from 0, where eps would dominate
  Tensor u = Tensor::rand({channels}, seed, 0, DType::F64);
  return add(u, Tensor::full({channels}, 0.5, DType::F64));
}

}  // namespace

// Odd channel counts (3, 5, 17: not multiples of a vector width), non-square images, batch > 1,
// and a [N, C] input.
const Shape kGradcheckShapes[] = {{2, 3, 5, 3}, {3, 2, 4, 5}, {2, 3, 3, 17}, {7, 5}};

TEST(BatchNormGradcheck, TrainingModeAllInputs) {
  uint64_t seed = 10;
  for (const Shape& shape : kGradcheckShapes) {
    SCOPED_TRACE(shape_str(shape));
    const int64_t channels = shape.back();
    Tensor x = param(shape, seed++, 2.0), gamma = param({channels}, seed++), beta = param({channels}, seed++);
    Tensor running_mean = Tensor::zeros({channels}, DType::F64);
    Tensor running_var = Tensor::full({channels}, 1.0, DType::F64);
    EXPECT_TRUE(gradcheck(
        [&](auto& in) { return batch_norm2d(in[0], in[1], in[2], running_mean, running_var, true); },
        {x, gamma, beta}));
    // without running statistics (PyTorch's track_running_stats=False)
    EXPECT_TRUE(gradcheck(
        [](auto& in) { return batch_norm2d(in[0], in[1], in[2], Tensor(), Tensor(), true); },
        {x, gamma, beta}));
  }
}

TEST(BatchNormGradcheck, EvalModeTreatsRunningStatisticsAsConstants) {
  uint64_t seed = 30;
  for (const Shape& shape : kGradcheckShapes) {
    SCOPED_TRACE(shape_str(shape));
    const int64_t channels = shape.back();
    Tensor x = param(shape, seed++), gamma = param({channels}, seed++), beta = param({channels}, seed++);
    Tensor running_mean = Tensor::randn({channels}, seed++, 0, DType::F64);
    Tensor running_var = positive_variance(channels, seed++);
    EXPECT_TRUE(gradcheck(
        [&](auto& in) { return batch_norm2d(in[0], in[1], in[2], running_mean, running_var, false); },
        {x, gamma, beta}));
  }
}

// Enough rows for several statistics blocks and two (uneven) row chunks on two threads, so
// the statistics merge partial results.
TEST(BatchNormGradcheck, LargeInputAcrossThreadsAndBlocks) {
  ThreadCountGuard guard;
  kernels::cpu::set_num_threads(2);
  Tensor x = param({5, 31, 29, 17}, 50), gamma = param({17}, 51), beta = param({17}, 52);
  testing_util::GradcheckOptions options;
  options.max_checks = 30;
  // Every output depends on every input through the statistics, so the checked sum has 76k
  // terms and rounding noise of ~1e-11: with the default step of 1e-6 that is ~5e-6 in the
  // numeric gradient. BN is nearly linear in one element (the statistics move by O(1/rows)),
  // so a larger step costs no truncation error and divides the noise by 100.
  options.step = 1e-4;
  EXPECT_TRUE(gradcheck([](auto& in) { return batch_norm2d(in[0], in[1], in[2], Tensor(), Tensor(), true); },
                        {x, gamma, beta}, options));
}

TEST(BatchNorm, ResultsDoNotDependOnThreadCount) {
  ThreadCountGuard guard;
  Tensor x = Tensor::randn({4, 33, 31, 17}, 60), gamma = Tensor::randn({17}, 61);
  Tensor beta = Tensor::randn({17}, 62);
  x.set_requires_grad(true);
  gamma.set_requires_grad(true);
  Tensor r = Tensor::randn(x.shape(), 63);
  std::vector<Tensor> results;
  for (int threads : {1, 2}) {  // one row chunk, then two
    kernels::cpu::set_num_threads(threads);
    x.zero_grad();
    gamma.zero_grad();
    Tensor running_mean = Tensor::zeros({17}), running_var = Tensor::full({17}, 1.0);
    Tensor y = batch_norm2d(x, gamma, beta, running_mean, running_var, true);
    sum(mul(y, r)).backward();
    results.insert(results.end(), {y, running_mean, running_var, x.grad(), gamma.grad()});
  }
  for (size_t i = 0; i < 5; ++i) EXPECT_LT(max_rel_error(results[i], results[i + 5]), 1e-6) << "result " << i;
}

TEST(BatchNorm, RunningStatisticsMatchHandComputedValues) {
  // x [2, 1, 2, 2]: rows (n, h, w) of two channels.
  //   channel 0: 1, 2, 3, 6 -> mean 3, squared deviations 4 + 1 + 0 + 9 = 14
  //   channel 1: -1, 1, -1, 1 -> mean 0, squared deviations 4
  Tensor x = Tensor::from_vector({1, -1, 2, 1, 3, -1, 6, 1}, {2, 1, 2, 2}, DType::F64);
  Tensor gamma = Tensor::from_vector({2, 0.5}, {2}, DType::F64);
  Tensor beta = Tensor::from_vector({-1, 3}, {2}, DType::F64);
  Tensor running_mean = Tensor::from_vector({0.5, -1}, {2}, DType::F64);
  Tensor running_var = Tensor::from_vector({2, 1}, {2}, DType::F64);
  const double eps = 1e-5, momentum = 0.1;

  Tensor y = batch_norm2d(x, gamma, beta, running_mean, running_var, true, momentum, eps);
  // normalised with the biased variance (14 / 4, 4 / 4)
  const std::vector<double> yv = y.to_vector();
  EXPECT_NEAR(yv[0], (1 - 3) / std::sqrt(3.5 + eps) * 2 - 1, 1e-12);
  EXPECT_NEAR(yv[6], (6 - 3) / std::sqrt(3.5 + eps) * 2 - 1, 1e-12);
  EXPECT_NEAR(yv[1], (-1 - 0) / std::sqrt(1.0 + eps) * 0.5 + 3, 1e-12);
  // running averages take the unbiased variance (14 / 3, 4 / 3)
  double mean0 = 0.9 * 0.5 + 0.1 * 3, mean1 = 0.9 * -1 + 0.1 * 0;
  double var0 = 0.9 * 2 + 0.1 * (14.0 / 3), var1 = 0.9 * 1 + 0.1 * (4.0 / 3);
  EXPECT_NEAR(running_mean.to_vector()[0], mean0, 1e-12);
  EXPECT_NEAR(running_mean.to_vector()[1], mean1, 1e-12);
  EXPECT_NEAR(running_var.to_vector()[0], var0, 1e-12);
  EXPECT_NEAR(running_var.to_vector()[1], var1, 1e-12);

  // a second step compounds
  batch_norm2d(x, gamma, beta, running_mean, running_var, true, momentum, eps);
  mean0 = 0.9 * mean0 + 0.1 * 3;
  var0 = 0.9 * var0 + 0.1 * (14.0 / 3);
  EXPECT_NEAR(running_mean.to_vector()[0], mean0, 1e-12);
  EXPECT_NEAR(running_var.to_vector()[0], var0, 1e-12);

  // evaluation uses the running statistics and leaves them alone
  Tensor y_eval = batch_norm2d(x, gamma, beta, running_mean, running_var, false, momentum, eps);
  EXPECT_NEAR(y_eval.to_vector()[6], (6 - mean0) / std::sqrt(var0 + eps) * 2 - 1, 1e-12);
  EXPECT_NEAR(running_mean.to_vector()[0], mean0, 1e-12);
  EXPECT_NEAR(running_var.to_vector()[0], var0, 1e-12);

  // momentum 1 replaces the running statistics, momentum 0 keeps them
  batch_norm2d(x, gamma, beta, running_mean, running_var, true, 1.0, eps);
  EXPECT_NEAR(running_var.to_vector()[1], 4.0 / 3, 1e-12);
  batch_norm2d(x, gamma, beta, running_mean, running_var, true, 0.0, eps);
  EXPECT_NEAR(running_var.to_vector()[1], 4.0 / 3, 1e-12);
  EXPECT_NEAR(running_mean.to_vector()[0], 3, 1e-12);
}

TEST(BatchNorm, EvalBackwardUsesTheStatisticsOfItsForward) {
  Tensor x = param({2, 3, 3, 5}, 70), gamma = Tensor::randn({5}, 71, 0, DType::F64);
  Tensor beta = Tensor::randn({5}, 72, 0, DType::F64);
  Tensor running_mean = Tensor::randn({5}, 73, 0, DType::F64), running_var = positive_variance(5, 74);
  const std::vector<double> var_at_forward = running_var.to_vector(), g = gamma.to_vector();
  Tensor y = batch_norm2d(x, gamma, beta, running_mean, running_var, false);
  // a training step updates the running statistics in place before this backward runs
  batch_norm2d(Tensor::randn({4, 5}, 75, 0, DType::F64), gamma, beta, running_mean, running_var, true, 0.5);
  sum(y).backward();
  const std::vector<double> dx = x.grad().to_vector();
  for (size_t i = 0; i < dx.size(); ++i)
    EXPECT_NEAR(dx[i], g[i % 5] / std::sqrt(var_at_forward[i % 5] + 1e-5), 1e-12) << "element " << i;
}

TEST(BatchNorm, Float32MatchesFloat64) {
  const Shape shape{3, 7, 5, 17};
  Tensor x64 = Tensor::randn(shape, 80, 0, DType::F64), r64 = Tensor::randn(shape, 81, 0, DType::F64);
  Tensor g64 = Tensor::randn({17}, 82, 0, DType::F64), b64 = Tensor::randn({17}, 83, 0, DType::F64);
  Tensor x32 = x64.to(DType::F32), r32 = r64.to(DType::F32);
  Tensor g32 = g64.to(DType::F32), b32 = b64.to(DType::F32);
  for (bool training : {true, false}) {
    SCOPED_TRACE(training ? "training" : "eval");
    Tensor rm64 = Tensor::randn({17}, 84, 0, DType::F64), rv64 = positive_variance(17, 85);
    Tensor rm32 = rm64.to(DType::F32), rv32 = rv64.to(DType::F32);
    for (Tensor* t : {&x64, &g64, &b64, &x32, &g32, &b32}) {
      t->zero_grad();
      t->set_requires_grad(true);
    }
    Tensor y64 = batch_norm2d(x64, g64, b64, rm64, rv64, training);
    Tensor y32 = batch_norm2d(x32, g32, b32, rm32, rv32, training);
    sum(mul(y64, r64)).backward();
    sum(mul(y32, r32)).backward();
    EXPECT_LT(max_rel_error(y32, y64), 1e-5);
    EXPECT_LT(max_rel_error(rm32, rm64), 1e-5);
    EXPECT_LT(max_rel_error(rv32, rv64), 1e-5);
    EXPECT_LT(max_rel_error(x32.grad(), x64.grad()), 1e-4);
    EXPECT_LT(max_rel_error(g32.grad(), g64.grad()), 1e-5);
    EXPECT_LT(max_rel_error(b32.grad(), b64.grad()), 1e-5);
  }
}

// 100k rows per channel of float32 values with |mean| >> std: float32 sums, or E[x^2] - E[x]^2
// in float32, would lose all digits of the variance here (E[x^2] is 1.6e7 times larger).
TEST(BatchNorm, Float32StatisticsStayAccurateOverManyElements) {
  const Shape shape{8, 125, 100, 5};
  const int64_t channels = 5, rows = 100000;
  std::vector<double> values = Tensor::randn(shape, 90, 0, DType::F64).to_vector();
  for (double& v : values) v = 1000 + 0.25 * v;
  // an outlier 1200 standard deviations out, as the first row of a block, where the kernel
  // takes its shift: the worst case for the cancellation the shift has to keep small
  values[64 * channels] = 1300;
  Tensor x = Tensor::from_vector(values, shape, DType::F32);
  Tensor running_mean = Tensor::zeros({channels}), running_var = Tensor::zeros({channels});
  Tensor y = batch_norm2d(x, Tensor::full({channels}, 1.0), Tensor::zeros({channels}), running_mean,
                          running_var, true, /*momentum=*/1.0);
  // reference: two passes in double over the same float32 values
  const std::vector<double> xv = x.to_vector(), yv = y.to_vector();
  for (int64_t c = 0; c < channels; ++c) {
    double mean = 0, m2 = 0, y_mean = 0, y_m2 = 0;
    for (int64_t r = 0; r < rows; ++r) mean += xv[r * channels + c];
    mean /= rows;
    for (int64_t r = 0; r < rows; ++r) m2 += (xv[r * channels + c] - mean) * (xv[r * channels + c] - mean);
    for (int64_t r = 0; r < rows; ++r) y_mean += yv[r * channels + c];
    y_mean /= rows;
    for (int64_t r = 0; r < rows; ++r)
      y_m2 += (yv[r * channels + c] - y_mean) * (yv[r * channels + c] - y_mean);
    EXPECT_NEAR(running_mean.to_vector()[c], mean, 1e-7 * 1000);  // float32 rounding of ~1000
    EXPECT_NEAR(running_var.to_vector()[c] / (m2 / (rows - 1)), 1.0, 1e-6) << "channel " << c;
    // the output is as accurate as float32 allows: its mean is not shifted by the rounding of
    // the batch mean to float32 (3e-5 / std 0.25 would be 1.2e-4)
    const double var = m2 / rows;
    EXPECT_NEAR(y_mean, 0.0, 1e-6) << "channel " << c;
    EXPECT_NEAR(y_m2 / rows, var / (var + 1e-5), 1e-6) << "channel " << c;
  }
}

TEST(BatchNorm, RejectsBadInputs) {
  Tensor x = Tensor::zeros({2, 3, 3, 4}), c4 = Tensor::zeros({4}), c3 = Tensor::zeros({3});
  expect_error([&] { batch_norm2d(Tensor::zeros({2, 3, 4}), c4, c4, c4, c4, true); },
               "batch_norm2d: input x must be [N, H, W, C] or [N, C], got f32[2, 3, 4] cpu");
  expect_error([&] { batch_norm2d(Tensor(), c4, c4, c4, c4, true); }, "batch_norm2d: input x is undefined");
  expect_error([&] { batch_norm2d(x, c3, c4, c4, c4, true); },
               "batch_norm2d: gamma f32[3] cpu must be [4], the channels of x f32[2, 3, 3, 4] cpu");
  expect_error([&] { batch_norm2d(x, c4, Tensor::zeros({1, 4}), c4, c4, true); },
               "batch_norm2d: beta f32[1, 4] cpu must be [4]");
  expect_error([&] { batch_norm2d(x, c4, c4, c3, c4, true); },
               "batch_norm2d: running_mean f32[3] cpu must be [4]");
  expect_error([&] { batch_norm2d(x, c4, c4, c4, c3, false); },
               "batch_norm2d: running_var f32[3] cpu must be [4]");
  expect_error([&] { batch_norm2d(x, Tensor(), c4, c4, c4, true); }, "batch_norm2d: gamma is undefined");
  expect_error([&] { batch_norm2d(x, c4, c4, Tensor(), Tensor(), false); },
               "batch_norm2d: running_mean (needed when not training) is undefined");
  expect_error([&] { batch_norm2d(x, c4, c4, c4, Tensor(), true); },
               "batch_norm2d: running_mean and running_var must be both defined or both undefined");
  expect_error([&] { batch_norm2d(x, Tensor::zeros({4}, DType::F64), c4, c4, c4, true); },
               "batch_norm2d: dtype mismatch, f32[2, 3, 3, 4] cpu vs f64[4] cpu");
  expect_error([&] { batch_norm2d(Tensor::empty({2, 4}, DType::BF16), c4, c4, c4, c4, true); },
               "batch_norm2d: dtype bf16 is not supported");
  expect_error([&] { batch_norm2d(Tensor::zeros({1, 4}), c4, c4, c4, c4, true); },
               "batch_norm2d: training needs more than one value per channel, got x f32[1, 4] cpu");
  expect_error([&] { batch_norm2d(x, c4, c4, c4, c4, true, 1.5); },
               "batch_norm2d: momentum 1.5 is outside [0, 1]");
  expect_error([&] { batch_norm2d(x, c4, c4, c4, c4, true, 0.1, 0.0); },
               "batch_norm2d: eps 0 must be positive");
  Tensor trainable_stat = Tensor::zeros({4});
  trainable_stat.set_requires_grad(true);
  expect_error([&] { batch_norm2d(x, c4, c4, c4, trainable_stat, true); },
               "batch_norm2d: running statistics are buffers updated in place and must not require a "
               "gradient");
  // one sample per channel is fine in evaluation
  EXPECT_EQ(batch_norm2d(Tensor::zeros({1, 4}), c4, c4, c4, Tensor::full({4}, 1.0), false).shape(),
            (Shape{1, 4}));
}

TEST(BatchNorm, RejectsDeviceMismatch) {
  Tensor on_gpu;
  try {
    on_gpu = Tensor::zeros({4}, DType::F32, Device::CUDA);
  } catch (const std::exception&) {
    GTEST_SKIP() << "no CUDA device: the device-mismatch check needs one";
  }
  Tensor x = Tensor::zeros({2, 3, 3, 4}), c4 = Tensor::zeros({4});
  expect_error([&] { batch_norm2d(x, on_gpu, c4, c4, c4, true); },
               "batch_norm2d: device mismatch, f32[2, 3, 3, 4] cpu vs f32[4] cuda");
}
