// labels: cpu gradcheck
// Gradient checks and input validation for the elementwise, reduction, reshape and linear ops.
#include <gtest/gtest.h>

#include <cmath>

#include "engine/ops.h"
#include "gradcheck.h"

using namespace engine;
using testing_util::gradcheck;
using testing_util::param;

TEST(Gradcheck, UnaryOps) {
  Tensor x = param({3, 5, 7}, 1);  // odd sizes, not a multiple of the vector width
  EXPECT_TRUE(gradcheck([](auto& in) { return relu(in[0]); }, {x}));
  EXPECT_TRUE(gradcheck([](auto& in) { return sigmoid(in[0]); }, {x}));
  EXPECT_TRUE(gradcheck([](auto& in) { return softplus(in[0]); }, {x}));
  EXPECT_TRUE(gradcheck([](auto& in) { return scale(in[0], -2.5); }, {x}));
  EXPECT_TRUE(gradcheck([](auto& in) { return sum(in[0]); }, {x}));
  EXPECT_TRUE(gradcheck([](auto& in) { return mean(in[0]); }, {x}));
  EXPECT_TRUE(gradcheck([](auto& in) { return flatten(in[0]); }, {x}));
  EXPECT_TRUE(gradcheck([](auto& in) { return sigmoid(reshape(in[0], {5, -1})); }, {x}));
}

TEST(Gradcheck, BinaryOps) {
  Tensor a = param({2, 3, 5, 3}, 2), b = param({2, 3, 5, 3}, 3);
  EXPECT_TRUE(gradcheck([](auto& in) { return add(in[0], in[1]); }, {a, b}));
  EXPECT_TRUE(gradcheck([](auto& in) { return add_relu(in[0], in[1]); }, {a, b}));
  EXPECT_TRUE(gradcheck([](auto& in) { return sub(in[0], in[1]); }, {a, b}));
  EXPECT_TRUE(gradcheck([](auto& in) { return mul(in[0], in[1]); }, {a, b}));
  EXPECT_TRUE(gradcheck([](auto& in) { return mul(in[0], in[0]); }, {a}));  // same input twice
}

TEST(Gradcheck, Linear) {
  Tensor x = param({3, 7}, 4), w = param({5, 7}, 5), b = param({5}, 6);
  EXPECT_TRUE(gradcheck([](auto& in) { return linear(in[0], in[1], in[2]); }, {x, w, b}));
  EXPECT_TRUE(gradcheck([](auto& in) { return linear(in[0], in[1], Tensor()); }, {x, w}));
}

TEST(Elementwise, SoftplusAndSigmoidAreStableAtExtremes) {
  Tensor x = Tensor::from_vector({-1000, -30, 0, 30, 1000}, {5}, DType::F32);
  std::vector<double> sp = softplus(x).to_vector(), sg = sigmoid(x).to_vector();
  EXPECT_EQ(sp[0], 0);
  EXPECT_NEAR(sp[2], std::log(2.0), 1e-6);
  EXPECT_EQ(sp[4], 1000);
  EXPECT_EQ(sg[0], 0);
  EXPECT_NEAR(sg[2], 0.5, 1e-7);
  EXPECT_EQ(sg[4], 1);
}

TEST(Elementwise, ReluKeepsNaNAndInfinities) {
  // As torch.relu: a NaN reaches the output (where it can be detected) instead of becoming 0.
  const double nan = std::nan(""), inf = HUGE_VAL;
  for (DType dt : {DType::F32, DType::F64}) {
    Tensor x = Tensor::from_vector({nan, -inf, inf, -1, 2, nan, 0}, {7}, dt);
    const std::vector<double> y = relu(x).to_vector();
    EXPECT_TRUE(std::isnan(y[0]) && std::isnan(y[5]));
    EXPECT_EQ(y[1], 0);
    EXPECT_EQ(y[2], inf);
    EXPECT_EQ(y[3], 0);
    EXPECT_EQ(y[4], 2);
    EXPECT_EQ(y[6], 0);
    const std::vector<double> z = add_relu(x, Tensor::zeros({7}, dt)).to_vector();
    EXPECT_TRUE(std::isnan(z[0]) && std::isnan(z[5]));
    EXPECT_EQ(z[1], 0);
    EXPECT_EQ(z[4], 2);
  }
}

TEST(Elementwise, Float32MatchesFloat64) {
  Tensor a = Tensor::randn({4, 33}, 9, 0, DType::F64), b = Tensor::randn({4, 33}, 10, 0, DType::F64);
  Tensor w = Tensor::randn({6, 33}, 11, 0, DType::F64);
  Tensor y64 = linear(sigmoid(mul(add_relu(a, b), a)), w, Tensor());
  Tensor y32 = linear(sigmoid(mul(add_relu(a.to(DType::F32), b.to(DType::F32)), a.to(DType::F32))),
                      w.to(DType::F32), Tensor());
  EXPECT_LT(testing_util::max_rel_error(y32, y64), 1e-5);
}

TEST(Elementwise, RejectsBadInputs) {
  Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({3, 2}), d = Tensor::zeros({2, 3}, DType::F64);
  auto expect_msg = [](auto fn, const std::string& needle) {
    try {
      fn();
      ADD_FAILURE() << "expected an error containing '" << needle << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_msg([&] { add(a, b); }, "add: shape mismatch, f32[2, 3] cpu vs f32[3, 2] cpu");
  expect_msg([&] { mul(a, d); }, "mul: dtype mismatch");
  expect_msg([&] { relu(Tensor()); }, "relu: input is undefined");
  expect_msg([&] { relu(Tensor::empty({2}, DType::BF16)); }, "relu: dtype bf16 is not supported");
  expect_msg([&] { linear(a, Tensor::zeros({4, 2}), Tensor()); }, "linear: input f32[2, 3] cpu has 3 features");
  expect_msg([&] { linear(a, Tensor::zeros({4, 3}), Tensor::zeros({3})); }, "linear: bias f32[3] cpu must be [4]");
  expect_msg([&] { linear(Tensor::zeros({2, 3, 1}), a, Tensor()); }, "linear: input x must have 2 dimensions");
}
