// labels: cpu
// The module tree: PyTorch-style dotted names, state dicts and their loading, train/eval
// propagation, devices, gradients.
#include <gtest/gtest.h>

#include "engine/module.h"
#include "engine/ops.h"
#ifdef ENGINE_WITH_CUDA
#include "kernels/cuda/runtime.h"
#endif

using namespace engine;

namespace {

// Stand-ins for layers, built without any op so this file tests the tree alone.
struct Weighted : Module {
  Tensor weight;
  explicit Weighted(const Shape& shape, uint64_t seed = 1) {
    weight = register_parameter("weight", Tensor::randn(shape, seed));
  }
};

struct Norm : Module {
  Tensor weight, bias, running_mean;
  explicit Norm(int64_t c) {
    weight = register_parameter("weight", Tensor::full({c}, 1.0));
    bias = register_parameter("bias", Tensor::zeros({c}));
    running_mean = register_buffer("running_mean", Tensor::zeros({c}));
    register_buffer("num_batches_tracked", Tensor::zeros({1}));
  }
};

struct Container : Module {};  // children registered from outside, as "0", "1", ...

struct Block : Module {
  std::shared_ptr<Weighted> conv1;
  explicit Block(bool with_downsample) {
    conv1 = register_module("conv1", std::make_shared<Weighted>(Shape{4, 3, 3, 2}));
    register_module("bn1", std::make_shared<Norm>(4));
    if (with_downsample) {
      auto downsample = register_module("downsample", std::make_shared<Container>());
      downsample->register_module("0", std::make_shared<Weighted>(Shape{4, 1, 1, 2}));
      downsample->register_module("1", std::make_shared<Norm>(4));
    }
  }
};

// A miniature ResNet: conv1, bn1, layer1 = [Block with downsample, Block], fc.
struct Net : Module {
  std::shared_ptr<Weighted> conv1;
  std::shared_ptr<Container> layer1;
  Net() {
    conv1 = register_module("conv1", std::make_shared<Weighted>(Shape{2, 3, 3, 3}));
    register_module("bn1", std::make_shared<Norm>(2));
    layer1 = register_module("layer1", std::make_shared<Container>());
    layer1->register_module("0", std::make_shared<Block>(true));
    layer1->register_module("1", std::make_shared<Block>(false));
    register_module("fc", std::make_shared<Weighted>(Shape{2, 4}));
  }
};

std::vector<std::string> names_of(const std::vector<NamedTensor>& list) {
  std::vector<std::string> out;
  for (const auto& entry : list) out.push_back(entry.first);
  return out;
}

// Runs fn, expecting an engine::Error whose message contains every needle.
template <typename Fn>
void expect_error(Fn fn, const std::vector<std::string>& needles) {
  try {
    fn();
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    for (const auto& needle : needles)
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << "'" << needle << "' not in: " << e.what();
  }
}

}  // namespace

TEST(Module, NamesAreTorchStateDictKeys) {
  Net net;
  EXPECT_EQ(names_of(net.named_parameters()),
            (std::vector<std::string>{"conv1.weight", "bn1.weight", "bn1.bias", "layer1.0.conv1.weight",
                                      "layer1.0.bn1.weight", "layer1.0.bn1.bias",
                                      "layer1.0.downsample.0.weight", "layer1.0.downsample.1.weight",
                                      "layer1.0.downsample.1.bias", "layer1.1.conv1.weight",
                                      "layer1.1.bn1.weight", "layer1.1.bn1.bias", "fc.weight"}));
  EXPECT_EQ(names_of(net.named_buffers()),
            (std::vector<std::string>{"bn1.running_mean", "bn1.num_batches_tracked",
                                      "layer1.0.bn1.running_mean", "layer1.0.bn1.num_batches_tracked",
                                      "layer1.0.downsample.1.running_mean",
                                      "layer1.0.downsample.1.num_batches_tracked",
                                      "layer1.1.bn1.running_mean", "layer1.1.bn1.num_batches_tracked"}));
  // state_dict: each module's parameters, then its buffers, then its children (PyTorch's order)
  std::vector<std::string> keys = net.state_dict().keys();
  ASSERT_EQ(keys.size(), 13u + 8u);
  EXPECT_EQ(std::vector<std::string>(keys.begin(), keys.begin() + 6),
            (std::vector<std::string>{"conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean",
                                      "bn1.num_batches_tracked", "layer1.0.conv1.weight"}));
  EXPECT_EQ(keys.back(), "fc.weight");

  std::vector<std::string> module_names;
  for (auto& [name, module] : net.named_modules()) module_names.push_back(name);
  EXPECT_EQ(module_names, (std::vector<std::string>{"", "conv1", "bn1", "layer1", "layer1.0", "layer1.0.conv1",
                                                    "layer1.0.bn1", "layer1.0.downsample",
                                                    "layer1.0.downsample.0", "layer1.0.downsample.1",
                                                    "layer1.1", "layer1.1.conv1", "layer1.1.bn1", "fc"}));
  EXPECT_EQ(net.named_children().size(), 4u);
}

TEST(Module, ParametersRequireGradAndAreCounted) {
  Net net;
  int64_t expected = 2 * 27 + 2 * 2 + (72 + 8 + 8 + 8) + (72 + 8) + 8;
  EXPECT_EQ(net.num_parameters(), expected);
  for (const Tensor& p : net.parameters()) EXPECT_TRUE(p.requires_grad());
  for (const auto& [name, b] : net.named_buffers()) EXPECT_FALSE(b.requires_grad()) << name;
  EXPECT_TRUE(net.conv1->weight.shares_storage(net.named_parameters()[0].second));
}

TEST(Module, TiedWeightsAreListedOnceButKeptInStateDict) {
  Container net;
  auto a = net.register_module("a", std::make_shared<Weighted>(Shape{3}));
  auto b = net.register_module("b", std::make_shared<Container>());
  b->register_parameter("tied", a->weight);
  EXPECT_EQ(names_of(net.named_parameters()), (std::vector<std::string>{"a.weight"}));
  EXPECT_EQ(net.num_parameters(), 3);
  EXPECT_EQ(net.state_dict().keys(), (std::vector<std::string>{"a.weight", "b.tied"}));
}

TEST(Module, RegistrationRejectsBadNames) {
  Container m;
  m.register_parameter("w", Tensor::zeros({1}));
  expect_error([&] { m.register_buffer("w", Tensor::zeros({1})); }, {"'w'", "already taken"});
  expect_error([&] { m.register_module("a.b", std::make_shared<Container>()); }, {"'a.b'", "no '.'"});
  expect_error([&] { m.register_parameter("u", Tensor()); }, {"'u'", "undefined"});
  expect_error([&] { m.register_module("c", std::shared_ptr<Container>()); }, {"'c'", "null"});
}

TEST(Module, StateDictRoundTrip) {
  Net source, target;
  // Different values everywhere in the source.
  for (auto [name, t] : source.state_dict()) t.copy_(Tensor::randn(t.shape(), 7));
  StateDict state = source.state_dict();
  EXPECT_TRUE(state.at("conv1.weight").shares_storage(source.conv1->weight));
  EXPECT_FALSE(state.at("conv1.weight").requires_grad());

  Tensor held = target.conv1->weight;  // a handle taken before the load
  LoadStateDictResult result = target.load_state_dict(state);
  EXPECT_TRUE(result.ok());
  for (const auto& [name, t] : target.state_dict())
    EXPECT_EQ(t.to_vector(), state.at(name).to_vector()) << name;
  EXPECT_EQ(held.to_vector(), source.conv1->weight.to_vector());
  EXPECT_FALSE(held.shares_storage(source.conv1->weight));  // copied, not aliased
  EXPECT_TRUE(held.requires_grad());

  // Loading a module's own state is a no-op; f64 values are converted to the module's f32.
  EXPECT_NO_THROW(target.load_state_dict(target.state_dict()));
  StateDict f64;
  for (const auto& [name, t] : state) f64.set(name, Tensor::full(t.shape(), 0.25, DType::F64));
  target.load_state_dict(f64);
  EXPECT_EQ(target.conv1->weight.dtype(), DType::F32);
  EXPECT_EQ(target.conv1->weight.to_vector()[5], 0.25);
}

TEST(Module, LoadStateDictNamesEveryBadKey) {
  Net net;
  std::vector<double> before = net.conv1->weight.to_vector();
  StateDict state;
  for (const auto& [name, t] : net.state_dict()) state.set(name, Tensor::zeros(t.shape()));
  StateDict broken;
  for (const auto& [name, t] : state) {
    if (name == "fc.weight" || name == "layer1.0.bn1.running_mean") continue;  // missing
    if (name == "layer1.1.conv1.weight") broken.set(name, Tensor::zeros({4, 3, 3, 3}));  // mis-shaped
    else broken.set(name, t);
  }
  broken.set("fc.bias", Tensor::zeros({2}));  // unexpected
  expect_error([&] { net.load_state_dict(broken); },
               {"missing keys (2): 'layer1.0.bn1.running_mean'; 'fc.weight'", "unexpected keys (1): 'fc.bias'",
                "'layer1.1.conv1.weight': checkpoint f32[4, 3, 3, 3] cpu, module f32[4, 3, 3, 2] cpu"});
  EXPECT_EQ(net.conv1->weight.to_vector(), before);  // nothing was copied

  // Not strict: a shape mismatch still throws (as in PyTorch) ...
  expect_error([&] { net.load_state_dict(broken, false); }, {"shape or dtype mismatches (1)", "'layer1.1.conv1.weight'"});
  EXPECT_EQ(net.conv1->weight.to_vector(), before);
  // ... missing and unexpected keys are reported, and everything else is loaded.
  broken.set("layer1.1.conv1.weight", Tensor::empty({4, 3, 3, 2}, DType::BF16));
  expect_error([&] { net.load_state_dict(broken, false); },
               {"'layer1.1.conv1.weight': checkpoint bf16[4, 3, 3, 2] cpu, module f32[4, 3, 3, 2] cpu"});
  broken.set("layer1.1.conv1.weight", state.at("layer1.1.conv1.weight"));
  LoadStateDictResult result = net.load_state_dict(broken, false);
  EXPECT_EQ(result.missing_keys, (std::vector<std::string>{"layer1.0.bn1.running_mean", "fc.weight"}));
  EXPECT_EQ(result.unexpected_keys, (std::vector<std::string>{"fc.bias"}));
  EXPECT_EQ(net.conv1->weight.to_vector(), std::vector<double>(54, 0.0));
}

TEST(Module, TrainAndEvalPropagate) {
  Net net;
  auto all_modes = [&] {
    std::vector<bool> modes;
    for (auto& [name, m] : net.named_modules()) modes.push_back(m->is_training());
    return modes;
  };
  size_t count = net.named_modules().size();
  EXPECT_EQ(all_modes(), std::vector<bool>(count, true));  // modules start in training mode
  net.eval();
  EXPECT_EQ(all_modes(), std::vector<bool>(count, false));
  net.layer1->train();  // a subtree alone
  EXPECT_FALSE(net.is_training());
  EXPECT_FALSE(net.conv1->is_training());
  for (auto& [name, m] : net.layer1->named_modules()) EXPECT_TRUE(m->is_training()) << name;
  net.train(true);
  EXPECT_EQ(all_modes(), std::vector<bool>(count, true));
}

TEST(Module, ZeroGradDropsGradients) {
  Net net;
  sum(mul(net.conv1->weight, net.conv1->weight)).backward();
  ASSERT_TRUE(net.conv1->weight.grad().defined());
  net.zero_grad();
  for (const Tensor& p : net.parameters()) EXPECT_FALSE(p.grad().defined());
}

TEST(Module, ToCpuKeepsHandlesAndStorage) {
  Net net;
  Tensor held = net.conv1->weight;
  sum(held).backward();
  const void* data = held.raw_data();
  const void* grad = held.grad().raw_data();
  net.to(Device::CPU);
  EXPECT_EQ(held.raw_data(), data);
  EXPECT_EQ(held.grad().raw_data(), grad);
  EXPECT_EQ(held.device(), Device::CPU);
  EXPECT_TRUE(held.shares_storage(net.named_parameters()[0].second));
}

TEST(Module, ToCudaAndBackKeepsHandlesAndValues) {
#ifdef ENGINE_WITH_CUDA
  std::string why;
  if (!kernels::cuda::available(&why)) GTEST_SKIP() << "no usable GPU: " << why;
  Net net;
  Tensor held = net.conv1->weight;
  sum(held).backward();
  std::vector<double> values = held.to_vector(), grad = held.grad().to_vector();
  net.to(Device::CUDA);
  for (const auto& [name, t] : net.state_dict()) EXPECT_EQ(t.device(), Device::CUDA) << name;
  EXPECT_EQ(held.device(), Device::CUDA);
  EXPECT_EQ(held.grad().device(), Device::CUDA);
  EXPECT_EQ(held.to_vector(), values);
  net.to(Device::CPU);
  EXPECT_EQ(held.device(), Device::CPU);
  EXPECT_EQ(held.to_vector(), values);
  EXPECT_EQ(held.grad().to_vector(), grad);
#else
  GTEST_SKIP() << "this build has no CUDA backend";
#endif
}

TEST(StateDict, KeepsInsertionOrderAndReplacesInPlace) {
  StateDict d;
  d.set("b", Tensor::zeros({1}));
  d.set("a", Tensor::zeros({2}));
  d.set("b", Tensor::zeros({3}));
  EXPECT_EQ(d.keys(), (std::vector<std::string>{"b", "a"}));
  EXPECT_EQ(d.at("b").numel(), 3);
  EXPECT_TRUE(d.contains("a"));
  EXPECT_EQ(d.find("c"), nullptr);
  expect_error([&] { d.at("c"); }, {"no key 'c'"});
}
