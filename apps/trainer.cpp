// trainer: trains and evaluates a detector of AI-generated images.
//
//   trainer                                   # built-in synthetic data, reference recipe
//   trainer --data DIR --model resnet50_attn_bnn --weights resnet50_imagenet.safetensors
//   trainer --model resnet50 --summary --image-size 224
//
// DIR holds DIR/{train,val}/{nature,ai} or DIR/<subset>/{train,val}/{nature,ai}; real
// images (nature/ or real/) are class 0, AI-generated ones (ai/ or fake/) class 1. The run
// folder (--out) receives checkpoint.safetensors, metrics.jsonl (one line per epoch) and
// results.json (per-subset evaluation; schema in models/evaluate.h).
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>

#include "engine/error.h"
#include "models/resnet.h"
#include "models/summary.h"
#include "models/train.h"

int main(int argc, char** argv) {
  models::TrainOptions o;
  bool summary = false;
  CLI::App app{"Train and evaluate a detector of AI-generated images (ResNet50 variants)."};
  app.add_option("--model", o.model, "resnet50 | resnet50_bnn (Bayesian head) | resnet50_attn_bnn "
                 "(spatial attention + Bayesian head)")->capture_default_str();
  app.add_option("--data", o.data, "image folder: DIR/{train,val}/{nature,ai} or DIR/<subset>/{train,val}/"
                 "{nature,ai}; without it, a built-in synthetic set (no download)");
  app.add_option("--weights", o.weights, "ImageNet weights (safetensors, torchvision names; see weights/README.md) "
                 "for the backbone; the head starts fresh");
  app.add_option("--epochs", o.epochs, "training epochs")->capture_default_str();
  app.add_option("--batch-size", o.batch_size, "images per step")->capture_default_str();
  app.add_option("--lr", o.lr, "learning rate")->capture_default_str();
  app.add_option("--optimizer", o.optimizer, "adam | adamw | sgd (momentum 0.9)")->capture_default_str();
  app.add_option("--weight-decay", o.weight_decay, "L2 (adam, sgd) or decoupled (adamw; 0 means 0.01)")
      ->capture_default_str();
  app.add_option("--image-size", o.image_size, "images are resized to this square size")->capture_default_str();
  app.add_option("--device", o.device, "cpu | cuda")->capture_default_str();
  app.add_option("--threads", o.threads, "CPU threads for the math (0: every core)")->capture_default_str();
  app.add_option("--workers", o.workers, "image decoding threads")->capture_default_str();
  app.add_option("--seed", o.seed, "seed of every random choice (initialisation, shuffling, augmentation, "
                 "Bayesian noise)")->capture_default_str();
  app.add_option("--mc-samples", o.mc_samples, "evaluation samples of the Bayesian head")->capture_default_str();
  app.add_option("--kl-weight", o.kl_weight, "weight of the KL term (default: 1 / number of training images)");
  app.add_option("--prior-sigma", o.prior_sigma, "std of the Bayesian head's N(0, s^2) prior")->capture_default_str();
  app.add_option("--out", o.out, "run folder: checkpoint, metrics.jsonl, results.json")->capture_default_str();
  app.add_flag("--resume", o.resume, "continue the run in --out from its checkpoint, with the run's configuration "
               "(model, data, recipe, seed...) read from it; --epochs, --device and --mc-samples may change");
  app.add_flag("--strict", o.strict, "stop at the first unreadable image instead of skipping it");
  app.add_option("--checkpoint-every", o.checkpoint_every, "also write a checkpoint every N steps (0: each epoch)")
      ->capture_default_str();
  app.add_option("--max-steps", o.max_steps, "stop (with a checkpoint) after N optimiser steps in all")
      ->capture_default_str();
  app.add_option("--on-nonfinite", o.on_nonfinite, "a NaN/Inf in the loss, an op's output or a gradient: stop "
                 "(exit code 3, last good checkpoint kept) | skip (drop that step's update; " +
                 std::to_string(models::kMaxSkippedStepsInARow) + " in a row stop the run)")
      ->capture_default_str();
  app.add_flag("--check-every-op", o.check_every_op, "check every op's output and gradient for NaN/Inf at every "
               "step (a few percent slower); without it a faulty step is replayed so checked, to name the op");
  app.add_option("--synthetic-images", o.synthetic_train, "built-in set: training images (val: a quarter)")
      ->capture_default_str();
  app.add_option("--synthetic-size", o.synthetic_size, "built-in set: rendered image size")->capture_default_str();
  app.add_flag("--summary", summary, "print the model's layers, parameters and FLOPs at --image-size, and exit");
  CLI11_PARSE(app, argc, argv);
  for (const CLI::Option* opt : app.get_options()) {  // what --resume must not override
    if (opt->count() == 0 || opt->get_lnames().empty()) continue;
    std::string key = opt->get_lnames().front();
    std::replace(key.begin(), key.end(), '-', '_');
    o.given.insert(key);
  }

  try {
    if (summary) {
      models::DetectorOptions mo;
      mo.prior_sigma = o.prior_sigma;
      auto model = models::make_detector(o.model, mo);
      std::printf("%s at %dx%d\n%s", o.model.c_str(), o.image_size, o.image_size,
                  models::summarize(*model, o.image_size, o.image_size).to_string().c_str());
      return 0;
    }
    return models::run_training(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "\nerror: %s\n", e.what());
    return 1;
  }
}
