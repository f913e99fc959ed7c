// labels: cpu
// Layers as modules: PyTorch's names and default initialisation (bounds, mean, spread),
// reproducible seeds, BatchNorm's train/eval behaviour and counters, the Bayesian layer
// against its ops, Sequential, and a few training steps that learn.
#include <gtest/gtest.h>

#include <cmath>

#include "engine/nn.h"
#include "engine/optim.h"

using namespace engine;
using namespace engine::nn;

namespace {

struct Stats {
  double mean = 0, stddev = 0, min = 0, max = 0;
};

Stats stats_of(const Tensor& t) {
  std::vector<double> v = t.to_vector();
  Stats s{0, 0, v[0], v[0]};
  for (double x : v) {
    s.mean += x;
    s.min = std::min(s.min, x);
    s.max = std::max(s.max, x);
  }
  s.mean /= v.size();
  for (double x : v) s.stddev += (x - s.mean) * (x - s.mean);
  s.stddev = std::sqrt(s.stddev / (v.size() - 1));
  return s;
}

// U(-bound, bound): inside the bounds, reaching close to both, mean 0 and std bound/sqrt(3),
// within about four standard errors for n draws.
void expect_uniform(const Tensor& t, double bound) {
  Stats s = stats_of(t);
  double n = static_cast<double>(t.numel()), expected_std = bound / std::sqrt(3.0);
  EXPECT_GE(s.min, -bound);
  EXPECT_LE(s.max, bound);
  EXPECT_LT(s.min, -0.9 * bound);
  EXPECT_GT(s.max, 0.9 * bound);
  EXPECT_NEAR(s.mean, 0, 4 * expected_std / std::sqrt(n));
  EXPECT_NEAR(s.stddev, expected_std, 4 * expected_std / std::sqrt(2 * n));
}

void expect_normal(const Tensor& t, double mean, double stddev) {
  Stats s = stats_of(t);
  double n = static_cast<double>(t.numel());
  EXPECT_NEAR(s.mean, mean, 4 * stddev / std::sqrt(n));
  EXPECT_NEAR(s.stddev, stddev, 4 * stddev / std::sqrt(2 * n));
}

std::vector<std::string> names_of(const std::vector<NamedTensor>& list) {
  std::vector<std::string> out;
  for (const auto& entry : list) out.push_back(entry.first);
  return out;
}

}  // namespace

TEST(Conv2dModule, TorchNamesShapesAndInit) {
  Conv2d conv(16, 64, 3, 2, 1, true, 7);
  EXPECT_EQ(names_of(conv.named_parameters()), (std::vector<std::string>{"weight", "bias"}));
  EXPECT_EQ(conv.weight().shape(), (Shape{64, 3, 3, 16}));  // KRSC
  EXPECT_EQ(conv.bias().shape(), (Shape{64}));
  expect_uniform(conv.weight(), 1.0 / 12);  // fan_in = 16 * 3 * 3 = 144
  Stats b = stats_of(conv.bias());
  EXPECT_LE(std::max(-b.min, b.max), 1.0 / 12);

  Conv2d no_bias(3, 8, 1, 1, 0, false);
  EXPECT_EQ(names_of(no_bias.named_parameters()), (std::vector<std::string>{"weight"}));
  EXPECT_FALSE(no_bias.bias().defined());
}

TEST(Conv2dModule, SeedsAreReproducible) {
  Conv2d a(4, 4, 3, 1, 1, true, 11), b(4, 4, 3, 1, 1, true, 11), c(4, 4, 3, 1, 1, true, 12);
  EXPECT_EQ(a.weight().to_vector(), b.weight().to_vector());
  EXPECT_EQ(a.bias().to_vector(), b.bias().to_vector());
  EXPECT_NE(a.weight().to_vector(), c.weight().to_vector());
  Conv2d wide(4, 4, 3, 1, 1, true, 11, DType::F64);  // same draws in double
  EXPECT_NEAR(wide.weight().to_vector()[5], a.weight().to_vector()[5], 1e-7);
}

TEST(LinearModule, TorchInitAndForward) {
  Linear fc(100, 50, true, 3);
  EXPECT_EQ(names_of(fc.named_parameters()), (std::vector<std::string>{"weight", "bias"}));
  EXPECT_EQ(fc.weight().shape(), (Shape{50, 100}));
  expect_uniform(fc.weight(), 0.1);
  Tensor x = Tensor::randn({3, 100}, 5);
  EXPECT_EQ(fc(x).to_vector(), linear(x, fc.weight(), fc.bias()).to_vector());
}

TEST(BatchNorm2dModule, InitialStateAndNames) {
  BatchNorm2d bn(6);
  EXPECT_EQ(names_of(bn.named_parameters()), (std::vector<std::string>{"weight", "bias"}));
  EXPECT_EQ(names_of(bn.named_buffers()),
            (std::vector<std::string>{"running_mean", "running_var", "num_batches_tracked"}));
  EXPECT_EQ(bn.weight().to_vector(), std::vector<double>(6, 1.0));
  EXPECT_EQ(bn.bias().to_vector(), std::vector<double>(6, 0.0));
  EXPECT_EQ(bn.running_mean().to_vector(), std::vector<double>(6, 0.0));
  EXPECT_EQ(bn.running_var().to_vector(), std::vector<double>(6, 1.0));
  EXPECT_EQ(bn.num_batches_tracked().item(), 0);
  EXPECT_EQ(bn.eps(), 1e-5);
  EXPECT_EQ(bn.momentum(), 0.1);
}

TEST(BatchNorm2dModule, TrainingUpdatesStatisticsAndCounter) {
  BatchNorm2d bn(3, 1e-5, 0.1, DType::F64);
  // channel c of every pixel holds c + (-1, +1 alternating): batch mean c, biased var 1
  std::vector<double> v;
  for (int pixel = 0; pixel < 8; ++pixel)
    for (int c = 0; c < 3; ++c) v.push_back(c + (pixel % 2 ? 1.0 : -1.0));
  Tensor x = Tensor::from_vector(v, {2, 2, 2, 3}, DType::F64);
  Tensor y = bn(x);
  EXPECT_NEAR(y.to_vector()[0], -1 / std::sqrt(1 + 1e-5), 1e-12);
  EXPECT_EQ(bn.num_batches_tracked().item(), 1);
  // running = 0.9 running + 0.1 batch; running_var takes the unbiased variance 8/7
  EXPECT_NEAR(bn.running_mean().to_vector()[2], 0.1 * 2, 1e-12);
  EXPECT_NEAR(bn.running_var().to_vector()[1], 0.9 + 0.1 * 8.0 / 7.0, 1e-12);
  bn(x);
  EXPECT_EQ(bn.num_batches_tracked().item(), 2);
  EXPECT_NEAR(bn.running_mean().to_vector()[2], 0.9 * 0.2 + 0.1 * 2, 1e-12);

  // eval: running statistics, nothing changes
  bn.eval();
  std::vector<double> mean = bn.running_mean().to_vector(), var = bn.running_var().to_vector();
  Tensor ye = bn(x);
  EXPECT_EQ(bn.num_batches_tracked().item(), 2);
  EXPECT_EQ(bn.running_mean().to_vector(), mean);
  EXPECT_EQ(bn.running_var().to_vector(), var);
  EXPECT_NEAR(ye.to_vector()[4], (v[4] - mean[1]) / std::sqrt(var[1] + 1e-5), 1e-12);
}

TEST(BayesLinearModule, NamesAndReferenceInit) {
  BayesLinear head(256, 40, 1.0, 9);
  EXPECT_EQ(names_of(head.named_parameters()),
            (std::vector<std::string>{"mu_weight", "rho_weight", "mu_bias", "rho_bias"}));
  EXPECT_EQ(head.mu_weight().shape(), (Shape{40, 256}));
  EXPECT_EQ(head.rho_bias().shape(), (Shape{40}));
  expect_normal(head.mu_weight(), 0.0, 0.1);
  expect_normal(head.rho_weight(), -3.0, 0.1);
  // 40 draws only: the tolerance widens with 1/sqrt(n)
  expect_normal(head.mu_bias(), 0.0, 0.1);
  expect_normal(head.rho_bias(), -3.0, 0.1);
}

TEST(BayesLinearModule, ForwardIsTheOpWithItsParameters) {
  BayesLinear head(12, 3, 0.5, 2, DType::F64);
  Tensor x = Tensor::randn({4, 12}, 8, 0, DType::F64);
  PhiloxKey key{123, 4};
  std::vector<double> y = head.forward(x, key).to_vector();
  EXPECT_EQ(y, bayes_linear(x, head.mu_weight(), head.rho_weight(), head.mu_bias(), head.rho_bias(), key)
                   .to_vector());
  EXPECT_EQ(y, head.forward(x, key).to_vector());        // same key, same sample
  EXPECT_NE(y, head.forward(x, {123, 5}).to_vector());   // another key, another sample
  head.eval();                                            // Monte Carlo prediction samples in eval too
  EXPECT_EQ(y, head.forward(x, key).to_vector());
  EXPECT_EQ(head.forward_mean(x).to_vector(), linear(x, head.mu_weight(), head.mu_bias()).to_vector());
  EXPECT_EQ(head.kl().item(),
            bayes_kl(head.mu_weight(), head.rho_weight(), head.mu_bias(), head.rho_bias(), 0.5).item());
}

TEST(SequentialModule, NumbersChildrenAndChains) {
  Sequential seq;
  auto first = seq.push_back(std::make_shared<Linear>(4, 3, true, 1));
  seq.push_back(std::make_shared<Linear>(3, 2, false, 2));
  EXPECT_EQ(names_of(seq.named_parameters()), (std::vector<std::string>{"0.weight", "0.bias", "1.weight"}));
  EXPECT_EQ(seq.size(), 2u);
  EXPECT_EQ(&seq[0], first.get());
  Tensor x = Tensor::randn({5, 4}, 3);
  EXPECT_EQ(seq(x).to_vector(), seq[1](seq[0](x)).to_vector());
  EXPECT_THROW(seq[2], Error);
}

// conv-bn-relu, global average pool, linear: SGD steps on a fixed batch of random labels
// memorise it (the loss falls from about log 2 to under a quarter of that in 30 steps).
TEST(LayerModules, TrainingStepsLowerTheLoss) {
  struct TinyNet : Module {
    std::shared_ptr<Conv2d> conv = register_module("conv", std::make_shared<Conv2d>(3, 8, 3, 1, 1, false, 1));
    std::shared_ptr<BatchNorm2d> bn = register_module("bn", std::make_shared<BatchNorm2d>(8));
    std::shared_ptr<Linear> fc = register_module("fc", std::make_shared<Linear>(8, 2, true, 2));
    Tensor forward(const Tensor& x) { return (*fc)(global_avg_pool(relu((*bn)((*conv)(x))))); }
  } net;
  SGD opt(net.named_parameters(), SgdOptions{0.1, 0.9});
  Tensor x = Tensor::randn({8, 6, 6, 3}, 4);
  std::vector<int64_t> labels = {0, 1, 0, 1, 1, 0, 0, 1};
  double first = 0, last = 0;
  for (int step = 0; step < 30; ++step) {
    Tensor loss = cross_entropy(net.forward(x), labels);
    if (step == 0) first = loss.item();
    last = loss.item();
    opt.zero_grad();
    loss.backward();
    opt.step();
  }
  EXPECT_LT(last, 0.25 * first) << "first " << first << ", last " << last;
}
