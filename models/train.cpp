#include "models/train.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>

#include <nlohmann/json.hpp>

#include "data/loader.h"
#include "data/synthetic.h"
#include "engine/anomaly.h"
#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/safetensors.h"
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

constexpr const char* kBuiltInData = "built-in synthetic";

nlohmann::json options_json(const TrainOptions& o) {
  return {{"model", o.model},         {"data", o.data.empty() ? kBuiltInData : o.data},
          {"weights", o.weights},     {"epochs", o.epochs},
          {"batch_size", o.batch_size}, {"lr", o.lr},
          {"optimizer", o.optimizer}, {"weight_decay", o.weight_decay},
          {"image_size", o.image_size}, {"device", o.device},
          {"seed", o.seed},           {"mc_samples", o.mc_samples},
          {"kl_weight", o.kl_weight}, {"prior_sigma", o.prior_sigma},
          {"synthetic_images", o.synthetic_train}, {"synthetic_size", o.synthetic_size}};
}

// --resume: the run's configuration from its checkpoint (see TrainOptions::resume). Keys a
// checkpoint of an older version lacks keep the value given here.
void adopt_checkpoint_config(TrainOptions& o, const fs::path& checkpoint) {
  ENGINE_CHECK(fs::exists(checkpoint), "--resume: no checkpoint at ", checkpoint.string());
  const std::string where = checkpoint.string();
  nlohmann::json stored;
  {
    auto reader = engine::SafeTensorsReader::open(where);
    auto it = reader.metadata().find("config");
    ENGINE_CHECK(it != reader.metadata().end(), where, ": not a training checkpoint (metadata has no 'config')");
    try {
      stored = parse_metadata_json(it->second, where + ": checkpoint metadata 'config'");
    } catch (const nlohmann::json::exception& e) {
      engine::detail::fail(where, ": checkpoint metadata 'config' is damaged: ", e.what());
    }
    ENGINE_CHECK(stored.is_object(), where, ": checkpoint metadata 'config' is not a JSON object");
  }
  const nlohmann::json current = options_json(o);
  std::vector<std::string> changed;
  auto flag = [](std::string key) {
    std::replace(key.begin(), key.end(), '_', '-');
    return "--" + key;
  };
  // fixed: the run's result depends on it; may differ only if not given (then it is adopted).
  auto take = [&](const char* key, auto& field, bool fixed) {
    auto it = stored.find(key);
    if (it == stored.end()) return;
    using T = std::decay_t<decltype(field)>;
    T value;
    try {
      value = it->template get<T>();
    } catch (const nlohmann::json::exception&) {
      engine::detail::fail(where, ": checkpoint config '", key, "' has the wrong type: ", it->dump());
    }
    if (value == field) return;
    if (o.given.count(key)) {
      ENGINE_CHECK(!fixed, "--resume: ", flag(key), " ", current.at(key).dump(), " differs from the run's ",
                   it->dump(), " (", where, "); a resumed run keeps the configuration it started with: drop ",
                   flag(key), ", or start a new run in another --out");
      changed.push_back(flag(key) + " " + current.at(key).dump() + " (was " + it->dump() + ")");
      return;
    }
    field = value;
  };
  std::string data = o.data.empty() ? kBuiltInData : o.data;
  if (!o.given.count("data") || stored.value("data", std::string()) == data) {
    take("data", data, true);
  } else {  // the same folder written another way is the same data
    std::error_code ea, eb;
    const std::string s = stored.value("data", std::string());
    if (s != kBuiltInData && data != kBuiltInData &&
        fs::weakly_canonical(s, ea) == fs::weakly_canonical(data, eb) && !ea && !eb) {
      data = s;
    }
    take("data", data, true);
  }
  o.data = data == kBuiltInData ? std::string() : data;
  take("model", o.model, true);
  take("weights", o.weights, true);
  take("batch_size", o.batch_size, true);
  take("lr", o.lr, true);
  take("optimizer", o.optimizer, true);
  take("weight_decay", o.weight_decay, true);
  take("image_size", o.image_size, true);
  take("seed", o.seed, true);
  take("kl_weight", o.kl_weight, true);
  take("prior_sigma", o.prior_sigma, true);
  take("synthetic_images", o.synthetic_train, true);
  take("synthetic_size", o.synthetic_size, true);
  take("epochs", o.epochs, false);
  take("device", o.device, false);
  take("mc_samples", o.mc_samples, false);
  if (!changed.empty()) {
    std::string list;
    for (const auto& c : changed) list += (list.empty() ? "" : ", ") + c;
    std::fprintf(stderr, "resuming with %s\n", list.c_str());
  }
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
  ENGINE_CHECK(o.on_nonfinite == "stop" || o.on_nonfinite == "skip", "--on-nonfinite must be stop or skip, got '",
               o.on_nonfinite, "'");
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

// Fails now, before any training, when nothing can be created in the run folder (read-only
// file system, no permission), rather than at the first checkpoint.
void check_writable(const fs::path& out, bool has_checkpoint) {
  fs::path probe = out / (".write-test-" + std::to_string(::getpid()));
  int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ENGINE_CHECK(fd >= 0, "--out ", out.string(), ": cannot write in the run folder (", std::strerror(errno), ")",
               has_checkpoint ? "; its checkpoint is untouched" : "");
  ::close(fd);
  ::unlink(probe.c_str());
}

// A writer killed mid-write leaves "<file>.tmp-<pid>" (engine::write_file_atomically): remove
// those of our files whose process is gone.
void remove_stale_temporaries(const fs::path& out) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(out, ec)) {
    const std::string name = entry.path().filename().string();
    for (const char* file : {"checkpoint.safetensors", "results.json", "metrics.jsonl"}) {
      const std::string prefix = std::string(file) + ".tmp-";
      if (name.rfind(prefix, 0) != 0) continue;
      const std::string digits = name.substr(prefix.size());
      if (digits.empty() || digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) continue;
      const pid_t pid = static_cast<pid_t>(std::stol(digits));
      if (pid == ::getpid() || ::kill(pid, 0) == 0 || errno != ESRCH) continue;  // its writer may be alive
      std::error_code rm;
      fs::remove(entry.path(), rm);
    }
  }
}

// metrics.jsonl on resume: keeps the records of the epochs the checkpoint completed. Records
// written after the checkpoint by the run that stopped (they will be written again) and a line
// torn by a crash are dropped, so no epoch is listed twice.
void trim_metrics(const fs::path& file, int64_t completed_epochs) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return;
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>()), kept, line;
  std::istringstream lines(text);
  while (std::getline(lines, line)) {
    nlohmann::json record = nlohmann::json::parse(line, nullptr, false);
    if (!record.is_discarded() && record.is_object() && record.contains("epoch") && record["epoch"].is_number_integer() &&
        record["epoch"].get<int64_t>() <= completed_epochs)
      kept += line + "\n";
  }
  if (kept != text) engine::write_file_atomically(file.string(), kept);
}

void append_line(const fs::path& file, const std::string& line) {
  std::ofstream log(file, std::ios::app | std::ios::binary);
  log << line << "\n";
  log.flush();
  ENGINE_CHECK(log.good(), file.string(), ": cannot append the epoch's record (", std::strerror(errno), ")");
}

}  // namespace

int run_training(const TrainOptions& options) {
  TrainOptions o = options;
  if (o.resume) {
    ENGINE_CHECK(!o.out.empty(), "--resume needs --out, the run folder to continue");
    adopt_checkpoint_config(o, fs::path(o.out) / "checkpoint.safetensors");
  }
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
  if (!o.weights.empty() && !o.resume) {  // a resumed run's weights come from its checkpoint
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
  if (o.resume) {
    ENGINE_CHECK(fs::exists(checkpoint), "--resume: no checkpoint at ", checkpoint.string());
  } else {
    ENGINE_CHECK(!fs::exists(checkpoint), "--out ", out.string(),
                 " already holds a run (checkpoint.safetensors): pass --resume to continue it, or another --out");
  }
  check_writable(out, o.resume);
  remove_stale_temporaries(out);
  TrainingProgress progress;
  progress.config = options_json(o).dump();
  if (o.resume) {
    progress = load_checkpoint(checkpoint.string(), *model, *optimizer);
    trim_metrics(out / "metrics.jsonl", progress.epoch);
    std::fprintf(stderr, "resumed from %s: epoch %lld, step %lld\n", checkpoint.string().c_str(),
                 static_cast<long long>(progress.epoch + 1), static_cast<long long>(progress.step));
  } else {
    fs::remove(out / "metrics.jsonl", ec);
  }
  int64_t saved_step = o.resume ? progress.step : -1;  // the step of the checkpoint on disk
  auto last_good = [&] {
    return saved_step < 0 ? std::string("no checkpoint was written yet")
                          : "the last good checkpoint is kept: " + checkpoint.string() + " (step " +
                                std::to_string(saved_step) + ")";
  };
  auto save = [&](const TrainingProgress& state) {
    try {
      save_checkpoint(checkpoint.string(), *model, *optimizer, state);
    } catch (const engine::Error& e) {
      engine::detail::fail("the checkpoint of step ", state.step, " could not be written: ", e.what(), "; ",
                           saved_step < 0 ? std::string("no checkpoint had been written yet")
                                          : "the previous one (step " + std::to_string(saved_step) + ") is intact",
                           ". Free some space or make the folder writable, then run again",
                           saved_step < 0 ? "" : " with --resume");
    }
    saved_step = state.step;
    if (o.hooks.after_checkpoint) o.hooks.after_checkpoint(state, checkpoint.string());
  };

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

  // Non-finite values. Every step checks the loss and the parameters' gradients (a scan of the
  // gradients: about 5% of a step at 32x32, batch 4, 0.2% at 224x224, batch 8, one thread).
  // When that finds one, the step is replayed from the same state with every op's output and
  // gradient checked (engine/anomaly.h), which names the op and the phase. --check-every-op
  // checks every op at every step instead (4-6% of a step at 224x224, batch 8).
  engine::NonFiniteDetector detector(engine::NonFiniteDetector::Backward::Defer);
  const bool skip_nonfinite = o.on_nonfinite == "skip";
  const std::vector<engine::NamedTensor> parameters = model->named_parameters();
  std::vector<engine::NamedTensor> buffers = model->named_buffers();
  // The forward and backward passes of one step; throws engine::NonFiniteError.
  auto forward_backward = [&](int64_t step, const Tensor& images, const data::Batch& batch, bool every_op,
                              Tensor& logits) -> double {
    std::optional<engine::ScopedOpObserver> watch;
    if (every_op) watch.emplace(&detector);
    detector.reset();
    optimizer->zero_grad();
    logits = model->head(model->features(images), head_key(o.seed, step - 1));
    Tensor loss = engine::cross_entropy(logits, batch.labels);
    if (model->bayesian()) loss = engine::add(loss, engine::scale(model->kl(), o.kl_weight));
    if (o.hooks.before_backward) loss = o.hooks.before_backward(step, loss);
    const double value = loss.item();
    if (!std::isfinite(value))
      throw engine::NonFiniteError(std::string("the loss is ") + (std::isnan(value) ? "NaN" : "infinite"), "", "loss");
    loss.backward();
    detector.check_gradients(parameters);
    return value;
  };
  auto restore_buffers = [&](const std::vector<Tensor>& saved) {
    for (size_t i = 0; i < buffers.size(); ++i) buffers[i].second.copy_(saved[i]);
  };
  int64_t skipped_in_a_row = 0;

  for (; progress.epoch < o.epochs; ++progress.epoch) {
    if (progress.position.epoch != progress.epoch) progress.position = {progress.epoch, 0, 0};
    loader.start(progress.position);
    model->train();
    Progress bar(steps_per_epoch);
    double loss_sum = 0;
    int64_t correct = 0, seen = 0, steps_this_epoch = 0, skipped_this_epoch = 0;
    auto epoch_start = Clock::now();
    while (auto batch = loader.next()) {
      const int64_t step = progress.step + 1;
      Tensor images = batch->images.to(device);
      if (o.hooks.before_forward) o.hooks.before_forward(step, images);
      // A replayed or skipped step must start from the same state: its forward pass updated the
      // batch-norm statistics.
      std::vector<Tensor> saved_buffers;
      for (const auto& [name, buffer] : buffers) saved_buffers.push_back(buffer.clone());
      Tensor logits;
      double loss_value = 0;
      std::optional<engine::NonFiniteError> fault;
      try {
        loss_value = forward_backward(step, images, *batch, o.check_every_op, logits);
      } catch (const engine::NonFiniteError& e) {
        fault = e;
      }
      if (fault && !o.check_every_op) {  // name the op: the same step again, every op checked
        restore_buffers(saved_buffers);
        try {
          forward_backward(step, images, *batch, true, logits);
          fault = engine::NonFiniteError(std::string(fault->what()) + " (a replay of the step with every op checked "
                                         "found no non-finite value: the fault is not deterministic)", "", fault->phase());
        } catch (const engine::NonFiniteError& e) {
          fault = e;
        }
      }
      const std::string where = "step " + std::to_string(step) + " (epoch " + std::to_string(progress.epoch + 1) +
                                ", batch " + std::to_string(batch->position.batch + 1) + ")";
      if (fault) {
        optimizer->zero_grad();
        bar.finish();
        if (!skip_nonfinite) {
          std::fprintf(stderr, "error: non-finite values at %s: %s.\nStopping (--on-nonfinite stop); %s\n",
                       where.c_str(), fault->what(), last_good().c_str());
          return 3;
        }
        restore_buffers(saved_buffers);
        ++progress.skipped_steps;
        ++skipped_this_epoch;
        if (++skipped_in_a_row >= kMaxSkippedStepsInARow) {
          std::fprintf(stderr, "error: %lld steps in a row had non-finite values; the last, %s: %s.\nStopping; %s\n",
                       static_cast<long long>(skipped_in_a_row), where.c_str(), fault->what(), last_good().c_str());
          return 3;
        }
        std::fprintf(stderr, "warning: %s skipped (--on-nonfinite skip; %lld in a row, the run stops at %d): %s\n",
                     where.c_str(), static_cast<long long>(skipped_in_a_row), kMaxSkippedStepsInARow, fault->what());
      } else {
        optimizer->step();
        skipped_in_a_row = 0;
        std::vector<double> l = logits.to_vector();
        for (size_t i = 0; i < batch->size(); ++i)
          correct += (l[2 * i + 1] > l[2 * i]) == (batch->labels[i] == 1);
        seen += static_cast<int64_t>(batch->size());
        loss_sum += loss_value * static_cast<double>(batch->size());
      }
      logits = Tensor();
      ++progress.step;
      progress.position = batch->next;
      ++steps_this_epoch;
      double seconds = std::chrono::duration<double>(Clock::now() - epoch_start).count();
      const int64_t done = batch->next.batch;
      const int64_t steps_left = (steps_per_epoch - done) + (o.epochs - progress.epoch - 1) * steps_per_epoch;
      bar.update(static_cast<int>(progress.epoch + 1), o.epochs, done, seen ? loss_sum / seen : 0.0,
                 seen ? static_cast<double>(correct) / seen : 0.0, seen / std::max(seconds, 1e-9),
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
                             {"skipped_files", loader.skipped()},
                             {"skipped_steps", skipped_this_epoch}};
    std::string val_text;
    if (o.eval_each_epoch || progress.epoch + 1 == o.epochs) {
      Predictions p;
      try {
        p = predict(*model, val_set, eo);
      } catch (const engine::NonFiniteError& e) {
        std::fprintf(stderr, "error: %s (after epoch %lld, step %lld).\nStopping; %s\n", e.what(),
                     static_cast<long long>(progress.epoch + 1), static_cast<long long>(progress.step),
                     last_good().c_str());
        return 3;
      }
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
                                  {"training", {{"epochs", o.epochs}, {"steps", progress.step},
                                                {"skipped_steps", progress.skipped_steps},
                                                {"skipped_files", loader.bad_files()}}},
                                  {"evaluation", report},
                                  {"skipped_files", p.bad_files}};
        engine::write_file_atomically((out / "results.json").string(), results.dump(2) + "\n");
      }
    }
    std::fprintf(stderr, "epoch %lld/%d: loss %.4f, train acc %.4f, %.1f img/s, %s%s%s\n",
                 static_cast<long long>(progress.epoch + 1), o.epochs, record["train_loss"].get<double>(),
                 record["train_accuracy"].get<double>(), record["images_per_second"].get<double>(),
                 Progress::duration(seconds).c_str(), val_text.c_str(),
                 skipped_this_epoch ? (", " + std::to_string(skipped_this_epoch) + " steps skipped").c_str() : "");
    append_line(out / "metrics.jsonl", record.dump());
    TrainingProgress next_epoch = progress;
    next_epoch.epoch = progress.epoch + 1;
    next_epoch.position = {next_epoch.epoch, 0, 0};
    save(next_epoch);
  }
  std::fprintf(stderr, "done: %s (checkpoint.safetensors, results.json, metrics.jsonl)\n", out.string().c_str());
  return 0;
}

}  // namespace models
