// Prediction with a trained detector on image files, behind `predict` (apps/predict.cpp only
// parses the command line). Per image: P(AI-generated), the class (models/metrics.h's
// predicted_class: P(AI) >= 0.5 -> "ai", else "real"), for the Bayesian heads the Monte Carlo
// uncertainty of models/metrics.h's mc_uncertainty, and for resnet50_attn_bnn optionally a PNG
// of the spatial attention map over the image.
//
// Deterministic: images go through data::eval_transform (resize to image_size x image_size,
// no flip); the Bayesian head draws the same `mc_samples` weight samples for every image and
// batch (prediction_noise_key), so an image's scores depend on the seed alone, not on the batch
// size, the worker count or the other images.
//
// Files that cannot be decoded (missing, unreadable, corrupt, not an image) are reported on
// stderr as they are met and listed in the output as error rows; they are not fatal.
// Tests: build/tests/test_predict
#pragma once
#include <cstdint>
#include <iosfwd>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "engine/ops.h"

namespace models {

struct PredictOptions {
  std::vector<std::string> inputs;  // image files and folders (data/file_list.h)
  // The detector: a trainer checkpoint, whose metadata names the model ("model") and the
  // run's configuration ("config", JSON, with image_size); or a plain weights file with
  // `model`. With a checkpoint, `model`, when given, must agree with the metadata.
  std::string checkpoint, weights, model;
  int image_size = 0;  // 0: the checkpoint's config image_size if present, else 224
  int batch_size = 32;
  int workers = 2;      // decoding threads
  int threads = 0;      // CPU threads for the math (0: every core)
  int mc_samples = 50;  // Bayesian heads; the linear head is deterministic (one sample)
  uint64_t seed = 0;
  std::string device = "cpu";  // cpu | cuda
  // resnet50_attn_bnn only: one PNG per scored image, "<file stem>_attention.png" (then
  // "_attention_2.png", ... for a stem met again, in sorted order): the image at the model's
  // input size, half-blended with the attention map upsampled bilinearly to that size and
  // coloured by the jet colour map on a fixed 0..1 scale (dark blue 0, green 0.5, dark red 1).
  std::string attention_dir;
  std::string format = "csv";  // csv | json
  std::string output;          // file; empty: stdout
};

struct McStats {  // over the head samples, in nats (models/metrics.h, McUncertainty)
  double predictive_entropy = 0, expected_entropy = 0, mutual_information = 0, std_p_ai = 0;
};

struct ImagePrediction {
  std::string path;
  std::string error;  // why the image could not be scored; empty when it was
  double p_ai = 0;    // P(AI-generated): the mean over head samples
  std::optional<McStats> uncertainty;  // Bayesian heads
  std::string attention_png;           // the overlay written, with attention_dir
  bool scored() const { return error.empty(); }
};

struct PredictionRun {
  std::string model;   // variant name
  std::string source;  // the checkpoint or weights file
  int image_size = 0;
  int mc_samples = 1;  // head samples per image: 1 for the linear head
  uint64_t seed = 0;
  bool bayesian = false;
  bool attention = false;  // overlays were written
  std::vector<ImagePrediction> images;  // the input files in sorted order, errors included
  size_t scored() const;
};

// The image size a checkpoint's model was trained at: "image_size" in its metadata's
// "config" JSON; 224 when the metadata has no config or the config no image_size. Throws
// engine::Error naming `path` when the config is not JSON or the size is not an integer >= 32.
int trained_image_size(const std::map<std::string, std::string>& metadata, const std::string& path);

// The Philox stream of the Bayesian head's samples: sample s is drawn at offset s.
engine::PhiloxKey prediction_noise_key(uint64_t seed);

// Loads the detector and scores every input file. Throws engine::Error for usage and model
// errors (bad option values, no inputs, a missing or mismatched checkpoint, --attention-dir
// with a model that has no attention).
PredictionRun predict_files(const PredictOptions& options);

// CSV: '#' comment lines stating the model, the classes and the decision rule, then the header
// path,p_ai,class[,predictive_entropy,expected_entropy,mutual_information,std_p_ai][,attention],error
// (uncertainty columns for the Bayesian heads, attention with attention_dir) and one row per
// image; an error row has only path and error. Fields are quoted as RFC 4180 requires.
// pandas reads it with read_csv(path, comment="#").
void write_csv(const PredictionRun& run, std::ostream& out);
// {"model", "source", "image_size", "mc_samples", "seed", "classes": {"0": "real", "1": "ai"},
//  "decision", "scored", "errors", "images": [{"path", "p_ai", "class", [uncertainty fields],
//  ["attention"]} or {"path", "error"}]}, keys in this order.
nlohmann::ordered_json prediction_json(const PredictionRun& run);

// predict_files, then the output in options.format to options.output (or stdout). Returns the
// exit status: 0 when at least one image was scored, 2 when none could be. Usage and model
// errors throw engine::Error (exit status 1 in the app).
int run_prediction(const PredictOptions& options);

}  // namespace models
