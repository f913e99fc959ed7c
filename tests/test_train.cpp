// labels: cpu
// The training run end to end on tiny built-in data: it learns, it writes its files, a
// resumed run ends with exactly the weights of an uninterrupted one, and bad configurations
// are refused before training.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "data/loader.h"
#include "data/synthetic.h"
#include "engine/ops.h"
#include "engine/optim.h"
#include "engine/safetensors.h"
#include "models/resnet.h"
#include "models/train.h"

namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path;
  TempDir() : path(fs::temp_directory_path() / ("train_test_" + std::to_string(::getpid()))) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string sub(const std::string& name) const { return (path / name).string(); }
};

models::TrainOptions tiny(const std::string& out, const std::string& model = "resnet50") {
  models::TrainOptions o;
  o.model = model;
  o.out = out;
  o.epochs = 2;
  o.batch_size = 4;
  o.image_size = 32;
  o.synthetic_size = 32;
  o.synthetic_train = 16;  // 4 steps per epoch, 4 validation images
  o.mc_samples = 3;
  o.workers = 2;
  o.eval_each_epoch = false;
  return o;
}

std::vector<std::pair<std::string, std::vector<double>>> checkpoint_tensors(const std::string& run) {
  auto reader = engine::SafeTensorsReader::open(run + "/checkpoint.safetensors");
  std::vector<std::pair<std::string, std::vector<double>>> out;
  for (const auto& key : reader.keys()) out.emplace_back(key, reader.read(key, engine::DType::F64).to_vector());
  return out;
}

}  // namespace

TEST(Training, ResumedRunEndsWithTheSameWeights) {
  TempDir dir;
  ASSERT_EQ(models::run_training(tiny(dir.sub("straight"), "resnet50_bnn")), 0);
  // stopped mid-epoch (step 3 of 4 in epoch 1), then resumed to the end
  models::TrainOptions first = tiny(dir.sub("resumed"), "resnet50_bnn");
  first.max_steps = 3;
  ASSERT_EQ(models::run_training(first), 0);
  models::TrainOptions second = tiny(dir.sub("resumed"), "resnet50_bnn");
  second.resume = true;
  ASSERT_EQ(models::run_training(second), 0);
  auto a = checkpoint_tensors(dir.sub("straight")), b = checkpoint_tensors(dir.sub("resumed"));
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].first, b[i].first);
    EXPECT_EQ(a[i].second, b[i].second) << a[i].first << " differs after resuming";
  }
  // The run folder holds the results, with per-subset metrics and the class names.
  std::ifstream in(dir.sub("resumed") + "/results.json");
  nlohmann::json results = nlohmann::json::parse(in);
  EXPECT_EQ(results["classes"]["1"], "ai (folder ai or fake)");
  EXPECT_TRUE(results["evaluation"]["subsets"].contains("synthetic"));
  EXPECT_TRUE(results["evaluation"]["pooled"].contains("bayes"));
  EXPECT_TRUE(results["evaluation"]["subsets"]["synthetic"]["classification_report"].contains("nature"));
}

// `trainer --out RUN --resume` with no other flag continues the run as it was configured, and
// a flag that would change the run's result is refused rather than silently applied.
TEST(Training, ResumeTakesTheRunsConfigurationFromItsCheckpoint) {
  TempDir dir;
  ASSERT_EQ(models::run_training(tiny(dir.sub("straight"), "resnet50_attn_bnn")), 0);
  models::TrainOptions first = tiny(dir.sub("resumed"), "resnet50_attn_bnn");
  first.max_steps = 5;  // into the second epoch
  ASSERT_EQ(models::run_training(first), 0);

  auto expect_refused = [&](models::TrainOptions o, const std::string& needle) {
    try {
      models::run_training(o);
      ADD_FAILURE() << "expected a refusal containing " << needle;
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  models::TrainOptions bad;  // the defaults: resnet50, 224x224, batch 32, built-in set of 1024
  bad.out = dir.sub("resumed");
  bad.resume = true;
  bad.image_size = 64;
  bad.given = {"image_size"};
  expect_refused(bad, "--image-size 64 differs from the run's 32");
  bad.image_size = 224;
  bad.model = "resnet50";
  bad.given = {"model"};
  expect_refused(bad, "--model \"resnet50\" differs from the run's \"resnet50_attn_bnn\"");
  bad = models::TrainOptions{};
  bad.out = dir.sub("resumed");
  bad.resume = true;
  bad.lr = 0.5;
  bad.given = {"lr", "epochs"};  // epochs may change, the learning rate may not
  expect_refused(bad, "--lr 0.5 differs from the run's 0.001");

  models::TrainOptions second;  // nothing but the folder: everything else from the checkpoint
  second.out = dir.sub("resumed");
  second.resume = true;
  second.eval_each_epoch = false;
  ASSERT_EQ(models::run_training(second), 0);
  auto a = checkpoint_tensors(dir.sub("straight")), b = checkpoint_tensors(dir.sub("resumed"));
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].first, b[i].first);
    EXPECT_EQ(a[i].second, b[i].second) << a[i].first << " differs after resuming with the stored configuration";
  }
  std::ifstream in(dir.sub("resumed") + "/results.json");
  nlohmann::json config = nlohmann::json::parse(in)["config"];
  EXPECT_EQ(config["model"], "resnet50_attn_bnn");
  EXPECT_EQ(config["image_size"], 32);
  EXPECT_EQ(config["mc_samples"], 3);
  EXPECT_EQ(config["synthetic_images"], 16);

  // An option that only changes how the run goes on is taken: one more epoch.
  models::TrainOptions longer;
  longer.out = dir.sub("resumed");
  longer.resume = true;
  longer.eval_each_epoch = false;
  longer.epochs = 3;
  longer.given = {"epochs"};
  ASSERT_EQ(models::run_training(longer), 0);
  std::ifstream again(dir.sub("resumed") + "/results.json");
  nlohmann::json results = nlohmann::json::parse(again);
  EXPECT_EQ(results["config"]["epochs"], 3);
  EXPECT_EQ(results["training"]["steps"], 12);
}

TEST(Training, RefusesBadConfigurationsBeforeTraining) {
  TempDir dir;
  auto expect_error = [](models::TrainOptions o, const std::string& needle) {
    try {
      models::run_training(o);
      ADD_FAILURE() << "expected an error containing " << needle;
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  models::TrainOptions o = tiny(dir.sub("run"));
  o.model = "vgg16";
  expect_error(o, "unknown model 'vgg16'");
  o = tiny(dir.sub("run"));
  o.data = dir.sub("no_such_folder");
  expect_error(o, "no_such_folder");
  o = tiny(dir.sub("run"));
  o.resume = true;
  expect_error(o, "--resume: no checkpoint");
  o = tiny(dir.sub("run"));
  o.optimizer = "lbfgs";
  expect_error(o, "unknown optimizer 'lbfgs'");
  o = tiny(dir.sub("run"));
  o.max_steps = 1;
  ASSERT_EQ(models::run_training(o), 0);
  expect_error(tiny(dir.sub("run")), "already holds a run");
}

TEST(Training, AFewStepsOnBuiltInDataReduceTheLossForEachVariant) {
  data::SyntheticConfig sc;
  sc.size = 32;
  sc.count = 16;
  auto dataset = std::make_shared<data::SyntheticDataset>(sc, "train");
  data::LoaderConfig lc;
  lc.batch_size = 16;
  lc.workers = 0;
  lc.transform = data::eval_transform(32);
  data::Loader loader(dataset, lc);
  loader.start_epoch(0);
  data::Batch batch = *loader.next();
  for (const std::string& name : models::variant_names()) {
    auto model = models::make_detector(name);
    model->train();
    engine::AdamOptions options;
    options.lr = 1e-4;
    engine::Adam adam(model->named_parameters(), options);
    // The same head noise at every step: the objective is then one fixed function, which
    // small steps must decrease.
    auto loss = [&] {
      engine::Tensor logits = model->head(model->features(batch.images), {5, 0});
      engine::Tensor ce = engine::cross_entropy(logits, batch.labels);
      return model->bayesian() ? engine::add(ce, engine::scale(model->kl(), 1.0 / 1000)) : ce;
    };
    double first = 0, last = 0;
    for (int64_t step = 0; step < 4; ++step) {
      engine::Tensor value = loss();
      (step == 0 ? first : last) = value.item();
      adam.zero_grad();
      value.backward();
      adam.step();
    }
    std::printf("%s: loss %.4f -> %.4f over 4 steps\n", name.c_str(), first, last);
    EXPECT_LT(last, first) << name;
  }
}
