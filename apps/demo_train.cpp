// demo_train: trains a small convolutional network on a two-class image task that it
// generates in memory, and prints loss and accuracy per epoch. A self-contained first run of
// the engine (modules, ops, autograd, optimisers) until the real trainer exists.
//
// The task is a toy version of what the detectors look for. Class 0 ("natural"): smooth
// random colour blobs plus sensor-like noise. Class 1 ("generated"): the same, plus a faint
// period-2 pattern (a checkerboard or stripes), the kind of trace an upsampling layer leaves.
//
//   demo_train                         # Adam, 16x16 images, 8 epochs
//   demo_train --optimizer sgd --lr 0.05 --image-size 32
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <numeric>
#include <optional>
#include <vector>

#include "engine/autograd.h"
#include "engine/nn.h"
#include "engine/optim.h"

using namespace engine;

namespace {

struct Dataset {
  std::vector<float> pixels;  // NHWC, 3 channels
  std::vector<int64_t> labels;
  int64_t size = 0;
  int image_size = 0;
  int64_t image_floats() const { return int64_t{image_size} * image_size * 3; }
};

// Image i of the dataset `seed`: its shapes come from Philox stream (seed, 2i) and its noise
// from (seed, 2i + 1), so a dataset is the same on every machine and any image can be made alone.
void make_image(uint64_t seed, uint64_t index, int label, int size, float* out) {
  constexpr int kBlobs = 4;
  constexpr double kNoiseStd = 0.1;
  std::vector<double> u = Tensor::rand({kBlobs * 6 + 3}, seed, 2 * index, DType::F64).to_vector();
  std::vector<double> noise = Tensor::randn({int64_t{size} * size * 3}, seed, 2 * index + 1, DType::F64).to_vector();
  const double* draw = u.data();
  std::fill(out, out + int64_t{size} * size * 3, 0.0f);
  for (int b = 0; b < kBlobs; ++b, draw += 6) {
    double cy = draw[0] * size, cx = draw[1] * size;
    double radius = size * (0.1 + 0.25 * draw[2]);
    double colour[3] = {2 * draw[3] - 1, 2 * draw[4] - 1, 2 * draw[5] - 1};
    for (int y = 0; y < size; ++y)
      for (int x = 0; x < size; ++x) {
        double d2 = ((y - cy) * (y - cy) + (x - cx) * (x - cx)) / (radius * radius);
        double weight = std::exp(-0.5 * d2);
        for (int c = 0; c < 3; ++c) out[(y * size + x) * 3 + c] += static_cast<float>(weight * colour[c]);
      }
  }
  for (int64_t i = 0; i < int64_t{size} * size * 3; ++i) out[i] += static_cast<float>(kNoiseStd * noise[i]);
  if (label == 0) return;
  // The artefact: +-amplitude alternating every pixel along x, y or both (a checkerboard).
  double amplitude = 0.03 + 0.03 * draw[0];
  int kind = std::min(2, static_cast<int>(draw[1] * 3));
  int phase = draw[2] < 0.5 ? 0 : 1;
  for (int y = 0; y < size; ++y)
    for (int x = 0; x < size; ++x) {
      int parity = kind == 0 ? x : kind == 1 ? y : x + y;
      float value = static_cast<float>((parity + phase) % 2 ? amplitude : -amplitude);
      for (int c = 0; c < 3; ++c) out[(y * size + x) * 3 + c] += value;
    }
}

Dataset make_dataset(int64_t count, int size, uint64_t seed) {
  Dataset d;
  d.size = count;
  d.image_size = size;
  d.pixels.resize(count * d.image_floats());
  for (int64_t i = 0; i < count; ++i) {
    int label = static_cast<int>(i % 2);  // balanced classes
    d.labels.push_back(label);
    make_image(seed, static_cast<uint64_t>(i), label, size, d.pixels.data() + i * d.image_floats());
  }
  return d;
}

// conv-bn-relu, max-pool, conv-bn-relu, global average pool, linear 2.
struct DemoNet : Module {
  std::shared_ptr<nn::Conv2d> conv1, conv2;
  std::shared_ptr<nn::BatchNorm2d> bn1, bn2;
  std::shared_ptr<nn::Linear> fc;
  DemoNet(int width, uint64_t seed) {
    conv1 = register_module("conv1", std::make_shared<nn::Conv2d>(3, width, 3, 1, 1, false, seed + 1));
    bn1 = register_module("bn1", std::make_shared<nn::BatchNorm2d>(width));
    conv2 = register_module("conv2", std::make_shared<nn::Conv2d>(width, 2 * width, 3, 1, 1, false, seed + 2));
    bn2 = register_module("bn2", std::make_shared<nn::BatchNorm2d>(2 * width));
    fc = register_module("fc", std::make_shared<nn::Linear>(2 * width, 2, true, seed + 3));
  }
  Tensor forward(const Tensor& x) {
    Tensor h = max_pool2d(relu((*bn1)((*conv1)(x))), 2, 2, 0);
    h = relu((*bn2)((*conv2)(h)));
    return (*fc)(global_avg_pool(h));
  }
};

// The images order[begin, end) as one [B, H, W, 3] batch, and their labels.
Tensor gather_batch(const Dataset& d, const std::vector<int64_t>& order, int64_t begin, int64_t end,
                    std::vector<int64_t>* labels) {
  Tensor batch = Tensor::empty({end - begin, d.image_size, d.image_size, 3});
  float* out = batch.data<float>();
  labels->clear();
  for (int64_t i = begin; i < end; ++i) {
    const float* image = d.pixels.data() + order[i] * d.image_floats();
    std::copy(image, image + d.image_floats(), out + (i - begin) * d.image_floats());
    labels->push_back(d.labels[order[i]]);
  }
  return batch;
}

int64_t count_correct(const Tensor& logits, const std::vector<int64_t>& labels) {
  std::vector<double> v = logits.to_vector();
  int64_t correct = 0;
  for (size_t i = 0; i < labels.size(); ++i) correct += (v[2 * i + 1] > v[2 * i]) == (labels[i] == 1);
  return correct;
}

// A permutation of [0, n) from the Philox stream (seed, epoch): sort by random keys.
std::vector<int64_t> shuffled(int64_t n, uint64_t seed, uint64_t epoch) {
  std::vector<double> keys = Tensor::rand({n}, seed, epoch, DType::F64).to_vector();
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return keys[a] < keys[b]; });
  return order;
}

struct EpochResult {
  double loss = 0;
  double accuracy = 0;
};

// One pass over `d`; trains when `opt` is given, else evaluates (eval mode, no graph).
EpochResult run_epoch(DemoNet& net, const Dataset& d, const std::vector<int64_t>& order, int64_t batch_size,
                      Optimizer* opt) {
  net.train(opt != nullptr);
  std::optional<NoGradGuard> no_grad;
  if (!opt) no_grad.emplace();
  EpochResult r;
  int64_t correct = 0, seen = 0;
  std::vector<int64_t> labels;
  for (int64_t begin = 0; begin < d.size; begin += batch_size) {
    int64_t end = std::min(d.size, begin + batch_size);
    // Training batch norm needs more than one image; a last batch of one is dropped.
    if (opt && end - begin < 2) break;
    Tensor x = gather_batch(d, order, begin, end, &labels);
    Tensor logits = net.forward(x);
    Tensor loss = cross_entropy(logits, labels);
    if (opt) {
      opt->zero_grad();
      loss.backward();
      opt->step();
    }
    r.loss += loss.item() * static_cast<double>(end - begin);
    correct += count_correct(logits, labels);
    seen += end - begin;
  }
  r.loss /= static_cast<double>(seen);
  r.accuracy = static_cast<double>(correct) / static_cast<double>(seen);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Trains a small conv net on a generated two-class image task (smooth blobs vs blobs "
               "plus a faint period-2 pattern) and prints loss and accuracy per epoch."};
  std::string optimizer = "adam";
  double lr = 0;
  int epochs = 6, image_size = 16, width = 16;
  int64_t batch_size = 32, train_size = 2000, test_size = 500;
  uint64_t seed = 1;
  app.add_option("--optimizer", optimizer, "sgd (momentum 0.9) or adam")
      ->check(CLI::IsMember({"sgd", "adam"}))
      ->capture_default_str();
  app.add_option("--lr", lr, "learning rate (default: 0.002 for adam, 0.05 for sgd)");
  app.add_option("--epochs", epochs, "passes over the training set")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--batch-size", batch_size, "images per step")->check(CLI::Range(2, 4096))->capture_default_str();
  app.add_option("--image-size", image_size, "image height and width")->check(CLI::Range(4, 256))->capture_default_str();
  app.add_option("--width", width, "channels of the first convolution (the second has twice as many)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--train-size", train_size, "training images")->check(CLI::Range(2, 1000000))->capture_default_str();
  app.add_option("--test-size", test_size, "held-out images")->check(CLI::Range(1, 1000000))->capture_default_str();
  app.add_option("--seed", seed, "seed of the data, the initialisation and the shuffling")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (lr == 0) lr = optimizer == "adam" ? 2e-3 : 0.05;

  try {
    auto start = std::chrono::steady_clock::now();
    auto seconds = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
    // Train and test images come from different Philox seeds: no image is in both.
    Dataset train = make_dataset(train_size, image_size, seed * 2);
    Dataset test = make_dataset(test_size, image_size, seed * 2 + 1);
    std::printf("data: %lld training and %lld held-out %dx%d images, generated in %.1f s\n",
                static_cast<long long>(train_size), static_cast<long long>(test_size), image_size, image_size,
                seconds());

    DemoNet net(width, seed);
    std::unique_ptr<Optimizer> opt;
    if (optimizer == "adam") opt = std::make_unique<Adam>(net.named_parameters(), AdamOptions{lr});
    else opt = std::make_unique<SGD>(net.named_parameters(), SgdOptions{lr, 0.9});
    std::printf("model: %lld parameters; optimiser %s, lr %g, batch %lld\n",
                static_cast<long long>(net.num_parameters()), optimizer.c_str(), lr,
                static_cast<long long>(batch_size));

    std::vector<int64_t> test_order(test.size);
    std::iota(test_order.begin(), test_order.end(), 0);
    EpochResult held_out;
    for (int epoch = 1; epoch <= epochs; ++epoch) {
      EpochResult trained = run_epoch(net, train, shuffled(train.size, seed, epoch), batch_size, opt.get());
      held_out = run_epoch(net, test, test_order, batch_size, nullptr);
      std::printf("epoch %2d/%d  train loss %.4f  acc %5.1f%%  |  held-out loss %.4f  acc %5.1f%%  (%.1f s)\n",
                  epoch, epochs, trained.loss, 100 * trained.accuracy, held_out.loss, 100 * held_out.accuracy,
                  seconds());
      std::fflush(stdout);
    }
    std::printf("final held-out accuracy %.1f%% (chance 50%%)\n", 100 * held_out.accuracy);
  } catch (const Error& e) {
    std::fprintf(stderr, "demo_train: %s\n", e.what());
    return 1;
  }
  return 0;
}
