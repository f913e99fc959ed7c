// labels: cpu gradcheck
// Composed gradient checks (float64, central differences): a ResNet50 bottleneck block with
// its downsample branch, in training mode (batch statistics) and evaluation mode, through
// the models' own modules, with respect to the input and every parameter.
#include <gtest/gtest.h>

#include "gradcheck.h"
#include "models/resnet.h"

using namespace engine;

namespace {

void check_bottleneck(bool training) {
  // in 5 channels, width 3 -> out 12, stride 2 on the 3x3 convolution: the downsample branch
  // (1x1 stride-2 convolution + batch-norm) is built.
  models::Bottleneck block(5, 3, 2, /*seed=*/7, DType::F64);
  ASSERT_NE(block.downsample, nullptr);
  // Batch-norm affine parameters away from their initial 1 and 0; non-trivial running stats.
  uint64_t offset = 100;
  for (auto& [name, t] : block.named_parameters())
    if (t.ndim() == 1) t.copy_(add(Tensor::full(t.shape(), name.find("weight") != std::string::npos ? 1.0 : 0.0,
                                                DType::F64),
                                   scale(Tensor::randn(t.shape(), 3, offset++, DType::F64), 0.3)));
  for (auto& [name, t] : block.named_buffers())
    if (name.find("running_var") != std::string::npos) t.fill_(1.7);
    else if (name.find("running_mean") != std::string::npos) t.fill_(-0.2);
  block.train(training);

  Tensor x = testing_util::param({3, 7, 6, 5}, 11);
  std::vector<Tensor> inputs{x};
  for (auto& [name, t] : block.named_parameters()) inputs.push_back(t);
  ASSERT_EQ(inputs.size(), 1u + 3 * 3 + 3);  // x; conv1-3 + bn1-3 (2 each); downsample conv + bn
  testing_util::GradcheckOptions options;
  options.max_checks = 60;
  // The parameters are the module's own tensors: perturbing them in place changes the block.
  EXPECT_TRUE(testing_util::gradcheck([&](const std::vector<Tensor>& in) { return block.forward(in[0]); },
                                      inputs, options));
}

}  // namespace

TEST(ComposedGradcheck, BottleneckWithDownsampleTraining) { check_bottleneck(true); }
TEST(ComposedGradcheck, BottleneckWithDownsampleEval) { check_bottleneck(false); }
