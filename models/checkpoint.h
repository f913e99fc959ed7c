// Training checkpoints: one safetensors file (weights/FORMAT.md) holding the model's
// parameters and buffers under their torchvision names (so a checkpoint is also a weights
// file: load_weights and PyTorch can read it), the optimiser's buffers under "optimizer.",
// and in the metadata the epoch, the global step, the data loader's position, the
// optimiser's scalars and the run's configuration. Together with the seed, that is the
// whole state of a run: the Bayesian noise and the augmentations are functions of
// (seed, step) and (seed, epoch, sample), so a resumed run ends with the same weights as an
// uninterrupted one. Written atomically: a crash never leaves a broken checkpoint.
#pragma once
#include <cstdint>
#include <map>
#include <nlohmann/json_fwd.hpp>
#include <string>

#include "data/loader.h"
#include "engine/optim.h"
#include "models/resnet.h"

namespace models {

// Checkpoint tensors under this prefix are the optimiser's state, not the model's.
constexpr const char* kCheckpointOptimizerPrefix = "optimizer.";

struct TrainingProgress {
  int64_t epoch = 0;              // the epoch in progress (or about to start)
  int64_t step = 0;               // training steps taken so far, over all epochs (skipped ones too)
  int64_t skipped_steps = 0;      // of those, steps dropped for non-finite values (optional key)
  data::LoaderPosition position;  // where the loader continues
  std::string config;             // the run's configuration (JSON), for the record
};

void save_checkpoint(const std::string& path, const Detector& model, const engine::Optimizer& optimizer,
                     const TrainingProgress& progress);

// A JSON document held in a metadata string ("optimizer_scalars", "config"): nlohmann's
// parse, but nesting deeper than 16 levels throws engine::Error naming `where` before the
// parser builds it (a 100 MiB header could otherwise make it build 100M nested arrays).
// Malformed JSON throws nlohmann::json::parse_error as usual.
nlohmann::json parse_metadata_json(const std::string& text, const std::string& where);

// What a checkpoint's metadata holds, parsed and checked (no tensor is read).
struct CheckpointMetadata {
  std::string model;  // the variant name, as written
  TrainingProgress progress;
  std::map<std::string, double> optimizer_scalars;
};
// Errors name `path` and the metadata key at fault.
CheckpointMetadata parse_checkpoint_metadata(const std::map<std::string, std::string>& metadata,
                                             const std::string& path);

// Loads into `model` and `optimizer` (built with the same configuration) and returns the
// progress. Errors name the file and what does not fit (another model, a damaged file); after
// an error the model and the optimiser are as they were.
TrainingProgress load_checkpoint(const std::string& path, Detector& model, engine::Optimizer& optimizer);

}  // namespace models
