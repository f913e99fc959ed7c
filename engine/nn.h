// Layers as modules, with PyTorch's parameter names and default initialisation, so models
// built from them take torchvision's state_dict keys. Random initialisation draws from the
// Philox stream of an explicit seed (tensor k of a layer uses stream offset k), so a model
// built twice with the same seeds is identical on every machine.
// Layouts as in engine/ops.h: activations NHWC, convolution weights KRSC, linear [out, in].
// Stateless layers (relu, max_pool2d, global_avg_pool) are plain functions in engine/ops.h.
// Accessors such as weight() return handles to the registered tensors themselves: in-place
// changes through them (copy_, fill_) change the layer.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "engine/module.h"
#include "engine/ops.h"

namespace engine::nn {

// A module with one tensor in and one out, so that it can be chained in a Sequential.
class Layer : public Module {
 public:
  virtual Tensor forward(const Tensor& x) = 0;
  Tensor operator()(const Tensor& x) { return forward(x); }
};

// Layers applied in order; child i is registered as "i" (PyTorch's nn.Sequential keys, e.g.
// "downsample.0.weight").
class Sequential : public Layer {
 public:
  template <typename L>
  std::shared_ptr<L> push_back(std::shared_ptr<L> layer) {
    register_module(std::to_string(layers_.size()), layer);
    layers_.push_back(layer);
    return layer;
  }
  Tensor forward(const Tensor& x) override;
  size_t size() const { return layers_.size(); }
  Layer& operator[](size_t i) const;

 private:
  std::vector<std::shared_ptr<Layer>> layers_;
};

// x [N, H, W, in] -> [N, P, Q, out]. Parameters: weight [out, k, k, in], bias [out] (absent
// when built without). Init as torch.nn.Conv2d: kaiming-uniform with a = sqrt(5), which is
// U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = in k k, for the weight and the bias.
class Conv2d : public Layer {
 public:
  Conv2d(int64_t in_channels, int64_t out_channels, int kernel_size, int stride = 1, int padding = 0,
         bool bias = true, uint64_t seed = 0, DType dtype = DType::F32);
  Tensor forward(const Tensor& x) override;
  Tensor weight() const { return weight_; }
  Tensor bias() const { return bias_; }  // undefined without bias
  int stride() const { return stride_; }
  int padding() const { return padding_; }

 private:
  Tensor weight_, bias_;
  int stride_, padding_;
};

// Over the channel (last) dimension of [N, H, W, C] or [N, C]. Parameters weight = 1,
// bias = 0; buffers running_mean = 0, running_var = 1 and num_batches_tracked (one element,
// counting training forwards). Training: batch statistics, running statistics updated with
// `momentum`; eval: running statistics.
class BatchNorm2d : public Layer {
 public:
  explicit BatchNorm2d(int64_t num_features, double eps = 1e-5, double momentum = 0.1,
                       DType dtype = DType::F32);
  Tensor forward(const Tensor& x) override;
  Tensor weight() const { return weight_; }
  Tensor bias() const { return bias_; }
  Tensor running_mean() const { return running_mean_; }
  Tensor running_var() const { return running_var_; }
  Tensor num_batches_tracked() const { return num_batches_tracked_; }
  double eps() const { return eps_; }
  double momentum() const { return momentum_; }

 private:
  Tensor weight_, bias_, running_mean_, running_var_, num_batches_tracked_;
  double eps_, momentum_;
};

// x [N, in] -> [N, out]. Parameters weight [out, in], bias [out]; init as torch.nn.Linear
// (U(-1/sqrt(in), 1/sqrt(in)) for both).
class Linear : public Layer {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias = true, uint64_t seed = 0,
         DType dtype = DType::F32);
  Tensor forward(const Tensor& x) override;
  Tensor weight() const { return weight_; }
  Tensor bias() const { return bias_; }

 private:
  Tensor weight_, bias_;
};

// Bayesian linear layer (weights and bias), as the reference's bayesian-torch
// LinearReparameterization: parameters mu_weight, rho_weight [out, in], mu_bias, rho_bias
// [out]; sigma = softplus(rho). Init mu ~ N(0, 0.1^2), rho ~ N(-3, 0.1^2); prior N(0, prior_sigma^2).
class BayesLinear : public Module {
 public:
  BayesLinear(int64_t in_features, int64_t out_features, double prior_sigma = 1.0, uint64_t seed = 0,
              DType dtype = DType::F32);
  // One weight and bias sample drawn from the Philox stream `key` (in training and in
  // evaluation alike: Monte Carlo prediction samples in eval mode).
  Tensor forward(const Tensor& x, PhiloxKey key) const;
  // The mean weights only (the posterior mean prediction, deterministic).
  Tensor forward_mean(const Tensor& x) const;
  // Closed-form KL(q || prior) summed over weights and biases, shape [1].
  Tensor kl() const;
  Tensor mu_weight() const { return mu_weight_; }
  Tensor rho_weight() const { return rho_weight_; }
  Tensor mu_bias() const { return mu_bias_; }
  Tensor rho_bias() const { return rho_bias_; }
  double prior_sigma() const { return prior_sigma_; }

 private:
  Tensor mu_weight_, rho_weight_, mu_bias_, rho_bias_;
  double prior_sigma_;
};

}  // namespace engine::nn
