// Evaluation metrics of a binary detector, class 0 = real ("nature" in the reference's
// folders and JSON keys), class 1 = AI-generated ("ai"), computed from each image's P(AI):
// accuracy, per-class precision/recall/F1, scikit-learn's classification report, ROC AUC,
// negative log-likelihood, Brier score, expected calibration error with reliability-diagram
// bins; for the Bayesian variants the Monte Carlo decomposition of predictive uncertainty;
// selective prediction (accuracy vs coverage); and one set's summary with the two ways of
// combining sets (mean over subsets, pooled over images).
// Plain std C++ on std::vector, double precision. Every function validates its input and
// throws engine::Error naming itself and the fault. Tests: build/tests/test_metrics
//
// nlohmann::json appears in this header only by its forward declaration; a caller that
// reads the returned JSON includes <nlohmann/json.hpp> itself.
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace models {

constexpr int64_t kReal = 0;
constexpr int64_t kAI = 1;

// p_ai >= 0.5 -> AI. Only an exact tie (p_ai == 0.5) is affected by this rule: it counts as
// AI, where an argmax over two equal softmax outputs would pick class 0 (real).
constexpr double kDecisionThreshold = 0.5;
int64_t predicted_class(double p_ai);

// ---- classification ----
struct ClassScores {
  double precision = 0, recall = 0, f1 = 0;
  int64_t support = 0;  // true images of the class (for the averages: all images)
};

struct ConfusionMatrix {
  std::array<std::array<int64_t, 2>, 2> counts{};  // counts[true class][predicted class]
};

// scikit-learn's conventions: a class never predicted has precision 0, a class absent from
// the labels recall 0, and F1 = 2 tp / (2 tp + fp + fn), 0 when that denominator is 0.
// macro_avg: unweighted mean over the two classes; weighted_avg: weighted by support.
struct ClassificationScores {
  double accuracy = 0;
  ClassScores real, ai, macro_avg, weighted_avg;
  ConfusionMatrix confusion;
  // scikit-learn's classification_report(output_dict=True) with target names "nature"
  // (label 0) and "ai" (label 1): {"nature": {"precision", "recall", "f1-score",
  // "support"}, "ai": {...}, "accuracy": x, "macro avg": {...}, "weighted avg": {...}}.
  nlohmann::json report_json() const;
};

ConfusionMatrix confusion_matrix(const std::vector<double>& p_ai, const std::vector<int64_t>& labels);
double accuracy(const std::vector<double>& p_ai, const std::vector<int64_t>& labels);
ClassificationScores classification_scores(const std::vector<double>& p_ai, const std::vector<int64_t>& labels);
nlohmann::json classification_report(const std::vector<double>& p_ai, const std::vector<int64_t>& labels);

// ---- ranking and probabilistic quality ----
// Area under the ROC curve of p_ai for the positive class AI: the Mann-Whitney statistic
// (R_ai - n_ai (n_ai + 1) / 2) / (n_ai n_real), with R_ai the sum of the AI images' ranks
// among all scores and tied scores given their average rank (a tied real/AI pair counts 1/2).
// Exact. Needs images of both classes.
double roc_auc(const std::vector<double>& p_ai, const std::vector<int64_t>& labels);
// Mean over images of -log p(true class), p clamped to [1e-12, 1] (natural log, nats).
double negative_log_likelihood(const std::vector<double>& p_ai, const std::vector<int64_t>& labels);
// Binary Brier score: mean over images of (p_ai - y)^2, y = 1 for AI. The two-class sum
// form (over both classes' probabilities) is exactly twice this.
double brier_score(const std::vector<double>& p_ai, const std::vector<int64_t>& labels);

// Expected calibration error (Guo et al. 2017): confidence = max(p_ai, 1 - p_ai) of the
// predicted class (predicted_class's rule), equal-width bins over [0, 1], bin b covering
// (b / B, (b + 1) / B] and the first bin also 0; ECE = sum over bins of
// count_b / N * |accuracy_b - mean_confidence_b|. Since confidence >= 0.5, the bins below
// 0.5 stay empty; they are kept so that every run has the same B bins.
constexpr int kCalibrationBins = 15;
struct CalibrationBin {
  double lo = 0, hi = 0;
  int64_t count = 0;
  double mean_confidence = 0, accuracy = 0;  // both 0 for an empty bin
};
struct Calibration {
  double ece = 0;
  std::vector<CalibrationBin> bins;  // the reliability diagram, lowest bin first
};
Calibration calibration(const std::vector<double>& p_ai, const std::vector<int64_t>& labels,
                        int num_bins = kCalibrationBins);

// ---- Bayesian heads: Monte Carlo uncertainty ----
// H(p) = -p log p - (1 - p) log(1 - p) in nats, with 0 log 0 = 0.
double binary_entropy(double p);

// From probs[s][i] = P(AI) of image i under head sample s (S samples, N images):
//   p_ai               predictive P(AI): mean over samples
//   predictive_entropy H[p_ai]                        (total uncertainty)
//   expected_entropy   mean over samples of H[p_s]    (aleatoric)
//   mutual_information predictive - expected, clamped at >= 0 against rounding (epistemic)
//   std_p_ai           population standard deviation (ddof 0) of P(AI) over samples
// and the mean of each over the N images. Identical samples give exactly 0 mutual
// information and standard deviation.
struct McUncertainty {
  std::vector<double> p_ai, predictive_entropy, expected_entropy, mutual_information, std_p_ai;
  double mean_predictive_entropy = 0, mean_expected_entropy = 0, mean_mutual_information = 0,
         mean_std_p_ai = 0;
};
McUncertainty mc_uncertainty(const std::vector<std::vector<double>>& probs);

// ---- selective prediction ----
// Images sorted by uncertainty ascending (ties keep index order); acc(k) = accuracy of the k
// most certain. Points at coverage levels 1.0, 0.9, ..., 0.1: count = the largest k with
// k / N <= level (k = floor(level * N), in integers), accuracy = acc(k), NaN when k = 0.
//   area = (1 / N) sum_{k=1..N} acc(k): area under the step curve of acc against k / N;
//   aurc = (1 / N) sum_{k=1..N} (1 - acc(k)) = 1 - area: Geifman et al.'s area under the
//          risk-coverage curve (lower is better).
struct CoveragePoint {
  double level = 0;
  int64_t count = 0;
  double accuracy = 0;
};
struct SelectiveCurve {
  std::vector<CoveragePoint> points;  // levels 1.0 down to 0.1
  double area = 0, aurc = 0;
};
SelectiveCurve selective_prediction(const std::vector<double>& uncertainty, const std::vector<bool>& correct);

// ---- one evaluated set (a generator subset, or all of them) ----
struct SetPredictions {
  std::string name;
  std::vector<double> p_ai;          // predictive P(AI) per image
  std::vector<int64_t> labels;       // 0 real, 1 AI
  std::optional<McUncertainty> mc;   // Bayesian heads; mc->p_ai must equal p_ai
};

struct BayesMetrics {
  double mean_predictive_entropy = 0, mean_expected_entropy = 0, mean_mutual_information = 0,
         mean_std_p_ai = 0;
  SelectiveCurve selective_by_mutual_information;
};

struct SetMetrics {
  std::string name;
  int64_t images = 0;
  ClassificationScores classification;
  double roc_auc = 0, nll = 0, brier = 0;
  Calibration calibration;
  // Uncertainty = H[p_ai], i.e. ranked by the confidence max(p_ai, 1 - p_ai).
  SelectiveCurve selective_by_entropy;
  std::optional<BayesMetrics> bayes;  // present for the Bayesian heads
  // {"name", "images", "accuracy", "roc_auc", "nll", "brier", "ece", "classification_report"
  //  (ClassificationScores::report_json), "confusion_matrix" ([[true real: pred real, pred ai],
  //  [true ai: ...]]), "calibration_bins": [{lo, hi, count, mean_confidence, accuracy}],
  //  "selective_by_entropy": {"points": [{coverage, count, accuracy}], "area", "aurc"},
  //  "bayes": {"mean_predictive_entropy", "mean_expected_entropy", "mean_mutual_information",
  //  "mean_std_p_ai", "selective_by_mutual_information"}}; "bayes" only when present.
  // A NaN (a coverage point with no image) is written as null.
  nlohmann::json to_json() const;
};

// All metrics of one set. Needs images of both classes (for the AUC).
SetMetrics evaluate(const SetPredictions& set);

// The "average over subsets" row: the plain mean over sets of every rate and score
// (accuracy; precision, recall, F1 of each class and of both averages; AUC, NLL, Brier, ECE;
// each coverage point's accuracy, area and aurc; the Bayesian means), while counts (images,
// supports, confusion matrix, coverage point counts) are summed. Reliability bins do not
// average meaningfully (empty bins, different counts), so this row has none. The sets must
// all have, or all lack, Bayesian metrics.
SetMetrics mean_over_sets(const std::string& name, const std::vector<SetMetrics>& sets);

// The pooled row: every image of every set evaluated as one set.
SetMetrics pooled_over_sets(const std::string& name, const std::vector<SetPredictions>& sets);

}  // namespace models
