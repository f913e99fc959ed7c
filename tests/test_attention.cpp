// labels: cpu gradcheck
// The spatial-attention ops, channel_mean_max and gate_mul: gradient checks on odd shapes
// (C = 3, 17, 33, 67, below and beyond the kernels' vector blocks), a naive
// reference, tie behaviour of the max, float32 against float64, and input validation.
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

// Random f64 NHWC input whose per-pixel maximum is at least `gap` above every other channel,
// so that a finite-difference step never changes which channel is maximal (the max's kink).
Tensor separated_max(const Shape& shape, uint64_t seed, double gap = 0.05) {
  Tensor x = Tensor::randn(shape, seed, 0, DType::F64);
  double* p = x.data<double>();
  const int64_t channels = shape.back(), pixels = x.numel() / channels;
  for (int64_t px = 0; px < pixels; ++px) {
    double* row = p + px * channels;
    double* top = std::max_element(row, row + channels);
    double runner_up = -INFINITY;
    for (double* c = row; c < row + channels; ++c)
      if (c != top) runner_up = std::max(runner_up, *c);
    *top = std::max(*top, runner_up + gap);
  }
  x.set_requires_grad(true);
  return x;
}

// The definition, one channel at a time.
std::vector<double> naive_mean_max(const Tensor& x) {
  std::vector<double> v = x.to_vector(), out;
  const int64_t channels = x.dim(3);
  for (int64_t px = 0; px < x.numel() / channels; ++px) {
    double total = 0, best = v[px * channels];
    for (int64_t c = 0; c < channels; ++c) {
      total += v[px * channels + c];
      best = std::max(best, v[px * channels + c]);
    }
    out.push_back(total / channels);
    out.push_back(best);
  }
  return out;
}

}  // namespace

TEST(AttentionGradcheck, ChannelMeanMax) {
  // C = 67: vector part and tail in float64 (32 channels per vector iteration)
  for (const Shape& shape :
       {Shape{2, 3, 5, 17}, Shape{2, 2, 3, 3}, Shape{1, 2, 3, 33}, Shape{1, 2, 2, 67}}) {
    Tensor x = separated_max(shape, 1);
    EXPECT_TRUE(gradcheck([](auto& in) { return channel_mean_max(in[0]); }, {x}))
        << shape_str(shape);
  }
}

TEST(AttentionGradcheck, GateMul) {
  for (const Shape& shape : {Shape{2, 3, 5, 17}, Shape{2, 2, 3, 3}, Shape{1, 2, 3, 33}}) {
    Tensor x = param(shape, 2), g = param({shape[0], shape[1], shape[2], 1}, 3);
    EXPECT_TRUE(gradcheck([](auto& in) { return gate_mul(in[0], in[1]); }, {x, g}))
        << shape_str(shape);
    // one input at a time: the backward skips the other gradient
    Tensor g_fixed = g.detach(), x_fixed = x.detach();
    EXPECT_TRUE(gradcheck([&](auto& in) { return gate_mul(in[0], g_fixed); }, {x}));
    EXPECT_TRUE(gradcheck([&](auto& in) { return gate_mul(x_fixed, in[0]); }, {g}));
  }
}

TEST(AttentionGradcheck, AttentionBranch) {
  // mean/max pooling -> a 1x1 "convolution" (linear over the two maps) -> sigmoid gate -> gate
  // multiply: x reaches the output both through the gate and directly.
  Tensor x = separated_max({2, 3, 5, 17}, 4), w = param({1, 2}, 5), b = param({1}, 6);
  auto branch = [](auto& in) {
    const Tensor& x = in[0];
    Tensor pooled = reshape(channel_mean_max(x), {-1, 2});
    Tensor gate = sigmoid(reshape(linear(pooled, in[1], in[2]), {x.dim(0), x.dim(1), x.dim(2), 1}));
    return gate_mul(x, gate);
  };
  EXPECT_TRUE(gradcheck(branch, {x, w, b}));
}

TEST(ChannelMeanMax, MatchesTheDefinition) {
  for (int64_t channels : {1, 3, 16, 17, 33, 64, 65, 131, 2048}) {
    Tensor x = Tensor::randn({2, 3, 2, channels}, 7, 0, DType::F64);
    std::vector<double> expected = naive_mean_max(x), got = channel_mean_max(x).to_vector();
    std::vector<double> got32 = channel_mean_max(x.to(DType::F32)).to_vector();
    ASSERT_EQ(got.size(), expected.size());
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_NEAR(got[i], expected[i], 1e-14) << "C=" << channels << " element " << i;
      EXPECT_NEAR(got32[i], expected[i], 1e-6) << "C=" << channels << " element " << i;
    }
  }
  EXPECT_EQ(channel_mean_max(Tensor::randn({2, 3, 4, 5}, 1)).shape(), Shape({2, 3, 4, 2}));
}

TEST(ChannelMeanMax, TiedMaximaSendTheGradientToTheFirst) {
  // Rows of 150 channels: the vector part (4 chains of 16 float or 8 double lanes, 128
  // channels) and a scalar tail, with tied maxima placed so that lane order, chain order and
  // channel order disagree, within one lane, and across the vector part and the tail.
  const int64_t channels = 150;
  const std::vector<std::vector<int64_t>> ties{{70, 60}, {130, 140}, {129, 127},   {3, 67},
                                               {100, 36}, {149, 0},  {90, 20, 130}, {65, 40},
                                               {80, 10},  {112, 50}};
  for (DType dtype : {DType::F32, DType::F64}) {
    const int64_t pixels = static_cast<int64_t>(ties.size());
    std::vector<double> values(pixels * channels);
    for (int64_t i = 0; i < pixels * channels; ++i) values[i] = std::sin(0.37 * i);  // all < 1
    for (int64_t px = 0; px < pixels; ++px)
      for (int64_t c : ties[px]) values[px * channels + c] = 2.0;
    Tensor x = Tensor::from_vector(values, {1, 1, pixels, channels}, dtype);
    x.set_requires_grad(true);
    Tensor y = channel_mean_max(x);
    // only the max channel contributes to the loss
    std::vector<double> pick_max(pixels * 2, 0.0);
    for (int64_t px = 0; px < pixels; ++px) pick_max[px * 2 + 1] = 1.0;
    sum(mul(y, Tensor::from_vector(pick_max, {1, 1, pixels, 2}, dtype))).backward();
    std::vector<double> g = x.grad().to_vector(), out = y.to_vector();
    for (int64_t px = 0; px < pixels; ++px) {
      EXPECT_EQ(out[px * 2 + 1], 2.0);
      const int64_t first = *std::min_element(ties[px].begin(), ties[px].end());
      for (int64_t c = 0; c < channels; ++c)
        EXPECT_EQ(g[px * channels + c], c == first ? 1.0 : 0.0)
            << dtype_name(dtype) << " pixel " << px << " channel " << c;
    }
  }
}

TEST(Attention, Float32MatchesFloat64) {
  Tensor x = Tensor::randn({2, 3, 5, 33}, 8, 0, DType::F64);
  Tensor g = sigmoid(Tensor::randn({2, 3, 5, 1}, 9, 0, DType::F64));
  Tensor x32 = x.to(DType::F32), g32 = g.to(DType::F32);
  EXPECT_LT(testing_util::max_rel_error(channel_mean_max(x32), channel_mean_max(x)), 1e-5);
  EXPECT_LT(testing_util::max_rel_error(gate_mul(x32, g32), gate_mul(x, g)), 1e-6);
  // and the gradients, through both ops
  auto grads = [](Tensor x, Tensor g) {
    x.set_requires_grad(true);
    g.set_requires_grad(true);
    Tensor w = Tensor::randn({2, 3, 5, 2}, 10, 0, x.dtype());
    add(sum(gate_mul(x, g)), sum(mul(channel_mean_max(x), w))).backward();
    return std::vector<Tensor>{x.grad(), g.grad()};
  };
  std::vector<Tensor> g64 = grads(x.clone(), g.clone()), g32s = grads(x32.clone(), g32.clone());
  EXPECT_LT(testing_util::max_rel_error(g32s[0], g64[0]), 1e-5);
  EXPECT_LT(testing_util::max_rel_error(g32s[1], g64[1]), 1e-5);
}

TEST(Attention, RejectsBadInputs) {
  Tensor x = Tensor::zeros({2, 3, 5, 17});
  expect_error("channel_mean_max: input x (NHWC) must have 4 dimensions, got f32[2, 3, 4] cpu",
               [&] {
                 channel_mean_max(Tensor::zeros({2, 3, 4}));
               });
  expect_error("channel_mean_max: input f32[2, 3, 4, 0] cpu has no channels", [&] {
    channel_mean_max(Tensor::zeros({2, 3, 4, 0}));
  });
  expect_error("channel_mean_max: dtype bf16 is not supported", [&] {
    channel_mean_max(Tensor::empty({1, 1, 1, 4}, DType::BF16));
  });
  expect_error(
      "gate_mul: gate f32[2, 3, 5, 2] cpu must be [N, H, W, 1] for input f32[2, 3, 5, 17] cpu",
      [&] {
        gate_mul(x, Tensor::zeros({2, 3, 5, 2}));
      });
  expect_error(
      "gate_mul: gate f32[2, 5, 3, 1] cpu must be [N, H, W, 1] for input f32[2, 3, 5, 17] cpu",
      [&] {
        gate_mul(x, Tensor::zeros({2, 5, 3, 1}));
      });
  expect_error("gate_mul: gate g must have 4 dimensions, got f32[2, 3, 5] cpu", [&] {
    gate_mul(x, Tensor::zeros({2, 3, 5}));
  });
  expect_error("gate_mul: dtype mismatch, f32[2, 3, 5, 17] cpu vs f64[2, 3, 5, 1] cpu", [&] {
    gate_mul(x, Tensor::zeros({2, 3, 5, 1}, DType::F64));
  });
}
