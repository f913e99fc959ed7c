// Evaluation of a detector on a dataset: deterministic predictions (no augmentation), the
// backbone run once per batch and the Bayesian head sampled `mc_samples` times, then the
// metrics of models/metrics.h for each subset (generator) and averaged over subsets.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/dataset.h"
#include "models/resnet.h"

namespace models {

struct EvalOptions {
  int batch_size = 32;
  int workers = 2;
  int image_size = 224;
  int mc_samples = 50;  // Bayesian heads; the linear head is deterministic
  uint64_t seed = 0;
  bool strict = false;  // a bad image file is an error instead of being skipped
};

struct Predictions {
  std::vector<std::string> paths, subsets;
  std::vector<int64_t> labels;
  std::vector<std::vector<double>> p_ai;  // per image: P(AI-generated) of each head sample
  std::vector<std::string> bad_files;     // skipped, "path: reason"
  size_t size() const { return labels.size(); }
};

// The model's P(AI) for every image of `dataset`, in evaluation mode. Throws
// engine::NonFiniteError, naming an image, when an output is NaN or infinite (diverged weights).
Predictions predict(Detector& model, std::shared_ptr<const data::Dataset> dataset, const EvalOptions& options);

// {"classes": {...}, "subsets": {name: metrics}, "average_over_subsets": ..., "pooled": ...}
nlohmann::json evaluation_report(const Predictions& predictions, bool bayesian);

}  // namespace models
