// labels: cpu
// Optimisers against updates worked out by hand (the textbook recurrences, element by
// element, in double) and against torch.optim's own results; state save and restore;
// skipping parameters without gradients; float32; errors.
#include <gtest/gtest.h>

#include <cmath>

#include "engine/optim.h"
#include "test_util.h"

using namespace engine;

using testing_util::expect_error;

namespace {

const std::vector<double> kStart = {0.5, -1.5};
const std::vector<std::vector<double>> kGrads = {{0.2, -0.4}, {-0.1, 0.3}, {0.05, 0.6}};

Tensor make_param(DType dtype = DType::F64) {
  Tensor p = Tensor::from_vector(kStart, {2}, dtype);
  p.set_requires_grad(true);
  return p;
}

// Applies the three gradients of kGrads with `opt` and returns the parameter's values.
template <typename Opt, typename Options>
std::vector<double> three_steps(const Options& options, DType dtype = DType::F64) {
  Tensor p = make_param(dtype);
  Opt opt({{"p", p}}, options);
  for (const auto& g : kGrads) {
    p.set_grad(Tensor::from_vector(g, {2}, dtype));
    opt.step();
  }
  return p.to_vector();
}

void expect_near_all(const std::vector<double>& got, const std::vector<double>& want, double rel) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], want[i], rel * std::fabs(want[i])) << "element " << i;
}

// ---- the recurrences, written out per element ----

// SGD with momentum m, dampening d, weight decay wd: d_t = g_t + wd p; the buffer starts as
// d_1 and then b = m b + (1 - d) d_t; the step is b (or d_t + m b with Nesterov).
std::vector<double> sgd_by_hand(double lr, double m, double damp, double wd, bool nesterov) {
  std::vector<double> out;
  for (size_t i = 0; i < kStart.size(); ++i) {
    double p = kStart[i], b = 0;
    for (size_t t = 0; t < kGrads.size(); ++t) {
      double d = kGrads[t][i] + wd * p;
      if (m != 0) {
        b = t == 0 ? d : m * b + (1 - damp) * d;
        d = nesterov ? d + m * b : b;
      }
      p -= lr * d;
    }
    out.push_back(p);
  }
  return out;
}

// Adam (Kingma & Ba, with PyTorch's eps placement): m_t = b1 m + (1-b1) g, v_t likewise with
// g^2, p -= lr (m_t / (1 - b1^t)) / (sqrt(v_t / (1 - b2^t)) + eps). L2 decay adds wd p to g;
// decoupled (AdamW) decay first scales p by (1 - lr wd).
std::vector<double> adam_by_hand(double lr, double b1, double b2, double eps, double wd, bool decoupled) {
  std::vector<double> out;
  for (size_t i = 0; i < kStart.size(); ++i) {
    double p = kStart[i], m = 0, v = 0;
    for (size_t t = 1; t <= kGrads.size(); ++t) {
      double g = kGrads[t - 1][i];
      if (decoupled) p *= 1 - lr * wd;
      else g += wd * p;
      m = b1 * m + (1 - b1) * g;
      v = b2 * v + (1 - b2) * g * g;
      double m_hat = m / (1 - std::pow(b1, t)), v_hat = v / (1 - std::pow(b2, t));
      p -= lr * m_hat / (std::sqrt(v_hat) + eps);
    }
    out.push_back(p);
  }
  return out;
}

}  // namespace

TEST(SGD, PlainStepIsLrTimesGradient) {
  SgdOptions o;
  o.lr = 0.1;
  // p3 = p0 - lr (g1 + g2 + g3)
  expect_near_all(three_steps<SGD>(o), {0.5 - 0.1 * 0.15, -1.5 - 0.1 * 0.5}, 1e-15);
}

TEST(SGD, MomentumDampeningWeightDecay) {
  SgdOptions o{0.1, 0.9, 0.1, 0.01, false};
  // Step 1 for element 0: d = 0.2 + 0.01 * 0.5 = 0.205, buffer = d, p = 0.5 - 0.0205.
  Tensor p = make_param();
  SGD opt({{"p", p}}, o);
  p.set_grad(Tensor::from_vector(kGrads[0], {2}, DType::F64));
  opt.step();
  EXPECT_NEAR(p.to_vector()[0], 0.4795, 1e-15);
  expect_near_all(three_steps<SGD>(o), sgd_by_hand(0.1, 0.9, 0.1, 0.01, false), 1e-14);
}

TEST(SGD, Nesterov) {
  SgdOptions o{0.1, 0.9, 0, 0.01, true};
  expect_near_all(three_steps<SGD>(o), sgd_by_hand(0.1, 0.9, 0, 0.01, true), 1e-14);
}

TEST(Adam, BiasCorrectedSteps) {
  AdamOptions o;
  o.lr = 0.01;
  // Bias correction makes the first step lr g / (|g| + eps): about lr sign(g), whatever |g|.
  Tensor p = make_param();
  Adam opt({{"p", p}}, o);
  p.set_grad(Tensor::from_vector(kGrads[0], {2}, DType::F64));
  opt.step();
  expect_near_all(p.to_vector(), {0.5 - 0.01 * 0.2 / (0.2 + 1e-8), -1.5 + 0.01 * 0.4 / (0.4 + 1e-8)}, 1e-15);
  expect_near_all(three_steps<Adam>(o), adam_by_hand(0.01, 0.9, 0.999, 1e-8, 0, false), 1e-14);
}

TEST(Adam, L2WeightDecayAndOtherBetas) {
  AdamOptions o{0.01, 0.8, 0.99, 1e-3, 0.1};
  expect_near_all(three_steps<Adam>(o), adam_by_hand(0.01, 0.8, 0.99, 1e-3, 0.1, false), 1e-14);
}

TEST(AdamW, DecoupledWeightDecay) {
  AdamWOptions o;
  EXPECT_EQ(o.weight_decay, 0.01);  // AdamW's default
  o.lr = 0.01;
  o.weight_decay = 0.1;
  expect_near_all(three_steps<AdamW>(o), adam_by_hand(0.01, 0.9, 0.999, 1e-8, 0.1, true), 1e-14);
  // and it is not Adam's L2 decay
  AdamOptions l2{0.01, 0.9, 0.999, 1e-8, 0.1};
  EXPECT_GT(std::fabs(three_steps<Adam>(l2)[0] - three_steps<AdamW>(o)[0]), 1e-6);
}

// The same three steps through torch.optim (PyTorch 1.13, float64), printed with %.17g:
//   p = torch.tensor([0.5, -1.5], requires_grad=True); opt = torch.optim.X([p], ...)
//   for g in [[0.2, -0.4], [-0.1, 0.3], [0.05, 0.6]]: p.grad = torch.tensor(g); opt.step()
TEST(Optimizers, MatchTorchOptim) {
  expect_near_all(three_steps<SGD>(SgdOptions{0.1, 0.9, 0.1, 0.01, false}),
                  {0.45580239839499997, -1.4890388113849997}, 1e-14);
  expect_near_all(three_steps<SGD>(SgdOptions{0.1, 0.9, 0, 0.01, true}),
                  {0.44497217339050005, -1.5459906973515001}, 1e-14);
  expect_near_all(three_steps<Adam>(AdamOptions{0.01}), {0.48393233904720767, -1.4935740779103843}, 1e-14);
  expect_near_all(three_steps<Adam>(AdamOptions{0.01, 0.8, 0.99, 1e-3, 0.1}),
                  {0.47983082912999375, -1.4881841661367214}, 1e-14);
  AdamWOptions w;
  w.lr = 0.01;
  w.weight_decay = 0.1;
  expect_near_all(three_steps<AdamW>(w), {0.4824564919164363, -1.4890994596599332}, 1e-14);
}

TEST(Optimizers, Float32MatchesFloat64) {
  AdamWOptions w;
  expect_near_all(three_steps<AdamW>(w, DType::F32), three_steps<AdamW>(w, DType::F64), 1e-6);
  SgdOptions s{0.1, 0.9, 0, 0.01, true};
  expect_near_all(three_steps<SGD>(s, DType::F32), three_steps<SGD>(s, DType::F64), 1e-6);
}

TEST(Optimizers, SkipParametersWithoutGradient) {
  Tensor a = make_param(), b = make_param();
  Adam opt({{"a", a}, {"b", b}}, AdamOptions{0.01});
  a.set_grad(Tensor::from_vector(kGrads[0], {2}, DType::F64));
  opt.step();
  EXPECT_EQ(b.to_vector(), kStart);  // untouched
  OptimizerState s = opt.state();
  EXPECT_EQ(s.scalars.at("a.step"), 1);
  EXPECT_EQ(s.scalars.count("b.step"), 0u);
  EXPECT_FALSE(s.tensors.contains("b.exp_avg"));
  // b's first real step is a first step (its own bias correction), as in torch.optim.
  b.set_grad(Tensor::from_vector(kGrads[1], {2}, DType::F64));
  a.zero_grad();
  opt.step();
  expect_near_all(b.to_vector(), {0.5 + 0.01 * 0.1 / (0.1 + 1e-8), -1.5 - 0.01 * 0.3 / (0.3 + 1e-8)}, 1e-15);
}

TEST(Optimizers, SavedStateContinuesIdentically) {
  auto check = [](auto make) {
    Tensor p = make_param();
    auto opt = make(p);
    for (int t = 0; t < 2; ++t) {
      p.set_grad(Tensor::from_vector(kGrads[t], {2}, DType::F64));
      opt->step();
    }
    OptimizerState saved = opt->state();
    Tensor q = p.clone().set_requires_grad(true);
    auto restored = make(q);
    restored->load_state(saved);
    // The saved state is a snapshot: stepping the original does not change it.
    p.set_grad(Tensor::from_vector(kGrads[2], {2}, DType::F64));
    q.set_grad(Tensor::from_vector(kGrads[2], {2}, DType::F64));
    opt->step();
    restored->step();
    EXPECT_EQ(p.to_vector(), q.to_vector());
    EXPECT_EQ(restored->state().scalars.at("p.step"), 3);
  };
  check([](Tensor p) { return std::make_unique<SGD>(std::vector<NamedTensor>{{"p", p}}, SgdOptions{0.1, 0.9, 0.1, 0.01}); });
  check([](Tensor p) { return std::make_unique<Adam>(std::vector<NamedTensor>{{"p", p}}, AdamOptions{0.01}); });
  check([](Tensor p) { return std::make_unique<AdamW>(std::vector<NamedTensor>{{"p", p}}, AdamWOptions{}); });

  Tensor p = make_param();
  Adam opt({{"p", p}}, AdamOptions{});
  p.set_grad(Tensor::from_vector(kGrads[0], {2}, DType::F64));
  opt.step();
  OptimizerState s = opt.state();
  EXPECT_EQ(s.tensors.keys(), (std::vector<std::string>{"p.exp_avg", "p.exp_avg_sq"}));
  EXPECT_EQ(s.scalars.at("lr"), 1e-3);
}

TEST(Optimizers, LearningRateCanBeChanged) {
  Tensor p = make_param();
  SGD opt({{"p", p}}, SgdOptions{0.1});
  opt.set_lr(1.0);
  p.set_grad(Tensor::from_vector({1, 1}, {2}, DType::F64));
  opt.step();
  EXPECT_EQ(p.to_vector(), (std::vector<double>{-0.5, -2.5}));
  OptimizerState s = opt.state();
  s.scalars["lr"] = 0.5;
  opt.load_state(s);
  EXPECT_EQ(opt.lr(), 0.5);
  expect_error([&] { opt.set_lr(-1); }, "SGD: invalid learning rate -1");
}

TEST(Optimizers, ZeroGradDropsGradients) {
  Tensor p = make_param();
  SGD opt({{"p", p}}, SgdOptions{});
  p.set_grad(Tensor::from_vector({1, 1}, {2}, DType::F64));
  opt.zero_grad();
  EXPECT_FALSE(p.grad().defined());
}

TEST(Optimizers, RejectBadOptionsAndStates) {
  Tensor p = make_param();
  expect_error([&] { SGD({{"p", p}}, SgdOptions{0.1, 0, 0, 0, true}); }, "SGD: nesterov momentum requires");
  expect_error([&] { Adam({{"p", p}}, AdamOptions{0.1, 1.0}); }, "Adam: invalid beta1 1");
  expect_error([&] { SGD({{"p", p}, {"p", make_param()}}, SgdOptions{}); }, "parameter name 'p' appears twice");
  expect_error([&] { SGD({{"p", p}, {"q", p}}, SgdOptions{}); }, "'q' is the same tensor");

  Adam opt({{"p", p}}, AdamOptions{});
  OptimizerState bad;
  bad.scalars["lr"] = 1e-3;
  bad.tensors.set("q.exp_avg", Tensor::zeros({2}, DType::F64));
  expect_error([&] { opt.load_state(bad); }, "Adam: load_state: unexpected tensor 'q.exp_avg'");
  bad = OptimizerState{};
  bad.scalars["lr"] = 1e-3;
  bad.tensors.set("p.exp_avg", Tensor::zeros({3}, DType::F64));
  expect_error([&] { opt.load_state(bad); }, "'p.exp_avg' is f64[3] cpu but parameter 'p' is f64[2] cpu");
  bad = OptimizerState{};
  bad.scalars["p.step"] = 1.5;
  bad.scalars["lr"] = 1e-3;
  expect_error([&] { opt.load_state(bad); }, "'p.step' is 1.5, not a step count");

  Tensor half = Tensor::empty({2}, DType::BF16).set_requires_grad(true);
  Tensor half_grad = Tensor::empty({2}, DType::BF16);
  half.set_grad(half_grad);
  SGD bf16({{"h", half}}, SgdOptions{});
  expect_error([&] { bf16.step(); }, "SGD: parameter 'h' has dtype bf16");
}
