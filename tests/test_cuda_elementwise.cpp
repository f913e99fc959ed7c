// labels: cuda
// CUDA elementwise ops and reductions against the CPU backend, forward and backward, on
// fresh random data, with device allocations poisoned (NaN) so unwritten outputs fail.
// Tolerances: f64 1e-12 relative (same formulas, same order of operations but for fused
// multiply-adds); f32 1e-6; sums (different summation order) 1e-5 (f32) / 1e-12 (f64).
#include <gtest/gtest.h>

#include <functional>

#include "cuda_util.h"
#include "engine/ops.h"
#include "gradcheck.h"

using namespace engine;

namespace {

using UnaryFn = std::function<Tensor(const std::vector<Tensor>&)>;

// Runs f on CPU copies and on CUDA copies of the inputs; compares outputs and the gradients
// of sum(f(inputs) * r).
void compare_backends(const UnaryFn& f, const std::vector<Tensor>& host_inputs, double tol) {
  testing_util::PoisonDeviceAllocations poison;
  std::vector<Tensor> cpu, gpu;
  for (const Tensor& t : host_inputs) {
    cpu.push_back(t.clone().set_requires_grad(true));
    gpu.push_back(t.to(Device::CUDA).set_requires_grad(true));
  }
  Tensor y_cpu = f(cpu), y_gpu = f(gpu);
  ASSERT_EQ(y_gpu.device(), Device::CUDA);
  EXPECT_LT(testing_util::max_rel_error(y_gpu, y_cpu), tol);
  Tensor r = Tensor::randn(y_cpu.shape(), 99, 0, y_cpu.dtype());
  sum(mul(y_cpu, r)).backward();
  sum(mul(y_gpu, r.to(Device::CUDA))).backward();
  for (size_t i = 0; i < cpu.size(); ++i)
    EXPECT_LT(testing_util::max_rel_error(gpu[i].grad(), cpu[i].grad()), tol) << "input " << i;
}

}  // namespace

TEST(CudaElementwise, MatchesCpu) {
  REQUIRE_GPU();
  for (DType dt : {DType::F32, DType::F64}) {
    double tol = dt == DType::F32 ? 1e-6 : 1e-12;
    for (Shape shape : {Shape{7}, Shape{3, 5, 17}, Shape{8, 56, 56, 64}}) {
      Tensor a = Tensor::randn(shape, 1, 0, dt), b = Tensor::randn(shape, 2, 0, dt);
      compare_backends([](auto& in) { return relu(in[0]); }, {a}, tol);
      compare_backends([](auto& in) { return sigmoid(in[0]); }, {a}, tol);
      compare_backends([](auto& in) { return softplus(in[0]); }, {a}, tol);
      compare_backends([](auto& in) { return scale(in[0], 0.3); }, {a}, tol);
      compare_backends([](auto& in) { return add(in[0], in[1]); }, {a, b}, tol);
      compare_backends([](auto& in) { return add_relu(in[0], in[1]); }, {a, b}, tol);
      compare_backends([](auto& in) { return sub(in[0], in[1]); }, {a, b}, tol);
      compare_backends([](auto& in) { return mul(in[0], in[1]); }, {a, b}, tol);
      compare_backends([](auto& in) { return mean(in[0]); }, {a}, dt == DType::F32 ? 1e-5 : 1e-12);
    }
  }
}

TEST(CudaElementwise, MixedDevicesAreRejected) {
  REQUIRE_GPU();
  Tensor a = Tensor::zeros({3}), b = Tensor::zeros({3}, DType::F32, Device::CUDA);
  EXPECT_THROW(add(a, b), Error);
}
