// labels: cuda
// max_pool2d and global_avg_pool on the GPU against the CPU backend, forward and backward,
// float32 and float64, on fresh random data with device allocations poisoned (NaN): the
// ResNet stem pool (3x3 stride 2 pad 1) at 224x224 and 64x64 inputs, odd shapes (C = 1, 3,
// 2049, 1x1 spatial, windows cut by floor() and padding, kernel 1), data full of ties (the
// first maximum in scan order takes the gradient), NaN and -inf inputs. Each comparison
// prints how close it came ([  parity  ] lines). Run: build/tests/test_cuda_pool
//
// Tolerances (see cuda_parity.h):
//   max_pool2d: 0, bit-equal. The forward returns one of the inputs; the backward gathers,
//     for each input, the dy of the windows it wins, added in the CPU's order.
//   global_avg_pool forward: both backends sum in double (in different orders) and round
//     once: float64 1e-12 and float32 2 ulp (2^-22), scale mean|x| of the pooled values.
//   global_avg_pool backward: 0, the same single multiplication by 1/spatial.
#include <gtest/gtest.h>

#include <algorithm>
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

struct PoolCase {
  Shape shape;
  int kernel, stride, pad;
};

const PoolCase kMaxPoolCases[] = {
    {{2, 112, 112, 64}, 3, 2, 1},  // ResNet50 stem pool, 224x224 input
    {{2, 32, 32, 64}, 3, 2, 1},    // and at a 64x64 input
    {{2, 9, 7, 5}, 3, 2, 1},  {{2, 8, 6, 3}, 3, 2, 1}, {{3, 6, 8, 3}, 2, 2, 0}, {{2, 7, 9, 17}, 2, 2, 0},
    {{2, 5, 4, 3}, 3, 1, 1},  {{2, 5, 7, 3}, 2, 2, 1}, {{2, 1, 1, 1}, 3, 2, 1}, {{1, 3, 3, 1}, 3, 3, 1},
    {{2, 4, 4, 2049}, 3, 2, 1}, {{1, 2, 3, 3}, 1, 1, 0}, {{3, 11, 10, 7}, 3, 2, 0},
};

enum class Data { Random, Ties, NaNAndInf };
const char* data_name(Data d) { return d == Data::Random ? "random" : d == Data::Ties ? "ties" : "nan/inf"; }

// Random: normal values (no ties). Ties: values in {-1, 0, 1}, so most windows hold several
// maxima, and some -inf (windows of -inf only return -inf). NaNAndInf: normal values with a
// NaN every 37 elements and -inf every 11.
Tensor pool_input(const Shape& shape, Data data, uint64_t seed, DType dtype) {
  std::vector<double> v = Tensor::randn(shape, seed, 0, DType::F64).to_vector();
  for (size_t i = 0; i < v.size(); ++i) {
    if (data == Data::Ties)
      v[i] = i % 23 == 5 ? -std::numeric_limits<double>::infinity() : std::clamp(std::round(v[i]), -1.0, 1.0);
    if (data == Data::NaNAndInf && i % 37 == 3) v[i] = std::numeric_limits<double>::quiet_NaN();
    if (data == Data::NaNAndInf && i % 11 == 7) v[i] = -std::numeric_limits<double>::infinity();
  }
  return Tensor::from_vector(v, shape, dtype);
}

struct Results {
  Tensor y, dx;
};

template <typename Op>
Results run(const Op& op, const Tensor& host_x, const Tensor& host_r, Device device) {
  testing_util::PoisonDeviceAllocations poison;
  Tensor x = device == Device::CPU ? host_x.clone() : host_x.to(device);
  x.set_requires_grad(true);
  Results out;
  out.y = op(x);
  sum(mul(out.y, device == Device::CPU ? host_r.clone() : host_r.to(device))).backward();
  out.dx = x.grad();
  return out;
}

}  // namespace

TEST(CudaPool, MaxPoolMatchesCpuExactly) {
  REQUIRE_GPU();
  uint64_t seed = 100;
  for (const PoolCase& pc : kMaxPoolCases)
    for (Data data : {Data::Random, Data::Ties, Data::NaNAndInf})
      for (DType dtype : {DType::F32, DType::F64}) {
        const std::string tag = std::string("max_pool2d ") + dtype_name(dtype) + shape_str(pc.shape) + " k" +
                                std::to_string(pc.kernel) + " s" + std::to_string(pc.stride) + " p" +
                                std::to_string(pc.pad) + " " + data_name(data) + " ";
        SCOPED_TRACE(tag);
        const Tensor x = pool_input(pc.shape, data, seed++, dtype);
        auto op = [&](const Tensor& t) { return max_pool2d(t, pc.kernel, pc.stride, pc.pad); };
        const Tensor probe = max_pool2d(x, pc.kernel, pc.stride, pc.pad);
        const Tensor r = Tensor::randn(probe.shape(), seed++, 0, dtype);
        const Results cpu = run(op, x, r, Device::CPU), gpu = run(op, x, r, Device::CUDA);
        EXPECT_EQ(gpu.y.device(), Device::CUDA);
        EXPECT_EQ(gpu.dx.device(), Device::CUDA);
        EXPECT_TRUE(all_close(tag + "y", gpu.y, cpu.y, 0));
        EXPECT_TRUE(all_close(tag + "dx", gpu.dx, cpu.dx, 0));
      }
}

TEST(CudaPool, GlobalAvgPoolMatchesCpu) {
  REQUIRE_GPU();
  const Shape shapes[] = {{2, 7, 7, 2048}, {2, 2, 2, 2048}, {2, 1, 1, 3}, {3, 5, 4, 1},
                          {2, 56, 56, 256}, {1, 300, 300, 2}, {4, 3, 5, 33}};
  uint64_t seed = 500;
  for (const Shape& shape : shapes)
    for (DType dtype : {DType::F32, DType::F64}) {
      const std::string tag = std::string("global_avg_pool ") + dtype_name(dtype) + shape_str(shape) + " ";
      SCOPED_TRACE(tag);
      // offset 0.5: pooled post-ReLU activations are positive on average
      const Tensor x = add(Tensor::randn(shape, seed++, 0, dtype), Tensor::full(shape, 0.5, dtype));
      const Tensor r = Tensor::randn({shape[0], shape[3]}, seed++, 0, dtype);
      auto op = [](const Tensor& t) { return global_avg_pool(t); };
      const Results cpu = run(op, x, r, Device::CPU), gpu = run(op, x, r, Device::CUDA);
      // scale: mean |x| over each pooled window
      const int64_t spatial = shape[1] * shape[2], channels = shape[3];
      const std::vector<double> xv = x.to_vector();
      std::vector<double> mean_abs(static_cast<size_t>(shape[0] * channels), 0.0);
      for (size_t i = 0; i < xv.size(); ++i)
        mean_abs[i / (spatial * channels) * channels + i % channels] += std::fabs(xv[i]) / spatial;
      EXPECT_TRUE(all_close(tag + "y", gpu.y, cpu.y, dtype == DType::F64 ? 1e-12 : 2 * kF32Ulp, mean_abs));
      EXPECT_TRUE(all_close(tag + "dx", gpu.dx, cpu.dx, 0));
    }
}

TEST(CudaPool, InputChecksHoldOnTheGpu) {
  REQUIRE_GPU();
  Tensor x = Tensor::zeros({1, 3, 3, 2}, DType::F32, Device::CUDA);
  testing_util::expect_error([&] { max_pool2d(x, 6, 1, 0); }, "is larger than the padded input");
  testing_util::expect_error([&] { max_pool2d(x, 3, 2, 2); }, "must be at most half the kernel size");
  testing_util::expect_error([&] { global_avg_pool(Tensor::zeros({1, 0, 3, 2}, DType::F32, Device::CUDA)); },
                             "has no spatial positions");
}
