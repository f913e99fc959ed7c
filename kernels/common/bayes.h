// Math of the Bayesian linear layer shared by the CPU and CUDA backends: the reparameterised
// sample w = mu + softplus(rho) * eps, its gradient, the closed-form KL divergence to a
// N(0, prior_sigma^2) prior and its gradient, and Philox normals four at a time.
//
// Parameterisation (bayesian-torch LinearReparameterization): sigma = softplus(rho).
//   KL(N(mu, sigma^2) || N(0, p^2)) = log(p / sigma) + (sigma^2 + mu^2) / (2 p^2) - 1/2
//   dKL/dmu  = mu / p^2
//   dKL/drho = (sigma / p^2 - 1 / sigma) * sigmoid(rho)
#pragma once
#include <cmath>
#include <cstdint>

#include "kernels/common/elementwise.h"
#include "kernels/common/macros.h"
#include "kernels/common/philox.h"

namespace kernels {

// softplus(rho) and sigmoid(rho) from one exp and one log1p: e = exp(-|rho|) never overflows,
// softplus = max(rho, 0) + log1p(e), sigmoid = 1 / (1 + e) or e / (1 + e) by the sign of rho.
// Bit-identical to softplus_fn and sigmoid_fn (kernels/common/elementwise.h), at half the
// transcendental calls where both are needed.
template <typename T> struct SoftplusSigmoid {
  T softplus, sigmoid;
};
template <typename T> KERNEL_HD SoftplusSigmoid<T> softplus_sigmoid_fn(T rho) {
  T e = exp(-fabs(rho));
  T softplus = (rho > T(0) ? rho : T(0)) + log1p(e);
  T sigmoid = rho >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
  return {softplus, sigmoid};
}

// Below this rho, softplus(rho) = exp(rho) to within relative exp(rho) / 2 < 1e-13, so
// log(sigma) = rho and sigmoid(rho) / sigma = 1 to double precision. Using the limits there
// keeps the KL and its gradient finite where softplus(rho) underflows (rho < -87 in float).
constexpr double kBayesTinyRho = -30.0;

// The reparameterised sample of one weight.
template <typename T> KERNEL_HD T bayes_sample_fn(T mu, T rho, T eps) {
  return mu + softplus_fn(rho) * eps;
}

// From dL/dw of one sampled weight: dL/dmu = dw, dL/drho = dw * eps * sigmoid(rho),
// dL/deps = dw * softplus(rho).
template <typename T> KERNEL_HD T bayes_drho_fn(T rho, T eps, T dw) {
  return dw * eps * sigmoid_fn(rho);
}
template <typename T> KERNEL_HD T bayes_deps_fn(T rho, T dw) { return dw * softplus_fn(rho); }

// The prior N(0, sigma^2), with its logarithm taken once rather than once per weight.
template <typename T> struct BayesPrior {
  T log_sigma, variance;
  KERNEL_HD explicit BayesPrior(T sigma) : log_sigma(log(sigma)), variance(sigma * sigma) {}
};

// KL(N(mu, softplus(rho)^2) || prior) of one weight.
template <typename T> KERNEL_HD T bayes_kl_fn(T mu, T rho, const BayesPrior<T>& prior) {
  T sigma = softplus_fn(rho);
  T log_sigma = rho < T(kBayesTinyRho) ? rho : log(sigma);
  return prior.log_sigma - log_sigma + (sigma * sigma + mu * mu) / (T(2) * prior.variance) - T(0.5);
}

// dKL/dmu and dKL/drho of one weight, times `scale` (the incoming dL/dKL).
template <typename T>
KERNEL_HD void bayes_kl_grad_fn(T mu, T rho, const BayesPrior<T>& prior, T scale, T* dmu, T* drho) {
  SoftplusSigmoid<T> f = softplus_sigmoid_fn(rho);
  // d log(sigma) / d rho = sigmoid / softplus, which tends to 1 where both underflow
  T dlog_sigma = rho < T(kBayesTinyRho) ? T(1) : f.sigmoid / f.softplus;
  *dmu = scale * mu / prior.variance;
  *drho = scale * (f.softplus * f.sigmoid / prior.variance - dlog_sigma);
}

// The four standard normal draws 4*block .. 4*block+3 of stream (seed, offset), bit-identical
// to philox_normal(seed, offset, 4*block + lane) (same Box-Muller on the same lane pairs) at a
// quarter of the Philox work when every draw of the block is used.
KERNEL_HD void philox_normal4(uint64_t seed, uint64_t offset, uint64_t block, double out[4]) {
  Philox4 r = philox_block(seed, offset, block);
  for (unsigned pair = 0; pair < 4; pair += 2) {
    double u1 = philox_to_unit(r.v[pair]);
    double u2 = philox_to_unit(r.v[pair + 1]);
    double radius = sqrt(-2.0 * log(u1));
    double angle = 6.283185307179586476925286766559 * u2;
    out[pair] = radius * cos(angle);
    out[pair + 1] = radius * sin(angle);
  }
}

// Where a Bayesian layer's noise comes from: element j of a tensor takes eps[j] when `eps` is
// set, else Philox draw first_draw + j of stream (seed, offset).
template <typename T> struct BayesNoise {
  const T* eps = nullptr;
  uint64_t seed = 0;
  uint64_t offset = 0;
  uint64_t first_draw = 0;
};

// Reads a BayesNoise in increasing element order, producing each Philox block once.
template <typename T> class BayesNoiseReader {
 public:
  KERNEL_HD explicit BayesNoiseReader(const BayesNoise<T>& noise) : noise_(noise) {}
  KERNEL_HD T operator()(int64_t j) {
    if (noise_.eps) return noise_.eps[j];
    uint64_t draw = noise_.first_draw + static_cast<uint64_t>(j);
    uint64_t block = draw >> 2;
    if (!has_block_ || block != block_) {
      philox_normal4(noise_.seed, noise_.offset, block, normals_);
      block_ = block;
      has_block_ = true;
    }
    return static_cast<T>(normals_[draw & 3]);
  }

 private:
  BayesNoise<T> noise_;
  double normals_[4] = {0, 0, 0, 0};
  uint64_t block_ = 0;
  bool has_block_ = false;
};

}  // namespace kernels
