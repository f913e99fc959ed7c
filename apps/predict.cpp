// predict: scores images with a trained detector of AI-generated images.
//
//   predict --checkpoint runs/quickstart/checkpoint.safetensors photos/ extra.jpg
//   predict --weights model.safetensors --model resnet50_bnn --format json -o scores.json photos/
//   predict --checkpoint run/checkpoint.safetensors --attention-dir maps/ photos/   # resnet50_attn_bnn
//
// Folders are searched recursively for .jpg .jpeg .png .bmp; all files are scored in sorted
// order. Per image: P(ai), the class (ai when P(ai) >= 0.5, else real) and, for the Bayesian
// heads, the Monte Carlo uncertainty over --mc-samples head samples. Output columns and JSON
// fields: models/predict.h. Files that cannot be decoded are reported on stderr and listed as
// error rows. Exit status: 0 when at least one image was scored, 2 when none could be, 1 on
// usage or model errors.
#include <CLI/CLI.hpp>

#include <cstdio>

#include "models/predict.h"

int main(int argc, char** argv) {
  models::PredictOptions o;
  CLI::App app{"Score images with a trained detector of AI-generated images: P(ai), class, uncertainty."};
  app.add_option("inputs", o.inputs, "image files and folders (searched recursively for .jpg .jpeg .png .bmp)")
      ->required();
  app.add_option("--checkpoint", o.checkpoint, "trainer checkpoint (run/checkpoint.safetensors); its metadata "
                 "names the model and the training image size");
  app.add_option("--weights", o.weights, "plain weights file (safetensors, torchvision names), with --model");
  app.add_option("--model", o.model, "resnet50 | resnet50_bnn | resnet50_attn_bnn; needed with --weights, "
                 "checked against the checkpoint otherwise");
  app.add_option("--mc-samples", o.mc_samples, "samples of the Bayesian head per image (the linear head of "
                 "resnet50 is deterministic)")->capture_default_str();
  app.add_option("--format", o.format, "csv (with '#' comment lines; pandas: read_csv(f, comment='#')) | json")
      ->capture_default_str();
  app.add_option("-o,--output", o.output, "output file (default: stdout)");
  app.add_option("--image-size", o.image_size, "images are resized to this square size (default: the size in "
                 "the checkpoint's training configuration, else 224)");
  app.add_option("--batch-size", o.batch_size, "images per forward pass")->capture_default_str();
  app.add_option("--threads", o.threads, "CPU threads for the math (0: every core)")->capture_default_str();
  app.add_option("--workers", o.workers, "image decoding threads")->capture_default_str();
  app.add_option("--seed", o.seed, "seed of the Bayesian head's samples: the same seed gives the same "
                 "scores")->capture_default_str();
  app.add_option("--device", o.device, "cpu | cuda")->capture_default_str();
  app.add_option("--attention-dir", o.attention_dir, "resnet50_attn_bnn only: write <image stem>_attention.png "
                 "per image: the input image at the model's size, half-blended with the attention map "
                 "(bilinearly upsampled) in the jet colour map on a fixed 0..1 scale (dark blue 0, green 0.5, "
                 "dark red 1)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 1;  // --help is 0; every usage error is 1
  }

  try {
    return models::run_prediction(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
