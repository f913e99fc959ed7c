// labels: cuda
// softmax, log_softmax and cross_entropy on the GPU against the CPU backend, forward and
// backward, float32 and float64, on fresh random data with device allocations poisoned
// (NaN): the detector's head ([N, 2]), a 3-D input, long rows (1000, 4099), a single column,
// and a row of logits at +-1000 in every input. Each comparison prints how close it came
// ([  parity  ] lines). Run: build/tests/test_cuda_loss
//
// Tolerances (|got - want| <= tol (|want| + scale), see cuda_parity.h). float64: 1e-12 with
// the scales below. float32, with ulp = 2^-23: the CPU's expf is within 1 ulp, CUDA's within
// 2, so an exponential differs by up to 3 ulp and a row's double sum of them by 3 ulp
// relative; the rest are the same rounded operations, with row sums in double.
//   softmax y: 8 ulp, pure relative (scale: the smallest normal float, for exponentials
//     that underflow to subnormals): 3 for exp, 3 + 1 for 1/sum, 1 for the product.
//   log_softmax y: 8 ulp, scale 1 + log(cols): log(sum) differs by 3 ulp absolutely, and each
//     backend rounds it to float (half an ulp of log(cols)); y = (x - max) - log(sum) rounds
//     once more.
//   softmax dx = y (dy - sum(dy y)): 32 ulp, scale y (|dy| + sum|dy y|), which bounds each
//     term; the 8 ulp of y enter twice (y and the dot product) plus a few roundings.
//   log_softmax dx = dy - exp(y) sum(dy): 32 ulp, scale |dy| + exp(y) sum|dy|: y differs by
//     the log(sum) difference (1.3e-6 at 4099 columns) plus an ulp of y, 3 ulp of exp.
//   cross_entropy loss: 4 ulp, scale 1: per row (max - x[label]) + log(sum) in double, where
//     only log(sum) differs (3 ulp absolutely).
//   cross_entropy dlogits = (p - onehot) s: 32 ulp, scale s = 0.7 / rows: p = exp(x - max -
//     log_sum) with log_sum rounded to float (differs by up to 1.3e-6) and an ulp of the
//     exponent's argument (9.5e-7 where p >= 1e-4), 3 ulp of exp.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "cuda_parity.h"
#include "cuda_util.h"
#include "engine/ops.h"
#include "test_util.h"

using namespace engine;
using testing_util::all_close;

namespace {

constexpr double kF32Ulp = 1.0 / (1 << 23);

double tol(DType dtype, double f32_ulps) { return dtype == DType::F64 ? 1e-12 : f32_ulps * kF32Ulp; }

const Shape kSoftmaxShapes[] = {{2, 2}, {128, 2}, {3, 5, 7}, {4, 1000}, {2, 1}, {1, 4099}, {33, 17}};

// Normal logits times 3; the first row alternates 1000, -1000 and 999.5 (exact in float).
Tensor logits_for(const Shape& shape, uint64_t seed, DType dtype) {
  std::vector<double> v = Tensor::randn(shape, seed, 0, DType::F64).to_vector();
  const int64_t cols = shape.back();
  for (size_t i = 0; i < v.size(); ++i)
    v[i] = i < static_cast<size_t>(cols) ? (i % 3 == 0 ? 1000 : i % 3 == 1 ? -1000 : 999.5) : 3 * v[i];
  return Tensor::from_vector(v, shape, dtype);
}

Tensor copy_to(const Tensor& t, Device device) { return device == Device::CPU ? t.clone() : t.to(device); }

// y and dx of sum(f(x) * r) on `device`.
template <typename F>
std::vector<Tensor> run(const F& f, const Tensor& x, const Tensor& r, Device device) {
  testing_util::PoisonDeviceAllocations poison;
  Tensor xd = copy_to(x, device);
  xd.set_requires_grad(true);
  Tensor y = f(xd);
  sum(mul(y, copy_to(r, device))).backward();
  return {y, xd.grad()};
}

}  // namespace

TEST(CudaLoss, SoftmaxAndLogSoftmaxMatchCpu) {
  REQUIRE_GPU();
  uint64_t seed = 100;
  for (const Shape& shape : kSoftmaxShapes)
    for (DType dtype : {DType::F32, DType::F64}) {
      const int64_t cols = shape.back(), rows = shape_numel(shape) / cols;
      const Tensor x = logits_for(shape, seed++, dtype), r = Tensor::randn(shape, seed++, 0, dtype);
      const std::vector<double> rv = r.to_vector();
      {
        const std::string tag = std::string("softmax ") + dtype_name(dtype) + shape_str(shape) + " ";
        SCOPED_TRACE(tag);
        auto f = [](const Tensor& t) { return softmax(t); };
        const std::vector<Tensor> cpu = run(f, x, r, Device::CPU), gpu = run(f, x, r, Device::CUDA);
        EXPECT_EQ(gpu[0].device(), Device::CUDA);
        const double tiny = dtype == DType::F64 ? std::numeric_limits<double>::min() : std::numeric_limits<float>::min();
        EXPECT_TRUE(all_close(tag + "y", gpu[0], cpu[0], tol(dtype, 8), std::vector<double>(x.numel(), tiny)));
        // scale y (|dy| + sum over the row of |dy y|), dy = r
        const std::vector<double> y = cpu[0].to_vector();
        std::vector<double> dx_scale(y.size());
        for (int64_t i = 0; i < rows; ++i) {
          double row = 0;
          for (int64_t c = 0; c < cols; ++c) row += std::fabs(rv[i * cols + c] * y[i * cols + c]);
          for (int64_t c = 0; c < cols; ++c) dx_scale[i * cols + c] = y[i * cols + c] * (std::fabs(rv[i * cols + c]) + row);
        }
        EXPECT_TRUE(all_close(tag + "dx", gpu[1], cpu[1], tol(dtype, 32), dx_scale));
      }
      {
        const std::string tag = std::string("log_softmax ") + dtype_name(dtype) + shape_str(shape) + " ";
        SCOPED_TRACE(tag);
        auto f = [](const Tensor& t) { return log_softmax(t); };
        const std::vector<Tensor> cpu = run(f, x, r, Device::CPU), gpu = run(f, x, r, Device::CUDA);
        EXPECT_TRUE(all_close(tag + "y", gpu[0], cpu[0], tol(dtype, 8),
                              std::vector<double>(x.numel(), 1 + std::log(static_cast<double>(cols)))));
        // scale |dy| + exp(y) sum over the row of |dy|
        const std::vector<double> y = cpu[0].to_vector();
        std::vector<double> dx_scale(y.size());
        for (int64_t i = 0; i < rows; ++i) {
          double row = 0;
          for (int64_t c = 0; c < cols; ++c) row += std::fabs(rv[i * cols + c]);
          for (int64_t c = 0; c < cols; ++c)
            dx_scale[i * cols + c] = std::fabs(rv[i * cols + c]) + std::exp(y[i * cols + c]) * row;
        }
        EXPECT_TRUE(all_close(tag + "dx", gpu[1], cpu[1], tol(dtype, 32), dx_scale));
      }
    }
}

TEST(CudaLoss, CrossEntropyMatchesCpu) {
  REQUIRE_GPU();
  const Shape shapes[] = {{2, 2}, {128, 2}, {4, 1000}, {2, 1}, {1, 4099}, {33, 17}};
  uint64_t seed = 300;
  for (const Shape& shape : shapes)
    for (DType dtype : {DType::F32, DType::F64}) {
      const std::string tag = std::string("cross_entropy ") + dtype_name(dtype) + shape_str(shape) + " ";
      SCOPED_TRACE(tag);
      const int64_t rows = shape[0], cols = shape[1];
      const Tensor x = logits_for(shape, seed++, dtype);
      // random labels, the first row's the last class, the second's class 0
      std::vector<int64_t> labels;
      const std::vector<double> u = Tensor::rand({rows}, seed++, 0, DType::F64).to_vector();
      for (int64_t i = 0; i < rows; ++i)
        labels.push_back(i == 0 ? cols - 1 : i == 1 ? 0 : std::min<int64_t>(cols - 1, static_cast<int64_t>(u[i] * cols)));
      Tensor loss[2], dx[2];  // cpu, gpu
      for (Device device : {Device::CPU, Device::CUDA}) {
        testing_util::PoisonDeviceAllocations poison;
        Tensor xd = copy_to(x, device);
        xd.set_requires_grad(true);
        Tensor l = cross_entropy(xd, labels);
        scale(l, 0.7).backward();  // dL/dloss = 0.7: the backward's scale is 0.7 / rows
        loss[device == Device::CUDA] = l;
        dx[device == Device::CUDA] = xd.grad();
      }
      EXPECT_EQ(loss[1].device(), Device::CUDA);
      EXPECT_TRUE(all_close(tag + "loss", loss[1], loss[0], tol(dtype, 4), {1.0}));
      EXPECT_TRUE(all_close(tag + "dlogits", dx[1], dx[0], tol(dtype, 32),
                            std::vector<double>(x.numel(), 0.7 / static_cast<double>(rows))));
    }
}

TEST(CudaLoss, InputChecksHoldOnTheGpu) {
  REQUIRE_GPU();
  Tensor logits = Tensor::zeros({3, 4}, DType::F32, Device::CUDA);
  testing_util::expect_error([&] { cross_entropy(logits, {0, 4, 1}); }, "label 4 at index 1 is outside [0, 4)");
  testing_util::expect_error([&] { cross_entropy(logits, {0, 1}); }, "2 labels for logits");
  testing_util::expect_error([&] { cross_entropy(Tensor::zeros({3}, DType::F32, Device::CUDA), {0, 1, 2}); },
                             "must have 2 dimensions");
  testing_util::expect_error([&] { softmax(Tensor::empty({2, 2}, DType::BF16, Device::CUDA)); },
                             "dtype bf16 is not supported");
}
