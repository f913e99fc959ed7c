// labels: cuda
// The optimisers' fused CUDA updates against the CPU backend: SGD (plain, momentum with
// dampening, Nesterov, weight decay), Adam (with L2 decay) and AdamW, five steps of fresh
// random gradients over parameters of several sizes (1 to 300,000 elements), float32 and
// float64; the state lives on the GPU, exports and restores there, and parameters without a
// gradient are left alone. Device allocations are poisoned (NaN), so a state buffer the
// kernels fail to initialise shows.
// Error measure: max |gpu - cpu| / max |cpu| per tensor (parameter and each state buffer).
// Tolerances: f64 1e-12; f32 2e-6. The per-element formulas are the same code
// (kernels/common/optim.h); the GPU may fuse a multiply and an add where the CPU rounds twice,
// an ulp (1.2e-7 relative) here and there per step, compounding over 5 steps to a few ulps.
#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cuda_compare.h"
#include "cuda_util.h"
#include "engine/optim.h"

using namespace engine;

namespace {

const std::vector<Shape> kShapes = {{1}, {7}, {33, 31}, {300000}, {64, 3, 3, 17}};

using MakeOptimizer = std::function<std::unique_ptr<Optimizer>(std::vector<NamedTensor>)>;

struct Run {
  std::vector<Tensor> params;
  OptimizerState state;
};

// Five steps on `device` from the same start and the same gradients (on the CPU, random).
Run five_steps(const MakeOptimizer& make, DType dtype, Device device) {
  std::vector<NamedTensor> named;
  std::vector<Tensor> params;
  for (size_t i = 0; i < kShapes.size(); ++i) {
    Tensor p = Tensor::randn(kShapes[i], 100 + i, 0, dtype).to(device).set_requires_grad(true);
    params.push_back(p);
    named.emplace_back("p" + std::to_string(i), p);
  }
  std::unique_ptr<Optimizer> opt = make(named);
  for (uint64_t step = 0; step < 5; ++step) {
    for (size_t i = 0; i < params.size(); ++i)
      params[i].set_grad(Tensor::randn(kShapes[i], 200 + i, step + 1, dtype).to(device));
    opt->step();
  }
  return {params, opt->state()};
}

void compare(const char* name, const MakeOptimizer& make) {
  for (DType dtype : {DType::F32, DType::F64}) {
    SCOPED_TRACE(std::string(name) + " " + dtype_name(dtype));
    testing_util::PoisonDeviceAllocations poison;
    const double tol = dtype == DType::F32 ? 2e-6 : 1e-12;
    Run cpu = five_steps(make, dtype, Device::CPU), gpu = five_steps(make, dtype, Device::CUDA);
    for (size_t i = 0; i < cpu.params.size(); ++i) {
      ASSERT_EQ(gpu.params[i].device(), Device::CUDA);
      EXPECT_LE(testing_util::normwise_error(gpu.params[i], cpu.params[i]), tol) << "parameter p" << i;
    }
    EXPECT_EQ(gpu.state.scalars, cpu.state.scalars);
    ASSERT_EQ(gpu.state.tensors.size(), cpu.state.tensors.size());
    for (const auto& [key, t] : cpu.state.tensors) {
      const Tensor* g = gpu.state.tensors.find(key);
      ASSERT_TRUE(g) << key;
      EXPECT_EQ(g->device(), Device::CUDA) << key << ": the state lives on the parameter's device";
      EXPECT_LE(testing_util::normwise_error(*g, t), tol) << key;
    }
  }
}

}  // namespace

TEST(CudaOptim, SgdMatchesCpu) {
  REQUIRE_GPU();
  compare("SGD plain", [](auto p) { return std::make_unique<SGD>(p, SgdOptions{0.1}); });
  compare("SGD momentum, dampening, weight decay",
          [](auto p) { return std::make_unique<SGD>(p, SgdOptions{0.05, 0.9, 0.1, 1e-2, false}); });
  compare("SGD Nesterov", [](auto p) { return std::make_unique<SGD>(p, SgdOptions{0.05, 0.9, 0, 1e-4, true}); });
}

TEST(CudaOptim, AdamMatchesCpu) {
  REQUIRE_GPU();
  compare("Adam", [](auto p) { return std::make_unique<Adam>(p, AdamOptions{1e-2}); });
  compare("Adam with L2 decay and other betas",
          [](auto p) { return std::make_unique<Adam>(p, AdamOptions{3e-3, 0.8, 0.99, 1e-6, 0.1}); });
}

TEST(CudaOptim, AdamWMatchesCpu) {
  REQUIRE_GPU();
  compare("AdamW", [](auto p) {
    AdamWOptions o;
    o.lr = 1e-2;
    o.weight_decay = 0.05;
    return std::make_unique<AdamW>(p, o);
  });
}

TEST(CudaOptim, RestoredStateContinuesIdentically) {
  REQUIRE_GPU();
  // Three steps, export, restore into a fresh optimiser over a copy, two more steps: the
  // same bits as five uninterrupted steps (the kernels are deterministic).
  auto grad = [](int step) { return Tensor::randn({1000}, 7, step, DType::F32, Device::CUDA); };
  Tensor a = Tensor::randn({1000}, 6, 0, DType::F32, Device::CUDA).set_requires_grad(true);
  Tensor b = a.clone().set_requires_grad(true);
  Adam straight({{"w", a}}, AdamOptions{1e-2});
  auto first = std::make_unique<Adam>(std::vector<NamedTensor>{{"w", b}}, AdamOptions{1e-2});
  for (int step = 0; step < 5; ++step) {
    a.set_grad(grad(step));
    straight.step();
    if (step < 3) {
      b.set_grad(grad(step));
      first->step();
    }
  }
  OptimizerState saved = first->state();
  first.reset();
  Adam resumed({{"w", b}}, AdamOptions{1e-2});
  resumed.load_state(saved);
  for (int step = 3; step < 5; ++step) {
    b.set_grad(grad(step));
    resumed.step();
  }
  EXPECT_EQ(a.to_vector(), b.to_vector());
}

TEST(CudaOptim, ParametersWithoutGradientAreLeftAlone) {
  REQUIRE_GPU();
  Tensor with = Tensor::randn({5}, 1, 0, DType::F32, Device::CUDA).set_requires_grad(true);
  Tensor without = Tensor::randn({5}, 2, 0, DType::F32, Device::CUDA).set_requires_grad(true);
  std::vector<double> before = without.to_vector();
  SGD sgd({{"with", with}, {"without", without}}, SgdOptions{0.1, 0.9});
  with.set_grad(Tensor::full({5}, 1.0, DType::F32, Device::CUDA));
  sgd.step();
  EXPECT_EQ(without.to_vector(), before);
  EXPECT_FALSE(sgd.state().tensors.find("without.momentum_buffer"));
  EXPECT_TRUE(sgd.state().tensors.find("with.momentum_buffer"));
}

TEST(CudaOptim, GradientOnAnotherDeviceIsRejected) {
  REQUIRE_GPU();
  Tensor p = Tensor::zeros({3}, DType::F32, Device::CUDA).set_requires_grad(true);
  p.set_grad(Tensor::zeros({3}, DType::F32, Device::CUDA));
  p.impl().grad = Tensor::zeros({3}).impl_ptr();  // set_grad itself refuses a CPU gradient
  Adam opt({{"p", p}}, AdamOptions{});
  try {
    opt.step();
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("Adam: gradient f32[3] cpu does not match parameter 'p' f32[3] cuda"),
              std::string::npos)
        << e.what();
  }
}
