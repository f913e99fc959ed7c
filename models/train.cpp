#include "models/train.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>

#include <nlohmann/json.hpp>

#include "data/loader.h"
#include "data/synthetic.h"
#include "engine/autograd.h"
#include "engine/ops.h"
#include "kernels/cpu/parallel.h"
#include "models/checkpoint.h"
#include "models/evaluate.h"
#include "models/weights.h"
#ifdef ENGINE_WITH_CUDA
#include "kernels/cuda/runtime.h"
#endif

namespace models {

namespace fs = std::filesystem;
using engine::Tensor;
using Clock = std::chrono::steady_clock;

namespace {

std::atomic<bool> g_interrupted{false};
extern "C" void on_interrupt(int) { g_interrupted = true; }

// The Bayesian head's noise for optimiser step `step`: a function of (seed, step) only, so a
// resumed run draws what the uninterrupted run would have.
constexpr uint64_t kHeadNoiseStream = 0x4845414400000000ull;  // "HEAD"
engine::PhiloxKey head_key(uint64_t seed, int64_t step) {
  return {seed ^ kHeadNoiseStream, static_cast<uint64_t>(step)};
}

nlohmann::json options_json(const TrainOptions& o) {
  return {{"model", o.model},         {"data", o.data.empty() ? "built-in synthetic" : o.data},
          {"weights", o.weights},     {"epochs", o.epochs},
          {"batch_size", o.batch_size}, {"lr", o.lr},
          {"optimizer", o.optimizer}, {"weight_decay", o.weight_decay},
          {"image_size", o.image_size}, {"device", o.device},
          {"seed", o.seed},           {"mc_samples", o.mc_samples},
          {"kl_weight", o.kl_weight}, {"prior_sigma", o.prior_sigma}};
}

std::unique_ptr<engine::Optimizer> make_optimizer(const TrainOptions& o, const Detector& model) {
  auto params = model.named_parameters();
  if (o.optimizer == "adam") {
    engine::AdamOptions a;
    a.lr = o.lr;
    a.weight_decay = o.weight_decay;
    return std::make_unique<engine::Adam>(params, a);
  }
  if (o.optimizer == "adamw") {
    engine::AdamWOptions a;
    a.lr = o.lr;
    if (o.weight_decay > 0) a.weight_decay = o.weight_decay;
    return std::make_unique<engine::AdamW>(params, a);
  }
  if (o.optimizer == "sgd") {
    engine::SgdOptions s;
    s.lr = o.lr;
    s.momentum = 0.9;
    s.weight_decay = o.weight_decay;
    return std::make_unique<engine::SGD>(params, s);
  }
  engine::detail::fail("unknown optimizer '", o.optimizer, "': choose adam, adamw or sgd");
}

void check_options(const TrainOptions& o) {
  variant_from_name(o.model);  // throws with the valid names
  ENGINE_CHECK(o.epochs >= 1, "--epochs must be at least 1, got ", o.epochs);
  ENGINE_CHECK(o.batch_size >= 1, "--batch-size must be at least 1, got ", o.batch_size);
  ENGINE_CHECK(o.lr > 0 && std::isfinite(o.lr), "--lr must be positive, got ", o.lr);
  ENGINE_CHECK(o.image_size >= 32, "--image-size must be at least 32, got ", o.image_size);
  ENGINE_CHECK(o.mc_samples >= 1, "--mc-samples must be at least 1, got ", o.mc_samples);
  ENGINE_CHECK(o.device == "cpu" || o.device == "cuda", "--device must be cpu or cuda, got '", o.device, "'");
  ENGINE_CHECK(o.workers >= 0, "--workers must be non-negative, got ", o.workers);
  ENGINE_CHECK(o.synthetic_train >= 8, "--synthetic-images must be at least 8, got ", o.synthetic_train);
}

// A progress line on a terminal (redrawn in place), or a line every 10% of an epoch otherwise.
class Progress {
 public:
  Progress(int64_t total_steps) : total_(total_steps), tty_(isatty(fileno(stderr))) {}
  void update(int epoch, int epochs, int64_t step, double loss, double accuracy, double images_per_s,
              double seconds_left) {
    if (!tty_ && total_ > 0 && step % std::max<int64_t>(1, total_ / 10) != 0 && step != total_) return;
    const int width = 24;
    int filled = total_ > 0 ? static_cast<int>(width * step / total_) : 0;
    std::string bar(filled, '#');
    bar.resize(width, '.');
    std::fprintf(stderr, "%sepoch %d/%d [%s] %lld/%lld loss %.4f acc %.3f %.1f img/s %s left%s",
                 tty_ ? "\r" : "", epoch, epochs, bar.c_str(), static_cast<long long>(step),
                 static_cast<long long>(total_), loss, accuracy, images_per_s, duration(seconds_left).c_str(),
                 tty_ ? "\033[K" : "\n");
    std::fflush(stderr);
  }
  void finish() {
    if (tty_) std::fprintf(stderr, "\n");
  }
  static std::string duration(double seconds) {
    if (!std::isfinite(seconds) || seconds < 0) return "?";
    char buf[32];
    long s = static_cast<long>(seconds);
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
    return buf;
  }

 private:
  int64_t total_;
  bool tty_;
};

void write_text_atomically(const fs::path& path, const std::string& text) {
  fs::path tmp = path;
  tmp += ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
    out.flush();
    ENGINE_CHECK(out.good(), "cannot write ", tmp.string());
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  ENGINE_CHECK(!ec, "cannot move ", tmp.string(), " to ", path.string(), ": ", ec.message());
}

}  // namespace

int run_training(const TrainOptions& options) {
  TrainOptions o = options;
  check_options(o);
  if (o.threads > 0) kernels::cpu::set_num_threads(o.threads);
  if (o.device == "cuda") {
#ifdef ENGINE_WITH_CUDA
    std::string why;
    ENGINE_CHECK(kernels::cuda::available(&why), "--device cuda: no usable GPU (", why, ")");
#else
    engine::detail::fail("--device cuda: this build has no CUDA backend");
#endif
  }
  const engine::Device device = o.device == "cuda" ? engine::Device::CUDA : engine::Device::CPU;

  // ---- data: every folder problem is reported here, before anything is trained ----
  std::shared_ptr<const data::Dataset> train_set, val_set;
  if (o.data.empty()) {
    data::SyntheticConfig sc;
    sc.seed = o.seed;
    sc.size = o.synthetic_size;
    sc.count = static_cast<size_t>(o.synthetic_train);
    train_set = std::make_shared<data::SyntheticDataset>(sc, "train");
    sc.count = std::max<size_t>(8, sc.count / 4);
    val_set = std::make_shared<data::SyntheticDataset>(sc, "val");
    std::fprintf(stderr, "data: built-in synthetic set (a demonstration, not a benchmark): %zu train, %zu val "
                 "images of %dx%d, real scenes vs scenes upsampled by a transposed convolution\n",
                 train_set->size(), val_set->size(), o.synthetic_size, o.synthetic_size);
  } else {
    auto train_folder = std::make_shared<data::FolderDataset>(o.data, "train");
    auto val_folder = std::make_shared<data::FolderDataset>(o.data, "val");
    std::fprintf(stderr, "data: %s\n      %s\n", train_folder->summary().c_str(), val_folder->summary().c_str());
    train_set = train_folder;
    val_set = val_folder;
  }
  if (o.kl_weight < 0) o.kl_weight = 1.0 / static_cast<double>(train_set->size());

  // ---- model and optimiser ----
  DetectorOptions mo;
  mo.seed = o.seed;
  mo.prior_sigma = o.prior_sigma;
  auto model = make_detector(o.model, mo);
  if (!o.weights.empty()) {
    WeightsReport r = load_weights(*model, o.weights, WeightsScope::Backbone);
    std::fprintf(stderr, "weights: %zu backbone tensors from %s; %zu head tensors left initialised\n", r.loaded,
                 o.weights.c_str(), r.skipped.size());
  }
  model->to(device);
  auto optimizer = make_optimizer(o, *model);

  // ---- run folder, resume ----
  const fs::path out(o.out), checkpoint = out / "checkpoint.safetensors";
  std::error_code ec;
  fs::create_directories(out, ec);
  ENGINE_CHECK(!ec, "--out ", out.string(), ": cannot create the run folder: ", ec.message());
  TrainingProgress progress;
  progress.config = options_json(o).dump();
  if (o.resume) {
    ENGINE_CHECK(fs::exists(checkpoint), "--resume: no checkpoint at ", checkpoint.string());
    progress = load_checkpoint(checkpoint.string(), *model, *optimizer);
    std::fprintf(stderr, "resumed from %s: epoch %lld, step %lld\n", checkpoint.string().c_str(),
                 static_cast<long long>(progress.epoch + 1), static_cast<long long>(progress.step));
  } else {
    ENGINE_CHECK(!fs::exists(checkpoint), "--out ", out.string(),
                 " already holds a run (checkpoint.safetensors): pass --resume to continue it, or another --out");
    fs::remove(out / "metrics.jsonl", ec);
  }
  auto save = [&](const TrainingProgress& state) { save_checkpoint(checkpoint.string(), *model, *optimizer, state); };

  data::LoaderConfig lc;
  lc.batch_size = o.batch_size;
  lc.workers = o.workers;
  lc.seed = o.seed;
  lc.strict = o.strict;
  lc.drop_last = true;  // batch-norm statistics need more than one image
  lc.transform = data::reference_train_transform(o.image_size);
  data::Loader loader(train_set, lc);
  const int64_t steps_per_epoch = loader.batches_per_epoch();
  ENGINE_CHECK(steps_per_epoch > 0, "the training set (", train_set->size(), " images) is smaller than one batch of ",
               o.batch_size);

  std::signal(SIGINT, on_interrupt);
  std::signal(SIGTERM, on_interrupt);
  std::fprintf(stderr, "training %s on %s: %d epochs of %lld steps, batch %d, %s lr %g, %dx%d, %d threads\n",
               o.model.c_str(), o.device.c_str(), o.epochs, static_cast<long long>(steps_per_epoch), o.batch_size,
               o.optimizer.c_str(), o.lr, o.image_size, o.image_size, kernels::cpu::num_threads());

  EvalOptions eo;
  eo.batch_size = o.batch_size;
  eo.workers = o.workers;
  eo.image_size = o.image_size;
  eo.mc_samples = o.mc_samples;
  eo.seed = o.seed;
  eo.strict = o.strict;

  for (; progress.epoch < o.epochs; ++progress.epoch) {
    if (progress.position.epoch != progress.epoch) progress.position = {progress.epoch, 0, 0};
    loader.start(progress.position);
    model->train();
    Progress bar(steps_per_epoch);
    double loss_sum = 0;
    int64_t correct = 0, seen = 0, steps_this_epoch = 0;
    auto epoch_start = Clock::now();
    while (auto batch = loader.next()) {
      Tensor images = batch->images.to(device);
      Tensor logits = model->head(model->features(images), head_key(o.seed, progress.step));
      Tensor loss = engine::cross_entropy(logits, batch->labels);
      if (model->bayesian()) loss = engine::add(loss, engine::scale(model->kl(), o.kl_weight));
      double loss_value = loss.item();
      if (!std::isfinite(loss_value)) {
        bar.finish();
        std::fprintf(stderr, "error: the loss became %s at step %lld (epoch %lld, batch %lld); stopping. "
                     "The last good checkpoint is kept: %s\n", std::isnan(loss_value) ? "NaN" : "infinite",
                     static_cast<long long>(progress.step + 1), static_cast<long long>(progress.epoch + 1),
                     static_cast<long long>(batch->position.batch + 1),
                     fs::exists(checkpoint) ? checkpoint.string().c_str() : "(none written yet)");
        return 3;
      }
      optimizer->zero_grad();
      loss.backward();
      optimizer->step();
      ++progress.step;
      progress.position = batch->next;

      std::vector<double> l = logits.to_vector();
      for (size_t i = 0; i < batch->size(); ++i)
        correct += (l[2 * i + 1] > l[2 * i]) == (batch->labels[i] == 1);
      seen += static_cast<int64_t>(batch->size());
      loss_sum += loss_value * static_cast<double>(batch->size());
      ++steps_this_epoch;
      double seconds = std::chrono::duration<double>(Clock::now() - epoch_start).count();
      const int64_t done = batch->next.batch;
      const int64_t steps_left = (steps_per_epoch - done) + (o.epochs - progress.epoch - 1) * steps_per_epoch;
      bar.update(static_cast<int>(progress.epoch + 1), o.epochs, done, loss_sum / seen,
                 static_cast<double>(correct) / seen, seen / std::max(seconds, 1e-9),
                 steps_left * seconds / static_cast<double>(steps_this_epoch));

      bool stop_now = g_interrupted || (o.max_steps > 0 && progress.step >= o.max_steps);
      if (stop_now || (o.checkpoint_every > 0 && progress.step % o.checkpoint_every == 0)) save(progress);
      if (g_interrupted) {
        bar.finish();
        std::fprintf(stderr, "interrupted: checkpoint written to %s at step %lld; continue with --resume\n",
                     checkpoint.string().c_str(), static_cast<long long>(progress.step));
        return 130;
      }
      if (stop_now) {
        bar.finish();
        std::fprintf(stderr, "stopped after --max-steps %lld; checkpoint written to %s\n",
                     static_cast<long long>(o.max_steps), checkpoint.string().c_str());
        return 0;
      }
    }
    bar.finish();
    double seconds = std::chrono::duration<double>(Clock::now() - epoch_start).count();
    nlohmann::json record = {{"epoch", progress.epoch + 1},
                             {"step", progress.step},
                             {"train_loss", seen ? loss_sum / seen : 0.0},
                             {"train_accuracy", seen ? static_cast<double>(correct) / seen : 0.0},
                             {"images_per_second", seen / std::max(seconds, 1e-9)},
                             {"seconds", seconds},
                             {"skipped_files", loader.skipped()}};
    std::string val_text;
    if (o.eval_each_epoch || progress.epoch + 1 == o.epochs) {
      Predictions p = predict(*model, val_set, eo);
      nlohmann::json report = evaluation_report(p, model->bayesian());
      record["val"] = report["pooled"];
      char buf[96];
      std::snprintf(buf, sizeof buf, ", val acc %.4f auc %.4f", report["pooled"]["accuracy"].get<double>(),
                    report["pooled"]["roc_auc"].get<double>());
      val_text = buf;
      if (progress.epoch + 1 == o.epochs) {
        nlohmann::json results = {{"model", o.model},
                                  {"config", options_json(o)},
                                  {"classes", {{"0", "real (folder nature or real)"}, {"1", "ai (folder ai or fake)"}}},
                                  {"training", {{"epochs", o.epochs}, {"steps", progress.step}, {"skipped_files", loader.bad_files()}}},
                                  {"evaluation", report},
                                  {"skipped_files", p.bad_files}};
        write_text_atomically(out / "results.json", results.dump(2) + "\n");
      }
    }
    std::fprintf(stderr, "epoch %lld/%d: loss %.4f, train acc %.4f, %.1f img/s, %s%s\n",
                 static_cast<long long>(progress.epoch + 1), o.epochs, record["train_loss"].get<double>(),
                 record["train_accuracy"].get<double>(), record["images_per_second"].get<double>(),
                 Progress::duration(seconds).c_str(), val_text.c_str());
    {
      std::ofstream log(out / "metrics.jsonl", std::ios::app);
      log << record.dump() << "\n";
    }
    TrainingProgress next_epoch = progress;
    next_epoch.epoch = progress.epoch + 1;
    next_epoch.position = {next_epoch.epoch, 0, 0};
    save(next_epoch);
  }
  std::fprintf(stderr, "done: %s (checkpoint.safetensors, results.json, metrics.jsonl)\n", out.string().c_str());
  return 0;
}

}  // namespace models
