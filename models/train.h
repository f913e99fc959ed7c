// The training run behind `trainer`: data, model, optimiser, the loop with progress and
// checkpoints, and the final evaluation. apps/trainer.cpp only parses the command line.
#pragma once
#include <cstdint>
#include <functional>
#include <set>
#include <string>

#include "engine/tensor.h"

namespace models {

struct TrainingProgress;  // models/checkpoint.h

// --on-nonfinite skip stops the run when this many steps in a row were skipped.
constexpr int kMaxSkippedStepsInARow = 5;

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
  // Continue the run in `out`. The run's configuration (every option options_json records:
  // model, data, image size, optimiser, seed, ...) comes from its checkpoint; an option named
  // in `given` with another value than the checkpoint's is refused where it would change the
  // result (the model, the data, the recipe, the seed), and taken where it only changes how
  // the run goes on (epochs, device, mc_samples). Options not recorded (threads, workers,
  // checkpoint_every, max_steps, strict, on_nonfinite, check_every_op) come from here.
  bool resume = false;
  // The options set explicitly (on the command line), by their config key ("image_size").
  std::set<std::string> given;
  bool strict = false;          // a bad image file stops the run
  int64_t checkpoint_every = 0;  // steps between checkpoints (0: at the end of each epoch)
  int64_t max_steps = 0;         // stop after this many optimiser steps (0: no limit); for tests
  bool eval_each_epoch = true;
  // A NaN or Inf in the loss, an op's output or a gradient: "stop" (exit code 3, the last good
  // checkpoint kept) or "skip" (the step's update is dropped, its batch-norm statistics put
  // back; kMaxSkippedStepsInARow skipped steps in a row stop the run).
  std::string on_nonfinite = "stop";
  // Check every op's output and gradient at every step (a few percent slower). Without it,
  // the loss and the parameters' gradients are checked, and a step found faulty is replayed
  // with every op checked to name the op.
  bool check_every_op = false;
  // The built-in dataset: image count (train; val is a quarter) and rendered size.
  int synthetic_train = 1024;
  int synthetic_size = 64;

  // For tests (no command-line flags). Steps are numbered from 1.
  struct Hooks {
    // Before the forward pass, with the batch's images: may poison them.
    std::function<void(int64_t step, engine::Tensor& images)> before_forward;
    // Before the backward pass: returns the loss to use (fault injection).
    std::function<engine::Tensor(int64_t step, const engine::Tensor& loss)> before_backward;
    // After each checkpoint is complete (synced and renamed into place).
    std::function<void(const TrainingProgress& state, const std::string& path)> after_checkpoint;
  } hooks;
};

// Runs the whole job. Returns the process exit code: 0 done, 130 interrupted (checkpoint
// written), 3 stopped on non-finite values (the last good checkpoint kept; the message names
// the step and, where found, the op, the phase and the parameters). Configuration and data
// errors throw engine::Error before training starts; so does a run folder that cannot be
// written. A checkpoint that cannot be written later (a full disk) throws, naming the file and
// the cause, with the previous checkpoint intact.
int run_training(const TrainOptions& options);

}  // namespace models
