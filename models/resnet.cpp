#include "models/resnet.h"

#include <cstring>

#include "engine/autograd.h"
#include "engine/error.h"
#include "engine/ops.h"

namespace models {

using engine::nn::BatchNorm2d;
using engine::nn::Conv2d;
using engine::nn::Sequential;

namespace {
struct VariantName {
  Variant variant;
  const char* name;
};
constexpr VariantName kVariants[] = {{Variant::ResNet50, "resnet50"},
                                     {Variant::ResNet50Bnn, "resnet50_bnn"},
                                     {Variant::ResNet50AttnBnn, "resnet50_attn_bnn"}};

// Seeds of the layers' Philox streams: one per layer, from the model seed and a layer counter.
struct SeedSequence {
  uint64_t base;
  uint64_t next = 0;
  uint64_t operator()() { return base * 1000003u + (++next); }
};
}  // namespace

const std::vector<std::string>& variant_names() {
  static const std::vector<std::string> names = {"resnet50", "resnet50_bnn", "resnet50_attn_bnn"};
  return names;
}

Variant variant_from_name(const std::string& name) {
  for (const auto& v : kVariants)
    if (name == v.name) return v.variant;
  engine::detail::fail("unknown model '", name, "': choose resnet50, resnet50_bnn or resnet50_attn_bnn");
}

const char* variant_name(Variant v) {
  for (const auto& entry : kVariants)
    if (entry.variant == v) return entry.name;
  return "?";
}

bool is_bayesian(Variant v) { return v != Variant::ResNet50; }

Bottleneck::Bottleneck(int64_t in_channels, int64_t width, int stride, uint64_t seed, engine::DType dtype) {
  SeedSequence seeds{seed};
  const int64_t out_channels = width * 4;
  conv1 = register_module("conv1", std::make_shared<Conv2d>(in_channels, width, 1, 1, 0, false, seeds(), dtype));
  bn1 = register_module("bn1", std::make_shared<BatchNorm2d>(width, 1e-5, 0.1, dtype));
  conv2 = register_module("conv2", std::make_shared<Conv2d>(width, width, 3, stride, 1, false, seeds(), dtype));
  bn2 = register_module("bn2", std::make_shared<BatchNorm2d>(width, 1e-5, 0.1, dtype));
  conv3 = register_module("conv3", std::make_shared<Conv2d>(width, out_channels, 1, 1, 0, false, seeds(), dtype));
  bn3 = register_module("bn3", std::make_shared<BatchNorm2d>(out_channels, 1e-5, 0.1, dtype));
  if (stride != 1 || in_channels != out_channels) {
    downsample = register_module("downsample", std::make_shared<Sequential>());
    downsample->push_back(std::make_shared<Conv2d>(in_channels, out_channels, 1, stride, 0, false, seeds(), dtype));
    downsample->push_back(std::make_shared<BatchNorm2d>(out_channels, 1e-5, 0.1, dtype));
  }
}

namespace {

// Evaluation without gradients (predict, validation): each convolution runs fused with its
// batch normalisation, the residual join and ReLU (engine::conv2d_bn_inference), saving the
// separate passes over the activations. Training, or evaluation with gradients enabled (e.g.
// gradients with respect to the image), takes the ops one by one.
bool fuse_for_inference(const engine::Module& m) { return !m.is_training() && !engine::grad_enabled(); }

Tensor conv_bn(const Conv2d& conv, const BatchNorm2d& bn, const Tensor& x, const Tensor& residual, bool relu) {
  return engine::conv2d_bn_inference(x, conv.weight(), conv.stride(), conv.padding(), bn.weight(), bn.bias(),
                                     bn.running_mean(), bn.running_var(), bn.eps(), residual, relu);
}

}  // namespace

Tensor Bottleneck::forward(const Tensor& x) {
  using engine::relu;
  if (fuse_for_inference(*this)) {
    Tensor identity = x;
    if (downsample)
      identity = conv_bn(static_cast<const Conv2d&>((*downsample)[0]),
                         static_cast<const BatchNorm2d&>((*downsample)[1]), x, Tensor(), false);
    Tensor out = conv_bn(*conv1, *bn1, x, Tensor(), true);
    out = conv_bn(*conv2, *bn2, out, Tensor(), true);
    return conv_bn(*conv3, *bn3, out, identity, true);
  }
  Tensor out = relu(bn1->forward(conv1->forward(x)));
  out = relu(bn2->forward(conv2->forward(out)));
  out = bn3->forward(conv3->forward(out));
  return engine::add_relu(out, downsample ? downsample->forward(x) : x);
}

SpatialAttention::SpatialAttention(uint64_t seed, engine::DType dtype) {
  conv = register_module("conv", std::make_shared<Conv2d>(2, 1, 7, 1, 3, true, seed, dtype));
}

Tensor SpatialAttention::attention_map(const Tensor& x) {
  return engine::sigmoid(conv->forward(engine::channel_mean_max(x)));
}

Tensor SpatialAttention::forward(const Tensor& x) { return engine::gate_mul(x, attention_map(x)); }

Detector::Detector(Variant variant, const DetectorOptions& options) : variant_(variant), options_(options) {
  ENGINE_CHECK(options.num_classes >= 2, "Detector: num_classes must be at least 2, got ", options.num_classes);
  SeedSequence seeds{options.seed};
  const auto dtype = options.dtype;
  conv1 = register_module("conv1", std::make_shared<Conv2d>(3, 64, 7, 2, 3, false, seeds(), dtype));
  bn1 = register_module("bn1", std::make_shared<BatchNorm2d>(64, 1e-5, 0.1, dtype));
  const int64_t widths[4] = {64, 128, 256, 512}, blocks[4] = {3, 4, 6, 3};
  int64_t in_channels = 64;
  for (int l = 0; l < 4; ++l) {
    auto layer = register_module("layer" + std::to_string(l + 1), std::make_shared<Sequential>());
    for (int64_t b = 0; b < blocks[l]; ++b) {
      int stride = (b == 0 && l > 0) ? 2 : 1;
      layer->push_back(std::make_shared<Bottleneck>(in_channels, widths[l], stride, seeds(), dtype));
      in_channels = widths[l] * 4;
    }
    layers.push_back(layer);
  }
  if (variant == Variant::ResNet50AttnBnn)
    attention = register_module("attention", std::make_shared<SpatialAttention>(seeds(), dtype));
  if (variant == Variant::ResNet50)
    fc = register_module("fc", std::make_shared<engine::nn::Linear>(2048, options.num_classes, true, seeds(), dtype));
  else
    bayes_fc = register_module("fc", std::make_shared<engine::nn::BayesLinear>(
                                         2048, options.num_classes, options.prior_sigma, seeds(), dtype));
}

Tensor Detector::backbone(const Tensor& images) {
  ENGINE_CHECK(images.defined() && images.ndim() == 4 && images.dim(3) == 3, variant_name(variant_),
               ": images must be NHWC [N, H, W, 3], got ", images.desc());
  ENGINE_CHECK(images.dim(1) >= 32 && images.dim(2) >= 32, variant_name(variant_),
               ": images must be at least 32x32, got ", images.desc());
  Tensor x = fuse_for_inference(*this) ? conv_bn(*conv1, *bn1, images, Tensor(), true)
                                       : engine::relu(bn1->forward(conv1->forward(images)));
  x = engine::max_pool2d(x, 3, 2, 1);
  for (auto& layer : layers) x = layer->forward(x);
  return x;
}

Tensor Detector::features(const Tensor& images) {
  Tensor x = backbone(images);
  if (attention) x = attention->forward(x);
  return engine::global_avg_pool(x);
}

Tensor Detector::head(const Tensor& features, engine::PhiloxKey key) {
  if (fc) return fc->forward(features);
  return bayes_fc->forward(features, key);
}

Tensor Detector::head_mean(const Tensor& features) {
  if (fc) return fc->forward(features);
  return bayes_fc->forward_mean(features);
}

Tensor Detector::predict_samples(const Tensor& images, int samples, engine::PhiloxKey key) {
  ENGINE_CHECK(samples >= 1, variant_name(variant_), ": predict_samples needs at least one sample, got ", samples);
  engine::NoGradGuard no_grad;
  Tensor f = features(images);
  const int draws = bayesian() ? samples : 1;
  const int64_t n = f.dim(0), classes = options_.num_classes;
  Tensor out = Tensor::empty({draws, n, classes}, f.dtype());
  for (int s = 0; s < draws; ++s) {
    Tensor probs = engine::softmax(head(f, {key.seed, key.offset + static_cast<uint64_t>(s)})).to(engine::Device::CPU);
    std::memcpy(static_cast<char*>(out.raw_data()) + s * probs.nbytes(), probs.raw_data(), probs.nbytes());
  }
  return out;
}

Tensor Detector::kl() const {
  ENGINE_CHECK(bayes_fc != nullptr, variant_name(variant_), " has no Bayesian head, so no KL term");
  return bayes_fc->kl();
}

Tensor Detector::attention_map(const Tensor& images) {
  ENGINE_CHECK(attention != nullptr, variant_name(variant_), " has no spatial attention");
  return attention->attention_map(backbone(images));
}

std::shared_ptr<Detector> make_detector(const std::string& name, const DetectorOptions& options) {
  return std::make_shared<Detector>(variant_from_name(name), options);
}

}  // namespace models
