// The three detectors of AI-generated images, on a ResNet50 v1.5 backbone built exactly as
// torchvision builds it (stride on the 3x3 convolution of each bottleneck; 1x1 convolution +
// batch-norm downsample), with torchvision's parameter and buffer names:
//   resnet50           linear head 2048 -> 2                        (fc.weight, fc.bias)
//   resnet50_bnn       Bayesian linear head 2048 -> 2               (fc.mu_weight, fc.rho_weight, ...)
//   resnet50_attn_bnn  spatial attention after layer4 (channel mean and max, 7x7 conv 2 -> 1
//                      with bias, sigmoid, gate), then the Bayesian head (attention.conv.*)
// Images are NHWC [N, H, W, 3], normalised; any size from 32x32 up.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/nn.h"

namespace models {

using engine::Tensor;

enum class Variant { ResNet50, ResNet50Bnn, ResNet50AttnBnn };

Variant variant_from_name(const std::string& name);  // throws, listing the valid names
const char* variant_name(Variant v);
bool is_bayesian(Variant v);
const std::vector<std::string>& variant_names();

struct DetectorOptions {
  int64_t num_classes = 2;
  double prior_sigma = 1.0;  // Bayesian prior N(0, prior_sigma^2)
  uint64_t seed = 0;         // initialisation (each layer draws from its own Philox stream)
  engine::DType dtype = engine::DType::F32;
};

class Bottleneck : public engine::nn::Layer {
 public:
  // in -> width (1x1) -> width (3x3, stride) -> 4 width (1x1); downsample when the shape changes.
  Bottleneck(int64_t in_channels, int64_t width, int stride, uint64_t seed, engine::DType dtype);
  Tensor forward(const Tensor& x) override;

  std::shared_ptr<engine::nn::Conv2d> conv1, conv2, conv3;
  std::shared_ptr<engine::nn::BatchNorm2d> bn1, bn2, bn3;
  std::shared_ptr<engine::nn::Sequential> downsample;  // null when the identity fits
};

// Spatial attention (REFERENCE.md): channel mean and max -> 7x7 conv 2 -> 1 (with bias) ->
// sigmoid -> multiply the features. No channel gate, no batch-norm.
class SpatialAttention : public engine::nn::Layer {
 public:
  SpatialAttention(uint64_t seed, engine::DType dtype);
  Tensor attention_map(const Tensor& x);  // [N, H, W, 1], in (0, 1)
  Tensor forward(const Tensor& x) override;

  std::shared_ptr<engine::nn::Conv2d> conv;
};

class Detector : public engine::Module {
 public:
  Detector(Variant variant, const DetectorOptions& options = {});

  Variant variant() const { return variant_; }
  bool bayesian() const { return is_bayesian(variant_); }
  const DetectorOptions& options() const { return options_; }

  // Backbone (and attention), global average pooled: [N, 2048].
  Tensor features(const Tensor& images);
  // Logits [N, classes] from pooled features. A Bayesian head draws one weight sample from
  // the Philox stream `key`; the linear head ignores it.
  Tensor head(const Tensor& features, engine::PhiloxKey key);
  // The Bayesian head at its posterior mean (mu only); the linear head as usual.
  Tensor head_mean(const Tensor& features);
  Tensor forward(const Tensor& images, engine::PhiloxKey key) { return head(features(images), key); }
  // Monte Carlo prediction (no gradients): softmax probabilities [samples, N, classes] on the
  // CPU from ONE backbone pass and `samples` draws of the Bayesian head (draw s uses stream
  // offset key.offset + s). The linear head is deterministic: it gives [1, N, classes].
  Tensor predict_samples(const Tensor& images, int samples, engine::PhiloxKey key);
  // KL(q || prior) of the Bayesian head, shape [1]; throws for the linear head.
  Tensor kl() const;
  // The attention map after layer4 ([N, h, w, 1]); only for resnet50_attn_bnn.
  Tensor attention_map(const Tensor& images);

  // Children, by torchvision's names.
  std::shared_ptr<engine::nn::Conv2d> conv1;
  std::shared_ptr<engine::nn::BatchNorm2d> bn1;
  std::vector<std::shared_ptr<engine::nn::Sequential>> layers;  // layer1..layer4
  std::shared_ptr<SpatialAttention> attention;                  // attention variant only
  std::shared_ptr<engine::nn::Linear> fc;                       // resnet50 only
  std::shared_ptr<engine::nn::BayesLinear> bayes_fc;            // Bayesian variants ("fc")

 private:
  Tensor backbone(const Tensor& images);  // up to layer4: [N, h, w, 2048]
  Variant variant_;
  DetectorOptions options_;
};

std::shared_ptr<Detector> make_detector(const std::string& name, const DetectorOptions& options = {});

}  // namespace models
