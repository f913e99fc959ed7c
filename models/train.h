// The training run behind `trainer`: data, model, optimiser, the loop with progress and
// checkpoints, and the final evaluation. apps/trainer.cpp only parses the command line.
#pragma once
#include <cstdint>
#include <string>

namespace models {

struct TrainOptions {
  std::string model = "resnet50";
  std::string data;     // image folder; empty: the built-in synthetic dataset
  std::string weights;  // ImageNet safetensors for the backbone; empty: random initialisation
  int epochs = 10;
  int batch_size = 32;
  double lr = 1e-3;
  std::string optimizer = "adam";  // adam, adamw, sgd
  double weight_decay = 0;
  int image_size = 224;
  std::string device = "cpu";
  int threads = 0;  // 0: every core
  int workers = 2;  // decoding threads
  uint64_t seed = 0;
  int mc_samples = 50;
  double kl_weight = -1;  // < 0: 1 / number of training images
  double prior_sigma = 1.0;
  std::string out = "runs/latest";
  bool resume = false;
  bool strict = false;          // a bad image file stops the run
  int64_t checkpoint_every = 0;  // steps between checkpoints (0: at the end of each epoch)
  int64_t max_steps = 0;         // stop after this many optimiser steps (0: no limit); for tests
  bool eval_each_epoch = true;
  // The built-in dataset: image count (train; val is a quarter) and rendered size.
  int synthetic_train = 1024;
  int synthetic_size = 64;
};

// Runs the whole job. Returns the process exit code: 0 done, 130 interrupted (checkpoint
// written), 3 stopped on a non-finite loss (the last good checkpoint kept). Configuration and
// data errors throw engine::Error before training starts.
int run_training(const TrainOptions& options);

}  // namespace models
