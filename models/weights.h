// Model weights in safetensors files (format: weights/FORMAT.md). On disk every tensor has
// torchvision's layout and name: 4-D convolution weights are OIHW, and are converted to and
// from the engine's KRSC layout here, so a torchvision checkpoint converted with
// weights/convert_torchvision.py, a timm or Hugging Face resnet50 safetensors file with the
// same keys, and the engine's own saved weights all load the same way.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "engine/module.h"

namespace models {

enum class WeightsScope {
  All,       // every parameter and buffer of the model must be in the file
  Backbone,  // the classifier head (fc.*) and attention (attention.*) are left as initialised:
             // starting from ImageNet weights, whose 1000-class head does not fit
};

struct WeightsReport {
  size_t loaded = 0;                  // tensors copied into the model
  std::vector<std::string> skipped;   // model tensors left as they were (Backbone scope)
  std::vector<std::string> ignored;   // file tensors not used (head tensors, Backbone scope)
};

// Loads `path` into `model`, checking everything before changing anything: keys the model
// needs but the file lacks, keys in the file the model does not have, and shape mismatches
// are all reported in one engine::Error naming the keys (and, when most keys are absent,
// saying that the file is not a checkpoint of this architecture).
// File tensors whose names start with one of `ignore_prefixes` are not model tensors (the
// optimiser state in a checkpoint) and are passed over.
WeightsReport load_weights(engine::Module& model, const std::string& path,
                           WeightsScope scope = WeightsScope::All,
                           const std::vector<std::string>& ignore_prefixes = {});

// Writes every parameter and buffer of `model` (atomically) in the same layout, followed by
// `extra` tensors (4-D ones converted to OIHW likewise).
void save_weights(const engine::Module& model, const std::string& path,
                  const std::map<std::string, std::string>& metadata = {},
                  const std::vector<std::pair<std::string, engine::Tensor>>& extra = {});

// Layout conversion of a 4-D convolution weight: OIHW [K, C, R, S] <-> KRSC [K, R, S, C].
engine::Tensor oihw_to_krsc(const engine::Tensor& w);
engine::Tensor krsc_to_oihw(const engine::Tensor& w);

// True for the tensors of the classifier head and of the attention branch.
bool is_head_key(const std::string& name);

}  // namespace models
