// The Bayesian linear layer (bayesian-torch LinearReparameterization): the fused sample of
// weight and bias with the matmul, its Philox noise as tensors, and the closed-form KL.
#include <cmath>

#include "engine/ops/op_common.h"
#include "kernels/cpu/bayes.h"
#ifdef ENGINE_WITH_CUDA
#include "kernels/cuda/bayes.h"
#endif

namespace engine {
namespace {

using kernels::BayesNoise;

// w_mu/w_rho [out, in] and b_mu/b_rho [out], one dtype and device.
void check_posterior(const char* op, const Tensor& w_mu, const Tensor& w_rho, const Tensor& b_mu,
                     const Tensor& b_rho) {
  ops::check_ndim(op, w_mu, 2, "w_mu");
  ops::check_defined(op, w_rho, "w_rho");
  ops::check_defined(op, b_mu, "b_mu");
  ops::check_defined(op, b_rho, "b_rho");
  ops::check_same(op, {&w_mu, &w_rho, &b_mu, &b_rho});
  ENGINE_CHECK(w_rho.shape() == w_mu.shape(), op, ": w_rho ", w_rho.desc(), " must match w_mu ",
               w_mu.desc());
  const Shape bias_shape{w_mu.dim(0)};
  ENGINE_CHECK(b_mu.shape() == bias_shape, op, ": b_mu ", b_mu.desc(), " must be [", w_mu.dim(0),
               "] for w_mu ", w_mu.desc());
  ENGINE_CHECK(b_rho.shape() == bias_shape, op, ": b_rho ", b_rho.desc(), " must be [", w_mu.dim(0),
               "] for w_mu ", w_mu.desc());
}

// The noise of the weight (first_draw 0) or the bias (first_draw out*in): the explicit
// tensor when defined, else the Philox stream of `key`.
template <typename T>
BayesNoise<T> noise_of(const Tensor& eps, PhiloxKey key, uint64_t first_draw) {
  BayesNoise<T> noise;
  if (eps.defined()) {
    noise.eps = eps.data<T>();
  } else {
    noise.seed = key.seed;
    noise.offset = key.offset;
    noise.first_draw = first_draw;
  }
  return noise;
}

template <typename T> T* data_or_null(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

// Both bayes_linear overloads: eps_w and eps_b are both defined (explicit noise) or both
// undefined (noise from `key`).
Tensor bayes_linear_impl(const Tensor& x, const Tensor& w_mu, const Tensor& w_rho,
                         const Tensor& b_mu, const Tensor& b_rho, const Tensor& eps_w,
                         const Tensor& eps_b, PhiloxKey key) {
  const char* op = "bayes_linear";
  ops::check_ndim(op, x, 2, "input x");
  check_posterior(op, w_mu, w_rho, b_mu, b_rho);
  ops::check_same(op, {&x, &w_mu, &eps_w, &eps_b});
  const int64_t n = x.dim(0), in = x.dim(1), out = w_mu.dim(0);
  ENGINE_CHECK(w_mu.dim(1) == in, op, ": input ", x.desc(), " has ", in, " features but w_mu ",
               w_mu.desc(), " expects ", w_mu.dim(1));
  const bool explicit_noise = eps_w.defined();
  if (explicit_noise) {
    ENGINE_CHECK(eps_w.shape() == w_mu.shape(), op, ": eps_w ", eps_w.desc(), " must match w_mu ",
                 w_mu.desc());
    ENGINE_CHECK(eps_b.shape() == b_mu.shape(), op, ": eps_b ", eps_b.desc(), " must match b_mu ",
                 b_mu.desc());
  }
  const bool on_cpu = x.is_cpu();

  const uint64_t bias_first_draw = static_cast<uint64_t>(out * in);
  Tensor y = Tensor::empty({n, out}, x.dtype(), x.device());
  // The CPU samples W and b into tensors (and keeps W for dx); the GPU samples each weight
  // inside the matmul and never stores W (kernels/cuda/bayes.h).
  Tensor w_sample;
  if (on_cpu) {
    w_sample = Tensor::empty(w_mu.shape(), x.dtype(), x.device());
    Tensor b_sample = Tensor::empty(b_mu.shape(), x.dtype(), x.device());
    ENGINE_DISPATCH_FLOAT(
        x.dtype(), T,
        kernels::cpu::bayes_linear_forward<T>(
            x.data<T>(), w_mu.data<T>(), w_rho.data<T>(), b_mu.data<T>(), b_rho.data<T>(),
            noise_of<T>(eps_w, key, 0), noise_of<T>(eps_b, key, bias_first_draw), w_sample.data<T>(),
            b_sample.data<T>(), y.data<T>(), n, in, out));
  } else {
#ifdef ENGINE_WITH_CUDA
    ENGINE_DISPATCH_FLOAT(
        x.dtype(), T,
        kernels::cuda::bayes_linear_forward<T>(
            x.data<T>(), w_mu.data<T>(), w_rho.data<T>(), b_mu.data<T>(), b_rho.data<T>(),
            noise_of<T>(eps_w, key, 0), noise_of<T>(eps_b, key, bias_first_draw), y.data<T>(), n, in, out));
#else
    ops::no_cuda_kernel(op);
#endif
  }

  if (!needs_grad({&x, &w_mu, &w_rho, &b_mu, &b_rho, &eps_w, &eps_b})) return y;
  auto wants = [](const Tensor& t) { return t.defined() && t.requires_grad(); };
  const bool g_x = wants(x), g_wmu = wants(w_mu), g_wrho = wants(w_rho), g_bmu = wants(b_mu),
             g_brho = wants(b_rho), g_epsw = wants(eps_w), g_epsb = wants(eps_b);
  const bool g_w = g_wmu || g_wrho || g_epsw;
  // Saved for the backward: W for dx (on the GPU: w_mu, from which W is sampled again), x (for
  // dW), rho and the noise (for the gradients of rho and eps); the Philox noise is drawn again
  // rather than stored. Like rho, w_mu is saved by reference: changing it in place between the
  // forward and the backward changes the GPU's dx.
  Tensor xs = g_w ? x.detach() : Tensor();
  Tensor ws = g_x ? (on_cpu ? w_sample : w_mu.detach()) : Tensor();
  Tensor w_rho_s = w_rho.detach(), b_rho_s = b_rho.detach();
  Tensor eps_w_s = explicit_noise ? eps_w.detach() : Tensor();
  Tensor eps_b_s = explicit_noise ? eps_b.detach() : Tensor();
  record(y, op, {&x, &w_mu, &w_rho, &b_mu, &b_rho, &eps_w, &eps_b},
         [=](const Tensor& dy) -> std::vector<Tensor> {
           auto grad_like = [&](bool wanted, const Shape& shape) {
             return wanted ? Tensor::empty(shape, dy.dtype(), dy.device()) : Tensor();
           };
           Tensor dx = grad_like(g_x, {n, in});
           Tensor dw_mu = grad_like(g_wmu, {out, in}), dw_rho = grad_like(g_wrho, {out, in});
           Tensor dw_eps = grad_like(g_epsw, {out, in});
           Tensor db_mu = grad_like(g_bmu, {out}), db_rho = grad_like(g_brho, {out});
           Tensor db_eps = grad_like(g_epsb, {out});
           ENGINE_DISPATCH_FLOAT(dy.dtype(), T, [&] {
             auto fill = [&](auto& grads) {
               grads.dx = data_or_null<T>(dx);
               grads.dw_mu = data_or_null<T>(dw_mu);
               grads.dw_rho = data_or_null<T>(dw_rho);
               grads.dw_eps = data_or_null<T>(dw_eps);
               grads.db_mu = data_or_null<T>(db_mu);
               grads.db_rho = data_or_null<T>(db_rho);
               grads.db_eps = data_or_null<T>(db_eps);
             };
             const BayesNoise<T> w_noise = noise_of<T>(eps_w_s, key, 0);
             const BayesNoise<T> b_noise = noise_of<T>(eps_b_s, key, bias_first_draw);
             if (dy.is_cpu()) {
               kernels::cpu::BayesLinearGrads<T> grads;
               fill(grads);
               kernels::cpu::bayes_linear_backward<T>(data_or_null<T>(xs), data_or_null<T>(ws),
                                                      w_rho_s.data<T>(), b_rho_s.data<T>(), w_noise,
                                                      b_noise, dy.data<T>(), grads, n, in, out);
               return;
             }
#ifdef ENGINE_WITH_CUDA
             kernels::cuda::BayesLinearGrads<T> grads;
             fill(grads);
             kernels::cuda::bayes_linear_backward<T>(data_or_null<T>(xs), data_or_null<T>(ws),
                                                     w_rho_s.data<T>(), b_rho_s.data<T>(), w_noise,
                                                     b_noise, dy.data<T>(), grads, n, in, out);
#endif
           }());
           return {dx, dw_mu, dw_rho, db_mu, db_rho, dw_eps, db_eps};
         });
  return y;
}

}  // namespace

Tensor bayes_linear(const Tensor& x, const Tensor& w_mu, const Tensor& w_rho, const Tensor& b_mu,
                    const Tensor& b_rho, const Tensor& eps_w, const Tensor& eps_b) {
  ops::check_defined("bayes_linear", eps_w, "eps_w");
  ops::check_defined("bayes_linear", eps_b, "eps_b");
  return bayes_linear_impl(x, w_mu, w_rho, b_mu, b_rho, eps_w, eps_b, PhiloxKey{});
}

Tensor bayes_linear(const Tensor& x, const Tensor& w_mu, const Tensor& w_rho, const Tensor& b_mu,
                    const Tensor& b_rho, PhiloxKey key) {
  return bayes_linear_impl(x, w_mu, w_rho, b_mu, b_rho, Tensor(), Tensor(), key);
}

std::vector<Tensor> bayes_noise(const Tensor& w_mu, const Tensor& b_mu, PhiloxKey key) {
  const char* op = "bayes_noise";
  ops::check_ndim(op, w_mu, 2, "w_mu");
  ops::check_ndim(op, b_mu, 1, "b_mu");
  ops::check_same(op, {&w_mu, &b_mu});
  const int64_t out = w_mu.dim(0), in = w_mu.dim(1);
  ENGINE_CHECK(b_mu.dim(0) == out, op, ": b_mu ", b_mu.desc(), " must be [", out, "] for w_mu ",
               w_mu.desc());
  Tensor eps_w = Tensor::empty(w_mu.shape(), w_mu.dtype(), w_mu.device());
  Tensor eps_b = Tensor::empty(b_mu.shape(), b_mu.dtype(), b_mu.device());
  ENGINE_DISPATCH_FLOAT(w_mu.dtype(), T, [&] {
    const BayesNoise<T> w_noise = noise_of<T>(Tensor(), key, 0);
    const BayesNoise<T> b_noise = noise_of<T>(Tensor(), key, static_cast<uint64_t>(out * in));
    if (w_mu.is_cpu()) {
      kernels::cpu::bayes_noise_fill<T>(w_noise, eps_w.data<T>(), out * in);
      kernels::cpu::bayes_noise_fill<T>(b_noise, eps_b.data<T>(), out);
      return;
    }
#ifdef ENGINE_WITH_CUDA
    kernels::cuda::bayes_noise_fill<T>(w_noise, eps_w.data<T>(), out * in);
    kernels::cuda::bayes_noise_fill<T>(b_noise, eps_b.data<T>(), out);
#else
    ops::no_cuda_kernel("bayes_noise");
#endif
  }());
  return {eps_w, eps_b};
}

Tensor bayes_kl(const Tensor& w_mu, const Tensor& w_rho, const Tensor& b_mu, const Tensor& b_rho,
                double prior_sigma) {
  const char* op = "bayes_kl";
  check_posterior(op, w_mu, w_rho, b_mu, b_rho);
  ENGINE_CHECK(prior_sigma > 0 && std::isfinite(prior_sigma), op,
               ": prior_sigma must be positive and finite, got ", prior_sigma);
  const int64_t nw = w_mu.numel(), nb = b_mu.numel();
  Tensor kl;
  if (w_mu.is_cpu()) {
    double total = ENGINE_DISPATCH_FLOAT(
        w_mu.dtype(), T,
        kernels::cpu::bayes_kl_sum<T>(w_mu.data<T>(), w_rho.data<T>(), nw, T(prior_sigma)) +
            kernels::cpu::bayes_kl_sum<T>(b_mu.data<T>(), b_rho.data<T>(), nb, T(prior_sigma)));
    kl = Tensor::full({1}, total, w_mu.dtype(), w_mu.device());
  } else {
#ifdef ENGINE_WITH_CUDA
    kl = Tensor::empty({1}, w_mu.dtype(), w_mu.device());
    ENGINE_DISPATCH_FLOAT(w_mu.dtype(), T,
                          kernels::cuda::bayes_kl<T>(w_mu.data<T>(), w_rho.data<T>(), nw, b_mu.data<T>(),
                                                     b_rho.data<T>(), nb, T(prior_sigma), kl.data<T>()));
#else
    ops::no_cuda_kernel(op);
#endif
  }
  if (needs_grad({&w_mu, &w_rho, &b_mu, &b_rho})) {
    Tensor wm = w_mu.detach(), wr = w_rho.detach(), bm = b_mu.detach(), br = b_rho.detach();
    const bool g_wmu = w_mu.requires_grad(), g_wrho = w_rho.requires_grad(),
               g_bmu = b_mu.requires_grad(), g_brho = b_rho.requires_grad();
    record(kl, op, {&w_mu, &w_rho, &b_mu, &b_rho}, [=](const Tensor& dy) -> std::vector<Tensor> {
      auto grad_like = [&](bool wanted, const Tensor& like) {
        return wanted ? Tensor::empty(like.shape(), dy.dtype(), dy.device()) : Tensor();
      };
      Tensor dwm = grad_like(g_wmu, wm), dwr = grad_like(g_wrho, wr), dbm = grad_like(g_bmu, bm),
             dbr = grad_like(g_brho, br);
      ENGINE_DISPATCH_FLOAT(dy.dtype(), T, [&] {
        if (dy.is_cpu()) {
          const T scale = static_cast<T>(dy.item());
          kernels::cpu::bayes_kl_backward<T>(wm.data<T>(), wr.data<T>(), nw, T(prior_sigma), scale,
                                             data_or_null<T>(dwm), data_or_null<T>(dwr));
          kernels::cpu::bayes_kl_backward<T>(bm.data<T>(), br.data<T>(), nb, T(prior_sigma), scale,
                                             data_or_null<T>(dbm), data_or_null<T>(dbr));
          return;
        }
#ifdef ENGINE_WITH_CUDA
        // dL/dKL stays on the device: the kernels read it there, with no host round trip.
        kernels::cuda::bayes_kl_backward<T>(wm.data<T>(), wr.data<T>(), nw, T(prior_sigma), dy.data<T>(),
                                            data_or_null<T>(dwm), data_or_null<T>(dwr));
        kernels::cuda::bayes_kl_backward<T>(bm.data<T>(), br.data<T>(), nb, T(prior_sigma), dy.data<T>(),
                                            data_or_null<T>(dbm), data_or_null<T>(dbr));
#endif
      }());
      return {dwm, dwr, dbm, dbr};
    });
  }
  return kl;
}

}  // namespace engine
