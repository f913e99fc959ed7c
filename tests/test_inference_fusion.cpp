// labels: cpu
// The inference fusion: the GEMM epilogue (kernels/cpu/gemm.h), conv2d_forward_fused
// (kernels/cpu/conv2d.h), engine::conv2d_bn_inference against the ops it replaces, and the
// detectors' fused evaluation forward against their op-by-op forward.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "kernels/cpu/conv2d.h"
#include "kernels/cpu/gemm.h"
#include "models/resnet.h"
#include "test_util.h"

using namespace engine;
using testing_util::expect_error;

namespace {

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    if (std::isnan(a[i]) != std::isnan(b[i])) return std::numeric_limits<double>::infinity();
    if (!std::isnan(a[i])) worst = std::max(worst, std::abs(a[i] - b[i]));
  }
  return worst;
}

double max_abs(const std::vector<double>& a) {
  double m = 0;
  for (double v : a) m = std::max(m, std::abs(v));
  return m;
}

struct Case {
  int64_t N, H, W, C, K, R, S;
  int stride, pad;
};

// Geometries that reach each path of the product: row segments (C < 16, the stem), 1x1 as a
// plain GEMM, several reduction blocks (C * R * S past a block), B packed block by block (a
// weight over kWholePackedB), a column split between threads (few rows, many columns), and
// a ragged last tile.
const Case kCases[] = {
    {2, 9, 7, 3, 19, 7, 7, 2, 3},    {2, 8, 8, 64, 40, 1, 1, 1, 0},   {1, 6, 6, 300, 70, 3, 3, 1, 1},
    {1, 4, 4, 512, 512, 3, 3, 1, 1}, {1, 2, 2, 32, 1000, 1, 1, 1, 0}, {3, 5, 5, 17, 13, 3, 3, 2, 1},
};

// The kernel against conv2d_forward followed by the epilogue as plain loops, with every
// combination of the optional parts.
template <typename T>
void check_fused_kernel(double tolerance) {
  for (const Case& c : kCases) {
    const kernels::Conv2dShape s = kernels::Conv2dShape::make(c.N, c.H, c.W, c.C, c.K, c.R, c.S, c.stride, c.pad);
    const DType dt = dtype_of<T>::value;
    Tensor x = Tensor::randn({c.N, c.H, c.W, c.C}, 1, 0, dt), w = Tensor::randn({c.K, c.R, c.S, c.C}, 2, 0, dt);
    Tensor center = Tensor::randn({c.K}, 3, 0, dt), scale = Tensor::rand({c.K}, 4, 0, dt);
    Tensor shift = Tensor::randn({c.K}, 5, 0, dt), residual = Tensor::randn({c.N, s.P, s.Q, c.K}, 6, 0, dt);
    Tensor plain = Tensor::empty({c.N, s.P, s.Q, c.K}, dt);
    kernels::cpu::conv2d_forward<T>(s, x.data<T>(), w.data<T>(), nullptr, plain.data<T>());
    const std::vector<double> conv = plain.to_vector(), cv = center.to_vector(), sv = scale.to_vector(),
                              hv = shift.to_vector(), rv = residual.to_vector();
    for (int parts = 0; parts < 32; ++parts) {
      const bool use_center = parts & 1, use_scale = parts & 2, use_shift = parts & 4, use_residual = parts & 8,
                 relu = parts & 16;
      std::vector<double> expected(conv.size());
      for (size_t i = 0; i < conv.size(); ++i) {
        const size_t k = i % static_cast<size_t>(c.K);
        double v = conv[i];
        if (use_center) v -= cv[k];
        if (use_scale) v *= sv[k];
        if (use_shift) v += hv[k];
        if (use_residual) v += rv[i];
        expected[i] = relu ? std::max(v, 0.0) : v;
      }
      Tensor y = Tensor::full({c.N, s.P, s.Q, c.K}, 7.0, dt);  // stale values must be overwritten
      kernels::cpu::conv2d_forward_fused<T>(s, x.data<T>(), w.data<T>(), use_center ? center.data<T>() : nullptr,
                                            use_scale ? scale.data<T>() : nullptr,
                                            use_shift ? shift.data<T>() : nullptr,
                                            use_residual ? residual.data<T>() : nullptr, relu, y.data<T>());
      const std::vector<double> got = y.to_vector();
      EXPECT_LE(max_abs_diff(got, expected), tolerance * (1 + max_abs(expected)))
          << "case N" << c.N << " H" << c.H << " C" << c.C << " K" << c.K << " " << c.R << "x" << c.S
          << ", parts " << parts;
    }
  }
}

}  // namespace

TEST(InferenceFusion, FusedConvolutionMatchesConvolutionThenEpilogueF64) { check_fused_kernel<double>(1e-13); }

TEST(InferenceFusion, FusedConvolutionMatchesConvolutionThenEpilogueF32) { check_fused_kernel<float>(2e-6); }

TEST(InferenceFusion, FusedConvolutionOnOneThreadMatches) {
  testing_util::ThreadCountGuard guard;
  kernels::cpu::set_num_threads(1);
  check_fused_kernel<double>(1e-13);
}

TEST(InferenceFusion, ReluKeepsNaN) {
  // A NaN (a broken weight, a NaN running variance) must reach the output, not become 0.
  const kernels::Conv2dShape s = kernels::Conv2dShape::make(1, 4, 4, 8, 16, 1, 1, 1, 0);
  Tensor x = Tensor::randn({1, 4, 4, 8}, 1, 0, DType::F64), w = Tensor::randn({16, 1, 1, 8}, 2, 0, DType::F64);
  std::vector<double> center(16, 0.0);
  center[5] = std::nan("");
  Tensor y = Tensor::empty({1, 4, 4, 16}, DType::F64);
  kernels::cpu::conv2d_forward_fused<double>(s, x.data<double>(), w.data<double>(), center.data(), nullptr, nullptr,
                                             nullptr, true, y.data<double>());
  const std::vector<double> v = y.to_vector();
  for (size_t i = 0; i < v.size(); ++i) {
    if (i % 16 == 5) EXPECT_TRUE(std::isnan(v[i])) << i;
    else EXPECT_GE(v[i], 0.0) << i;
  }
}

TEST(InferenceFusion, EmptyReductionAppliesTheEpilogue) {
  // A product with no reduction (K = 0): C = epilogue(bias).
  std::vector<double> c(3 * 4, 9.0), residual(3 * 4), bias = {1, -2, 3, -4}, scale = {2, 2, 2, 2};
  for (size_t i = 0; i < residual.size(); ++i) residual[i] = static_cast<double>(i);
  kernels::cpu::IndirectGemm<double> g;
  g.M = 3;
  g.N = 4;
  g.segments = 0;
  g.bias = bias.data();
  g.out_scale = scale.data();
  g.out_relu = true;
  g.c_rows = [&](int64_t m0, int64_t count, double** rows) {
    for (int64_t i = 0; i < count; ++i) rows[i] = c.data() + (m0 + i) * 4;
  };
  g.residual_rows = [&](int64_t m0, int64_t count, const double** rows) {
    for (int64_t i = 0; i < count; ++i) rows[i] = residual.data() + (m0 + i) * 4;
  };
  kernels::cpu::run_indirect_gemm(g);
  for (int64_t m = 0; m < 3; ++m)
    for (int64_t n = 0; n < 4; ++n)
      EXPECT_EQ(c[m * 4 + n], std::max(0.0, 2 * bias[n] + residual[m * 4 + n])) << m << "," << n;
}

namespace {

struct BnParams {
  Tensor gamma, beta, mean, var;
};

BnParams random_bn(int64_t K, DType dt, uint64_t seed) {
  BnParams p{Tensor::randn({K}, seed, 0, dt), Tensor::randn({K}, seed + 1, 0, dt), Tensor::randn({K}, seed + 2, 0, dt),
             Tensor::rand({K}, seed + 3, 0, dt)};
  return p;
}

// The op against conv2d -> batch_norm2d (eval) -> + residual -> relu.
void check_op(DType dt, double tolerance) {
  NoGradGuard no_grad;
  for (const Case& c : kCases) {
    const int64_t P = (c.H + 2 * c.pad - c.R) / c.stride + 1, Q = (c.W + 2 * c.pad - c.S) / c.stride + 1;
    Tensor x = Tensor::randn({c.N, c.H, c.W, c.C}, 11, 0, dt), w = Tensor::randn({c.K, c.R, c.S, c.C}, 12, 0, dt);
    BnParams bn = random_bn(c.K, dt, 13);
    Tensor residual = Tensor::randn({c.N, P, Q, c.K}, 17, 0, dt);
    for (int parts = 0; parts < 4; ++parts) {
      const bool use_residual = parts & 1, relu = parts & 2;
      Tensor expected = batch_norm2d(conv2d(x, w, Tensor(), c.stride, c.pad), bn.gamma, bn.beta, bn.mean, bn.var,
                                     false, 0.1, 1e-5);
      if (use_residual) expected = add(expected, residual);
      if (relu) expected = engine::relu(expected);
      Tensor got = conv2d_bn_inference(x, w, c.stride, c.pad, bn.gamma, bn.beta, bn.mean, bn.var, 1e-5,
                                       use_residual ? residual : Tensor(), relu);
      ASSERT_EQ(got.shape(), expected.shape());
      const std::vector<double> e = expected.to_vector();
      EXPECT_LE(max_abs_diff(got.to_vector(), e), tolerance * (1 + max_abs(e)))
          << "case C" << c.C << " K" << c.K << ", parts " << parts;
    }
  }
}

}  // namespace

TEST(InferenceFusion, OpMatchesConvBatchNormResidualReluF64) { check_op(DType::F64, 1e-12); }

TEST(InferenceFusion, OpMatchesConvBatchNormResidualReluF32) { check_op(DType::F32, 1e-5); }

TEST(InferenceFusion, OpRefusesGradientsAndBadShapes) {
  Tensor x = Tensor::randn({1, 6, 6, 4}, 1), w = Tensor::randn({8, 3, 3, 4}, 2);
  BnParams bn = random_bn(8, DType::F32, 3);
  Tensor wg = w.clone();
  wg.set_requires_grad(true);
  expect_error([&] { conv2d_bn_inference(x, wg, 1, 1, bn.gamma, bn.beta, bn.mean, bn.var, 1e-5, Tensor(), true); },
               "inference only");
  {
    NoGradGuard no_grad;  // the same weight is fine without gradients
    EXPECT_EQ(conv2d_bn_inference(x, wg, 1, 1, bn.gamma, bn.beta, bn.mean, bn.var, 1e-5, Tensor(), true).shape(),
              (Shape{1, 6, 6, 8}));
  }
  Tensor short_gamma = Tensor::randn({7}, 4);
  expect_error([&] { conv2d_bn_inference(x, w, 1, 1, short_gamma, bn.beta, bn.mean, bn.var, 1e-5, Tensor(), true); },
               "gamma");
  expect_error([&] { conv2d_bn_inference(x, w, 1, 1, bn.gamma, bn.beta, Tensor(), bn.var, 1e-5, Tensor(), true); },
               "running_mean is undefined");
  Tensor wrong_residual = Tensor::randn({1, 3, 3, 8}, 5);
  expect_error([&] { conv2d_bn_inference(x, w, 1, 1, bn.gamma, bn.beta, bn.mean, bn.var, 1e-5, wrong_residual, true); },
               "residual");
  expect_error([&] { conv2d_bn_inference(x, w, 1, 1, bn.gamma, bn.beta, bn.mean, bn.var, -1, Tensor(), true); },
               "eps");
  Tensor x64 = Tensor::randn({1, 6, 6, 4}, 1, 0, DType::F64);
  expect_error([&] { conv2d_bn_inference(x64, w, 1, 1, bn.gamma, bn.beta, bn.mean, bn.var, 1e-5, Tensor(), true); },
               "dtype mismatch");
  Tensor x_wrong_channels = Tensor::randn({1, 6, 6, 5}, 1);
  expect_error([&] {
    conv2d_bn_inference(x_wrong_channels, w, 1, 1, bn.gamma, bn.beta, bn.mean, bn.var, 1e-5, Tensor(), true);
  }, "channels");
}

// Each detector in evaluation: the fused forward (no gradients) against the op-by-op forward
// (gradients enabled), with batch-norm statistics and affine parameters far from their
// initial 0/1 so that every part of the fusion matters.
TEST(InferenceFusion, DetectorsFusedEvaluationMatchesOpByOp) {
  for (const char* name : {"resnet50", "resnet50_attn_bnn"}) {
    models::DetectorOptions options;
    options.dtype = DType::F64;
    options.seed = 7;
    auto model = models::make_detector(name, options);
    uint64_t seed = 100;
    for (auto [key, t] : model->state_dict()) {  // t shares the model's storage
      const bool bn = key.find("bn") != std::string::npos || key.find("downsample.1") != std::string::npos;
      if (!bn || key.find("num_batches") != std::string::npos) continue;
      Tensor v = key.find("running_var") != std::string::npos
                     ? Tensor::rand(t.shape(), seed++, 0, DType::F64)
                     : scale(Tensor::randn(t.shape(), seed++, 0, DType::F64), 0.5);
      t.copy_(key.find("weight") != std::string::npos ? add(v, Tensor::full(t.shape(), 1.0, DType::F64)) : v);
    }
    model->eval();
    Tensor images = Tensor::randn({2, 32, 32, 3}, 9, 0, DType::F64);
    const std::vector<double> op_by_op = model->head_mean(model->features(images)).to_vector();
    std::vector<double> fused;
    {
      NoGradGuard no_grad;
      fused = model->head_mean(model->features(images)).to_vector();
    }
    EXPECT_LE(max_abs_diff(fused, op_by_op), 1e-9 * (1 + max_abs(op_by_op))) << name;
  }
}
