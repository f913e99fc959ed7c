// Bayesian linear layer on the GPU (bayesian-torch LinearReparameterization), float and double:
//   W = w_mu + softplus(w_rho) * eps_w,  b = b_mu + softplus(b_rho) * eps_b,  y = x W^T + b
// with x [n, in], W [out, in], b [out], y [n, out]. The noise is an explicit device array or
// the Philox stream (kernels/common/bayes.h: BayesNoise), the same numbers as on the CPU for
// the same key. W and b are never stored: the GEMM's operand loader samples each weight as it
// fills shared memory (forward and dx), and the epilogues sample the bias and draw the noise
// again for the rho and eps gradients. Same contract as kernels/cpu/bayes.h otherwise: every
// gradient is written (the engine accumulates into leaves); a null pointer skips it.
// All pointers are device pointers; work is queued on the default stream.
#pragma once
#include <cstdint>

#include "kernels/common/bayes.h"

namespace kernels::cuda {

template <typename T>
void bayes_linear_forward(const T* x, const T* w_mu, const T* w_rho, const T* b_mu, const T* b_rho,
                          const BayesNoise<T>& w_noise, const BayesNoise<T>& b_noise, T* y, int64_t n,
                          int64_t in, int64_t out);

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

// x is needed for the weight gradients, w_mu for dx (W is sampled again from w_mu, w_rho and
// the noise); either may be null when its gradients are not wanted.
template <typename T>
void bayes_linear_backward(const T* x, const T* w_mu, const T* w_rho, const T* b_rho,
                           const BayesNoise<T>& w_noise, const BayesNoise<T>& b_noise, const T* dy,
                           const BayesLinearGrads<T>& grads, int64_t n, int64_t in, int64_t out);

// eps[j] = eps_j, j < n: the noise as an array.
template <typename T> void bayes_noise_fill(const BayesNoise<T>& noise, T* eps, int64_t n);

// kl[0] = sum over the weights and the biases of KL(N(mu, softplus(rho)^2) || N(0, prior_sigma^2)),
// added up in double in a fixed order (deterministic), without a host round trip.
template <typename T>
void bayes_kl(const T* w_mu, const T* w_rho, int64_t nw, const T* b_mu, const T* b_rho, int64_t nb,
              T prior_sigma, T* kl);
// dmu, drho = dkl[0] * dKL/dmu, dkl[0] * dKL/drho (either may be null); dkl is on the device.
template <typename T>
void bayes_kl_backward(const T* mu, const T* rho, int64_t n, T prior_sigma, const T* dkl, T* dmu, T* drho);

}  // namespace kernels::cuda
