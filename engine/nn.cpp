#include "engine/nn.h"

#include <cmath>
#include <string>

#include "engine/autograd.h"
#include "engine/ops/op_common.h"
#include "kernels/common/philox.h"
#include "kernels/cpu/parallel.h"

namespace engine::nn {

namespace {

// A CPU tensor whose element i is transform(draw i of the Philox stream (seed, offset)).
template <typename Transform>
Tensor philox_tensor(const Shape& shape, DType dtype, Transform transform) {
  Tensor t = Tensor::empty(shape, dtype);
  ENGINE_DISPATCH_FLOAT(dtype, T, [&] {
    T* out = t.data<T>();
    kernels::cpu::parallel_for(t.numel(), 1 << 14, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) out[i] = static_cast<T>(transform(static_cast<uint64_t>(i)));
    });
  }());
  return t;
}

// U(-bound, bound) (the draw is in (0, 1], so the interval is really (-bound, bound]).
Tensor uniform(const Shape& shape, double bound, uint64_t seed, uint64_t offset, DType dtype) {
  return philox_tensor(shape, dtype, [=](uint64_t i) {
    return (2 * kernels::philox_uniform(seed, offset, i) - 1) * bound;
  });
}

Tensor normal(const Shape& shape, double mean, double stddev, uint64_t seed, uint64_t offset, DType dtype) {
  return philox_tensor(shape, dtype, [=](uint64_t i) {
    return mean + stddev * kernels::philox_normal(seed, offset, i);
  });
}

void check_positive(const char* layer, const char* what, int64_t value) {
  ENGINE_CHECK(value > 0, layer, ": ", what, " must be positive, got ", value);
}

}  // namespace

// ---- Sequential ----

Tensor Sequential::forward(const Tensor& x) {
  Tensor y = x;
  for (auto& layer : layers_) y = layer->forward(y);
  return y;
}

Layer& Sequential::operator[](size_t i) const {
  ENGINE_CHECK(i < layers_.size(), "Sequential: index ", i, " out of range (size ", layers_.size(), ")");
  return *layers_[i];
}

// ---- Conv2d ----

Conv2d::Conv2d(int64_t in_channels, int64_t out_channels, int kernel_size, int stride, int padding,
               bool bias, uint64_t seed, DType dtype)
    : stride_(stride), padding_(padding) {
  check_positive("Conv2d", "in_channels", in_channels);
  check_positive("Conv2d", "out_channels", out_channels);
  check_positive("Conv2d", "kernel_size", kernel_size);
  check_positive("Conv2d", "stride", stride);
  ENGINE_CHECK(padding >= 0, "Conv2d: padding must be non-negative, got ", padding);
  // kaiming_uniform_(a = sqrt(5)): gain sqrt(2 / (1 + 5)) times sqrt(3 / fan_in) = 1/sqrt(fan_in).
  double bound = 1.0 / std::sqrt(static_cast<double>(in_channels * kernel_size * kernel_size));
  weight_ = register_parameter(
      "weight", uniform({out_channels, kernel_size, kernel_size, in_channels}, bound, seed, 0, dtype));
  if (bias) bias_ = register_parameter("bias", uniform({out_channels}, bound, seed, 1, dtype));
}

Tensor Conv2d::forward(const Tensor& x) { return conv2d(x, weight_, bias_, stride_, padding_); }

// ---- BatchNorm2d ----

BatchNorm2d::BatchNorm2d(int64_t num_features, double eps, double momentum, DType dtype)
    : eps_(eps), momentum_(momentum) {
  check_positive("BatchNorm2d", "num_features", num_features);
  ENGINE_CHECK(eps > 0, "BatchNorm2d: eps must be positive, got ", eps);
  ENGINE_CHECK(momentum >= 0 && momentum <= 1, "BatchNorm2d: momentum must be in [0, 1], got ", momentum);
  weight_ = register_parameter("weight", Tensor::full({num_features}, 1.0, dtype));
  bias_ = register_parameter("bias", Tensor::zeros({num_features}, dtype));
  running_mean_ = register_buffer("running_mean", Tensor::zeros({num_features}, dtype));
  running_var_ = register_buffer("running_var", Tensor::full({num_features}, 1.0, dtype));
  // PyTorch keeps an int64 here; a float counts exactly up to 2^24 batches (f32), plenty.
  num_batches_tracked_ = register_buffer("num_batches_tracked", Tensor::zeros({1}, dtype));
}

Tensor BatchNorm2d::forward(const Tensor& x) {
  Tensor y = batch_norm2d(x, weight_, bias_, running_mean_, running_var_, is_training(), momentum_, eps_);
  if (is_training()) {
    // Incremented with device ops (no copy to the host, so no GPU synchronisation).
    NoGradGuard no_grad;
    Tensor one = Tensor::full({1}, 1.0, num_batches_tracked_.dtype(), num_batches_tracked_.device());
    num_batches_tracked_.copy_(add(num_batches_tracked_, one));
  }
  return y;
}

// ---- Linear ----

Linear::Linear(int64_t in_features, int64_t out_features, bool bias, uint64_t seed, DType dtype) {
  check_positive("Linear", "in_features", in_features);
  check_positive("Linear", "out_features", out_features);
  double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
  weight_ = register_parameter("weight", uniform({out_features, in_features}, bound, seed, 0, dtype));
  if (bias) bias_ = register_parameter("bias", uniform({out_features}, bound, seed, 1, dtype));
}

Tensor Linear::forward(const Tensor& x) { return linear(x, weight_, bias_); }

// ---- BayesLinear ----

BayesLinear::BayesLinear(int64_t in_features, int64_t out_features, double prior_sigma, uint64_t seed,
                         DType dtype)
    : prior_sigma_(prior_sigma) {
  check_positive("BayesLinear", "in_features", in_features);
  check_positive("BayesLinear", "out_features", out_features);
  ENGINE_CHECK(prior_sigma > 0, "BayesLinear: prior_sigma must be positive, got ", prior_sigma);
  // bayesian-torch's defaults, as in shared/REFERENCE.md: mu ~ N(0, 0.1), rho ~ N(-3, 0.1).
  constexpr double kMuMean = 0.0, kRhoMean = -3.0, kInitStd = 0.1;
  Shape w{out_features, in_features}, b{out_features};
  mu_weight_ = register_parameter("mu_weight", normal(w, kMuMean, kInitStd, seed, 0, dtype));
  rho_weight_ = register_parameter("rho_weight", normal(w, kRhoMean, kInitStd, seed, 1, dtype));
  mu_bias_ = register_parameter("mu_bias", normal(b, kMuMean, kInitStd, seed, 2, dtype));
  rho_bias_ = register_parameter("rho_bias", normal(b, kRhoMean, kInitStd, seed, 3, dtype));
}

Tensor BayesLinear::forward(const Tensor& x, PhiloxKey key) const {
  return bayes_linear(x, mu_weight_, rho_weight_, mu_bias_, rho_bias_, key);
}

Tensor BayesLinear::forward_mean(const Tensor& x) const { return linear(x, mu_weight_, mu_bias_); }

Tensor BayesLinear::kl() const { return bayes_kl(mu_weight_, rho_weight_, mu_bias_, rho_bias_, prior_sigma_); }

}  // namespace engine::nn
