#include "models/predict.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "data/file_list.h"
#include "data/loader.h"
#include "engine/autograd.h"
#include "engine/safetensors.h"
#include "kernels/cpu/parallel.h"
#include "models/checkpoint.h"
#include "models/metrics.h"
#include "models/resnet.h"
#include "models/weights.h"
#ifdef ENGINE_WITH_CUDA
#include "kernels/cuda/runtime.h"
#endif

namespace models {

namespace fs = std::filesystem;
using engine::Tensor;

namespace {

constexpr uint64_t kPredictNoiseStream = 0x5052454400000000ull;  // "PRED"
constexpr int kDefaultImageSize = 224;

void check_options(const PredictOptions& o) {
  ENGINE_CHECK(o.checkpoint.empty() != o.weights.empty(),
               "give the detector with --checkpoint FILE, or with --weights FILE --model NAME (not both)");
  ENGINE_CHECK(o.weights.empty() || !o.model.empty(), "--weights ", o.weights,
               ": a plain weights file does not name its model; add --model NAME");
  if (!o.model.empty()) variant_from_name(o.model);  // throws with the valid names
  ENGINE_CHECK(o.image_size == 0 || o.image_size >= 32, "--image-size must be at least 32, got ", o.image_size);
  ENGINE_CHECK(o.batch_size >= 1, "--batch-size must be at least 1, got ", o.batch_size);
  ENGINE_CHECK(o.workers >= 0, "--workers must be non-negative, got ", o.workers);
  ENGINE_CHECK(o.threads >= 0, "--threads must be non-negative, got ", o.threads);
  ENGINE_CHECK(o.mc_samples >= 1, "--mc-samples must be at least 1, got ", o.mc_samples);
  ENGINE_CHECK(o.device == "cpu" || o.device == "cuda", "--device must be cpu or cuda, got '", o.device, "'");
  ENGINE_CHECK(o.format == "csv" || o.format == "json", "--format must be csv or json, got '", o.format, "'");
  if (!o.output.empty()) {  // fail before hours of scoring, not after
    const fs::path folder = fs::path(o.output).parent_path();
    ENGINE_CHECK(folder.empty() || fs::is_directory(folder), "--output ", o.output, ": no folder ", folder.string());
  }
}

engine::Device select_device(const std::string& name) {
  if (name == "cpu") return engine::Device::CPU;
#ifdef ENGINE_WITH_CUDA
  std::string why;
  ENGINE_CHECK(kernels::cuda::available(&why), "--device cuda: no usable GPU (", why, ")");
  return engine::Device::CUDA;
#else
  engine::detail::fail("--device cuda: this build has no CUDA backend");
#endif
}

}  // namespace

int trained_image_size(const std::map<std::string, std::string>& meta, const std::string& path) {
  auto it = meta.find("config");
  if (it == meta.end()) return kDefaultImageSize;
  nlohmann::json config;
  try {
    config = parse_metadata_json(it->second, path + ": metadata 'config'");
  } catch (const nlohmann::json::exception& e) {
    engine::detail::fail(path, ": metadata 'config' is not JSON (", e.what(), "); give --image-size");
  }
  if (!config.is_object() || !config.contains("image_size")) return kDefaultImageSize;
  const nlohmann::json& size = config["image_size"];
  ENGINE_CHECK(size.is_number_integer() && size.get<int64_t>() >= 32 && size.get<int64_t>() <= 65536, path,
               ": metadata 'config' has image_size ", size.dump(), ", not a size of at least 32; give --image-size");
  return size.get<int>();
}

namespace {

struct LoadedDetector {
  std::shared_ptr<Detector> model;
  std::string source;
  int image_size = 0;
};

// Checks what the file says about itself (model, attention) before the weights are read.
LoadedDetector load_detector(const PredictOptions& o, engine::Device device) {
  LoadedDetector out;
  out.source = o.checkpoint.empty() ? o.weights : o.checkpoint;
  const char* flag = o.checkpoint.empty() ? "--weights " : "--checkpoint ";
  std::map<std::string, std::string> meta;
  try {
    meta = engine::SafeTensorsReader::open(out.source).metadata();
  } catch (const engine::Error& e) {
    engine::detail::fail(flag, e.what());
  }
  std::string name = o.model;
  auto model_entry = meta.find("model");
  if (model_entry != meta.end()) {
    ENGINE_CHECK(name.empty() || name == model_entry->second, flag, out.source, ": holds a ", model_entry->second,
                 " model, not --model ", name);
    name = model_entry->second;
  }
  ENGINE_CHECK(!name.empty(), flag, out.source, ": not a trainer checkpoint (its metadata names no model); for a plain "
               "weights file use --weights FILE --model NAME");
  const Variant variant = variant_from_name(name);
  ENGINE_CHECK(o.attention_dir.empty() || variant == Variant::ResNet50AttnBnn, "--attention-dir: ", name,
               " has no spatial attention; attention maps need a resnet50_attn_bnn model");
  out.image_size = o.image_size > 0 ? o.image_size : trained_image_size(meta, out.source);
  out.model = make_detector(name);
  load_weights(*out.model, out.source, WeightsScope::All, {kCheckpointOptimizerPrefix});
  out.model->eval();
  out.model->to(device);
  return out;
}

// The classic "jet" colour map (MATLAB's, OpenCV's COLORMAP_JET up to rounding): 0 dark
// blue, 0.25 blue-cyan, 0.5 green, 0.75 yellow-orange, 1 dark red; RGB in [0, 1].
void jet(double a, double rgb[3]) {
  auto ramp = [a](double centre) { return std::clamp(1.5 - std::abs(4.0 * a - centre), 0.0, 1.0); };
  rgb[0] = ramp(3.0);
  rgb[1] = ramp(2.0);
  rgb[2] = ramp(1.0);
}

// The attention overlay: the model's input image (normalised NHWC floats, turned back into
// 8-bit RGB) blended half and half with the jet colour of the attention weight at each pixel.
// The weight is the sigmoid output itself on a fixed [0, 1] scale, not stretched per image,
// so overlays of different images compare. The map [map_h, map_w] is upsampled bilinearly
// with half-pixel centres (PyTorch's interpolate(mode="bilinear", align_corners=False)).
data::Image attention_overlay(const float* image, int size, const double* map, int map_h, int map_w,
                              const data::TransformConfig& t) {
  auto source = [size](int i, int n, int& i0, int& i1, double& frac) {
    const double s = std::clamp((i + 0.5) * n / size - 0.5, 0.0, static_cast<double>(n - 1));
    i0 = static_cast<int>(s);
    i1 = std::min(i0 + 1, n - 1);
    frac = s - i0;
  };
  data::Image out(size, size);
  for (int y = 0; y < size; ++y) {
    int y0, y1;
    double fy;
    source(y, map_h, y0, y1, fy);
    for (int x = 0; x < size; ++x) {
      int x0, x1;
      double fx;
      source(x, map_w, x0, x1, fx);
      const double a = (1 - fy) * ((1 - fx) * map[y0 * map_w + x0] + fx * map[y0 * map_w + x1]) +
                       fy * ((1 - fx) * map[y1 * map_w + x0] + fx * map[y1 * map_w + x1]);
      double colour[3];
      jet(a, colour);
      const float* in = image + (static_cast<size_t>(y) * size + x) * 3;
      uint8_t* px = out.pixel(x, y);
      for (int c = 0; c < 3; ++c) {
        const double value = std::clamp((in[c] * t.std[c] + t.mean[c]) * 255.0, 0.0, 255.0);
        px[c] = static_cast<uint8_t>(std::lround(0.5 * value + 0.5 * 255.0 * colour[c]));
      }
    }
  }
  return out;
}

// "<stem>_attention.png", numbered from 2 when another image of the same stem came first.
std::string overlay_name(const std::string& image_path, std::set<std::string>& used) {
  const std::string stem = fs::path(image_path).stem().string();
  std::string name = stem + "_attention.png";
  for (int k = 2; !used.insert(name).second; ++k) name = stem + "_attention_" + std::to_string(k) + ".png";
  return name;
}

std::string format_number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.7g", v);
  return buf;
}

// RFC 4180: a field holding a comma, quote or line break is quoted, its quotes doubled.
std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

// A comment line must stay one line whatever a path holds.
std::string one_line(std::string s) {
  std::replace_if(s.begin(), s.end(), [](char c) { return c == '\n' || c == '\r'; }, ' ');
  return s;
}

const char* class_name(double p_ai) { return data::label_name(predicted_class(p_ai)); }

std::string description(const PredictionRun& run) {
  std::string text = run.model + " from " + run.source + ", " + std::to_string(run.image_size) + "x" +
                     std::to_string(run.image_size);
  if (run.bayesian)
    text += ", " + std::to_string(run.mc_samples) + " head samples (seed " + std::to_string(run.seed) + ")";
  return text;
}

}  // namespace

size_t PredictionRun::scored() const {
  return static_cast<size_t>(
      std::count_if(images.begin(), images.end(), [](const ImagePrediction& p) { return p.scored(); }));
}

engine::PhiloxKey prediction_noise_key(uint64_t seed) { return {seed ^ kPredictNoiseStream, 0}; }

PredictionRun predict_files(const PredictOptions& o) {
  check_options(o);
  const std::vector<std::string> files = data::find_image_files(o.inputs);
  if (o.threads > 0) kernels::cpu::set_num_threads(o.threads);
  const engine::Device device = select_device(o.device);
  LoadedDetector detector = load_detector(o, device);
  Detector& model = *detector.model;

  PredictionRun run;
  run.model = variant_name(model.variant());
  run.source = detector.source;
  run.image_size = detector.image_size;
  run.bayesian = model.bayesian();
  run.mc_samples = run.bayesian ? o.mc_samples : 1;
  run.seed = o.seed;
  run.attention = !o.attention_dir.empty();
  if (run.attention) {
    std::error_code ec;
    fs::create_directories(o.attention_dir, ec);
    ENGINE_CHECK(!ec, "--attention-dir ", o.attention_dir, ": cannot create the folder: ", ec.message());
  }
  std::fprintf(stderr, "predict: %s; %zu image%s\n", description(run).c_str(), files.size(),
               files.size() == 1 ? "" : "s");

  data::LoaderConfig lc;
  lc.batch_size = o.batch_size;
  lc.workers = o.workers;
  lc.shuffle = false;
  lc.seed = o.seed;
  lc.transform = data::eval_transform(run.image_size);
  data::Loader loader(std::make_shared<data::FileListDataset>(files), lc);
  loader.start_epoch(0);

  run.images.resize(files.size());
  std::vector<std::vector<double>> samples(files.size());  // [image][head sample] P(AI)
  std::set<std::string> overlay_names;
  // One key for every batch: each image meets the same head samples (see predict.h).
  const engine::PhiloxKey key = prediction_noise_key(o.seed);
  while (auto batch = loader.next()) {
    const Tensor images = batch->images.to(device);
    const Tensor probs = model.predict_samples(images, run.mc_samples, key);
    const int64_t draws = probs.dim(0), n = probs.dim(1), classes = probs.dim(2);
    const std::vector<double> p = probs.to_vector();
    for (int64_t i = 0; i < n; ++i) {
      std::vector<double>& s = samples[batch->indices[i]];
      for (int64_t d = 0; d < draws; ++d) s.push_back(p[(d * n + i) * classes + kAI]);
    }
    if (!run.attention) continue;
    Tensor maps;
    {
      engine::NoGradGuard no_grad;
      maps = model.attention_map(images).to(engine::Device::CPU);
    }
    const std::vector<double> m = maps.to_vector();
    const int map_h = static_cast<int>(maps.dim(1)), map_w = static_cast<int>(maps.dim(2));
    const float* pixels = batch->images.data<float>();
    for (int64_t i = 0; i < n; ++i) {
      const std::string& path = batch->paths[i];
      const fs::path png = fs::path(o.attention_dir) / overlay_name(path, overlay_names);
      data::write_image(png.string(), attention_overlay(pixels + i * run.image_size * run.image_size * 3,
                                                        run.image_size, m.data() + i * map_h * map_w, map_h, map_w,
                                                        lc.transform));
      run.images[batch->indices[i]].attention_png = png.string();
    }
  }

  // The loader keeps its reports by dataset index, so the unscored files pair with them in
  // order; each report is data::DecodeError's "image '<path>': <reason>", checked to be the
  // file's before its reason is taken.
  const std::vector<std::string> reports = loader.bad_files();
  size_t next_report = 0;
  std::vector<size_t> scored;
  for (size_t i = 0; i < files.size(); ++i) {
    run.images[i].path = files[i];
    if (!samples[i].empty()) {
      // a model whose weights hold NaN or infinities (a diverged run) gives NaN P(AI): an
      // error row, never a score
      if (std::all_of(samples[i].begin(), samples[i].end(), [](double v) { return std::isfinite(v); }))
        scored.push_back(i);
      else
        run.images[i].error = "the model's output is not finite (NaN or infinite P(ai)): the checkpoint's weights "
                              "are probably broken, e.g. by a diverged training run";
      continue;
    }
    const std::string prefix = "image '" + files[i] + "': ";
    ENGINE_CHECK(next_report < reports.size() && reports[next_report].rfind(prefix, 0) == 0, "predict: ", files[i],
                 " was not scored, and the loader's next report is not about it");
    run.images[i].error = reports[next_report++].substr(prefix.size());
  }
  if (!scored.empty()) {
    std::vector<std::vector<double>> probs(static_cast<size_t>(run.mc_samples), std::vector<double>(scored.size()));
    for (size_t j = 0; j < scored.size(); ++j)
      for (int s = 0; s < run.mc_samples; ++s) probs[s][j] = samples[scored[j]][s];
    const McUncertainty mc = mc_uncertainty(probs);
    for (size_t j = 0; j < scored.size(); ++j) {
      ImagePrediction& image = run.images[scored[j]];
      image.p_ai = mc.p_ai[j];
      if (run.bayesian)
        image.uncertainty = McStats{mc.predictive_entropy[j], mc.expected_entropy[j], mc.mutual_information[j],
                                    mc.std_p_ai[j]};
    }
  }
  std::fprintf(stderr, "predict: scored %zu of %zu images (%zu errors)\n", scored.size(), files.size(),
               files.size() - scored.size());
  return run;
}

void write_csv(const PredictionRun& run, std::ostream& out) {
  out << "# predict: " << one_line(description(run)) << "\n"
      << "# classes: real (0), ai (1); p_ai = P(ai), the mean over head samples; class = ai when p_ai >= 0.5\n";
  if (run.bayesian)
    out << "# uncertainty over the head samples, in nats: predictive_entropy = H[p_ai], expected_entropy = "
           "mean of H[P(ai) of each sample], mutual_information = their difference, std_p_ai = std of P(ai)\n";
  out << "path,p_ai,class";
  if (run.bayesian) out << ",predictive_entropy,expected_entropy,mutual_information,std_p_ai";
  if (run.attention) out << ",attention";
  out << ",error\n";
  const int empty_fields = 2 + (run.bayesian ? 4 : 0) + (run.attention ? 1 : 0);
  for (const ImagePrediction& image : run.images) {
    out << csv_field(image.path);
    if (!image.scored()) {
      out << std::string(static_cast<size_t>(empty_fields), ',') << "," << csv_field(image.error) << "\n";
      continue;
    }
    out << "," << format_number(image.p_ai) << "," << class_name(image.p_ai);
    if (run.bayesian) {
      const McStats& u = *image.uncertainty;
      out << "," << format_number(u.predictive_entropy) << "," << format_number(u.expected_entropy) << ","
          << format_number(u.mutual_information) << "," << format_number(u.std_p_ai);
    }
    if (run.attention) out << "," << csv_field(image.attention_png);
    out << ",\n";
  }
}

nlohmann::ordered_json prediction_json(const PredictionRun& run) {
  nlohmann::ordered_json images = nlohmann::ordered_json::array();
  for (const ImagePrediction& image : run.images) {
    nlohmann::ordered_json row = {{"path", image.path}};
    if (!image.scored()) {
      row["error"] = image.error;
    } else {
      row["p_ai"] = image.p_ai;
      row["class"] = class_name(image.p_ai);
      if (image.uncertainty) {
        row["predictive_entropy"] = image.uncertainty->predictive_entropy;
        row["expected_entropy"] = image.uncertainty->expected_entropy;
        row["mutual_information"] = image.uncertainty->mutual_information;
        row["std_p_ai"] = image.uncertainty->std_p_ai;
      }
      if (run.attention) row["attention"] = image.attention_png;
    }
    images.push_back(std::move(row));
  }
  const size_t scored = run.scored();
  return {{"model", run.model},
          {"source", run.source},
          {"image_size", run.image_size},
          {"mc_samples", run.mc_samples},
          {"seed", run.seed},
          {"classes", {{"0", "real"}, {"1", "ai"}}},
          {"decision", "P(ai) >= 0.5 -> ai"},
          {"scored", scored},
          {"errors", run.images.size() - scored},
          {"images", std::move(images)}};
}

int run_prediction(const PredictOptions& options) {
  const PredictionRun run = predict_files(options);
  std::ofstream file;
  if (!options.output.empty()) {
    file.open(options.output, std::ios::trunc);
    ENGINE_CHECK(file.is_open(), "--output ", options.output, ": cannot open for writing");
  }
  std::ostream& out = options.output.empty() ? std::cout : file;
  if (options.format == "json")
    out << prediction_json(run).dump(2) << "\n";
  else
    write_csv(run, out);
  out.flush();
  ENGINE_CHECK(out.good(), "predict: cannot write the ", options.format, " output to ",
               options.output.empty() ? "stdout" : options.output);
  return run.scored() > 0 ? 0 : 2;
}

}  // namespace models
