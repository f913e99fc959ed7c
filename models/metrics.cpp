// Evaluation metrics of the real-vs-AI detectors; definitions in models/metrics.h.
#include "models/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include <nlohmann/json.hpp>

#include "engine/error.h"

namespace models {

using Json = nlohmann::json;

namespace {

void check_probabilities(const std::string& fn, const char* what, const std::vector<double>& p) {
  ENGINE_CHECK(!p.empty(), fn, ": ", what, " is empty");
  for (size_t i = 0; i < p.size(); ++i)
    ENGINE_CHECK(p[i] >= 0.0 && p[i] <= 1.0,  // false for NaN too
                 fn, ": ", what, "[", i, "] = ", p[i], " is not a probability in [0, 1]");
}

void check_labels(const std::string& fn, size_t expected, const std::vector<int64_t>& labels) {
  ENGINE_CHECK(labels.size() == expected, fn, ": ", expected, " probabilities but ", labels.size(), " labels");
  for (size_t i = 0; i < labels.size(); ++i)
    ENGINE_CHECK(labels[i] == kReal || labels[i] == kAI, fn, ": labels[", i, "] = ", labels[i],
                 " is neither 0 (real) nor 1 (ai)");
}

void check_binary(const std::string& fn, const std::vector<double>& p_ai, const std::vector<int64_t>& labels) {
  check_probabilities(fn, "p_ai", p_ai);
  check_labels(fn, p_ai.size(), labels);
}

double mean(const std::vector<double>& v) {
  return std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}

ClassScores class_scores(const ConfusionMatrix& m, int64_t c) {
  const auto& n = m.counts;
  int64_t tp = n[c][c];
  int64_t support = n[c][0] + n[c][1];
  int64_t predicted = n[0][c] + n[1][c];
  ClassScores s;
  s.support = support;
  s.precision = predicted ? static_cast<double>(tp) / predicted : 0.0;
  s.recall = support ? static_cast<double>(tp) / support : 0.0;
  // 2 tp / (2 tp + fp + fn), as scikit-learn computes it (2pr / (p + r) up to rounding).
  s.f1 = (support + predicted) ? 2.0 * tp / static_cast<double>(support + predicted) : 0.0;
  return s;
}

void check_set(const std::string& fn, const SetPredictions& set) {
  check_binary(fn, set.p_ai, set.labels);
  if (!set.mc) return;
  const McUncertainty& mc = *set.mc;
  for (const std::vector<double>* v :
       {&mc.p_ai, &mc.predictive_entropy, &mc.expected_entropy, &mc.mutual_information, &mc.std_p_ai})
    ENGINE_CHECK(v->size() == set.p_ai.size(), fn, ": Monte Carlo uncertainty for ", v->size(),
                 " images, predictions for ", set.p_ai.size());
  ENGINE_CHECK(mc.p_ai == set.p_ai, fn, ": p_ai differs from the Monte Carlo predictive p_ai");
}

Json class_json(const ClassScores& s) {
  return {{"precision", s.precision}, {"recall", s.recall}, {"f1-score", s.f1}, {"support", s.support}};
}

Json selective_json(const SelectiveCurve& c) {
  Json points = Json::array();
  for (const CoveragePoint& p : c.points)
    points.push_back({{"coverage", p.level}, {"count", p.count}, {"accuracy", p.accuracy}});
  return {{"points", points}, {"area", c.area}, {"aurc", c.aurc}};
}

}  // namespace

int64_t predicted_class(double p_ai) { return p_ai >= kDecisionThreshold ? kAI : kReal; }

// ---- classification ----

ConfusionMatrix confusion_matrix(const std::vector<double>& p_ai, const std::vector<int64_t>& labels) {
  check_binary("confusion_matrix", p_ai, labels);
  ConfusionMatrix m;
  for (size_t i = 0; i < p_ai.size(); ++i) ++m.counts[labels[i]][predicted_class(p_ai[i])];
  return m;
}

double accuracy(const std::vector<double>& p_ai, const std::vector<int64_t>& labels) {
  check_binary("accuracy", p_ai, labels);
  int64_t correct = 0;
  for (size_t i = 0; i < p_ai.size(); ++i) correct += predicted_class(p_ai[i]) == labels[i];
  return static_cast<double>(correct) / static_cast<double>(p_ai.size());
}

ClassificationScores classification_scores(const std::vector<double>& p_ai, const std::vector<int64_t>& labels) {
  check_binary("classification_scores", p_ai, labels);
  ClassificationScores s;
  s.confusion = confusion_matrix(p_ai, labels);
  const auto& n = s.confusion.counts;
  const int64_t total = static_cast<int64_t>(p_ai.size());
  s.accuracy = static_cast<double>(n[0][0] + n[1][1]) / total;
  s.real = class_scores(s.confusion, kReal);
  s.ai = class_scores(s.confusion, kAI);
  s.macro_avg = {(s.real.precision + s.ai.precision) / 2, (s.real.recall + s.ai.recall) / 2,
                 (s.real.f1 + s.ai.f1) / 2, total};
  auto weighted = [&](double real, double ai) {
    return (real * s.real.support + ai * s.ai.support) / total;
  };
  s.weighted_avg = {weighted(s.real.precision, s.ai.precision), weighted(s.real.recall, s.ai.recall),
                    weighted(s.real.f1, s.ai.f1), total};
  return s;
}

Json ClassificationScores::report_json() const {
  return {{"nature", class_json(real)},
          {"ai", class_json(ai)},
          {"accuracy", accuracy},
          {"macro avg", class_json(macro_avg)},
          {"weighted avg", class_json(weighted_avg)}};
}

Json classification_report(const std::vector<double>& p_ai, const std::vector<int64_t>& labels) {
  check_binary("classification_report", p_ai, labels);
  return classification_scores(p_ai, labels).report_json();
}

// ---- ranking and probabilistic quality ----

double roc_auc(const std::vector<double>& p_ai, const std::vector<int64_t>& labels) {
  check_binary("roc_auc", p_ai, labels);
  const size_t n = p_ai.size();
  const int64_t n_ai = std::count(labels.begin(), labels.end(), kAI);
  const int64_t n_real = static_cast<int64_t>(n) - n_ai;
  ENGINE_CHECK(n_ai > 0 && n_real > 0, "roc_auc: needs images of both classes, got ", n_ai, " ai and ",
               n_real, " real");
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return p_ai[a] < p_ai[b]; });
  // Ranks are 1-based; a run of equal scores at sorted positions [i, j) shares the average
  // rank (i + 1 + j) / 2. Every rank is a multiple of 1/2, so the sum is exact.
  double rank_sum_ai = 0;
  for (size_t i = 0; i < n;) {
    size_t j = i;
    while (j < n && p_ai[order[j]] == p_ai[order[i]]) ++j;
    const double rank = (static_cast<double>(i + 1) + static_cast<double>(j)) / 2;
    for (size_t k = i; k < j; ++k)
      if (labels[order[k]] == kAI) rank_sum_ai += rank;
    i = j;
  }
  const double a = static_cast<double>(n_ai);
  return (rank_sum_ai - a * (a + 1) / 2) / (a * static_cast<double>(n_real));
}

double negative_log_likelihood(const std::vector<double>& p_ai, const std::vector<int64_t>& labels) {
  check_binary("negative_log_likelihood", p_ai, labels);
  double sum = 0;
  for (size_t i = 0; i < p_ai.size(); ++i) {
    const double p_true = labels[i] == kAI ? p_ai[i] : 1.0 - p_ai[i];
    sum -= std::log(std::clamp(p_true, 1e-12, 1.0));
  }
  return sum / static_cast<double>(p_ai.size());
}

double brier_score(const std::vector<double>& p_ai, const std::vector<int64_t>& labels) {
  check_binary("brier_score", p_ai, labels);
  double sum = 0;
  for (size_t i = 0; i < p_ai.size(); ++i) {
    const double d = p_ai[i] - static_cast<double>(labels[i]);
    sum += d * d;
  }
  return sum / static_cast<double>(p_ai.size());
}

Calibration calibration(const std::vector<double>& p_ai, const std::vector<int64_t>& labels, int num_bins) {
  check_binary("calibration", p_ai, labels);
  ENGINE_CHECK(num_bins >= 1, "calibration: num_bins = ", num_bins, ", needs at least 1");
  Calibration c;
  c.bins.resize(num_bins);
  std::vector<double> upper(num_bins);
  for (int b = 0; b < num_bins; ++b) {
    c.bins[b].lo = static_cast<double>(b) / num_bins;
    c.bins[b].hi = upper[b] = static_cast<double>(b + 1) / num_bins;  // the last is exactly 1
  }
  std::vector<double> confidence_sum(num_bins, 0.0), correct_sum(num_bins, 0.0);
  for (size_t i = 0; i < p_ai.size(); ++i) {
    const double confidence = std::max(p_ai[i], 1.0 - p_ai[i]);
    // Bins are (lo, hi]: the first upper edge >= confidence.
    const size_t b = std::lower_bound(upper.begin(), upper.end(), confidence) - upper.begin();
    ++c.bins[b].count;
    confidence_sum[b] += confidence;
    correct_sum[b] += predicted_class(p_ai[i]) == labels[i];
  }
  const double n = static_cast<double>(p_ai.size());
  for (int b = 0; b < num_bins; ++b) {
    CalibrationBin& bin = c.bins[b];
    if (bin.count == 0) continue;
    bin.mean_confidence = confidence_sum[b] / bin.count;
    bin.accuracy = correct_sum[b] / bin.count;
    c.ece += bin.count / n * std::abs(bin.accuracy - bin.mean_confidence);
  }
  return c;
}

// ---- Bayesian heads ----

double binary_entropy(double p) {
  ENGINE_CHECK(p >= 0.0 && p <= 1.0, "binary_entropy: p = ", p, " is not a probability in [0, 1]");
  const double q = 1.0 - p;
  double h = 0.0;  // 0 log 0 = 0; starting from +0 also keeps H(0) = +0, not -0
  if (p > 0) h -= p * std::log(p);
  if (q > 0) h -= q * std::log(q);
  return h;
}

McUncertainty mc_uncertainty(const std::vector<std::vector<double>>& probs) {
  const char* fn = "mc_uncertainty";
  ENGINE_CHECK(!probs.empty(), fn, ": no Monte Carlo samples (S = 0)");
  const size_t n = probs[0].size();
  ENGINE_CHECK(n > 0, fn, ": sample 0 has no images");
  for (size_t s = 0; s < probs.size(); ++s) {
    ENGINE_CHECK(probs[s].size() == n, fn, ": sample ", s, " has ", probs[s].size(), " images, sample 0 has ", n);
    for (size_t i = 0; i < n; ++i)
      ENGINE_CHECK(probs[s][i] >= 0.0 && probs[s][i] <= 1.0, fn, ": probs[", s, "][", i, "] = ", probs[s][i],
                   " is not a probability in [0, 1]");
  }
  const double samples = static_cast<double>(probs.size());
  // Means are taken as x_0 + mean(x_s - x_0): when every sample agrees, the deviations are
  // exactly 0, so the predictive p equals the samples' p and H[mean p] equals mean H[p_s]
  // bit for bit, giving exactly 0 mutual information and standard deviation.
  std::vector<double> p_shift(n, 0.0), h_shift(n, 0.0), h0(n);
  for (size_t i = 0; i < n; ++i) h0[i] = binary_entropy(probs[0][i]);
  for (const std::vector<double>& row : probs)
    for (size_t i = 0; i < n; ++i) {
      p_shift[i] += row[i] - probs[0][i];
      h_shift[i] += binary_entropy(row[i]) - h0[i];
    }
  McUncertainty u;
  u.p_ai.resize(n);
  u.predictive_entropy.resize(n);
  u.expected_entropy.resize(n);
  u.mutual_information.resize(n);
  for (size_t i = 0; i < n; ++i) {
    // Rounding may not carry the mean outside [0, 1], which binary_entropy would reject.
    u.p_ai[i] = std::clamp(probs[0][i] + p_shift[i] / samples, 0.0, 1.0);
    u.predictive_entropy[i] = binary_entropy(u.p_ai[i]);
    u.expected_entropy[i] = h0[i] + h_shift[i] / samples;
    u.mutual_information[i] = std::max(0.0, u.predictive_entropy[i] - u.expected_entropy[i]);
  }
  std::vector<double> squares(n, 0.0);
  for (const std::vector<double>& row : probs)
    for (size_t i = 0; i < n; ++i) squares[i] += (row[i] - u.p_ai[i]) * (row[i] - u.p_ai[i]);
  u.std_p_ai.resize(n);
  for (size_t i = 0; i < n; ++i) u.std_p_ai[i] = std::sqrt(squares[i] / samples);
  u.mean_predictive_entropy = mean(u.predictive_entropy);
  u.mean_expected_entropy = mean(u.expected_entropy);
  u.mean_mutual_information = mean(u.mutual_information);
  u.mean_std_p_ai = mean(u.std_p_ai);
  return u;
}

// ---- selective prediction ----

SelectiveCurve selective_prediction(const std::vector<double>& uncertainty, const std::vector<bool>& correct) {
  const char* fn = "selective_prediction";
  ENGINE_CHECK(!uncertainty.empty(), fn, ": uncertainty is empty");
  ENGINE_CHECK(correct.size() == uncertainty.size(), fn, ": ", uncertainty.size(), " uncertainties but ",
               correct.size(), " correctness flags");
  for (size_t i = 0; i < uncertainty.size(); ++i)
    ENGINE_CHECK(!std::isnan(uncertainty[i]), fn, ": uncertainty[", i, "] is NaN");
  const size_t n = uncertainty.size();
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return uncertainty[a] < uncertainty[b]; });
  // correct_first[k] = correct among the k most certain
  std::vector<int64_t> correct_first(n + 1, 0);
  for (size_t k = 0; k < n; ++k) correct_first[k + 1] = correct_first[k] + correct[order[k]];
  SelectiveCurve c;
  double accuracy_sum = 0, risk_sum = 0;
  for (size_t k = 1; k <= n; ++k) {
    const double acc = static_cast<double>(correct_first[k]) / static_cast<double>(k);
    accuracy_sum += acc;
    risk_sum += 1.0 - acc;
  }
  c.area = accuracy_sum / static_cast<double>(n);
  c.aurc = risk_sum / static_cast<double>(n);
  for (int64_t tenths = 10; tenths >= 1; --tenths) {
    CoveragePoint p;
    p.level = static_cast<double>(tenths) / 10;
    p.count = tenths * static_cast<int64_t>(n) / 10;  // largest k with k / n <= tenths / 10
    p.accuracy = p.count ? static_cast<double>(correct_first[p.count]) / static_cast<double>(p.count)
                         : std::numeric_limits<double>::quiet_NaN();
    c.points.push_back(p);
  }
  return c;
}

// ---- sets ----

SetMetrics evaluate(const SetPredictions& set) {
  const std::string fn = "evaluate(" + set.name + ")";
  check_set(fn, set);
  const size_t n = set.p_ai.size();
  const int64_t n_ai = std::count(set.labels.begin(), set.labels.end(), kAI);
  ENGINE_CHECK(n_ai > 0 && n_ai < static_cast<int64_t>(n), fn, ": needs images of both classes (for the AUC), got ",
               n_ai, " ai and ", static_cast<int64_t>(n) - n_ai, " real");
  SetMetrics m;
  m.name = set.name;
  m.images = static_cast<int64_t>(n);
  m.classification = classification_scores(set.p_ai, set.labels);
  m.roc_auc = roc_auc(set.p_ai, set.labels);
  m.nll = negative_log_likelihood(set.p_ai, set.labels);
  m.brier = brier_score(set.p_ai, set.labels);
  m.calibration = calibration(set.p_ai, set.labels);
  std::vector<double> entropy(n);
  std::vector<bool> correct(n);
  for (size_t i = 0; i < n; ++i) {
    entropy[i] = binary_entropy(set.p_ai[i]);
    correct[i] = predicted_class(set.p_ai[i]) == set.labels[i];
  }
  m.selective_by_entropy = selective_prediction(entropy, correct);
  if (set.mc) {
    BayesMetrics b;
    b.mean_predictive_entropy = mean(set.mc->predictive_entropy);
    b.mean_expected_entropy = mean(set.mc->expected_entropy);
    b.mean_mutual_information = mean(set.mc->mutual_information);
    b.mean_std_p_ai = mean(set.mc->std_p_ai);
    b.selective_by_mutual_information = selective_prediction(set.mc->mutual_information, correct);
    m.bayes = b;
  }
  return m;
}

Json SetMetrics::to_json() const {
  const auto& n = classification.confusion.counts;
  Json bins = Json::array();
  for (const CalibrationBin& b : calibration.bins)
    bins.push_back({{"lo", b.lo}, {"hi", b.hi}, {"count", b.count}, {"mean_confidence", b.mean_confidence},
                    {"accuracy", b.accuracy}});
  Json j = {{"name", name},
            {"images", images},
            {"accuracy", classification.accuracy},
            {"roc_auc", roc_auc},
            {"nll", nll},
            {"brier", brier},
            {"ece", calibration.ece},
            {"classification_report", classification.report_json()},
            {"confusion_matrix", {{n[0][0], n[0][1]}, {n[1][0], n[1][1]}}},
            {"calibration_bins", bins},
            {"selective_by_entropy", selective_json(selective_by_entropy)}};
  if (bayes)
    j["bayes"] = {{"mean_predictive_entropy", bayes->mean_predictive_entropy},
                  {"mean_expected_entropy", bayes->mean_expected_entropy},
                  {"mean_mutual_information", bayes->mean_mutual_information},
                  {"mean_std_p_ai", bayes->mean_std_p_ai},
                  {"selective_by_mutual_information", selective_json(bayes->selective_by_mutual_information)}};
  return j;
}

namespace {

// Mean of every rate of a list of curves, summed point counts (see mean_over_sets).
SelectiveCurve mean_curve(const std::vector<const SelectiveCurve*>& curves) {
  const double k = static_cast<double>(curves.size());
  SelectiveCurve c = *curves[0];
  c.area /= k;
  c.aurc /= k;
  for (CoveragePoint& p : c.points) p.accuracy /= k;
  for (size_t s = 1; s < curves.size(); ++s) {
    ENGINE_CHECK(curves[s]->points.size() == c.points.size(), "mean_over_sets: set ", s, " has ",
                 curves[s]->points.size(), " coverage points, set 0 has ", c.points.size());
    c.area += curves[s]->area / k;
    c.aurc += curves[s]->aurc / k;
    for (size_t i = 0; i < c.points.size(); ++i) {
      const CoveragePoint& p = curves[s]->points[i];
      ENGINE_CHECK(p.level == c.points[i].level, "mean_over_sets: set ", s, " has coverage level ", p.level,
                   " where set 0 has ", c.points[i].level);
      c.points[i].count += p.count;
      c.points[i].accuracy += p.accuracy / k;
    }
  }
  return c;
}

}  // namespace

SetMetrics mean_over_sets(const std::string& name, const std::vector<SetMetrics>& sets) {
  ENGINE_CHECK(!sets.empty(), "mean_over_sets(", name, "): no sets");
  for (size_t s = 0; s < sets.size(); ++s)
    ENGINE_CHECK(sets[s].bayes.has_value() == sets[0].bayes.has_value(), "mean_over_sets(", name, "): set '",
                 sets[s].name, "' ", sets[s].bayes ? "has" : "lacks", " Bayesian metrics, set '", sets[0].name,
                 "' ", sets[0].bayes ? "has" : "lacks", " them");
  const double k = static_cast<double>(sets.size());
  auto average = [&](auto field) {
    double sum = 0;
    for (const SetMetrics& s : sets) sum += field(s);
    return sum / k;
  };
  auto average_scores = [&](auto scores) {
    ClassScores c;
    c.precision = average([&](const SetMetrics& s) { return scores(s).precision; });
    c.recall = average([&](const SetMetrics& s) { return scores(s).recall; });
    c.f1 = average([&](const SetMetrics& s) { return scores(s).f1; });
    for (const SetMetrics& s : sets) c.support += scores(s).support;
    return c;
  };
  SetMetrics m;
  m.name = name;
  for (const SetMetrics& s : sets) {
    m.images += s.images;
    for (int t = 0; t < 2; ++t)
      for (int p = 0; p < 2; ++p) m.classification.confusion.counts[t][p] += s.classification.confusion.counts[t][p];
  }
  ClassificationScores& c = m.classification;
  c.accuracy = average([](const SetMetrics& s) { return s.classification.accuracy; });
  c.real = average_scores([](const SetMetrics& s) -> const ClassScores& { return s.classification.real; });
  c.ai = average_scores([](const SetMetrics& s) -> const ClassScores& { return s.classification.ai; });
  c.macro_avg = average_scores([](const SetMetrics& s) -> const ClassScores& { return s.classification.macro_avg; });
  c.weighted_avg =
      average_scores([](const SetMetrics& s) -> const ClassScores& { return s.classification.weighted_avg; });
  m.roc_auc = average([](const SetMetrics& s) { return s.roc_auc; });
  m.nll = average([](const SetMetrics& s) { return s.nll; });
  m.brier = average([](const SetMetrics& s) { return s.brier; });
  m.calibration.ece = average([](const SetMetrics& s) { return s.calibration.ece; });
  std::vector<const SelectiveCurve*> curves;
  for (const SetMetrics& s : sets) curves.push_back(&s.selective_by_entropy);
  m.selective_by_entropy = mean_curve(curves);
  if (sets[0].bayes) {
    BayesMetrics b;
    b.mean_predictive_entropy = average([](const SetMetrics& s) { return s.bayes->mean_predictive_entropy; });
    b.mean_expected_entropy = average([](const SetMetrics& s) { return s.bayes->mean_expected_entropy; });
    b.mean_mutual_information = average([](const SetMetrics& s) { return s.bayes->mean_mutual_information; });
    b.mean_std_p_ai = average([](const SetMetrics& s) { return s.bayes->mean_std_p_ai; });
    curves.clear();
    for (const SetMetrics& s : sets) curves.push_back(&s.bayes->selective_by_mutual_information);
    b.selective_by_mutual_information = mean_curve(curves);
    m.bayes = b;
  }
  return m;
}

SetMetrics pooled_over_sets(const std::string& name, const std::vector<SetPredictions>& sets) {
  ENGINE_CHECK(!sets.empty(), "pooled_over_sets(", name, "): no sets");
  SetPredictions all;
  all.name = name;
  if (sets[0].mc) all.mc.emplace();
  for (const SetPredictions& s : sets) {
    // Each set on its own: size errors of two sets could cancel out in the concatenation.
    check_set("pooled_over_sets(" + name + "): set '" + s.name + "'", s);
    ENGINE_CHECK(s.mc.has_value() == sets[0].mc.has_value(), "pooled_over_sets(", name, "): set '", s.name, "' ",
                 s.mc ? "has" : "lacks", " Monte Carlo uncertainty, set '", sets[0].name, "' ",
                 sets[0].mc ? "has" : "lacks", " it");
    auto append = [](std::vector<double>& to, const std::vector<double>& from) {
      to.insert(to.end(), from.begin(), from.end());
    };
    append(all.p_ai, s.p_ai);
    all.labels.insert(all.labels.end(), s.labels.begin(), s.labels.end());
    if (s.mc) {
      append(all.mc->p_ai, s.mc->p_ai);
      append(all.mc->predictive_entropy, s.mc->predictive_entropy);
      append(all.mc->expected_entropy, s.mc->expected_entropy);
      append(all.mc->mutual_information, s.mc->mutual_information);
      append(all.mc->std_p_ai, s.mc->std_p_ai);
    }
  }
  // evaluate() recomputes every mean from the per-image values, so the pooled McUncertainty's
  // own means are not needed.
  return evaluate(all);
}

}  // namespace models
