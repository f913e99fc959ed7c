// Bayesian linear layer on the CPU (bayesian-torch LinearReparameterization):
//   W = w_mu + softplus(w_rho) * eps_w,  b = b_mu + softplus(b_rho) * eps_b,  y = x W^T + b
// with x [n, in], W [out, in], b [out], y [n, out]. The noise is an explicit array or the
// Philox stream (kernels/common/bayes.h: BayesNoise), drawn on the fly and never stored: the
// backward draws the same numbers again.
// Gradient rule: dx is written; parameter gradients (dw_mu, dw_rho, db_mu, db_rho) and noise
// gradients are written too (the engine accumulates into leaves).
#pragma once
#include <cstdint>

#include "kernels/common/bayes.h"

namespace kernels::cpu {

// w[j] = mu[j] + softplus(rho[j]) * eps_j, j < n.
template <typename T>
void bayes_sample(const T* mu, const T* rho, const BayesNoise<T>& noise, T* w, int64_t n);

// eps[j] = eps_j, j < n: the noise as an array (tests, parity checks).
template <typename T> void bayes_noise_fill(const BayesNoise<T>& noise, T* eps, int64_t n);

// Samples W and b into w_sample [out, in] and b_sample [out] (kept by the caller for the
// backward), then y = x W^T + b.
template <typename T>
void bayes_linear_forward(const T* x, const T* w_mu, const T* w_rho, const T* b_mu, const T* b_rho,
                          const BayesNoise<T>& w_noise, const BayesNoise<T>& b_noise, T* w_sample,
                          T* b_sample, T* y, int64_t n, int64_t in, int64_t out);

// Where the backward writes; a null pointer skips that gradient.
template <typename T> struct BayesLinearGrads {
  T* dx = nullptr;      // [n, in]
  T* dw_mu = nullptr;   // [out, in]
  T* dw_rho = nullptr;  // [out, in]
  T* dw_eps = nullptr;  // [out, in]
  T* db_mu = nullptr;   // [out]
  T* db_rho = nullptr;  // [out]
  T* db_eps = nullptr;  // [out]
};

template <typename T>
void bayes_linear_backward(const T* x, const T* w_sample, const T* w_rho, const T* b_rho,
                           const BayesNoise<T>& w_noise, const BayesNoise<T>& b_noise, const T* dy,
                           const BayesLinearGrads<T>& grads, int64_t n, int64_t in, int64_t out);

// sum over j < n of KL(N(mu[j], softplus(rho[j])^2) || N(0, prior_sigma^2)), in double.
template <typename T> double bayes_kl_sum(const T* mu, const T* rho, int64_t n, T prior_sigma);
// dmu, drho = scale * dKL/dmu, scale * dKL/drho (either may be null).
template <typename T> void bayes_kl_backward(const T* mu, const T* rho, int64_t n, T prior_sigma,
                                             T scale, T* dmu, T* drho);

}  // namespace kernels::cpu
