// labels: cpu
// Evaluation metrics (models/metrics.h) against values worked out by hand, the JSON
// structures, and every input error. Run: build/tests/test_metrics
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <set>

#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "models/metrics.h"

using namespace models;
using Json = nlohmann::json;

namespace {

constexpr double kTol = 1e-12;

// Expects f to throw engine::Error whose message contains every fragment.
void expect_error(const std::function<void()>& f, const std::vector<std::string>& fragments) {
  try {
    f();
    ADD_FAILURE() << "expected an engine::Error mentioning '" << fragments[0] << "'";
  } catch (const engine::Error& e) {
    for (const std::string& s : fragments)
      EXPECT_NE(std::string(e.what()).find(s), std::string::npos) << "'" << s << "' not in: " << e.what();
  }
}

// 9 images. Predicted (p >= 0.5 -> ai): 1 0 1 0 1 0 1 1 0.
// Confusion [true][pred]: real {3 right, 2 called ai}; ai {1 called real, 3 right}.
const std::vector<double> kP = {0.9, 0.2, 0.6, 0.4, 0.5, 0.1, 0.7, 0.8, 0.3};
const std::vector<int64_t> kY = {1, 0, 0, 1, 1, 0, 1, 0, 0};

}  // namespace

TEST(Metrics, DecisionRuleCountsATieAsAi) {
  EXPECT_EQ(predicted_class(0.5), kAI);
  EXPECT_EQ(predicted_class(std::nextafter(0.5, 0.0)), kReal);
  EXPECT_EQ(predicted_class(0.0), kReal);
  EXPECT_EQ(predicted_class(1.0), kAI);
}

TEST(Metrics, ConfusionAccuracyAndPerClassScores) {
  ConfusionMatrix m = confusion_matrix(kP, kY);
  EXPECT_EQ(m.counts[0][0], 3);
  EXPECT_EQ(m.counts[0][1], 2);
  EXPECT_EQ(m.counts[1][0], 1);
  EXPECT_EQ(m.counts[1][1], 3);
  EXPECT_NEAR(accuracy(kP, kY), 6.0 / 9, kTol);

  ClassificationScores s = classification_scores(kP, kY);
  EXPECT_NEAR(s.accuracy, 6.0 / 9, kTol);
  // real: tp 3, predicted real 4, support 5
  EXPECT_NEAR(s.real.precision, 3.0 / 4, kTol);
  EXPECT_NEAR(s.real.recall, 3.0 / 5, kTol);
  EXPECT_NEAR(s.real.f1, 2 * 3.0 / (5 + 4), kTol);
  EXPECT_EQ(s.real.support, 5);
  // ai: tp 3, predicted ai 5, support 4
  EXPECT_NEAR(s.ai.precision, 3.0 / 5, kTol);
  EXPECT_NEAR(s.ai.recall, 3.0 / 4, kTol);
  EXPECT_NEAR(s.ai.f1, 2 * 3.0 / (4 + 5), kTol);
  EXPECT_EQ(s.ai.support, 4);
  EXPECT_NEAR(s.macro_avg.precision, (3.0 / 4 + 3.0 / 5) / 2, kTol);
  EXPECT_NEAR(s.macro_avg.recall, (3.0 / 5 + 3.0 / 4) / 2, kTol);
  EXPECT_NEAR(s.macro_avg.f1, 2.0 / 3, kTol);
  EXPECT_EQ(s.macro_avg.support, 9);
  EXPECT_NEAR(s.weighted_avg.precision, (5 * 3.0 / 4 + 4 * 3.0 / 5) / 9, kTol);
  EXPECT_NEAR(s.weighted_avg.recall, (5 * 3.0 / 5 + 4 * 3.0 / 4) / 9, kTol);
  EXPECT_NEAR(s.weighted_avg.f1, 2.0 / 3, kTol);
  EXPECT_EQ(s.weighted_avg.support, 9);
}

TEST(Metrics, NeverPredictedClassScoresZeroAsScikitLearnDoes) {
  // Everything called ai: precision of real is 0/0 -> 0, and so is its F1.
  ClassificationScores s = classification_scores({0.9, 0.8, 0.7}, {0, 1, 1});
  EXPECT_EQ(s.real.precision, 0.0);
  EXPECT_EQ(s.real.recall, 0.0);
  EXPECT_EQ(s.real.f1, 0.0);
  EXPECT_NEAR(s.ai.precision, 2.0 / 3, kTol);
  EXPECT_EQ(s.ai.recall, 1.0);
  EXPECT_NEAR(s.ai.f1, 4.0 / 5, kTol);
  // No ai image at all: recall of ai 0/0 -> 0.
  ClassificationScores r = classification_scores({0.1, 0.2}, {0, 0});
  EXPECT_EQ(r.ai.recall, 0.0);
  EXPECT_EQ(r.ai.support, 0);
  EXPECT_EQ(r.real.f1, 1.0);
}

TEST(Metrics, ClassificationReportHasScikitLearnKeysWithCorrectLabels) {
  Json r = classification_report(kP, kY);
  std::set<std::string> keys;
  for (auto it = r.begin(); it != r.end(); ++it) keys.insert(it.key());
  EXPECT_EQ(keys, (std::set<std::string>{"nature", "ai", "accuracy", "macro avg", "weighted avg"}));
  for (const char* row : {"nature", "ai", "macro avg", "weighted avg"}) {
    std::set<std::string> fields;
    for (auto it = r[row].begin(); it != r[row].end(); ++it) fields.insert(it.key());
    EXPECT_EQ(fields, (std::set<std::string>{"precision", "recall", "f1-score", "support"})) << row;
    EXPECT_TRUE(r[row]["support"].is_number_integer()) << row;
  }
  EXPECT_TRUE(r["accuracy"].is_number_float());
  // "nature" is label 0 (real, support 5), "ai" label 1 (support 4): not the reference's swap.
  EXPECT_EQ(r["nature"]["support"].get<int64_t>(), 5);
  EXPECT_NEAR(r["nature"]["recall"].get<double>(), 3.0 / 5, kTol);
  EXPECT_EQ(r["ai"]["support"].get<int64_t>(), 4);
  EXPECT_NEAR(r["ai"]["recall"].get<double>(), 3.0 / 4, kTol);
  EXPECT_NEAR(r["accuracy"].get<double>(), 6.0 / 9, kTol);
  EXPECT_EQ(r["weighted avg"]["support"].get<int64_t>(), 9);
}

TEST(Metrics, RocAucByHandWithAndWithoutTies) {
  // ai scores 0.9 0.4 0.5 0.7 against real 0.2 0.6 0.1 0.8 0.3: ai wins 5 + 3 + 3 + 4 = 15 of 20.
  EXPECT_NEAR(roc_auc(kP, kY), 15.0 / 20, kTol);
  // ai {0.5, 0.8} vs real {0.5, 0.2, 0.8}: 0.5 -> 1/2 + 1 + 0, 0.8 -> 1 + 1 + 1/2; 4 of 6.
  EXPECT_NEAR(roc_auc({0.5, 0.5, 0.8, 0.2, 0.8}, {1, 0, 1, 0, 0}), 4.0 / 6, kTol);
  EXPECT_EQ(roc_auc({0.3, 0.3, 0.3, 0.3}, {0, 1, 1, 0}), 0.5);
  EXPECT_EQ(roc_auc({0.1, 0.2, 0.8, 0.9}, {0, 0, 1, 1}), 1.0);
  EXPECT_EQ(roc_auc({0.1, 0.2, 0.8, 0.9}, {1, 1, 0, 0}), 0.0);
}

TEST(Metrics, RocAucMatchesPairCountingOnRandomTiedScores) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> tenth(0, 10), label(0, 1);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<double> p(37);
    std::vector<int64_t> y(37);
    for (size_t i = 0; i < p.size(); ++i) {
      p[i] = tenth(rng) / 10.0;  // few distinct values: many ties
      y[i] = label(rng);
    }
    y[0] = 0;
    y[1] = 1;
    double wins = 0, pairs = 0;
    for (size_t a = 0; a < p.size(); ++a)
      for (size_t r = 0; r < p.size(); ++r)
        if (y[a] == 1 && y[r] == 0) {
          wins += p[a] > p[r] ? 1.0 : p[a] == p[r] ? 0.5 : 0.0;
          pairs += 1;
        }
    EXPECT_NEAR(roc_auc(p, y), wins / pairs, kTol) << "trial " << trial;
  }
}

TEST(Metrics, NegativeLogLikelihoodClampsAndBrierScore) {
  const std::vector<double> p = {0.8, 0.3, 1.0, 0.0};
  const std::vector<int64_t> y = {1, 0, 0, 1};
  // p(true class): 0.8, 0.7, 0 -> 1e-12, 0 -> 1e-12
  EXPECT_NEAR(negative_log_likelihood(p, y), -(std::log(0.8) + std::log(0.7) + 2 * std::log(1e-12)) / 4, kTol);
  EXPECT_EQ(negative_log_likelihood({1.0, 0.0}, {1, 0}), 0.0);
  // (0.2^2 + 0.3^2 + 1 + 1) / 4
  EXPECT_NEAR(brier_score(p, y), (0.04 + 0.09 + 1 + 1) / 4, kTol);
  EXPECT_EQ(brier_score({1.0, 0.0}, {1, 0}), 0.0);
}

TEST(Metrics, ExpectedCalibrationErrorAcrossSeveralBins) {
  // confidence, predicted, right?, bin (b covers (b/15, (b+1)/15]):
  //   0.5  ai   yes  7      0.6 (on the edge 9/15) ai yes  8
  //   0.75 real yes 11      0.75 ai no 11      0.78 ai yes 11
  //   0.95 ai   yes 14      0.98 real no 14
  const std::vector<double> p = {0.5, 0.6, 0.25, 0.75, 0.78, 0.95, 0.02};
  const std::vector<int64_t> y = {1, 1, 0, 0, 1, 1, 1};
  Calibration c = calibration(p, y);
  ASSERT_EQ(c.bins.size(), 15u);
  EXPECT_EQ(c.bins[0].lo, 0.0);
  EXPECT_NEAR(c.bins[0].hi, 1.0 / 15, kTol);
  EXPECT_EQ(c.bins[14].hi, 1.0);
  const std::vector<int64_t> counts = {0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 3, 0, 0, 2};
  for (int b = 0; b < 15; ++b) EXPECT_EQ(c.bins[b].count, counts[b]) << "bin " << b;
  EXPECT_EQ(c.bins[0].mean_confidence, 0.0);
  EXPECT_EQ(c.bins[0].accuracy, 0.0);
  EXPECT_NEAR(c.bins[7].mean_confidence, 0.5, kTol);
  EXPECT_EQ(c.bins[7].accuracy, 1.0);
  EXPECT_NEAR(c.bins[8].mean_confidence, 0.6, kTol);
  EXPECT_NEAR(c.bins[11].mean_confidence, (0.75 + 0.75 + 0.78) / 3, kTol);
  EXPECT_NEAR(c.bins[11].accuracy, 2.0 / 3, kTol);
  EXPECT_NEAR(c.bins[14].mean_confidence, (0.95 + 0.98) / 2, kTol);
  EXPECT_EQ(c.bins[14].accuracy, 0.5);
  // (1 |1 - 0.5| + 1 |1 - 0.6| + 3 |2/3 - 0.76| + 2 |0.5 - 0.965|) / 7 = (0.5 + 0.4 + 0.28 + 0.93) / 7
  EXPECT_NEAR(c.ece, 2.11 / 7, kTol);
  // One bin: |accuracy - mean confidence| over all images.
  EXPECT_NEAR(calibration(p, y, 1).ece, std::abs(5.0 / 7 - (0.5 + 0.6 + 0.75 + 0.75 + 0.78 + 0.95 + 0.98) / 7), kTol);
  // Perfectly confident and right: no calibration error.
  EXPECT_EQ(calibration({0.0, 1.0}, {0, 1}).ece, 0.0);
}

TEST(Metrics, BinaryEntropy) {
  EXPECT_EQ(binary_entropy(0.0), 0.0);
  EXPECT_FALSE(std::signbit(binary_entropy(0.0)));
  EXPECT_EQ(binary_entropy(1.0), 0.0);
  EXPECT_NEAR(binary_entropy(0.5), std::log(2.0), kTol);
  EXPECT_NEAR(binary_entropy(0.2), -(0.2 * std::log(0.2) + 0.8 * std::log(0.8)), kTol);
  EXPECT_NEAR(binary_entropy(0.2), binary_entropy(0.8), kTol);
}

TEST(Metrics, MonteCarloDecompositionByHand) {
  // probs[s][i]: image 0 samples 0.2, 0.8; image 1 agrees (0.1, 0.1); image 2 samples 0, 1.
  McUncertainty u = mc_uncertainty({{0.2, 0.1, 0.0}, {0.8, 0.1, 1.0}});
  const double h02 = -(0.2 * std::log(0.2) + 0.8 * std::log(0.8));
  ASSERT_EQ(u.p_ai.size(), 3u);
  EXPECT_NEAR(u.p_ai[0], 0.5, kTol);
  EXPECT_NEAR(u.predictive_entropy[0], std::log(2.0), kTol);
  EXPECT_NEAR(u.expected_entropy[0], h02, kTol);
  EXPECT_NEAR(u.mutual_information[0], std::log(2.0) - h02, kTol);
  EXPECT_NEAR(u.std_p_ai[0], 0.3, kTol);  // population: sqrt((0.3^2 + 0.3^2) / 2)
  EXPECT_EQ(u.p_ai[1], 0.1);
  EXPECT_NEAR(u.predictive_entropy[1], binary_entropy(0.1), kTol);
  EXPECT_EQ(u.mutual_information[1], 0.0);
  EXPECT_EQ(u.std_p_ai[1], 0.0);
  // Samples certain but disagreeing: all uncertainty is epistemic.
  EXPECT_EQ(u.p_ai[2], 0.5);
  EXPECT_EQ(u.expected_entropy[2], 0.0);
  EXPECT_NEAR(u.mutual_information[2], std::log(2.0), kTol);
  EXPECT_EQ(u.std_p_ai[2], 0.5);
  EXPECT_NEAR(u.mean_predictive_entropy, (2 * std::log(2.0) + binary_entropy(0.1)) / 3, kTol);
  EXPECT_NEAR(u.mean_expected_entropy, (h02 + binary_entropy(0.1)) / 3, kTol);
  EXPECT_NEAR(u.mean_mutual_information, (2 * std::log(2.0) - h02) / 3, kTol);
  EXPECT_NEAR(u.mean_std_p_ai, (0.3 + 0.5) / 3, kTol);
  for (size_t i = 0; i < 3; ++i)
    EXPECT_NEAR(u.predictive_entropy[i], u.expected_entropy[i] + u.mutual_information[i], kTol);
}

TEST(Metrics, AgreeingSamplesGiveExactlyZeroMutualInformation) {
  // Values whose plain sum / S would not round back to themselves (0.1 * 3 / 3 != 0.1).
  for (int samples : {1, 3, 7, 50}) {
    McUncertainty u = mc_uncertainty(std::vector<std::vector<double>>(samples, {0.1, 0.7, 0.333, 1.0, 0.0}));
    EXPECT_EQ(u.p_ai, (std::vector<double>{0.1, 0.7, 0.333, 1.0, 0.0})) << samples;
    for (size_t i = 0; i < 5; ++i) {
      EXPECT_EQ(u.mutual_information[i], 0.0) << samples << " samples, image " << i;
      EXPECT_EQ(u.std_p_ai[i], 0.0) << samples << " samples, image " << i;
    }
  }
}

TEST(Metrics, SelectiveCurveByHandWithTies) {
  // Sorted (stable): #1 (0.1, wrong), #3 (0.1, right), #0 (0.3, right), #2 (0.5, right), #4 (wrong).
  // acc(k), k = 1..5: 0, 1/2, 2/3, 3/4, 3/5.
  SelectiveCurve c = selective_prediction({0.3, 0.1, 0.5, 0.1, 0.9}, {true, false, true, true, false});
  EXPECT_NEAR(c.area, (0 + 0.5 + 2.0 / 3 + 0.75 + 0.6) / 5, kTol);
  EXPECT_NEAR(c.aurc, (1 + 0.5 + 1.0 / 3 + 0.25 + 0.4) / 5, kTol);
  EXPECT_NEAR(c.area + c.aurc, 1.0, kTol);
  ASSERT_EQ(c.points.size(), 10u);
  // level: count = floor(level * 5)
  const std::vector<int64_t> counts = {5, 4, 4, 3, 3, 2, 2, 1, 1, 0};
  const std::vector<double> accs = {0.6, 0.75, 0.75, 2.0 / 3, 2.0 / 3, 0.5, 0.5, 0, 0};
  for (size_t j = 0; j < 10; ++j) {
    EXPECT_NEAR(c.points[j].level, (10 - static_cast<double>(j)) / 10, kTol);
    EXPECT_EQ(c.points[j].count, counts[j]) << "level " << c.points[j].level;
    if (j < 9) {
      EXPECT_NEAR(c.points[j].accuracy, accs[j], kTol) << "level " << c.points[j].level;
    }
  }
  EXPECT_TRUE(std::isnan(c.points[9].accuracy));  // 0.1 * 5 images rounds down to none
  // Ten images: level j/10 keeps exactly j images.
  SelectiveCurve ten = selective_prediction(std::vector<double>(10, 0.0), std::vector<bool>(10, true));
  for (size_t j = 0; j < 10; ++j) EXPECT_EQ(ten.points[j].count, 10 - static_cast<int64_t>(j));
  EXPECT_EQ(ten.area, 1.0);
  EXPECT_EQ(ten.aurc, 0.0);
}

namespace {

SetPredictions bayes_set(const std::string& name, const std::vector<std::vector<double>>& probs,
                         const std::vector<int64_t>& labels) {
  McUncertainty u = mc_uncertainty(probs);
  return {name, u.p_ai, labels, u};
}

}  // namespace

TEST(Metrics, EvaluateASetAndItsJson) {
  SetMetrics m = evaluate({"glide", kP, kY, std::nullopt});
  EXPECT_EQ(m.images, 9);
  EXPECT_NEAR(m.classification.accuracy, 6.0 / 9, kTol);
  EXPECT_NEAR(m.roc_auc, 0.75, kTol);
  EXPECT_EQ(m.nll, negative_log_likelihood(kP, kY));
  EXPECT_EQ(m.brier, brier_score(kP, kY));
  EXPECT_EQ(m.calibration.ece, calibration(kP, kY).ece);
  EXPECT_FALSE(m.bayes);
  // Ranked by entropy = by confidence: 0.9 and 0.1 first, 0.5 last.
  std::vector<double> entropy;
  std::vector<bool> correct;
  for (size_t i = 0; i < kP.size(); ++i) {
    entropy.push_back(binary_entropy(kP[i]));
    correct.push_back(predicted_class(kP[i]) == kY[i]);
  }
  EXPECT_EQ(m.selective_by_entropy.area, selective_prediction(entropy, correct).area);

  Json j = m.to_json();
  for (const char* key : {"name", "images", "accuracy", "roc_auc", "nll", "brier", "ece", "classification_report",
                          "confusion_matrix", "calibration_bins", "selective_by_entropy"})
    EXPECT_TRUE(j.contains(key)) << key;
  EXPECT_FALSE(j.contains("bayes"));
  EXPECT_EQ(j["name"], "glide");
  EXPECT_EQ(j["confusion_matrix"], Json::parse("[[3, 2], [1, 3]]"));
  EXPECT_EQ(j["calibration_bins"].size(), 15u);
  EXPECT_EQ(j["classification_report"]["nature"]["support"], 5);
  EXPECT_EQ(j["selective_by_entropy"]["points"].size(), 10u);
  // NaN (no image at coverage 0.1 of 9) is held as NaN and written as null.
  EXPECT_TRUE(std::isnan(j["selective_by_entropy"]["points"][9]["accuracy"].get<double>()));
  EXPECT_EQ(Json::parse(j.dump())["selective_by_entropy"]["points"][9]["accuracy"], nullptr);

  SetMetrics b = evaluate(bayes_set("adm", {{0.9, 0.2, 0.6, 0.1}, {0.7, 0.4, 0.2, 0.1}}, {1, 0, 1, 0}));
  ASSERT_TRUE(b.bayes);
  // MI per image: images 0-2 disagree, image 3 agrees (MI 0).
  McUncertainty u = mc_uncertainty({{0.9, 0.2, 0.6, 0.1}, {0.7, 0.4, 0.2, 0.1}});
  EXPECT_EQ(b.bayes->mean_mutual_information, u.mean_mutual_information);
  EXPECT_EQ(b.bayes->mean_std_p_ai, u.mean_std_p_ai);
  EXPECT_EQ(b.bayes->selective_by_mutual_information.points[4].count, 2);
  Json bj = b.to_json();
  for (const char* key : {"mean_predictive_entropy", "mean_expected_entropy", "mean_mutual_information",
                          "mean_std_p_ai", "selective_by_mutual_information"})
    EXPECT_TRUE(bj["bayes"].contains(key)) << key;
}

TEST(Metrics, MeanOverSetsAndPooledDiffer) {
  // Set a: 4 images, all right; set b: 2 images, one right.
  SetPredictions a{"a", {0.9, 0.8, 0.1, 0.2}, {1, 1, 0, 0}, std::nullopt};
  SetPredictions b{"b", {0.9, 0.6}, {1, 0}, std::nullopt};
  SetMetrics mean = mean_over_sets("average_over_subsets", {evaluate(a), evaluate(b)});
  SetMetrics pooled = pooled_over_sets("pooled", {a, b});
  EXPECT_EQ(mean.name, "average_over_subsets");
  EXPECT_EQ(mean.images, 6);
  EXPECT_NEAR(mean.classification.accuracy, (1.0 + 0.5) / 2, kTol);
  EXPECT_NEAR(pooled.classification.accuracy, 5.0 / 6, kTol);
  // real recall: a 2/2, b 0/1 -> mean 1/2; pooled 2/3. Supports add up.
  EXPECT_NEAR(mean.classification.real.recall, 0.5, kTol);
  EXPECT_EQ(mean.classification.real.support, 3);
  EXPECT_NEAR(pooled.classification.real.recall, 2.0 / 3, kTol);
  // AUC: a 1, b 1 (0.9 > 0.6) -> mean 1; pooled: ai {0.9, 0.8, 0.9} vs real {0.1, 0.2, 0.6}: 1.
  EXPECT_EQ(mean.roc_auc, 1.0);
  EXPECT_EQ(pooled.roc_auc, 1.0);
  EXPECT_NEAR(mean.brier, ((0.01 + 0.04 + 0.01 + 0.04) / 4 + (0.01 + 0.36) / 2) / 2, kTol);
  EXPECT_NEAR(pooled.brier, (0.01 + 0.04 + 0.01 + 0.04 + 0.01 + 0.36) / 6, kTol);
  EXPECT_EQ(mean.classification.confusion.counts[0][1], 1);
  EXPECT_EQ(mean.classification.confusion.counts[1][1], 3);
  EXPECT_TRUE(mean.calibration.bins.empty());
  EXPECT_EQ(pooled.calibration.bins.size(), 15u);
  EXPECT_NEAR(mean.selective_by_entropy.points[0].accuracy, 0.75, kTol);
  EXPECT_EQ(mean.selective_by_entropy.points[0].count, 6);
  EXPECT_EQ(pooled.to_json()["classification_report"]["ai"]["support"], 3);

  // Bayesian sets: the Monte Carlo means are averaged, or pooled over all images.
  SetPredictions c = bayes_set("c", {{0.2, 0.9}, {0.8, 0.9}}, {0, 1});
  SetPredictions d = bayes_set("d", {{0.1, 0.6, 0.7}, {0.1, 0.6, 0.9}}, {0, 1, 1});
  SetMetrics bm = mean_over_sets("mean", {evaluate(c), evaluate(d)});
  SetMetrics bp = pooled_over_sets("pooled", {c, d});
  ASSERT_TRUE(bm.bayes && bp.bayes);
  EXPECT_NEAR(bm.bayes->mean_mutual_information,
              (c.mc->mean_mutual_information + d.mc->mean_mutual_information) / 2, kTol);
  EXPECT_NEAR(bp.bayes->mean_mutual_information,
              (2 * c.mc->mean_mutual_information + 3 * d.mc->mean_mutual_information) / 5, kTol);
}

TEST(Metrics, EveryInputErrorIsNamed) {
  using V = std::vector<double>;
  using L = std::vector<int64_t>;
  const double nan = std::nan("");
  using BinaryMetric = std::function<void(const V&, const L&)>;
  const std::vector<std::pair<std::string, BinaryMetric>> binary = {
      {"confusion_matrix", [](const V& p, const L& y) { confusion_matrix(p, y); }},
      {"accuracy", [](const V& p, const L& y) { accuracy(p, y); }},
      {"classification_scores", [](const V& p, const L& y) { classification_scores(p, y); }},
      {"classification_report", [](const V& p, const L& y) { classification_report(p, y); }},
      {"roc_auc", [](const V& p, const L& y) { roc_auc(p, y); }},
      {"negative_log_likelihood", [](const V& p, const L& y) { negative_log_likelihood(p, y); }},
      {"brier_score", [](const V& p, const L& y) { brier_score(p, y); }},
      {"calibration", [](const V& p, const L& y) { calibration(p, y); }},
      {"evaluate(x)", [](const V& p, const L& y) { evaluate({"x", p, y, std::nullopt}); }},
      {"pooled_over_sets(all): set 'x'",
       [](const V& p, const L& y) { pooled_over_sets("all", {{"x", p, y, std::nullopt}}); }},
  };
  for (const auto& [name, f] : binary) {
    SCOPED_TRACE(name);
    expect_error([&] { f({}, {}); }, {name, "p_ai is empty"});
    expect_error([&] { f({0.2, 0.7}, {0}); }, {name, "2 probabilities but 1 labels"});
    expect_error([&] { f({0.2, nan}, {0, 1}); }, {name, "p_ai[1] = nan", "[0, 1]"});
    expect_error([&] { f({1.5, 0.2}, {1, 0}); }, {name, "p_ai[0] = 1.5"});
    expect_error([&] { f({0.3, -0.1}, {1, 0}); }, {name, "p_ai[1] = -0.1"});
    expect_error([&] { f({0.3, 0.4}, {1, 2}); }, {name, "labels[1] = 2", "neither 0 (real) nor 1 (ai)"});
    expect_error([&] { f({0.3, 0.4}, {-1, 0}); }, {name, "labels[0] = -1"});
  }
  expect_error([] { roc_auc({0.3, 0.4}, {1, 1}); }, {"roc_auc", "both classes", "2 ai and 0 real"});
  expect_error([] { evaluate({"sdv5", {0.3, 0.4}, {0, 0}, std::nullopt}); },
               {"evaluate(sdv5)", "both classes", "0 ai and 2 real"});
  expect_error([] { calibration({0.3}, {0}, 0); }, {"calibration", "num_bins = 0"});
  expect_error([] { binary_entropy(1.1); }, {"binary_entropy", "p = 1.1"});
  expect_error([&] { binary_entropy(nan); }, {"binary_entropy", "nan"});

  expect_error([] { mc_uncertainty({}); }, {"mc_uncertainty", "S = 0"});
  expect_error([] { mc_uncertainty({{}, {}}); }, {"mc_uncertainty", "no images"});
  expect_error([] { mc_uncertainty({{0.1, 0.2}, {0.3}}); }, {"mc_uncertainty", "sample 1 has 1 images"});
  expect_error([&] { mc_uncertainty({{0.1, 0.2}, {0.3, nan}}); }, {"mc_uncertainty", "probs[1][1] = nan"});
  expect_error([] { mc_uncertainty({{0.1, 2.0}}); }, {"mc_uncertainty", "probs[0][1] = 2"});

  expect_error([] { selective_prediction({}, {}); }, {"selective_prediction", "empty"});
  expect_error([] { selective_prediction({0.1, 0.2}, {true}); },
               {"selective_prediction", "2 uncertainties but 1 correctness flags"});
  expect_error([&] { selective_prediction({0.1, nan}, {true, false}); }, {"selective_prediction", "uncertainty[1]"});

  SetPredictions bayes = bayes_set("adm", {{0.9, 0.2}, {0.7, 0.4}}, {1, 0});
  SetPredictions other_p = bayes;
  other_p.p_ai[0] = 0.5;
  expect_error([&] { evaluate(other_p); }, {"evaluate(adm)", "differs from the Monte Carlo"});
  SetPredictions short_mc = bayes;
  short_mc.mc->mutual_information.pop_back();
  expect_error([&] { evaluate(short_mc); }, {"evaluate(adm)", "Monte Carlo uncertainty for 1 images"});
  SetPredictions plain{"biggan", {0.9, 0.2}, {1, 0}, std::nullopt};
  expect_error([&] { pooled_over_sets("all", {bayes, plain}); }, {"pooled_over_sets(all)", "'biggan' lacks"});
  expect_error([] { pooled_over_sets("all", {}); }, {"pooled_over_sets(all)", "no sets"});
  // Two sets whose size errors would cancel out when concatenated.
  expect_error([] { pooled_over_sets("all", {{"x", {0.9, 0.2, 0.4}, {1, 0}, std::nullopt},
                                             {"y", {0.9}, {1, 0}, std::nullopt}}); },
               {"set 'x'", "3 probabilities but 2 labels"});
  expect_error([&] { mean_over_sets("avg", {evaluate(bayes), evaluate(plain)}); },
               {"mean_over_sets(avg)", "'biggan' lacks"});
  expect_error([] { mean_over_sets("avg", {}); }, {"mean_over_sets(avg)", "no sets"});
  SetMetrics cut = evaluate(plain);
  cut.selective_by_entropy.points.pop_back();
  expect_error([&] { mean_over_sets("avg", {evaluate(plain), cut}); }, {"mean_over_sets", "coverage points"});
}
