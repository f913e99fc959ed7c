// labels: cpu
// predict on a few small images with random-initialised detectors saved as a checkpoint and
// as plain weights: one row per file in sorted order, a corrupt file as an error row, P(AI)
// equal to Detector::predict_samples on the same preprocessed image, uncertainty for the
// Bayesian heads only, the same scores for the same seed, attention overlays of the model's
// input size, the CSV and JSON outputs and exit statuses, and the usage and model errors.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "data/image.h"
#include "data/transforms.h"
#include "engine/optim.h"
#include "models/checkpoint.h"
#include "models/metrics.h"
#include "models/predict.h"
#include "models/weights.h"

namespace fs = std::filesystem;

namespace {

constexpr int kSize = 32;  // the checkpoint's training image size (its metadata config)

data::Image random_image(int width, int height, uint32_t seed) {
  data::Image image(width, height);
  uint32_t state = seed * 2654435761u + 1;
  for (uint8_t& v : image.pixels) {
    state = state * 1664525u + 1013904223u;
    v = static_cast<uint8_t>(state >> 24);
  }
  return image;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// The images are written once per process, the detectors when first needed.
class Predict : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new fs::path(fs::temp_directory_path() / ("predict_test_" + std::to_string(::getpid())));
    fs::remove_all(*root_);
    fs::create_directories(dir("images/sub"));
    fs::create_directories(dir("extra"));
    data::write_image(dir("images/b.png"), random_image(40, 30, 1));
    data::write_image(dir("images/sub/a.png"), random_image(33, 50, 2));
    data::write_image(dir("images/c.jpg"), random_image(64, 64, 3));
    data::write_image(dir("images/d.bmp"), random_image(32, 32, 4));
    data::write_image(dir("images/sub/c.png"), random_image(32, 40, 6));  // the stem of c.jpg again
    std::ofstream(dir("images/bad.png")) << "this is not a PNG";
    std::ofstream(dir("images/notes.txt")) << "not an image, and not picked up from a folder";
    data::write_image(dir("extra/z.png"), random_image(48, 36, 5));
  }
  static void TearDownTestSuite() {
    fs::remove_all(*root_);
    delete root_;
  }
  static std::string dir(const std::string& name) { return (*root_ / name).string(); }

  // The detectors, written on first use (each test runs in a process of its own under ctest,
  // and a ResNet50 takes a second to build and save).
  static std::string attn_checkpoint() {
    const std::string path = dir("attn.safetensors");
    if (fs::exists(path)) return path;
    auto model = models::make_detector("resnet50_attn_bnn");
    engine::Adam adam(model->named_parameters(), engine::AdamOptions{});
    models::TrainingProgress progress;
    progress.config = nlohmann::json{{"model", "resnet50_attn_bnn"}, {"image_size", kSize}}.dump();
    models::save_checkpoint(path, *model, adam, progress);
    return path;
  }
  static std::string linear_weights() {
    const std::string path = dir("linear.safetensors");
    if (!fs::exists(path)) models::save_weights(*models::make_detector("resnet50"), path);
    return path;
  }

  static models::PredictOptions attn_options() {
    models::PredictOptions o;
    o.inputs = {dir("images"), dir("extra/z.png")};
    o.checkpoint = attn_checkpoint();
    o.mc_samples = 4;
    o.batch_size = 2;  // several batches, one of them holding the bad file's neighbours
    o.workers = 1;
    o.seed = 11;
    return o;
  }
  static models::PredictOptions linear_options() {
    models::PredictOptions o;
    o.inputs = {dir("images"), dir("extra/z.png")};
    o.weights = linear_weights();
    o.model = "resnet50";
    o.image_size = kSize;
    o.workers = 0;
    return o;
  }
  static std::vector<std::string> expected_paths() {
    std::vector<std::string> paths = {dir("images/b.png"), dir("images/sub/a.png"), dir("images/c.jpg"),
                                      dir("images/d.bmp"), dir("images/bad.png"), dir("extra/z.png"),
                                      dir("images/sub/c.png")};
    std::sort(paths.begin(), paths.end());
    return paths;
  }
  static std::vector<std::string> good_paths() {
    std::vector<std::string> paths = expected_paths();
    paths.erase(std::find(paths.begin(), paths.end(), dir("images/bad.png")));
    return paths;
  }

  static fs::path* root_;
};
fs::path* Predict::root_ = nullptr;

// What Detector::predict_samples gives for these files, preprocessed by eval_transform and
// batched together, as [image][head sample] P(AI): what predict must report.
std::vector<std::vector<double>> reference_samples(models::Detector& model, const std::vector<std::string>& paths,
                                                   int size, int samples, uint64_t seed) {
  const int64_t n = static_cast<int64_t>(paths.size()), per_image = int64_t{size} * size * 3;
  engine::Tensor x = engine::Tensor::empty({n, size, size, 3});
  for (int64_t i = 0; i < n; ++i)
    data::transform_image(data::decode_image_file(paths[i]), data::eval_transform(size), 0, 0,
                          x.data<float>() + i * per_image);
  model.eval();
  const engine::Tensor probs = model.predict_samples(x, samples, models::prediction_noise_key(seed));
  const std::vector<double> p = probs.to_vector();
  std::vector<std::vector<double>> out(paths.size());
  for (int64_t s = 0; s < probs.dim(0); ++s)
    for (int64_t i = 0; i < n; ++i) out[i].push_back(p[(s * n + i) * 2 + models::kAI]);
  return out;
}

// predict_files(o) throws an engine::Error whose message holds `expected`.
::testing::AssertionResult fails_with(const models::PredictOptions& o, const std::string& expected) {
  try {
    models::predict_files(o);
  } catch (const engine::Error& e) {
    if (std::string(e.what()).find(expected) != std::string::npos) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << "the error '" << e.what() << "' does not say '" << expected << "'";
  }
  return ::testing::AssertionFailure() << "no error; expected one saying '" << expected << "'";
}

}  // namespace

TEST_F(Predict, BayesianCheckpointScoresEveryFileInSortedOrder) {
  models::PredictOptions o = attn_options();
  o.batch_size = 8;  // every file in one batch, as in the reference below
  const models::PredictionRun run = models::predict_files(o);
  EXPECT_EQ(run.model, "resnet50_attn_bnn");
  EXPECT_EQ(run.image_size, kSize);  // from the checkpoint's config
  EXPECT_TRUE(run.bayesian);
  const std::vector<std::string> paths = expected_paths();
  ASSERT_EQ(run.images.size(), paths.size());
  EXPECT_EQ(run.scored(), paths.size() - 1);

  auto model = models::make_detector("resnet50_attn_bnn");
  models::load_weights(*model, attn_checkpoint(), models::WeightsScope::All, {"optimizer."});
  const std::vector<std::vector<double>> reference =
      reference_samples(*model, good_paths(), kSize, o.mc_samples, o.seed);
  size_t next_good = 0;
  for (size_t i = 0; i < paths.size(); ++i) {
    const models::ImagePrediction& image = run.images[i];
    EXPECT_EQ(image.path, paths[i]);
    if (paths[i] == dir("images/bad.png")) {
      EXPECT_FALSE(image.scored());
      EXPECT_EQ(image.error, "not a JPEG, PNG or BMP image");
      EXPECT_FALSE(image.uncertainty.has_value());
      continue;
    }
    ASSERT_TRUE(image.scored()) << image.path << ": " << image.error;
    EXPECT_GE(image.p_ai, 0.0);
    EXPECT_LE(image.p_ai, 1.0);
    std::vector<std::vector<double>> probs;  // [sample][image], this image only
    for (double p : reference[next_good++]) probs.push_back({p});
    ASSERT_EQ(probs.size(), 4u);
    const models::McUncertainty mc = models::mc_uncertainty(probs);
    EXPECT_EQ(image.p_ai, mc.p_ai[0]) << image.path;
    ASSERT_TRUE(image.uncertainty.has_value());
    EXPECT_EQ(image.uncertainty->predictive_entropy, mc.predictive_entropy[0]);
    EXPECT_EQ(image.uncertainty->expected_entropy, mc.expected_entropy[0]);
    EXPECT_EQ(image.uncertainty->mutual_information, mc.mutual_information[0]);
    EXPECT_EQ(image.uncertainty->std_p_ai, mc.std_p_ai[0]);
    EXPECT_GT(image.uncertainty->std_p_ai, 0.0) << "the head samples should differ";
  }

  // The same seed gives the same scores whatever the batching and worker count (up to the
  // float rounding of other batch shapes); another seed draws other head samples.
  o.batch_size = 2;
  o.workers = 2;
  const models::PredictionRun rebatched = models::predict_files(o);
  o.seed = 12;
  const models::PredictionRun other_seed = models::predict_files(o);
  bool seed_matters = false;
  for (size_t i = 0; i < paths.size(); ++i) {
    if (!run.images[i].scored()) continue;
    EXPECT_NEAR(rebatched.images[i].p_ai, run.images[i].p_ai, 1e-6) << paths[i];
    EXPECT_NEAR(rebatched.images[i].uncertainty->std_p_ai, run.images[i].uncertainty->std_p_ai, 1e-6);
    seed_matters |= std::abs(other_seed.images[i].p_ai - run.images[i].p_ai) > 1e-6;
  }
  EXPECT_TRUE(seed_matters);
}

TEST_F(Predict, LinearHeadFromPlainWeightsWritesCsvWithoutUncertainty) {
  models::PredictOptions o = linear_options();
  o.batch_size = 8;
  o.output = dir("linear.csv");
  ASSERT_EQ(models::run_prediction(o), 0);
  std::istringstream csv(read_text(o.output));
  std::string line, header;
  std::vector<std::string> comments, rows;
  while (std::getline(csv, line)) {
    if (line.rfind("#", 0) == 0)
      comments.push_back(line);
    else if (header.empty())
      header = line;
    else
      rows.push_back(line);
  }
  ASSERT_EQ(comments.size(), 2u);
  EXPECT_NE(comments[0].find("resnet50 from " + linear_weights()), std::string::npos) << comments[0];
  EXPECT_NE(comments[1].find("real (0), ai (1)"), std::string::npos) << comments[1];
  EXPECT_EQ(header, "path,p_ai,class,error");  // no uncertainty columns for the linear head
  const std::vector<std::string> paths = expected_paths();
  ASSERT_EQ(rows.size(), paths.size());

  auto model = models::make_detector("resnet50");
  models::load_weights(*model, linear_weights());
  const std::vector<std::vector<double>> reference = reference_samples(*model, good_paths(), kSize, 50, 0);
  size_t next_good = 0;
  for (size_t i = 0; i < paths.size(); ++i) {
    ASSERT_EQ(rows[i].substr(0, paths[i].size() + 1), paths[i] + ",");
    const std::string fields = rows[i].substr(paths[i].size() + 1);
    if (paths[i] == dir("images/bad.png")) {  // empty fields, then the error, quoted for its comma
      EXPECT_EQ(fields, ",,\"not a JPEG, PNG or BMP image\"");
      continue;
    }
    std::istringstream in(fields);
    std::string p, cls, error;
    std::getline(in, p, ',');
    std::getline(in, cls, ',');
    EXPECT_FALSE(std::getline(in, error)) << "a scored row has an empty error field: " << rows[i];
    const double p_ai = std::stod(p);
    EXPECT_GE(p_ai, 0.0);
    EXPECT_LE(p_ai, 1.0);
    EXPECT_EQ(cls, p_ai >= 0.5 ? "ai" : "real");
    const std::vector<double>& samples = reference[next_good++];
    ASSERT_EQ(samples.size(), 1u) << "the linear head is deterministic";
    EXPECT_NEAR(p_ai, samples[0], 1e-6 * samples[0]) << paths[i] << " (the CSV keeps 7 digits)";
  }
}

TEST_F(Predict, JsonOutputAndExitStatusTwoWhenNothingScores) {
  models::PredictOptions o = attn_options();
  o.inputs = {dir("images/bad.png"), dir("images/missing.png")};
  o.format = "json";
  o.output = dir("none.json");
  EXPECT_EQ(models::run_prediction(o), 2);
  const nlohmann::json j = nlohmann::json::parse(read_text(o.output));
  EXPECT_EQ(j["classes"]["1"], "ai");
  EXPECT_EQ(j["scored"], 0);
  EXPECT_EQ(j["errors"], 2);
  ASSERT_EQ(j["images"].size(), 2u);
  EXPECT_EQ(j["images"][0]["path"], dir("images/bad.png"));
  EXPECT_EQ(j["images"][1]["path"], dir("images/missing.png"));
  EXPECT_NE(j["images"][1]["error"].get<std::string>().find("cannot open"), std::string::npos);
  EXPECT_FALSE(j["images"][0].contains("p_ai"));

  o.inputs = {dir("extra/z.png")};
  EXPECT_EQ(models::run_prediction(o), 0);
  const nlohmann::json one = nlohmann::json::parse(read_text(o.output));
  ASSERT_EQ(one["images"].size(), 1u);
  for (const char* field : {"p_ai", "class", "predictive_entropy", "expected_entropy", "mutual_information",
                            "std_p_ai"})
    EXPECT_TRUE(one["images"][0].contains(field)) << field;
}

TEST_F(Predict, WeightsHoldingNaNGiveErrorRowsNotScores) {
  // A diverged run's weights: every image is an error row that says so, never a NaN score.
  const std::string path = dir("nan.safetensors");
  auto model = models::make_detector("resnet50");
  std::vector<double> bias = model->fc->bias().to_vector();
  bias[0] = std::nan("");
  model->fc->bias().copy_(engine::Tensor::from_vector(bias, {2}));
  models::save_weights(*model, path);
  models::PredictOptions o = linear_options();
  o.weights = path;
  o.inputs = {dir("extra/z.png"), dir("images/d.bmp")};
  const models::PredictionRun run = models::predict_files(o);
  ASSERT_EQ(run.images.size(), 2u);
  for (const models::ImagePrediction& image : run.images) {
    EXPECT_FALSE(image.scored()) << image.path;
    EXPECT_NE(image.error.find("not finite"), std::string::npos) << image.error;
  }
  EXPECT_EQ(models::run_prediction(o), 2);  // nothing scored
}

TEST_F(Predict, AttentionOverlaysAtTheModelInputSize) {
  models::PredictOptions o = attn_options();
  o.image_size = 64;  // layer4 is 2x2 here: a map worth upsampling
  o.attention_dir = dir("maps");
  const models::PredictionRun run = models::predict_files(o);
  EXPECT_EQ(run.image_size, 64);
  for (const auto& image : run.images) {
    if (!image.scored()) {
      EXPECT_EQ(image.attention_png, "");
      continue;
    }
    // sub/c.png comes after c.jpg in sorted order: its overlay takes the next free name.
    const std::string name = image.path == dir("images/sub/c.png")
                                 ? "c_attention_2.png"
                                 : fs::path(image.path).stem().string() + "_attention.png";
    EXPECT_EQ(image.attention_png, (fs::path(dir("maps")) / name).string());
    const data::Image png = data::decode_image_file(image.attention_png);
    EXPECT_EQ(png.width, 64);
    EXPECT_EQ(png.height, 64);
  }
  EXPECT_FALSE(fs::exists(dir("maps/bad_attention.png")));
}

TEST_F(Predict, UsageAndModelErrors) {
  models::PredictOptions o = attn_options();
  o.checkpoint = dir("missing.safetensors");
  EXPECT_TRUE(fails_with(o, "--checkpoint " + dir("missing.safetensors") + ": cannot open"));

  o = linear_options();
  o.attention_dir = dir("no_maps");
  EXPECT_TRUE(fails_with(o, "--attention-dir: resnet50 has no spatial attention"));
  EXPECT_FALSE(fs::exists(dir("no_maps"))) << "refused before anything is written";

  o = attn_options();
  o.model = "resnet50_bnn";
  EXPECT_TRUE(fails_with(o, "holds a resnet50_attn_bnn model, not --model resnet50_bnn"));

  o = linear_options();
  o.model = "";
  EXPECT_TRUE(fails_with(o, "a plain weights file does not name its model; add --model NAME"));

  o = linear_options();
  o.model = "resnet50_bnn";  // a plain file of another model: its tensors do not fit
  EXPECT_TRUE(fails_with(o, linear_weights()));

  o = linear_options();
  o.checkpoint = o.weights;
  EXPECT_TRUE(fails_with(o, "not both"));

  o = linear_options();
  o.format = "xml";
  EXPECT_TRUE(fails_with(o, "--format must be csv or json"));

  fs::create_directories(dir("empty"));
  o = linear_options();
  o.inputs = {dir("extra/z.png"), dir("empty")};
  EXPECT_TRUE(fails_with(o, "folder '" + dir("empty") + "' has no images"));
}
