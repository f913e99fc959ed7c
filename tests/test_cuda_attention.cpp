// labels: cuda
// The spatial-attention ops on the GPU against the CPU backend, forward and backward, float32
// and float64, on fresh random data with device allocations poisoned (NaN): channel_mean_max
// and gate_mul at the attention branch's shapes in the detector (layer4 output, 224x224 and
// 64x64 inputs, batch 2) and at odd shapes (C = 1, 3, 33, 130, 4099), with data full of tied
// maxima (the first maximal channel takes the gradient). Each comparison prints how close it
// came ([  parity  ] lines). Run: build/tests/test_cuda_attention
//
// Tolerances (see cuda_parity.h):
//   max, argmax (through dx), gate_mul y and dx: 0, bit-equal (a selection, or the same single
//     multiplication).
//   channel mean and gate_mul dg: reductions over C channels. The CPU sums in T in vector
//     chains (at most C/64 + 82 additions in float32, C/32 + 42 in float64, along any term's
//     path), the GPU in double (at most C/32 + 5). The first-order bound on the difference is
//     (sum of the two chain lengths) u sum|terms|, u = 2^-24 or 2^-53: tolerance
//     (C/16 + 100) u with scale sum|terms| (for the mean, mean|x|).
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "cuda_parity.h"
#include "cuda_util.h"
#include "engine/ops.h"
#include "test_util.h"

using namespace engine;
using testing_util::all_close;

namespace {

const Shape kShapes[] = {{2, 7, 7, 2048}, {2, 2, 2, 2048}, {2, 14, 14, 1024}, {2, 3, 5, 1},
                         {2, 3, 5, 3},    {1, 1, 1, 33},   {2, 4, 4, 130},    {2, 3, 3, 4099}};

double reduction_tol(int64_t channels, DType dtype) {
  const double u = dtype == DType::F64 ? std::ldexp(1.0, -53) : std::ldexp(1.0, -24);
  return (static_cast<double>(channels) / 16 + 100) * u;
}

// Random: normal values. Ties: integers in [0, 3], so most rows hold their maximum several
// times.
Tensor attention_input(const Shape& shape, bool ties, uint64_t seed, DType dtype) {
  std::vector<double> v = Tensor::randn(shape, seed, 0, DType::F64).to_vector();
  if (ties)
    for (double& e : v) e = std::fabs(std::round(e * 1.5)) > 3 ? 3 : std::fabs(std::round(e * 1.5));
  return Tensor::from_vector(v, shape, dtype);
}

Tensor copy_to(const Tensor& t, Device device) { return device == Device::CPU ? t.clone() : t.to(device); }

// Channel k of y [N, H, W, 2] as a host tensor [pixels].
Tensor channel(const Tensor& y, int k) {
  const std::vector<double> v = y.to_vector();
  std::vector<double> out;
  for (size_t i = k; i < v.size(); i += 2) out.push_back(v[i]);
  return Tensor::from_vector(out, {static_cast<int64_t>(out.size())}, y.dtype());
}

// Per-pixel sum over channels of |a| (or |a b| when b is given), divided by `divide`.
std::vector<double> row_abs_sums(const Tensor& a, const Tensor& b, double divide) {
  const int64_t channels = a.dim(-1);
  const std::vector<double> av = a.to_vector(), bv = b.defined() ? b.to_vector() : std::vector<double>();
  std::vector<double> out(av.size() / channels, 0.0);
  for (size_t i = 0; i < av.size(); ++i) out[i / channels] += std::fabs(av[i] * (bv.empty() ? 1.0 : bv[i])) / divide;
  return out;
}

}  // namespace

TEST(CudaAttention, ChannelMeanMaxMatchesCpu) {
  REQUIRE_GPU();
  uint64_t seed = 100;
  for (const Shape& shape : kShapes)
    for (bool ties : {false, true})
      for (DType dtype : {DType::F32, DType::F64}) {
        const std::string tag = std::string("channel_mean_max ") + dtype_name(dtype) + shape_str(shape) +
                                (ties ? " ties " : " random ");
        SCOPED_TRACE(tag);
        const Tensor x = attention_input(shape, ties, seed++, dtype);
        const Tensor r = Tensor::randn({shape[0], shape[1], shape[2], 2}, seed++, 0, dtype);
        Tensor results[2][2];  // [cpu, gpu][y, dx]
        for (Device device : {Device::CPU, Device::CUDA}) {
          testing_util::PoisonDeviceAllocations poison;
          Tensor xd = copy_to(x, device);
          xd.set_requires_grad(true);
          Tensor y = channel_mean_max(xd);
          sum(mul(y, copy_to(r, device))).backward();
          results[device == Device::CUDA][0] = y;
          results[device == Device::CUDA][1] = xd.grad();
        }
        const Tensor *cpu = results[0], *gpu = results[1];
        EXPECT_EQ(gpu[0].device(), Device::CUDA);
        EXPECT_TRUE(all_close(tag + "mean", channel(gpu[0], 0), channel(cpu[0], 0), reduction_tol(shape[3], dtype),
                              row_abs_sums(x, Tensor(), static_cast<double>(shape[3]))));
        EXPECT_TRUE(all_close(tag + "max", channel(gpu[0], 1), channel(cpu[0], 1), 0));
        EXPECT_TRUE(all_close(tag + "dx (mean share + max to the first maximum)", gpu[1], cpu[1], 0));
      }
}

TEST(CudaAttention, GateMulMatchesCpu) {
  REQUIRE_GPU();
  uint64_t seed = 300;
  for (const Shape& shape : kShapes)
    for (DType dtype : {DType::F32, DType::F64})
      for (int grads = 0; grads < 3; ++grads) {  // both inputs, only x, only g
        const bool grad_x = grads != 2, grad_g = grads != 1;
        const std::string tag = std::string("gate_mul ") + dtype_name(dtype) + shape_str(shape) +
                                (grads == 0 ? " " : grads == 1 ? " only dx " : " only dg ");
        SCOPED_TRACE(tag);
        const Tensor x = attention_input(shape, false, seed++, dtype);
        const Tensor g = sigmoid(Tensor::randn({shape[0], shape[1], shape[2], 1}, seed++, 0, dtype));
        const Tensor r = Tensor::randn(shape, seed++, 0, dtype);
        Tensor results[2][3];  // [cpu, gpu][y, dx, dg]
        for (Device device : {Device::CPU, Device::CUDA}) {
          testing_util::PoisonDeviceAllocations poison;
          Tensor xd = copy_to(x, device), gd = copy_to(g, device);
          xd.set_requires_grad(grad_x);
          gd.set_requires_grad(grad_g);
          Tensor y = gate_mul(xd, gd);
          sum(mul(y, copy_to(r, device))).backward();
          Tensor* out = results[device == Device::CUDA];
          out[0] = y;
          out[1] = xd.grad();
          out[2] = gd.grad();
        }
        const Tensor *cpu = results[0], *gpu = results[1];
        EXPECT_TRUE(all_close(tag + "y", gpu[0], cpu[0], 0));
        EXPECT_EQ(gpu[1].defined(), grad_x);
        EXPECT_EQ(gpu[2].defined(), grad_g);
        if (grad_x) {
          EXPECT_TRUE(all_close(tag + "dx", gpu[1], cpu[1], 0));
        }
        if (grad_g) {
          EXPECT_TRUE(all_close(tag + "dg", gpu[2], cpu[2], reduction_tol(shape[3], dtype), row_abs_sums(r, x, 1.0)));
        }
      }
}

TEST(CudaAttention, MixedDevicesAreRejected) {
  REQUIRE_GPU();
  Tensor x = Tensor::zeros({2, 3, 5, 17}, DType::F32, Device::CUDA);
  testing_util::expect_error([&] { gate_mul(x, Tensor::zeros({2, 3, 5, 1})); }, "gate_mul: device mismatch");
  testing_util::expect_error([&] { gate_mul(x.to(Device::CPU), Tensor::zeros({2, 3, 5, 1}, DType::F32, Device::CUDA)); },
                             "gate_mul: device mismatch");
  // the CPU op's checks hold on the GPU too
  testing_util::expect_error([&] { channel_mean_max(Tensor::zeros({2, 3, 4, 0}, DType::F32, Device::CUDA)); },
                             "has no channels");
}
