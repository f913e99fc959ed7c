#include "models/evaluate.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "engine/anomaly.h"

#include "data/loader.h"
#include "models/metrics.h"

namespace models {

namespace {
// The evaluation head noise: draws (seed ^ stream, batch * samples + s), disjoint from training's.
constexpr uint64_t kEvalNoiseStream = 0x4556414c00000000ull;  // "EVAL"
}  // namespace

Predictions predict(Detector& model, std::shared_ptr<const data::Dataset> dataset, const EvalOptions& options) {
  ENGINE_CHECK(options.mc_samples >= 1, "evaluation: mc_samples must be at least 1, got ", options.mc_samples);
  data::LoaderConfig lc;
  lc.batch_size = options.batch_size;
  lc.workers = options.workers;
  lc.shuffle = false;
  lc.strict = options.strict;
  lc.seed = options.seed;
  lc.transform = data::eval_transform(options.image_size);
  data::Loader loader(dataset, lc);
  loader.start_epoch(0);
  const bool was_training = model.is_training();
  model.eval();
  Predictions out;
  const engine::Device device = model.parameters().front().device();
  int64_t batch_index = 0;
  while (auto batch = loader.next()) {
    engine::PhiloxKey key{options.seed ^ kEvalNoiseStream,
                          static_cast<uint64_t>(batch_index++) * static_cast<uint64_t>(options.mc_samples)};
    engine::Tensor probs = model.predict_samples(batch->images.to(device), options.mc_samples, key);
    const int64_t samples = probs.dim(0), n = probs.dim(1), classes = probs.dim(2);
    std::vector<double> p = probs.to_vector();
    const auto bad = std::find_if(p.begin(), p.end(), [](double v) { return !std::isfinite(v); });
    if (bad != p.end()) {
      const int64_t image = (bad - p.begin()) / classes % n;
      throw engine::NonFiniteError("evaluation: the model's output for '" + batch->paths[image] +
                                       "' is not finite (" + std::to_string(*bad) +
                                       "): its weights have probably diverged",
                                   "", "forward");
    }
    for (int64_t i = 0; i < n; ++i) {
      std::vector<double> per_sample(samples);
      for (int64_t s = 0; s < samples; ++s) per_sample[s] = p[(s * n + i) * classes + 1];
      out.p_ai.push_back(std::move(per_sample));
      out.labels.push_back(batch->labels[i]);
      out.paths.push_back(batch->paths[i]);
      out.subsets.push_back(batch->subsets[i]);
    }
  }
  out.bad_files = loader.bad_files();
  model.train(was_training);
  return out;
}

nlohmann::json evaluation_report(const Predictions& predictions, bool bayesian) {
  ENGINE_CHECK(predictions.size() > 0, "evaluation: no images were evaluated");
  std::map<std::string, SetPredictions> by_subset;
  std::map<std::string, std::vector<std::vector<double>>> samples_by_subset;  // [image][sample]
  for (size_t i = 0; i < predictions.size(); ++i) {
    SetPredictions& set = by_subset[predictions.subsets[i]];
    set.name = predictions.subsets[i];
    const auto& s = predictions.p_ai[i];
    double mean = 0;
    for (double v : s) mean += v;
    set.p_ai.push_back(mean / static_cast<double>(s.size()));
    set.labels.push_back(predictions.labels[i]);
    samples_by_subset[set.name].push_back(s);
  }
  std::vector<SetPredictions> sets;
  std::vector<SetMetrics> metrics;
  nlohmann::json subsets = nlohmann::json::object();
  for (auto& [name, set] : by_subset) {
    if (bayesian) {
      const auto& per_image = samples_by_subset[name];
      std::vector<std::vector<double>> probs(per_image.front().size(), std::vector<double>(per_image.size()));
      for (size_t i = 0; i < per_image.size(); ++i)
        for (size_t s = 0; s < per_image[i].size(); ++s) probs[s][i] = per_image[i][s];
      set.mc = mc_uncertainty(probs);
      set.p_ai = set.mc->p_ai;  // the same means, as metrics.h requires
    }
    metrics.push_back(evaluate(set));
    subsets[name] = metrics.back().to_json();
    sets.push_back(set);
  }
  return {{"classes", {{"0", "real"}, {"1", "ai"}}},
          {"decision", "P(ai) >= 0.5 -> ai"},
          {"subsets", subsets},
          {"average_over_subsets", mean_over_sets("average over subsets", metrics).to_json()},
          {"pooled", pooled_over_sets("all images", sets).to_json()}};
}

}  // namespace models
