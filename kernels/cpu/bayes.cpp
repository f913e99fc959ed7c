// Bayesian linear layer on the CPU. Sampling costs one Philox block per four weights plus
// two Box-Muller transforms, far more than the matmul for a 2048 -> 2 head, so the
// elementwise passes are threaded; the matmuls go through the GEMM.
// Bench: build/bench/bench_kernels --benchmark_filter=BayesLinear
#include "kernels/cpu/bayes.h"

#include <algorithm>
#include <vector>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/parallel.h"

namespace kernels::cpu {
namespace {

// Elements per thread chunk for the passes that draw noise (~40 ns per element).
constexpr int64_t kNoiseGrain = 1024;

// f(j, eps_j) for j < n, each chunk reading the noise in increasing order.
template <typename T, typename F>
void for_each_noise(const BayesNoise<T>& noise, int64_t n, F&& f) {
  parallel_for(n, kNoiseGrain, [&](int64_t begin, int64_t end) {
    BayesNoiseReader<T> read(noise);
    for (int64_t j = begin; j < end; ++j) f(j, read(j));
  });
}

// From dL/dW (or dL/db) of the sampled tensor, the gradients of rho and of the noise.
template <typename T> void sample_backward(const T* d_sample, const T* rho,
                                           const BayesNoise<T>& noise, T* drho, T* deps,
                                           int64_t n) {
  if (drho) {
    for_each_noise(noise, n,
                   [=](int64_t j, T eps) { drho[j] = bayes_drho_fn(rho[j], eps, d_sample[j]); });
  }
  if (deps) {
    parallel_for(n, kNoiseGrain, [=](int64_t begin, int64_t end) {
      for (int64_t j = begin; j < end; ++j) deps[j] = bayes_deps_fn(rho[j], d_sample[j]);
    });
  }
}

}  // namespace

template <typename T>
void bayes_sample(const T* mu, const T* rho, const BayesNoise<T>& noise, T* w, int64_t n) {
  for_each_noise(noise, n, [=](int64_t j, T eps) { w[j] = bayes_sample_fn(mu[j], rho[j], eps); });
}

template <typename T> void bayes_noise_fill(const BayesNoise<T>& noise, T* eps, int64_t n) {
  for_each_noise(noise, n, [=](int64_t j, T e) { eps[j] = e; });
}

template <typename T>
void bayes_linear_forward(const T* x, const T* w_mu, const T* w_rho, const T* b_mu, const T* b_rho,
                          const BayesNoise<T>& w_noise, const BayesNoise<T>& b_noise, T* w_sample,
                          T* b_sample, T* y, int64_t n, int64_t in, int64_t out) {
  bayes_sample(w_mu, w_rho, w_noise, w_sample, out * in);
  bayes_sample(b_mu, b_rho, b_noise, b_sample, out);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t o = 0; o < out; ++o) y[i * out + o] = b_sample[o];
  gemm<T>(false, true, n, out, in, T(1), x, in, w_sample, in, T(1), y, out);
}

template <typename T>
void bayes_linear_backward(const T* x, const T* w_sample, const T* w_rho, const T* b_rho,
                           const BayesNoise<T>& w_noise, const BayesNoise<T>& b_noise, const T* dy,
                           const BayesLinearGrads<T>& grads, int64_t n, int64_t in, int64_t out) {
  if (grads.dx) gemm<T>(false, false, n, in, out, T(1), dy, out, w_sample, in, T(0), grads.dx, in);

  // dL/dW = dy^T x, which is dL/dw_mu itself: written straight into dw_mu when it is wanted.
  if (grads.dw_mu || grads.dw_rho || grads.dw_eps) {
    std::vector<T> scratch;
    T* dw = grads.dw_mu;
    if (!dw) {
      scratch.resize(static_cast<size_t>(out * in));
      dw = scratch.data();
    }
    gemm<T>(true, false, out, in, n, T(1), dy, out, x, in, T(0), dw, in);
    sample_backward(dw, w_rho, w_noise, grads.dw_rho, grads.dw_eps, out * in);
  }

  if (grads.db_mu || grads.db_rho || grads.db_eps) {
    std::vector<T> db(static_cast<size_t>(out), T(0));
    for (int64_t i = 0; i < n; ++i)
      for (int64_t o = 0; o < out; ++o) db[o] += dy[i * out + o];
    if (grads.db_mu) std::copy(db.begin(), db.end(), grads.db_mu);
    sample_backward(db.data(), b_rho, b_noise, grads.db_rho, grads.db_eps, out);
  }
}

template <typename T> double bayes_kl_sum(const T* mu, const T* rho, int64_t n, T prior_sigma) {
  // Serial: a fixed summation order, and a few thousand terms for a classifier head.
  const BayesPrior<T> prior(prior_sigma);
  double total = 0;
  for (int64_t j = 0; j < n; ++j) total += bayes_kl_fn(mu[j], rho[j], prior);
  return total;
}

template <typename T> void bayes_kl_backward(const T* mu, const T* rho, int64_t n, T prior_sigma,
                                             T scale, T* dmu, T* drho) {
  const BayesPrior<T> prior(prior_sigma);
  for (int64_t j = 0; j < n; ++j) {
    T gmu, grho;
    bayes_kl_grad_fn(mu[j], rho[j], prior, scale, &gmu, &grho);
    if (dmu) dmu[j] = gmu;
    if (drho) drho[j] = grho;
  }
}

#define INSTANTIATE_BAYES(T)                                                                     \
  template void bayes_sample<T>(const T*, const T*, const BayesNoise<T>&, T*, int64_t);          \
  template void bayes_noise_fill<T>(const BayesNoise<T>&, T*, int64_t);                          \
  template void bayes_linear_forward<T>(const T*, const T*, const T*, const T*, const T*,        \
                                        const BayesNoise<T>&, const BayesNoise<T>&, T*, T*, T*,  \
                                        int64_t, int64_t, int64_t);                              \
  template void bayes_linear_backward<T>(const T*, const T*, const T*, const T*,                 \
                                         const BayesNoise<T>&, const BayesNoise<T>&, const T*,   \
                                         const BayesLinearGrads<T>&, int64_t, int64_t, int64_t); \
  template double bayes_kl_sum<T>(const T*, const T*, int64_t, T);                               \
  template void bayes_kl_backward<T>(const T*, const T*, int64_t, T, T, T*, T*);
INSTANTIATE_BAYES(float)
INSTANTIATE_BAYES(double)
#undef INSTANTIATE_BAYES

}  // namespace kernels::cpu
