// labels: cuda
// The CUDA Bayesian linear layer against the CPU backend: forward and every gradient (x, the
// weight and bias mu and rho, and the noise when it is an input), with explicit noise and with
// Philox keys; the Philox noise itself (the same key gives the same samples on both
// backends); the closed-form KL and its gradient; float32 and float64; device allocations
// poisoned (NaN) so an unwritten output fails.
// Error measures (tests/cuda_compare.h):
//   y, dx, dmu: products, |gpu - cpu| / (sum_k |a_k b_k| + |cpu|), tolerance 32 unit
//   roundoffs (f32 1.9e-6, f64 3.6e-15): see test_cuda_linear.cpp. For a sampled weight,
//   |b_k| is its scale |mu| + softplus(rho) |eps|: the sample may cancel.
//   drho = dW eps sigmoid(rho), deps = dW softplus(rho): the same, with the product's scale
//   times |eps sigmoid(rho)| (or softplus(rho)); the elementwise factors add a few roundoffs
//   of |cpu|, inside the same 32.
//   noise: float32 equal to within one float ulp (the GPU's double log, sin and cos are
//   within 2 ulps of glibc's, which a rounding to float hides but near a rounding boundary);
//   float64 within 1e-13 absolute (|eps| < 7; 2-ulp errors of sin, cos and log of the
//   Box-Muller transform give about 1e-14).
//   KL: a sum of positive terms added in double on both backends; per-term transcendental
//   functions differ by a few ulps: relative 1e-5 (f32), 1e-12 (f64). Its gradient: per
//   element, relative to max(|cpu|, 1e-3), 2e-6 (f32, ~16 ulps), 1e-13 (f64).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "cuda_compare.h"
#include "cuda_util.h"
#include "engine/autograd.h"
#include "engine/ops.h"
#include "gradcheck.h"

using namespace engine;
using testing_util::scaled_error;
using testing_util::times;

namespace {

// A posterior for in -> out: mu ~ N(0, 0.5), rho ~ -1 + N(0, 0.5) (sigma 0.15 to 0.75, so the
// rho gradients matter), as in test_bayes.cpp.
struct Posterior {
  Tensor w_mu, w_rho, b_mu, b_rho;
};
Posterior posterior(int64_t in, int64_t out, uint64_t seed, DType dtype) {
  auto make = [&](const Shape& shape, uint64_t offset, double shift) {
    return add(scale(Tensor::randn(shape, seed, offset, dtype), 0.5), Tensor::full(shape, shift, dtype));
  };
  return {make({out, in}, 0, 0.0), make({out, in}, 1, -1.0), make({out}, 2, 0.0), make({out}, 3, -1.0)};
}

std::vector<double> softplus_of(const Tensor& t) {
  std::vector<double> v = t.to_vector();
  for (double& x : v) x = std::log1p(std::exp(-std::fabs(x))) + std::max(x, 0.0);
  return v;
}
std::vector<double> abs_eps_sigmoid(const Tensor& eps, const Tensor& rho) {
  std::vector<double> e = eps.to_vector(), r = rho.to_vector();
  for (size_t i = 0; i < e.size(); ++i) e[i] = std::fabs(e[i]) / (1 + std::exp(-r[i]));
  return e;
}

struct Shape3 {
  int64_t n, in, out;
};

// The heads and odd sizes; with in * out not a multiple of 4, the bias draws begin inside a
// Philox block, and with `in` odd, the weight rows do too.
const std::vector<Shape3> kShapes = {{1, 2048, 2},  {32, 2048, 2}, {128, 2048, 2}, {256, 2048, 2},
                                     {32, 2048, 1000}, {4, 17, 3},  {65, 130, 67},  {3, 1001, 5}};

// Runs bayes_linear on `device` and the backward of sum(y * r); returns y, then the gradients
// of x, w_mu, w_rho, b_mu, b_rho, and with explicit noise eps_w, eps_b.
std::vector<Tensor> run(Device device, const Tensor& x, const Posterior& q, const Tensor& eps_w, const Tensor& eps_b,
                        PhiloxKey key, const Tensor& r) {
  // detach(): a fresh leaf even where t is already on `device` (to() then returns t itself)
  auto leaf = [&](const Tensor& t) { return t.to(device).detach().set_requires_grad(true); };
  std::vector<Tensor> in{leaf(x), leaf(q.w_mu), leaf(q.w_rho), leaf(q.b_mu), leaf(q.b_rho)};
  const bool explicit_noise = eps_w.defined();
  if (explicit_noise) {
    in.push_back(leaf(eps_w));
    in.push_back(leaf(eps_b));
  }
  Tensor y = explicit_noise ? bayes_linear(in[0], in[1], in[2], in[3], in[4], in[5], in[6])
                            : bayes_linear(in[0], in[1], in[2], in[3], in[4], key);
  sum(mul(y, r.to(device))).backward();
  std::vector<Tensor> out{y.detach()};
  for (const Tensor& t : in) out.push_back(t.grad());
  return out;
}

void compare(const Shape3& s, DType dtype, bool explicit_noise) {
  SCOPED_TRACE(std::string(dtype_name(dtype)) + " bayes_linear " + std::to_string(s.n) + " x " +
               std::to_string(s.in) + " -> " + std::to_string(s.out) +
               (explicit_noise ? ", explicit noise" : ", Philox noise"));
  testing_util::PoisonDeviceAllocations poison;
  const double tol = 32 * testing_util::unit_roundoff(dtype);
  const uint64_t seed = static_cast<uint64_t>(s.n * 131 + s.in * 7 + s.out);
  Posterior q = posterior(s.in, s.out, seed, dtype);
  Tensor x = Tensor::randn({s.n, s.in}, seed, 4, dtype);
  Tensor r = Tensor::randn({s.n, s.out}, seed, 5, dtype);
  const PhiloxKey key{seed, 3};
  // The noise the layer uses: explicit tensors, or the key's stream on the CPU (which the GPU
  // must reproduce).
  std::vector<Tensor> eps = explicit_noise
                                ? std::vector<Tensor>{Tensor::randn({s.out, s.in}, seed, 6, dtype),
                                                      Tensor::randn({s.out}, seed, 7, dtype)}
                                : bayes_noise(q.w_mu, q.b_mu, key);
  Tensor eps_w = explicit_noise ? eps[0] : Tensor(), eps_b = explicit_noise ? eps[1] : Tensor();
  std::vector<Tensor> cpu = run(Device::CPU, x, q, eps_w, eps_b, key, r);
  std::vector<Tensor> gpu = run(Device::CUDA, x, q, eps_w, eps_b, key, r);

  // The products' scales, with each sampled weight's own scale |mu| + softplus(rho) |eps|:
  // mu + softplus(rho) eps may cancel, and the backends round it differently (fused or not;
  // the GPU's exp and log1p are not glibc's), so a weight carries errors of that size.
  auto sample_scale = [](const Tensor& mu, const Tensor& rho, const Tensor& e) {
    std::vector<double> m = mu.to_vector(), sp = softplus_of(rho), ev = e.to_vector();
    for (size_t i = 0; i < m.size(); ++i) m[i] = std::fabs(m[i]) + sp[i] * std::fabs(ev[i]);
    return Tensor::from_vector(m, mu.shape(), DType::F64);
  };
  testing_util::LinearScales sc = testing_util::linear_scales(x, sample_scale(q.w_mu, q.w_rho, eps[0]),
                                                              sample_scale(q.b_mu, q.b_rho, eps[1]), r);
  std::vector<std::vector<double>> scales{
      sc.y,
      sc.dx,
      sc.dw,
      times(sc.dw, abs_eps_sigmoid(eps[0], q.w_rho)),
      sc.db,
      times(sc.db, abs_eps_sigmoid(eps[1], q.b_rho)),
      times(sc.dw, softplus_of(q.w_rho)),
      times(sc.db, softplus_of(q.b_rho)),
  };
  const char* names[] = {"y", "dx", "dw_mu", "dw_rho", "db_mu", "db_rho", "deps_w", "deps_b"};
  ASSERT_EQ(gpu.size(), cpu.size());
  for (size_t i = 0; i < gpu.size(); ++i) {
    ASSERT_TRUE(gpu[i].defined()) << names[i];
    EXPECT_EQ(gpu[i].device(), Device::CUDA) << names[i];
    double err = scaled_error(gpu[i], cpu[i], scales[i]);
    EXPECT_LE(err, tol) << names[i] << ": scaled error " << err;
  }
}

}  // namespace

TEST(CudaBayesLinear, ExplicitNoiseMatchesCpu) {
  REQUIRE_GPU();
  for (DType dtype : {DType::F32, DType::F64})
    for (const Shape3& s : kShapes) compare(s, dtype, true);
}

TEST(CudaBayesLinear, PhiloxNoiseMatchesCpu) {
  REQUIRE_GPU();
  for (DType dtype : {DType::F32, DType::F64})
    for (const Shape3& s : kShapes) compare(s, dtype, false);
}

TEST(CudaBayesLinear, SameKeySameNoiseAsCpu) {
  REQUIRE_GPU();
  testing_util::PoisonDeviceAllocations poison;
  // 1000 x 2049 weights: rows start at every position inside a Philox block; offsets 0 and a
  // large one (the high word of the counter).
  for (DType dtype : {DType::F32, DType::F64})
    for (PhiloxKey key : {PhiloxKey{1, 0}, PhiloxKey{0xDEADBEEF12345ull, (1ull << 32) + 7}}) {
      Tensor w_mu = Tensor::zeros({1000, 2049}, dtype), b_mu = Tensor::zeros({1000}, dtype);
      std::vector<Tensor> cpu = bayes_noise(w_mu, b_mu, key);
      std::vector<Tensor> gpu = bayes_noise(w_mu.to(Device::CUDA), b_mu.to(Device::CUDA), key);
      for (int t = 0; t < 2; ++t) {
        ASSERT_EQ(gpu[t].device(), Device::CUDA);
        std::vector<double> c = cpu[t].to_vector(), g = gpu[t].to_vector();
        ASSERT_EQ(c.size(), g.size());
        size_t identical = 0;
        double worst_ulps = 0, worst_abs = 0;
        for (size_t i = 0; i < c.size(); ++i) {
          identical += c[i] == g[i];
          double diff = std::fabs(c[i] - g[i]);
          worst_abs = std::max(worst_abs, std::isnan(diff) ? INFINITY : diff);
          if (dtype == DType::F32)  // in float ulps at c[i]
            worst_ulps = std::max(worst_ulps, diff / (std::nextafter(std::fabs(static_cast<float>(c[i])), INFINITY) -
                                                      std::fabs(static_cast<float>(c[i]))));
        }
        std::printf("%s noise %s, key (%llu, %llu): %zu of %zu identical, largest difference %.3g\n",
                    dtype_name(dtype), t ? "b" : "w", static_cast<unsigned long long>(key.seed),
                    static_cast<unsigned long long>(key.offset), identical, c.size(), worst_abs);
        if (dtype == DType::F32) {
          EXPECT_LE(worst_ulps, 1.0) << (t ? "eps_b" : "eps_w");
          EXPECT_GE(static_cast<double>(identical), 0.999 * c.size()) << (t ? "eps_b" : "eps_w");
        } else {
          EXPECT_LE(worst_abs, 1e-13) << (t ? "eps_b" : "eps_w");
        }
      }
    }
}

TEST(CudaBayesLinear, PhiloxKeyEqualsItsNoiseTensorsExactly) {
  REQUIRE_GPU();
  testing_util::PoisonDeviceAllocations poison;
  // On the GPU, the key's noise drawn inside the matmul and the same noise passed in as
  // tensors go through the same arithmetic: identical bits, forward and backward.
  for (DType dtype : {DType::F32, DType::F64}) {
    Posterior q = posterior(130, 67, 21, dtype);
    Tensor x = Tensor::randn({65, 130}, 22, 0, dtype, Device::CUDA);
    Tensor r = Tensor::randn({65, 67}, 23, 0, dtype);
    const PhiloxKey key{9, 2};
    Posterior g{q.w_mu.to(Device::CUDA), q.w_rho.to(Device::CUDA), q.b_mu.to(Device::CUDA), q.b_rho.to(Device::CUDA)};
    std::vector<Tensor> eps = bayes_noise(g.w_mu, g.b_mu, key);
    std::vector<Tensor> with_key = run(Device::CUDA, x, g, Tensor(), Tensor(), key, r);
    std::vector<Tensor> with_eps = run(Device::CUDA, x, g, eps[0], eps[1], key, r);
    for (size_t i = 0; i < with_key.size(); ++i)
      EXPECT_EQ(with_key[i].to_vector(), with_eps[i].to_vector()) << dtype_name(dtype) << " result " << i;
  }
}

TEST(CudaBayesLinear, OnlyRhoGradients) {
  REQUIRE_GPU();
  testing_util::PoisonDeviceAllocations poison;
  // x and mu fixed: the backward skips dx and the mu gradients (and needs no W for dx).
  Posterior q = posterior(300, 7, 31, DType::F64);
  Tensor x = Tensor::randn({20, 300}, 32, 0, DType::F64);
  auto grads = [&](Device device) {
    Tensor wr = q.w_rho.to(device).detach().set_requires_grad(true);
    Tensor br = q.b_rho.to(device).detach().set_requires_grad(true);
    Tensor y = bayes_linear(x.to(device), q.w_mu.to(device), wr, q.b_mu.to(device), br, PhiloxKey{4, 0});
    sum(y).backward();
    return std::vector<Tensor>{wr.grad(), br.grad()};
  };
  std::vector<Tensor> cpu = grads(Device::CPU), gpu = grads(Device::CUDA);
  for (int i = 0; i < 2; ++i)
    EXPECT_LT(testing_util::normwise_error(gpu[i], cpu[i]), 1e-13) << (i ? "b_rho" : "w_rho");
}

TEST(CudaBayesKl, MatchesCpu) {
  REQUIRE_GPU();
  testing_util::PoisonDeviceAllocations poison;
  for (DType dtype : {DType::F32, DType::F64})
    for (Shape3 s : {Shape3{0, 2048, 2}, Shape3{0, 2048, 1000}, Shape3{0, 17, 3}})
      for (double prior_sigma : {1.0, 0.1}) {
        SCOPED_TRACE(std::string(dtype_name(dtype)) + " KL " + std::to_string(s.in) + " -> " +
                     std::to_string(s.out) + ", prior sigma " + std::to_string(prior_sigma));
        Posterior q = posterior(s.in, s.out, s.in + s.out, dtype);
        auto run_kl = [&](Device device) {
          std::vector<Tensor> p{q.w_mu.to(device), q.w_rho.to(device), q.b_mu.to(device), q.b_rho.to(device)};
          for (Tensor& t : p) t = t.detach().set_requires_grad(true);
          Tensor kl = bayes_kl(p[0], p[1], p[2], p[3], prior_sigma);
          scale(kl, 0.37).backward();  // dL/dKL = 0.37, read on the device
          return std::vector<Tensor>{kl.detach(), p[0].grad(), p[1].grad(), p[2].grad(), p[3].grad()};
        };
        std::vector<Tensor> cpu = run_kl(Device::CPU), gpu = run_kl(Device::CUDA);
        ASSERT_EQ(gpu[0].device(), Device::CUDA);
        const bool f32 = dtype == DType::F32;
        EXPECT_LE(std::fabs(gpu[0].item() - cpu[0].item()) / cpu[0].item(), f32 ? 1e-5 : 1e-12)
            << "KL " << gpu[0].item() << " vs " << cpu[0].item();
        const char* names[] = {"", "dw_mu", "dw_rho", "db_mu", "db_rho"};
        for (int i = 1; i < 5; ++i)
          EXPECT_LE(testing_util::max_rel_error(gpu[i], cpu[i]), f32 ? 2e-6 : 1e-13) << names[i];
      }
}
