// labels: cpu gradcheck
// A small network built from modules, gradient-checked end to end in float64: every
// parameter of conv -> batch norm (training mode) -> relu -> global average pool -> linear,
// and the input, against central finite differences.
#include <gtest/gtest.h>

#include "engine/nn.h"
#include "gradcheck.h"

using namespace engine;
using namespace engine::nn;
using testing_util::gradcheck;

namespace {

struct SmallNet : Module {
  std::shared_ptr<Conv2d> conv = register_module("conv", std::make_shared<Conv2d>(3, 4, 3, 2, 1, true, 1, DType::F64));
  std::shared_ptr<BatchNorm2d> bn = register_module("bn", std::make_shared<BatchNorm2d>(4, 1e-5, 0.1, DType::F64));
  std::shared_ptr<Linear> fc = register_module("fc", std::make_shared<Linear>(4, 3, true, 2, DType::F64));
  Tensor forward(const Tensor& x) { return (*fc)(global_avg_pool(relu((*bn)((*conv)(x))))); }
};

}  // namespace

TEST(Gradcheck, ConvBatchNormReluPoolLinearModules) {
  SmallNet net;
  // BatchNorm's affine parameters away from their init (1, 0), so that their gradients are
  // checked at a generic point.
  net.bn->weight().copy_(Tensor::from_vector({0.7, 1.3, -0.9, 1.1}, {4}, DType::F64));
  net.bn->bias().copy_(Tensor::from_vector({0.1, -0.2, 0.3, 0.05}, {4}, DType::F64));
  // odd sizes, stride 2, padding 1, batch 2 -> a 3x3 map per image
  Tensor x = testing_util::param({2, 5, 5, 3}, 21);
  std::vector<Tensor> inputs{x};
  for (const Tensor& p : net.parameters()) inputs.push_back(p);  // the module's own handles
  ASSERT_EQ(inputs.size(), 7u);
  // The function reads the parameters through the module; gradcheck perturbs the same tensors.
  EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>& in) { return net.forward(in[0]); }, inputs));
  // In eval mode too (running statistics: batch norm is affine in x).
  net.eval();
  EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>& in) { return net.forward(in[0]); }, inputs));
}
