// bench_models: images per second of each detector, for a training step and for inference,
// and a per-op profile of one training step. Run from the repository root:
//   build/bench/bench_models                                  # 3 detectors x {64x64 b32, 224x224 b8} x {train, infer}
//   build/bench/bench_models --variant resnet50_bnn --size 224 --mode train --reps 5 --json out.json
//   build/bench/bench_models --profile --variant resnet50 --size 64    # where a training step's time goes
//   build/bench/bench_models --device cuda                    # 224x224 at batch 128 on the GPU
// bench/torch_models.py runs the same workloads in PyTorch, alternating with this program.
//
// Training step = what models/train.cpp does per batch: forward, cross-entropy (+ kl_weight *
// KL for the Bayesian heads, one head sample per step), loss.item(), zero_grad, backward, Adam
// step (lr 1e-3). Inference = eval mode under NoGradGuard: Detector::predict_samples, i.e. one
// backbone pass and, for the Bayesian heads, --mc-samples head draws (default 50, the
// reference's evaluation; 0: the posterior-mean head instead), softmax probabilities copied to
// the host. Inputs are fixed random NHWC images; the data loader is not timed. Each sample
// times one step (steps last 50 ms or more here); the figure is batch / median step time.
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/optim.h"
#include "engine/profile.h"
#include "kernels/cpu/parallel.h"
#include "models/resnet.h"
#ifdef ENGINE_WITH_CUDA
#include "kernels/cuda/runtime.h"
#endif

#ifdef ENGINE_WITH_CUDA
#define ENGINE_BUILT_WITH_CUDA 1
#else
#define ENGINE_BUILT_WITH_CUDA 0
#endif

namespace {

using engine::Tensor;
using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

const char* kUsage =
    "usage: bench_models [options]\n"
    "  --device cpu|cuda     (default cpu)\n"
    "  --variant NAME|all    resnet50, resnet50_bnn, resnet50_attn_bnn (default all)\n"
    "  --mode train|infer|both   (default both)\n"
    "  --size N              image side; default both 64 and 224\n"
    "  --batch N             default 32 at 64x64, 8 at 224x224 on cpu (128 on cuda), else 8\n"
    "  --reps N              timed steps per workload, median reported (default 5)\n"
    "  --warmup N            untimed steps first (default 2)\n"
    "  --threads N           CPU threads (default: OpenMP's, i.e. every core)\n"
    "  --mc-samples N        inference head draws for the Bayesian heads (default 50; 0: head mean)\n"
    "  --kl-weight X         weight of the KL term in training (default 1e-3, 1 / 1000 images)\n"
    "  --cpu-time            time with process CPU time instead of wall-clock (with --threads 1 on a\n"
    "                        busy machine: time slices taken by other processes then do not count)\n"
    "  --json FILE           also write the results as JSON (- : stdout; the text then goes to stderr)\n"
    "  --profile             per-op profile of training steps instead of throughput\n"
    "  --profile-steps N     steps averaged in the profile (default 1)\n";

struct Options {
  std::string device = "cpu";
  std::vector<std::string> variants = models::variant_names();
  std::vector<std::string> modes = {"train", "infer"};
  int size = 0, batch = 0;
  int reps = 5, warmup = 2, threads = 0, mc_samples = 50;
  double kl_weight = 1e-3;
  std::string json_path;
  bool profile = false;
  bool cpu_time = false;
  int profile_steps = 1;
};

[[noreturn]] void usage_error(const std::string& message) {
  std::fprintf(stderr, "bench_models: %s\n%s", message.c_str(), kUsage);
  std::exit(2);
}

int parse_int(const std::string& flag, const std::string& text, int min) {
  char* end = nullptr;
  long v = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || v < min || v > 1000000)
    usage_error(flag + " needs an integer >= " + std::to_string(min) + ", got '" + text + "'");
  return static_cast<int>(v);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (flag == "-h" || flag == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (flag == "--profile" || flag == "--cpu-time") {
      (flag == "--profile" ? o.profile : o.cpu_time) = true;
      continue;
    }
    static const char* const kValued[] = {"--device", "--variant", "--mode", "--size", "--batch", "--reps", "--warmup",
                                    "--threads", "--mc-samples", "--kl-weight", "--json", "--profile-steps"};
    if (std::none_of(std::begin(kValued), std::end(kValued), [&](const char* f) { return flag == f; }))
      usage_error("unknown option " + flag);
    if (i + 1 >= argc) usage_error(flag + " needs a value");
    std::string value = argv[++i];
    if (flag == "--device") {
      if (value != "cpu" && value != "cuda") usage_error("--device must be cpu or cuda, got '" + value + "'");
      o.device = value;
    } else if (flag == "--variant") {
      if (value != "all") {
        models::variant_from_name(value);  // throws, naming the valid ones
        o.variants = {value};
      }
    } else if (flag == "--mode") {
      if (value == "both") o.modes = {"train", "infer"};
      else if (value == "train" || value == "infer") o.modes = {value};
      else usage_error("--mode must be train, infer or both, got '" + value + "'");
    } else if (flag == "--size") {
      o.size = parse_int(flag, value, 32);
    } else if (flag == "--batch") {
      o.batch = parse_int(flag, value, 2);  // train-mode batch-norm needs two images
    } else if (flag == "--reps") {
      o.reps = parse_int(flag, value, 1);
    } else if (flag == "--warmup") {
      o.warmup = parse_int(flag, value, 0);
    } else if (flag == "--threads") {
      o.threads = parse_int(flag, value, 1);
    } else if (flag == "--mc-samples") {
      o.mc_samples = parse_int(flag, value, 0);
    } else if (flag == "--kl-weight") {
      o.kl_weight = std::atof(value.c_str());
    } else if (flag == "--json") {
      o.json_path = value;
    } else if (flag == "--profile-steps") {
      o.profile_steps = parse_int(flag, value, 1);
    }
  }
  return o;
}

std::string read_first_line(const char* path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown CPU";
}

json machine_json(const Options& o) {
  utsname u{};
  uname(&u);
  return {{"host", u.nodename},
          {"cpu", cpu_model()},
          {"online_cpus", sysconf(_SC_NPROCESSORS_ONLN)},
          {"threads", kernels::cpu::num_threads()},
          {"device", o.device},
          {"cuda_build", bool(ENGINE_BUILT_WITH_CUDA)}};
}

struct Workload {
  std::string variant, mode;
  int size, batch;
};

// One step of the workload, closed over its model, optimiser and inputs.
struct Runner {
  std::shared_ptr<models::Detector> model;
  std::unique_ptr<engine::Adam> optimizer;
  Tensor images;
  std::vector<int64_t> labels;
  int64_t step = 0;
};

void synchronize(engine::Device device) {
#ifdef ENGINE_WITH_CUDA
  if (device == engine::Device::CUDA) kernels::cuda::synchronize();
#else
  (void)device;
#endif
}

constexpr uint64_t kHeadNoiseSeed = 0x4845414400000000ull;  // "HEAD", as the trainer

Runner make_runner(const Workload& w, engine::Device device) {
  Runner r;
  r.model = models::make_detector(w.variant);
  r.model->to(device);
  r.images = Tensor::randn({w.batch, w.size, w.size, 3}, /*seed=*/42).to(device);
  for (int i = 0; i < w.batch; ++i) r.labels.push_back(i % 2);
  if (w.mode == "train") {
    r.model->train();
    r.optimizer = std::make_unique<engine::Adam>(r.model->named_parameters(), engine::AdamOptions{});
  } else {
    r.model->eval();
  }
  return r;
}

// As models/train.cpp, less the accuracy bookkeeping. `profiler` (optional) times the
// optimiser step as a phase.
double train_step(Runner& r, double kl_weight, engine::OpProfiler* profiler) {
  models::Detector& m = *r.model;
  Tensor logits = m.head(m.features(r.images), {kHeadNoiseSeed, static_cast<uint64_t>(r.step)});
  Tensor loss = engine::cross_entropy(logits, r.labels);
  if (m.bayesian()) loss = engine::add(loss, engine::scale(m.kl(), kl_weight));
  double value = loss.item();
  r.optimizer->zero_grad();
  loss.backward();
  if (profiler) profiler->phase("optimizer step (Adam)", [&] { r.optimizer->step(); });
  else r.optimizer->step();
  ++r.step;
  return value;
}

void infer_step(Runner& r, int mc_samples) {
  models::Detector& m = *r.model;
  Tensor probs;
  if (mc_samples > 0) {
    probs = m.predict_samples(r.images, mc_samples, {kHeadNoiseSeed, static_cast<uint64_t>(r.step)});
  } else {
    engine::NoGradGuard no_grad;
    probs = engine::softmax(m.head_mean(m.features(r.images))).to(engine::Device::CPU);
  }
  ++r.step;
}

std::string inference_head(const Workload& w, int mc_samples) {
  if (w.mode != "infer") return "";
  if (!models::is_bayesian(models::variant_from_name(w.variant))) return "linear head";
  return mc_samples > 0 ? std::to_string(mc_samples) + " Monte Carlo head samples, softmax" : "posterior-mean head";
}

// Seconds on the chosen clock: wall-clock, or this process's CPU time (all threads).
double now_seconds(bool cpu_time) {
  if (!cpu_time) return std::chrono::duration<double>(Clock::now().time_since_epoch()).count();
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

json run_throughput(const Workload& w, const Options& o, engine::Device device, std::ostream& text) {
  const std::string load_before = read_first_line("/proc/loadavg");
  Runner r = make_runner(w, device);
  auto step = [&] {
    if (w.mode == "train") train_step(r, o.kl_weight, nullptr);
    else infer_step(r, o.mc_samples);
    synchronize(device);
  };
  for (int i = 0; i < o.warmup; ++i) step();
  std::vector<double> seconds;
  for (int i = 0; i < o.reps; ++i) {
    const double start = now_seconds(o.cpu_time);
    step();
    seconds.push_back(now_seconds(o.cpu_time) - start);
  }
  const double med = median(seconds);
  const std::string load_after = read_first_line("/proc/loadavg");
  char line[320];
  std::snprintf(line, sizeof line, "%-18s %-5s %3dx%-3d b%-3d %8.2f img/s  (median %.1f ms of %d steps, min %.1f, max %.1f; loadavg %.4s -> %.4s)%s%s\n",
                w.variant.c_str(), w.mode.c_str(), w.size, w.size, w.batch, w.batch / med, 1e3 * med, o.reps,
                1e3 * *std::min_element(seconds.begin(), seconds.end()),
                1e3 * *std::max_element(seconds.begin(), seconds.end()), load_before.c_str(), load_after.c_str(),
                w.mode == "infer" ? "  " : "", inference_head(w, o.mc_samples).c_str());
  text << line << std::flush;
  return {{"variant", w.variant},     {"mode", w.mode},
          {"size", w.size},           {"batch", w.batch},
          {"images_per_s", w.batch / med}, {"median_step_s", med},
          {"step_seconds", seconds},  {"warmup", o.warmup},
          {"inference_head", inference_head(w, o.mc_samples)},
          {"loadavg_before", load_before}, {"loadavg_after", load_after}};
}

json run_profile(const Workload& w, const Options& o, engine::Device device, std::ostream& text) {
  Runner r = make_runner(w, device);
  for (int i = 0; i < o.warmup; ++i) train_step(r, o.kl_weight, nullptr);
  synchronize(device);
  engine::OpProfiler profiler(device);
  const std::string load_before = read_first_line("/proc/loadavg");
  for (int i = 0; i < o.profile_steps; ++i) {
    auto scope = profiler.step();
    train_step(r, o.kl_weight, &profiler);
  }
  const std::string load_after = read_first_line("/proc/loadavg");
  text << "profile: " << w.variant << " training step, " << w.size << "x" << w.size << ", batch " << w.batch << ", "
       << kernels::cpu::num_threads() << " threads, " << o.profile_steps << " step(s) after " << o.warmup
       << " warm-up (loadavg " << load_before.substr(0, 4) << " -> " << load_after.substr(0, 4) << ")\n"
       << profiler.table(0.5) << "\n"
       << std::flush;
  json entries = json::array();
  const double n = static_cast<double>(profiler.steps());
  for (const auto& e : profiler.entries())
    entries.push_back({{"kind", engine::profile_kind_name(e.kind)},
                       {"name", e.name},
                       {"calls_per_step", e.count / n},
                       {"ms_per_step", 1e3 * e.seconds / n},
                       {"percent", 100.0 * e.seconds / profiler.step_seconds()}});
  return {{"variant", w.variant},  {"mode", "train"}, {"size", w.size}, {"batch", w.batch},
          {"steps", o.profile_steps}, {"ms_per_step", 1e3 * profiler.step_seconds() / n},
          {"profile", entries},    {"loadavg_before", load_before}, {"loadavg_after", load_after}};
}

}  // namespace

int main(int argc, char** argv) {
  try {
    Options o = parse(argc, argv);
    engine::Device device = engine::Device::CPU;
    if (o.device == "cuda") {
#ifdef ENGINE_WITH_CUDA
      std::string why;
      if (!kernels::cuda::available(&why)) {
        std::fprintf(stderr, "bench_models: --device cuda: no usable GPU (%s)\n", why.c_str());
        return 2;
      }
      device = engine::Device::CUDA;
#else
      std::fprintf(stderr, "bench_models: --device cuda: this build has no CUDA backend "
                           "(configure where nvcc exists, -DENGINE_CUDA=AUTO or ON)\n");
      return 2;
#endif
    }
    if (o.threads > 0) kernels::cpu::set_num_threads(o.threads);
    if (o.profile) o.modes = {"train"};

    std::vector<int> sizes = o.size ? std::vector<int>{o.size} : std::vector<int>{64, 224};
    std::vector<Workload> workloads;
    for (int size : sizes) {
      int batch = o.batch;
      if (!batch) batch = size == 64 ? 32 : size == 224 && o.device == "cuda" ? 128 : 8;
      for (const auto& variant : o.variants)
        for (const auto& mode : o.modes) workloads.push_back({variant, mode, size, batch});
    }

    std::ostream& text = o.json_path == "-" ? std::cerr : std::cout;
    json report = {{"program", "bench_models"}, {"machine", machine_json(o)}, {"kl_weight", o.kl_weight},
                   {"mc_samples", o.mc_samples},
                   {"clock", o.cpu_time ? "process CPU time" : "wall-clock"}, {"results", json::array()}};
    text << "bench_models: " << o.device << ", " << kernels::cpu::num_threads() << " threads, " << cpu_model()
         << "\n";
    for (const Workload& w : workloads)
      report["results"].push_back(o.profile ? run_profile(w, o, device, text) : run_throughput(w, o, device, text));

    if (o.json_path == "-") {
      std::cout << report.dump(2) << "\n";
    } else if (!o.json_path.empty()) {
      std::ofstream out(o.json_path);
      out << report.dump(2) << "\n";
      if (!out.good()) {
        std::fprintf(stderr, "bench_models: cannot write %s\n", o.json_path.c_str());
        return 1;
      }
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_models: %s\n", e.what());
    return 1;
  }
}
