// labels: cpu
// The detectors: structure (torchvision's names and parameter counts), shapes at several
// input sizes, and weight loading (layouts, the backbone-only option, every error case).
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <set>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/safetensors.h"
#include "models/resnet.h"
#include "models/summary.h"
#include "models/weights.h"

using namespace engine;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path;
  TempDir() : path(fs::temp_directory_path() / ("models_test_" + std::to_string(::getpid()))) {
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

template <typename F>
void expect_error(F fn, const std::vector<std::string>& needles) {
  try {
    fn();
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    for (const auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what();
  }
}

}  // namespace

TEST(Models, ParameterCountsMatchTorchvision) {
  models::DetectorOptions imagenet;
  imagenet.num_classes = 1000;
  EXPECT_EQ(models::make_detector("resnet50", imagenet)->num_parameters(), 25557032);  // torchvision
  const int64_t backbone = 25557032 - (2048 * 1000 + 1000);
  EXPECT_EQ(models::make_detector("resnet50")->num_parameters(), backbone + 2048 * 2 + 2);
  EXPECT_EQ(models::make_detector("resnet50_bnn")->num_parameters(), backbone + 2 * (2048 * 2 + 2));
  EXPECT_EQ(models::make_detector("resnet50_attn_bnn")->num_parameters(),
            backbone + 2 * (2048 * 2 + 2) + 2 * 7 * 7 + 1);
}

TEST(Models, TorchvisionKeyNames) {
  auto model = models::make_detector("resnet50_attn_bnn");
  std::set<std::string> keys;
  for (const auto& [name, t] : model->state_dict()) keys.insert(name);
  EXPECT_EQ(keys.size(), 320u - 2 + 4 + 2);  // torchvision's 320, fc.{weight,bias} -> 4 + attention 2
  for (const char* k : {"conv1.weight", "bn1.running_mean", "bn1.num_batches_tracked", "layer1.0.conv1.weight",
                        "layer1.0.downsample.0.weight", "layer1.0.downsample.1.running_var",
                        "layer2.0.conv2.weight", "layer4.2.bn3.num_batches_tracked", "fc.mu_weight",
                        "fc.rho_weight", "fc.mu_bias", "fc.rho_bias", "attention.conv.weight",
                        "attention.conv.bias"})
    EXPECT_TRUE(keys.count(k)) << k;
  EXPECT_FALSE(keys.count("layer1.1.downsample.0.weight"));
  // v1.5: the stride sits on the 3x3 convolution
  auto layer2_block0 = model->layers[1]->named_children()[0].second;
  auto* b = dynamic_cast<models::Bottleneck*>(layer2_block0.get());
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->conv1->stride(), 1);
  EXPECT_EQ(b->conv2->stride(), 2);
}

TEST(Models, ShapesAtSeveralInputSizes) {
  NoGradGuard no_grad;
  for (const std::string& name : models::variant_names()) {
    auto model = models::make_detector(name);
    model->eval();
    for (auto [h, w] : {std::pair<int64_t, int64_t>{32, 32}, {48, 64}}) {
      Tensor x = Tensor::randn({2, h, w, 3}, 5);
      Tensor f = model->features(x);
      EXPECT_EQ(f.shape(), (Shape{2, 2048})) << name;
      EXPECT_EQ(model->head(f, {1, 0}).shape(), (Shape{2, 2})) << name;
      EXPECT_EQ(model->head_mean(f).shape(), (Shape{2, 2})) << name;
    }
    if (name == "resnet50_attn_bnn") {
      EXPECT_EQ(model->attention_map(Tensor::randn({1, 64, 64, 3}, 6)).shape(), (Shape{1, 2, 2, 1}));
    }
    expect_error([&] { model->features(Tensor::randn({1, 16, 16, 3}, 1)); }, {name, "at least 32x32"});
    expect_error([&] { model->features(Tensor::randn({1, 32, 32, 1}, 1)); }, {name, "NHWC [N, H, W, 3]"});
  }
  expect_error([] { models::make_detector("resnet18"); }, {"unknown model 'resnet18'", "resnet50_attn_bnn"});
}

TEST(Models, BayesianHeadSamplesDifferPerKeyAndKlIsPositive) {
  NoGradGuard no_grad;
  auto model = models::make_detector("resnet50_bnn");
  Tensor f = Tensor::randn({3, 2048}, 2);
  std::vector<double> a = model->head(f, {7, 0}).to_vector(), b = model->head(f, {7, 0}).to_vector(),
                      c = model->head(f, {7, 1}).to_vector();
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_GT(model->kl().item(), 0);
  expect_error([] { models::make_detector("resnet50")->kl(); }, {"resnet50 has no Bayesian head"});
}

TEST(Weights, LayoutConversionRoundTrip) {
  Tensor oihw = Tensor::randn({4, 3, 2, 5}, 1);
  Tensor krsc = models::oihw_to_krsc(oihw);
  EXPECT_EQ(krsc.shape(), (Shape{4, 2, 5, 3}));
  std::vector<double> o = oihw.to_vector(), k = krsc.to_vector();
  // element [k=1][c=2][r=1][s=3]
  EXPECT_EQ(k[((1 * 2 + 1) * 5 + 3) * 3 + 2], o[((1 * 3 + 2) * 2 + 1) * 5 + 3]);
  EXPECT_EQ(models::krsc_to_oihw(krsc).to_vector(), o);
}

TEST(Weights, SaveLoadRoundTripAndBackboneOnly) {
  TempDir dir;
  models::DetectorOptions imagenet;
  imagenet.num_classes = 1000;
  imagenet.seed = 11;
  auto source = models::make_detector("resnet50", imagenet);
  models::save_weights(*source, dir.file("imagenet.safetensors"));

  // The file holds torchvision's layout.
  auto reader = SafeTensorsReader::open(dir.file("imagenet.safetensors"));
  EXPECT_EQ(reader.info("conv1.weight").shape, (Shape{64, 3, 7, 7}));
  EXPECT_EQ(reader.info("fc.weight").shape, (Shape{1000, 2048}));

  // Full load into the same architecture: everything equal.
  auto same = models::make_detector("resnet50", imagenet);
  models::load_weights(*same, dir.file("imagenet.safetensors"));
  EXPECT_EQ(same->state_dict().at("layer3.2.conv2.weight").to_vector(),
            source->state_dict().at("layer3.2.conv2.weight").to_vector());

  // A 2-class detector: the 1000-class head does not fit...
  auto detector = models::make_detector("resnet50_attn_bnn");
  expect_error([&] { models::load_weights(*detector, dir.file("imagenet.safetensors")); },
               {"imagenet.safetensors", "fc.mu_weight", "load the backbone only"});
  // ...so the backbone alone is loaded, and the head and attention keep their initialisation.
  Tensor head_before = detector->state_dict().at("fc.mu_weight").clone();
  models::WeightsReport report =
      models::load_weights(*detector, dir.file("imagenet.safetensors"), models::WeightsScope::Backbone);
  EXPECT_EQ(report.loaded, 318u);
  EXPECT_EQ(report.skipped.size(), 6u);
  EXPECT_EQ(report.ignored.size(), 2u);
  EXPECT_EQ(detector->state_dict().at("conv1.weight").to_vector(),
            source->state_dict().at("conv1.weight").to_vector());
  EXPECT_EQ(detector->state_dict().at("fc.mu_weight").to_vector(), head_before.to_vector());
}

TEST(Weights, BadFilesAreClearErrors) {
  TempDir dir;
  auto model = models::make_detector("resnet50");
  // not a ResNet at all
  write_safetensors(dir.file("other.safetensors"), {{"encoder.weight", Tensor::zeros({3, 3})}});
  expect_error([&] { models::load_weights(*model, dir.file("other.safetensors")); },
               {"other.safetensors", "is this a checkpoint of this architecture", "encoder.weight"});
  // one tensor missing, one with a wrong shape
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& [name, t] : model->state_dict()) {
    if (name == "layer2.1.bn2.bias") continue;
    tensors.emplace_back(name, name == "layer1.0.conv2.weight" ? Tensor::zeros({64, 64, 1, 1})
                                                               : (t.ndim() == 4 ? models::krsc_to_oihw(t) : t));
  }
  write_safetensors(dir.file("damaged.safetensors"), tensors);
  Tensor before = model->state_dict().at("conv1.weight").clone();
  expect_error([&] { models::load_weights(*model, dir.file("damaged.safetensors")); },
               {"missing from the file: layer2.1.bn2.bias",
                "layer1.0.conv2.weight (file [64, 64, 1, 1], model expects [64, 64, 3, 3])"});
  // nothing was changed by the failed load
  EXPECT_EQ(model->state_dict().at("conv1.weight").to_vector(), before.to_vector());
  // a missing file and a truncated file
  expect_error([&] { models::load_weights(*model, dir.file("absent.safetensors")); }, {"absent.safetensors"});
  models::save_weights(*model, dir.file("good.safetensors"));
  fs::resize_file(dir.file("good.safetensors"), fs::file_size(dir.file("good.safetensors")) / 2);
  expect_error([&] { models::load_weights(*model, dir.file("good.safetensors")); }, {"good.safetensors"});
}

TEST(Models, SummaryCountsParametersAndMacs) {
  models::DetectorOptions imagenet;
  imagenet.num_classes = 1000;
  auto model = models::make_detector("resnet50", imagenet);
  models::ModelSummary s = models::summarize(*model, 224, 224);
  EXPECT_EQ(s.parameters, 25557032);
  int64_t listed = 0;
  for (const auto& l : s.layers) listed += l.parameters;
  EXPECT_EQ(listed, s.parameters);  // every parameter belongs to one listed layer
  // torchvision's documented 4.09 GFLOPS (multiply-accumulates) for ResNet50 at 224x224
  EXPECT_NEAR(s.macs / 1e9, 4.09, 0.01);
  EXPECT_EQ(s.layers.back().output, (Shape{1000}));
  EXPECT_NE(s.to_string().find("layer4.2.conv3"), std::string::npos);
  auto attn = models::make_detector("resnet50_attn_bnn");
  models::ModelSummary a = models::summarize(*attn, 64, 64);
  EXPECT_EQ(a.parameters, attn->num_parameters());
  bool found = false;
  for (const auto& l : a.layers)
    if (l.name == "attention.conv") {
      found = true;
      EXPECT_EQ(l.output, (Shape{2, 2, 1}));
    }
  EXPECT_TRUE(found);
}

TEST(Models, MonteCarloPredictionSamplesOnlyTheHead) {
  auto model = models::make_detector("resnet50_attn_bnn");
  model->eval();
  Tensor x = Tensor::randn({2, 32, 32, 3}, 3);
  Tensor p = model->predict_samples(x, 5, {9, 100});
  ASSERT_EQ(p.shape(), (Shape{5, 2, 2}));
  std::vector<double> v = p.to_vector();
  for (size_t i = 0; i < v.size(); i += 2) EXPECT_NEAR(v[i] + v[i + 1], 1.0, 1e-6);
  // sample s is the head drawn with offset 100 + s on the same features
  NoGradGuard no_grad;
  Tensor third = softmax(model->head(model->features(x), {9, 102}));
  std::vector<double> t = third.to_vector();
  for (size_t i = 0; i < t.size(); ++i) EXPECT_NEAR(v[2 * 4 + i], t[i], 1e-6);
  EXPECT_NE(v[0], v[4]);  // different draws differ
  auto plain = models::make_detector("resnet50");
  EXPECT_EQ(plain->predict_samples(x, 50, {1, 0}).shape(), (Shape{1, 2, 2}));
}
