// A per-layer summary of a detector at a given input size: output shape, parameters and
// multiply-accumulates of every convolution, linear layer and the head, as `trainer
// --summary` prints it. FLOPs are counted as 2 per multiply-accumulate (convolutions and
// linear layers only; batch-norm, relu, pooling and attention elementwise work are not
// counted, as is usual when quoting ResNet50 at 4.1 GMACs for 224x224).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "models/resnet.h"

namespace models {

struct LayerSummary {
  std::string name;     // torchvision-style path, e.g. "layer1.0.conv2"
  std::string kind;     // "conv 3x3/2", "linear", "bayes_linear", "batch_norm", ...
  engine::Shape output; // per image: [H, W, C] or [features]
  int64_t parameters = 0;
  int64_t macs = 0;     // per image
};

struct ModelSummary {
  std::vector<LayerSummary> layers;
  int64_t parameters = 0;  // all parameters of the model
  int64_t macs = 0;        // per image
  std::string to_string() const;  // a printable table with totals
};

ModelSummary summarize(const Detector& model, int64_t height, int64_t width);

}  // namespace models
