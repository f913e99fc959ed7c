// labels: cpu gradcheck
// The Bayesian linear layer and its KL term: gradient checks of every input (explicit and
// Philox noise), the Philox noise against Tensor::randn's stream, reproducibility, the
// sample against its definition, the KL against hand values and a Monte Carlo estimate,
// float32 against float64, and input validation.
#include <gtest/gtest.h>

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

// A posterior for a layer in -> out, as gradcheck leaves: mu ~ N(0, 0.5), rho ~ -1 + N(0, 0.5)
// (sigma from about 0.15 to 0.75, so that the rho gradients are not negligible).
struct Posterior {
  Tensor w_mu, w_rho, b_mu, b_rho;
};
Posterior posterior(int64_t in, int64_t out, uint64_t seed, DType dtype = DType::F64) {
  auto make = [&](const Shape& shape, uint64_t s, double shift) {
    Tensor t =
        add(scale(Tensor::randn(shape, seed, s, dtype), 0.5), Tensor::full(shape, shift, dtype));
    t.set_requires_grad(true);
    return t;
  };
  return {make({out, in}, 0, 0.0), make({out, in}, 1, -1.0), make({out}, 2, 0.0),
          make({out}, 3, -1.0)};
}

bool same_values(const Tensor& a, const Tensor& b) { return a.to_vector() == b.to_vector(); }

double softplus_ref(double x) { return std::log1p(std::exp(x)); }

}  // namespace

TEST(BayesGradcheck, BayesLinearExplicitNoise) {
  Posterior q = posterior(17, 3, 1);
  Tensor x = param({4, 17}, 2), eps_w = param({3, 17}, 3), eps_b = param({3}, 4);
  auto f = [](auto& in) { return bayes_linear(in[0], in[1], in[2], in[3], in[4], in[5], in[6]); };
  // every input, the noise included
  EXPECT_TRUE(gradcheck(f, {x, q.w_mu, q.w_rho, q.b_mu, q.b_rho, eps_w, eps_b}));
  // fixed noise, the way a layer uses it
  EXPECT_TRUE(gradcheck(f, {x, q.w_mu, q.w_rho, q.b_mu, q.b_rho, eps_w.detach(), eps_b.detach()}));
}

TEST(BayesGradcheck, BayesLinearPhiloxNoise) {
  Posterior q = posterior(17, 3, 5);
  Tensor x = param({4, 17}, 6);
  // offset 3: the bias draws (51..53) start inside a Philox block of four
  auto f = [](auto& in) {
    return bayes_linear(in[0], in[1], in[2], in[3], in[4], PhiloxKey{11, 3});
  };
  EXPECT_TRUE(gradcheck(f, {x, q.w_mu, q.w_rho, q.b_mu, q.b_rho}));
  // only the posterior's rho: the backward skips dx and the mu gradients
  Tensor xd = x.detach(), wm = q.w_mu.detach(), bm = q.b_mu.detach();
  EXPECT_TRUE(gradcheck(
      [&](auto& in) {
        return bayes_linear(xd, wm, in[0], bm, in[1], PhiloxKey{11, 3});
      },
      {q.w_rho, q.b_rho}));
}

TEST(BayesGradcheck, BayesKl) {
  Posterior q = posterior(7, 3, 7);
  for (double prior_sigma : {1.0, 0.7}) {
    auto f = [prior_sigma](auto& in) { return bayes_kl(in[0], in[1], in[2], in[3], prior_sigma); };
    EXPECT_TRUE(gradcheck(f, {q.w_mu, q.w_rho, q.b_mu, q.b_rho})) << prior_sigma;
  }
}

TEST(BayesGradcheck, BayesianHead) {
  // The training loss of the Bayesian head: cross-entropy of one sample + KL / dataset size.
  Posterior q = posterior(9, 2, 8);
  Tensor x = param({5, 9}, 9);
  std::vector<int64_t> labels{0, 1, 1, 0, 1};
  auto loss = [&](auto& in) {
    Tensor logits = bayes_linear(in[0], in[1], in[2], in[3], in[4], PhiloxKey{2024, 17});
    return add(cross_entropy(logits, labels),
               scale(bayes_kl(in[1], in[2], in[3], in[4], 1.0), 1.0 / 50));
  };
  EXPECT_TRUE(gradcheck(loss, {x, q.w_mu, q.w_rho, q.b_mu, q.b_rho}));
}

TEST(BayesNoise, IsTheTensorRandnStream) {
  const int64_t out = 3, in = 17;
  Tensor w_mu = Tensor::zeros({out, in}, DType::F64), b_mu = Tensor::zeros({out}, DType::F64);
  const PhiloxKey key{42, 5};
  std::vector<Tensor> eps = bayes_noise(w_mu, b_mu, key);
  ASSERT_EQ(eps.size(), 2u);
  EXPECT_EQ(eps[0].shape(), Shape({out, in}));
  EXPECT_EQ(eps[1].shape(), Shape({out}));
  // draw j of stream (seed, offset) for the weight, draws out*in + k for the bias
  std::vector<double> stream =
      Tensor::randn({out * in + out}, key.seed, key.offset, DType::F64).to_vector();
  std::vector<double> w = eps[0].to_vector(), b = eps[1].to_vector();
  for (int64_t j = 0; j < out * in; ++j) EXPECT_EQ(w[j], stream[j]) << j;
  for (int64_t k = 0; k < out; ++k) EXPECT_EQ(b[k], stream[out * in + k]) << k;
  // float32 noise is the float64 noise rounded
  std::vector<Tensor> eps32 = bayes_noise(w_mu.to(DType::F32), b_mu.to(DType::F32), key);
  EXPECT_TRUE(same_values(eps32[0], eps[0].to(DType::F32)));
  EXPECT_TRUE(same_values(eps32[1], eps[1].to(DType::F32)));
}

TEST(BayesLinearOp, PhiloxEqualsExplicitNoiseExactly) {
  for (DType dtype : {DType::F64, DType::F32}) {
    Posterior q = posterior(33, 5, 10, dtype);
    Tensor x = Tensor::randn({6, 33}, 11, 0, dtype);
    x.set_requires_grad(true);
    const PhiloxKey key{7, 1};
    std::vector<Tensor> eps = bayes_noise(q.w_mu, q.b_mu, key);
    std::vector<Tensor*> leaves{&x, &q.w_mu, &q.w_rho, &q.b_mu, &q.b_rho};
    auto run = [&](bool use_key) {
      for (Tensor* t : leaves) t->zero_grad();
      Tensor y = use_key ? bayes_linear(x, q.w_mu, q.w_rho, q.b_mu, q.b_rho, key)
                         : bayes_linear(x, q.w_mu, q.w_rho, q.b_mu, q.b_rho, eps[0], eps[1]);
      sum(mul(y, Tensor::randn(y.shape(), 12, 0, dtype))).backward();
      std::vector<Tensor> results{y.detach()};
      for (Tensor* t : leaves) results.push_back(t->grad());
      return results;
    };
    std::vector<Tensor> with_key = run(true), with_eps = run(false);
    for (size_t i = 0; i < with_key.size(); ++i)
      EXPECT_TRUE(same_values(with_key[i], with_eps[i])) << dtype_name(dtype) << " result " << i;
  }
}

TEST(BayesLinearOp, SampleMatchesItsDefinition) {
  // x = identity: row i of y is column i of W plus b, W = mu + softplus(rho) * eps.
  const int64_t in = 5, out = 3;
  Posterior q = posterior(in, out, 13);
  std::vector<double> eye(in * in, 0.0);
  for (int64_t i = 0; i < in; ++i) eye[i * in + i] = 1.0;
  const PhiloxKey key{99, 0};
  std::vector<double> y = bayes_linear(Tensor::from_vector(eye, {in, in}, DType::F64), q.w_mu,
                                       q.w_rho, q.b_mu, q.b_rho, key)
                              .to_vector();
  std::vector<Tensor> eps = bayes_noise(q.w_mu, q.b_mu, key);
  std::vector<double> wm = q.w_mu.to_vector(), wr = q.w_rho.to_vector(), bm = q.b_mu.to_vector(),
                      br = q.b_rho.to_vector(), ew = eps[0].to_vector(), eb = eps[1].to_vector();
  for (int64_t i = 0; i < in; ++i)
    for (int64_t o = 0; o < out; ++o) {
      double w = wm[o * in + i] + softplus_ref(wr[o * in + i]) * ew[o * in + i];
      double b = bm[o] + softplus_ref(br[o]) * eb[o];
      EXPECT_NEAR(y[i * out + o], w + b, 1e-14) << i << ", " << o;
    }
}

TEST(BayesLinearOp, SameKeySameSampleOtherKeyOtherSample) {
  Posterior q = posterior(33, 2, 14, DType::F32);
  Tensor x = Tensor::randn({4, 33}, 15);
  auto run = [&](PhiloxKey key) { return bayes_linear(x, q.w_mu, q.w_rho, q.b_mu, q.b_rho, key); };
  EXPECT_TRUE(same_values(run({5, 0}), run({5, 0})));
  EXPECT_FALSE(same_values(run({5, 0}), run({5, 1})));  // next step's sample
  EXPECT_FALSE(same_values(run({5, 0}), run({6, 0})));
  // the noise changes too, not just the output
  EXPECT_FALSE(
      same_values(bayes_noise(q.w_mu, q.b_mu, {5, 0})[1], bayes_noise(q.w_mu, q.b_mu, {5, 1})[1]));
}

TEST(BayesKl, EqualsHandComputedValues) {
  const double rho_sigma_one = 0.541324854612918;  // softplus(rho) = 1: log(e - 1)
  struct Case {
    double mu, rho, prior_sigma, kl;
  };
  // KL(N(mu, s^2) || N(0, p^2)) = log(p / s) + (s^2 + mu^2) / (2 p^2) - 1/2, worked out by hand
  const std::vector<Case> cases{
      {0.0, rho_sigma_one, 1.0, 0.0},                          // q = p
      {2.0, rho_sigma_one, 1.0, 2.0},                          // mu^2 / 2
      {0.0, rho_sigma_one, 2.0, std::log(2.0) + 0.125 - 0.5},  // log 2 + 1/8 - 1/2
      {0.5, -3.0, 1.0, 2.6505724029988715},                    // s = log1p(e^-3) = 0.048587...
      {-1.0, 0.5, 0.5, 2.730769700922625},
  };
  for (const Case& c : cases) {
    // the case as the weight, and as the bias (with a zero-KL other half)
    Tensor mu = Tensor::full({1, 1}, c.mu, DType::F64),
           rho = Tensor::full({1, 1}, c.rho, DType::F64);
    Tensor b_mu = Tensor::zeros({1}, DType::F64);
    Tensor b_rho = Tensor::full({1}, std::log(std::expm1(c.prior_sigma)), DType::F64);  // sigma = p
    EXPECT_NEAR(bayes_kl(mu, rho, b_mu, b_rho, c.prior_sigma).item(), c.kl, 1e-13)
        << c.mu << " " << c.rho;
    Tensor zero_w = Tensor::zeros({1, 1}, DType::F64), p_rho = reshape(b_rho, {1, 1});
    EXPECT_NEAR(bayes_kl(zero_w, p_rho, reshape(mu, {1}), reshape(rho, {1}), c.prior_sigma).item(),
                c.kl, 1e-13);
  }
  // a sum over all elements: three of the cases as weights, a zero-KL bias
  Tensor mu = Tensor::from_vector({0.0, 2.0, 0.5}, {1, 3}, DType::F64);
  Tensor rho = Tensor::from_vector({rho_sigma_one, rho_sigma_one, -3.0}, {1, 3}, DType::F64);
  Tensor b_mu = Tensor::zeros({1}, DType::F64),
         b_rho = Tensor::full({1}, rho_sigma_one, DType::F64);
  EXPECT_NEAR(bayes_kl(mu, rho, b_mu, b_rho, 1.0).item(), 0.0 + 2.0 + 2.6505724029988715, 1e-13);
}

TEST(BayesKl, AgreesWithMonteCarlo) {
  // KL = E_q[log q(w) - log p(w)], estimated from 200,000 draws per weight.
  const std::vector<double> mus{0.3, -1.2, 0.0}, rhos{0.2, -2.0, 1.0};
  const double prior_sigma = 1.5;
  const int64_t draws = 200000;
  constexpr double kPi = 3.14159265358979323846;
  auto log_normal = [](double w, double mean, double sd) {
    return -0.5 * std::pow((w - mean) / sd, 2) - std::log(sd) - 0.5 * std::log(2 * kPi);
  };
  double estimate = 0, variance = 0;
  for (size_t k = 0; k < mus.size(); ++k) {
    const double sigma = softplus_ref(rhos[k]);
    std::vector<double> z = Tensor::randn({draws}, 100 + k, 0, DType::F64).to_vector();
    double total = 0, total_sq = 0;
    for (double zi : z) {
      double w = mus[k] + sigma * zi;
      double term = log_normal(w, mus[k], sigma) - log_normal(w, 0.0, prior_sigma);
      total += term;
      total_sq += term * term;
    }
    double mean = total / draws;
    estimate += mean;
    variance += (total_sq / draws - mean * mean) / draws;
  }
  Tensor w_mu = Tensor::from_vector({mus[0], mus[1]}, {1, 2}, DType::F64);
  Tensor w_rho = Tensor::from_vector({rhos[0], rhos[1]}, {1, 2}, DType::F64);
  Tensor b_mu = Tensor::from_vector({mus[2]}, {1}, DType::F64),
         b_rho = Tensor::from_vector({rhos[2]}, {1}, DType::F64);
  const double exact = bayes_kl(w_mu, w_rho, b_mu, b_rho, prior_sigma).item();
  EXPECT_NEAR(exact, estimate, 5 * std::sqrt(variance)) << "standard error " << std::sqrt(variance);
}

TEST(BayesKl, FiniteForTinySigma) {
  // softplus(-100) underflows in float32; the KL uses log(sigma) = rho there.
  for (DType dtype : {DType::F32, DType::F64}) {
    Tensor w_mu = Tensor::full({1, 1}, 0.5, dtype), w_rho = Tensor::full({1, 1}, -100.0, dtype);
    Tensor b_mu = Tensor::zeros({1}, dtype), b_rho = Tensor::full({1}, -40.0, dtype);
    w_rho.set_requires_grad(true);
    b_rho.set_requires_grad(true);
    Tensor kl = bayes_kl(w_mu, w_rho, b_mu, b_rho, 1.0);
    // log(1/sigma) + mu^2 / 2 - 1/2 for each, sigma^2 negligible
    EXPECT_NEAR(kl.item(), (100.0 + 0.125 - 0.5) + (40.0 - 0.5), 1e-4) << dtype_name(dtype);
    kl.backward();
    EXPECT_NEAR(w_rho.grad().item(), -1.0, 1e-6);  // d(-rho)/drho
    EXPECT_NEAR(b_rho.grad().item(), -1.0, 1e-6);
  }
}

TEST(Bayes, Float32MatchesFloat64) {
  Posterior q64 = posterior(33, 3, 16);
  auto to_f32 = [](const Tensor& t) { return t.to(DType::F32).set_requires_grad(true); };
  Posterior q32{to_f32(q64.w_mu), to_f32(q64.w_rho), to_f32(q64.b_mu), to_f32(q64.b_rho)};
  Tensor x64 = Tensor::randn({5, 33}, 17, 0, DType::F64), x32 = x64.to(DType::F32);
  const PhiloxKey key{3, 9};
  // The logits are sums of 33 products of size ~1: float32 rounding is relative to that
  // scale, not to a logit that happens to be near 0 (hence the error floor of 1).
  EXPECT_LT(testing_util::max_rel_error(
                bayes_linear(x32, q32.w_mu, q32.w_rho, q32.b_mu, q32.b_rho, key),
                bayes_linear(x64, q64.w_mu, q64.w_rho, q64.b_mu, q64.b_rho, key), 1.0),
            1e-5);
  EXPECT_LT(testing_util::max_rel_error(bayes_kl(q32.w_mu, q32.w_rho, q32.b_mu, q32.b_rho, 1.0),
                                        bayes_kl(q64.w_mu, q64.w_rho, q64.b_mu, q64.b_rho, 1.0)),
            1e-6);
  // gradients of the head's loss
  auto grads = [&](const Posterior& q, const Tensor& x) {
    Tensor logits = bayes_linear(x, q.w_mu, q.w_rho, q.b_mu, q.b_rho, key);
    add(cross_entropy(logits, {0, 1, 2, 2, 1}), bayes_kl(q.w_mu, q.w_rho, q.b_mu, q.b_rho, 1.0))
        .backward();
    return std::vector<Tensor>{q.w_mu.grad(), q.w_rho.grad(), q.b_mu.grad(), q.b_rho.grad()};
  };
  std::vector<Tensor> g64 = grads(q64, x64), g32 = grads(q32, x32);
  for (size_t i = 0; i < g64.size(); ++i)
    EXPECT_LT(testing_util::max_rel_error(g32[i], g64[i]), 1e-5) << i;
}

TEST(Bayes, RejectsBadInputs) {
  Posterior q = posterior(7, 5, 18, DType::F32);
  Tensor x = Tensor::zeros({3, 7}), eps_w = Tensor::zeros({5, 7}), eps_b = Tensor::zeros({5});
  const PhiloxKey key{1, 0};
  expect_error("bayes_linear: input f32[3, 6] cpu has 6 features but w_mu f32[5, 7] cpu expects 7",
               [&] {
                 bayes_linear(Tensor::zeros({3, 6}), q.w_mu, q.w_rho, q.b_mu, q.b_rho, key);
               });
  expect_error("bayes_linear: input x must have 2 dimensions, got f32[3, 7, 1] cpu", [&] {
    bayes_linear(Tensor::zeros({3, 7, 1}), q.w_mu, q.w_rho, q.b_mu, q.b_rho, key);
  });
  expect_error("bayes_linear: w_rho f32[5, 6] cpu must match w_mu f32[5, 7] cpu", [&] {
    bayes_linear(x, q.w_mu, Tensor::zeros({5, 6}), q.b_mu, q.b_rho, key);
  });
  expect_error("bayes_linear: b_mu f32[4] cpu must be [5] for w_mu f32[5, 7] cpu",
               [&] { bayes_linear(x, q.w_mu, q.w_rho, Tensor::zeros({4}), q.b_rho, key); });
  expect_error("bayes_linear: b_rho f32[5, 1] cpu must be [5] for w_mu f32[5, 7] cpu", [&] {
    bayes_linear(x, q.w_mu, q.w_rho, q.b_mu, Tensor::zeros({5, 1}), key);
  });
  expect_error("bayes_linear: eps_w f32[7, 5] cpu must match w_mu f32[5, 7] cpu", [&] {
    bayes_linear(x, q.w_mu, q.w_rho, q.b_mu, q.b_rho, Tensor::zeros({7, 5}), eps_b);
  });
  expect_error("bayes_linear: eps_b f32[6] cpu must match b_mu f32[5] cpu", [&] {
    bayes_linear(x, q.w_mu, q.w_rho, q.b_mu, q.b_rho, eps_w, Tensor::zeros({6}));
  });
  expect_error("bayes_linear: eps_b is undefined",
               [&] { bayes_linear(x, q.w_mu, q.w_rho, q.b_mu, q.b_rho, eps_w, Tensor()); });
  expect_error("bayes_linear: dtype mismatch, f64[3, 7] cpu vs f32[5, 7] cpu",
               [&] { bayes_linear(x.to(DType::F64), q.w_mu, q.w_rho, q.b_mu, q.b_rho, key); });
  expect_error("bayes_linear: dtype mismatch", [&] {
    bayes_linear(x, q.w_mu, q.w_rho, q.b_mu, q.b_rho, eps_w.to(DType::F64), eps_b);
  });
  expect_error("bayes_kl: prior_sigma must be positive and finite, got 0",
               [&] { bayes_kl(q.w_mu, q.w_rho, q.b_mu, q.b_rho, 0.0); });
  expect_error("bayes_kl: prior_sigma must be positive and finite, got -1",
               [&] { bayes_kl(q.w_mu, q.w_rho, q.b_mu, q.b_rho, -1.0); });
  expect_error("bayes_kl: w_rho f32[5, 6] cpu must match w_mu f32[5, 7] cpu", [&] {
    bayes_kl(q.w_mu, Tensor::zeros({5, 6}), q.b_mu, q.b_rho, 1.0);
  });
  expect_error("bayes_noise: b_mu f32[4] cpu must be [5] for w_mu f32[5, 7] cpu",
               [&] { bayes_noise(q.w_mu, Tensor::zeros({4}), key); });
}
