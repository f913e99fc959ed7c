// labels: cpu gradcheck
// softmax, log_softmax and cross_entropy: gradient checks, hand-computed values, stability at
// extreme logits, float32 against float64, and input validation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "engine/ops.h"
#include "gradcheck.h"

using namespace engine;
using testing_util::gradcheck;
using testing_util::param;

namespace {

void expect_error(const std::string& needle, const std::function<void()>& fn) {
  try {
    fn();
    ADD_FAILURE() << "expected an error containing '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

}  // namespace

TEST(LossGradcheck, SoftmaxAndLogSoftmax) {
  // 3-D input: the softmax runs over the last dimension only; 17 is not a vector multiple.
  Tensor x = param({3, 5, 7}, 1, 2.0), wide = param({2, 17}, 2, 3.0);
  for (const Tensor& t : {x, wide}) {
    EXPECT_TRUE(gradcheck([](auto& in) { return softmax(in[0]); }, {t}));
    EXPECT_TRUE(gradcheck([](auto& in) { return log_softmax(in[0]); }, {t}));
  }
}

TEST(LossGradcheck, CrossEntropy) {
  Tensor logits = param({5, 3}, 3, 2.0);
  std::vector<int64_t> labels{0, 2, 1, 1, 0};
  EXPECT_TRUE(gradcheck([&](auto& in) { return cross_entropy(in[0], labels); }, {logits}));
  Tensor wide = param({3, 17}, 4, 2.0);
  std::vector<int64_t> wide_labels{16, 0, 9};
  EXPECT_TRUE(gradcheck([&](auto& in) { return cross_entropy(in[0], wide_labels); }, {wide}));
  // Through a linear layer, as a classifier head is trained.
  Tensor x = param({4, 7}, 5), w = param({2, 7}, 6), b = param({2}, 7);
  std::vector<int64_t> binary{1, 0, 0, 1};
  EXPECT_TRUE(gradcheck(
      [&](auto& in) { return cross_entropy(linear(in[0], in[1], in[2]), binary); }, {x, w, b}));
}

TEST(Softmax, RowsSumToOneAndMatchTheDefinition) {
  Tensor x = Tensor::randn({4, 3, 9}, 8, 0, DType::F64);
  std::vector<double> xv = x.to_vector(), p = softmax(x).to_vector(),
                      lp = log_softmax(x).to_vector();
  for (int r = 0; r < 12; ++r) {
    double total = 0, denominator = 0;
    for (int c = 0; c < 9; ++c) denominator += std::exp(xv[r * 9 + c]);
    for (int c = 0; c < 9; ++c) {
      int i = r * 9 + c;
      total += p[i];
      EXPECT_NEAR(p[i], std::exp(xv[i]) / denominator, 1e-15);
      EXPECT_NEAR(lp[i], xv[i] - std::log(denominator), 1e-14);
    }
    EXPECT_NEAR(total, 1.0, 1e-15);
  }
}

TEST(Softmax, StableForLogitsOfPlusMinus1000) {
  Tensor x = Tensor::from_vector({1000, 999, -1000, -1000, -999, -1000}, {2, 3}, DType::F32);
  std::vector<double> p = softmax(x).to_vector(), lp = log_softmax(x).to_vector();
  const double log_norm = std::log1p(std::exp(-1.0));  // log(1 + e^-1)
  const double log_norm2 = std::log(1 + 2 * std::exp(-1.0));
  const std::vector<double> expected_lp{-log_norm,      -1 - log_norm, -2000 - log_norm,
                                        -1 - log_norm2, -log_norm2,    -1 - log_norm2};
  for (size_t i = 0; i < p.size(); ++i) {
    EXPECT_TRUE(std::isfinite(p[i]) && std::isfinite(lp[i])) << i;
    // float32 keeps about 7 digits: -2000.31 is known to 1e-4, not 1e-6
    EXPECT_NEAR(lp[i], expected_lp[i], 1e-6 * std::max(1.0, std::fabs(expected_lp[i]))) << i;
    EXPECT_NEAR(p[i], std::exp(expected_lp[i]), 1e-7) << i;
  }
  EXPECT_EQ(p[2], 0.0);
  // Its gradient is finite too.
  Tensor xg = x.clone();
  xg.set_requires_grad(true);
  sum(mul(log_softmax(xg), Tensor::full({2, 3}, 0.5))).backward();
  for (double g : xg.grad().to_vector()) EXPECT_TRUE(std::isfinite(g));
}

TEST(CrossEntropy, EqualsAHandComputation) {
  Tensor logits = Tensor::from_vector({1, 2, 3, 0, 0, 0}, {2, 3}, DType::F64);
  logits.set_requires_grad(true);
  Tensor loss = cross_entropy(logits, {2, 1});
  // row 0: log(e + e^2 + e^3) - 3; row 1: log 3
  const double row0 = 0.40760596444438013, row1 = 1.0986122886681098;
  EXPECT_NEAR(loss.item(), (row0 + row1) / 2, 1e-15);
  EXPECT_EQ(loss.shape(), Shape({1}));
  // d loss / d logits = (softmax - onehot) / batch
  loss.backward();
  const double z = std::exp(1.0) + std::exp(2.0) + std::exp(3.0);
  const std::vector<double> expected{std::exp(1.0) / z / 2,       std::exp(2.0) / z / 2,
                                     (std::exp(3.0) / z - 1) / 2, 1.0 / 6,
                                     (1.0 / 3 - 1) / 2,           1.0 / 6};
  std::vector<double> g = logits.grad().to_vector();
  for (size_t i = 0; i < g.size(); ++i) EXPECT_NEAR(g[i], expected[i], 1e-15) << i;
}

TEST(CrossEntropy, StableForLogitsOfPlusMinus1000) {
  Tensor logits = Tensor::from_vector({1000, -1000, 1000, -1000}, {2, 2}, DType::F32);
  EXPECT_EQ(cross_entropy(logits, {0, 0}).item(), 0.0);
  EXPECT_NEAR(cross_entropy(logits, {1, 0}).item(), 1000.0, 1e-3);  // (2000 + 0) / 2
  logits.set_requires_grad(true);
  cross_entropy(logits, {1, 0}).backward();
  std::vector<double> g = logits.grad().to_vector();
  const std::vector<double> expected{0.5, -0.5, 0, 0};
  for (size_t i = 0; i < g.size(); ++i) EXPECT_NEAR(g[i], expected[i], 1e-7) << i;
}

TEST(Loss, Float32MatchesFloat64) {
  Tensor x = scale(Tensor::randn({6, 33}, 9, 0, DType::F64), 3.0);
  Tensor x32 = x.to(DType::F32);
  EXPECT_LT(testing_util::max_rel_error(softmax(x32), softmax(x)), 1e-5);
  EXPECT_LT(testing_util::max_rel_error(log_softmax(x32), log_softmax(x)), 1e-5);
  std::vector<int64_t> labels{0, 32, 5, 17, 17, 1};
  EXPECT_LT(testing_util::max_rel_error(cross_entropy(x32, labels), cross_entropy(x, labels)),
            1e-6);
  // and the gradients
  Tensor a = x.clone(), b = x32.clone();
  a.set_requires_grad(true);
  b.set_requires_grad(true);
  cross_entropy(a, labels).backward();
  cross_entropy(b, labels).backward();
  EXPECT_LT(testing_util::max_rel_error(b.grad(), a.grad()), 1e-5);
}

TEST(Loss, RejectsBadInputs) {
  Tensor logits = Tensor::zeros({2, 3});
  expect_error("cross_entropy: label 3 at index 1 is outside [0, 3) for logits f32[2, 3] cpu", [&] {
    cross_entropy(logits, {0, 3});
  });
  expect_error("cross_entropy: label -1 at index 0 is outside", [&] {
    cross_entropy(logits, {-1, 0});
  });
  expect_error("cross_entropy: 3 labels for logits f32[2, 3] cpu (2 rows)", [&] {
    cross_entropy(logits, {0, 1, 2});
  });
  expect_error("cross_entropy: logits must have 2 dimensions, got f32[2, 3, 1] cpu", [&] {
    cross_entropy(Tensor::zeros({2, 3, 1}), {0, 1});
  });
  expect_error("cross_entropy: logits f32[0, 3] cpu must have at least one row", [&] {
    cross_entropy(Tensor::zeros({0, 3}), {});
  });
  expect_error("cross_entropy: dtype bf16 is not supported", [&] {
    cross_entropy(Tensor::empty({2, 3}, DType::BF16), {0, 1});
  });
  expect_error("softmax: input is undefined", [&] { softmax(Tensor()); });
  expect_error("log_softmax: dtype bf16 is not supported",
               [&] { log_softmax(Tensor::empty({4}, DType::BF16)); });
}
