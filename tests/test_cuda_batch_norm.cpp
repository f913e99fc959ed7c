// labels: cuda
// batch_norm2d on the GPU against the CPU backend, on fresh random data with device
// allocations poisoned (NaN): output, running statistics and the gradients of x, gamma and
// beta, in training and evaluation mode, float32 and float64, at every batch-norm shape of
// ResNet50 (224x224 and 64x64 inputs, batch 2) and at odd shapes (C = 1, 3, 2049, 1x1
// spatial, [N, C] inputs, many rows per channel). Also: float32 statistics when
// |mean| >> std, the fused batch-norm + ReLU kernels against the unfused ops, partial
// gradients, and mixed-device errors. Each comparison prints how close it came
// ([  parity  ] lines). Run: build/tests/test_cuda_batch_norm
//
// Tolerances (|got - want| <= tol (|want| + scale), see cuda_parity.h):
//   float64: 1e-12 everywhere. Both backends take the statistics and the gradient sums in
//     double, in different orders: over n terms the difference is about sqrt(n) u |terms|
//     (u = 1.1e-16; sqrt(n) <= 1300 at n = 1.6M rows), far below 1e-12 of the scale.
//   float32 y and dx: 8 ulp (8 * 2^-23) normwise. The elementwise passes are the same rounded
//     operations on both backends (no fused multiply-adds); only the per-channel constants,
//     rounded from double statistics that differ in the last double bits, can differ by 1 ulp,
//     which moves an element by at most a few ulp of the tensor's largest terms.
//   float32 running statistics, dgamma, dbeta: 2 ulp (2^-22). Each is a double value rounded
//     to float32 once; the doubles agree to ~1e-13 of the summed terms, so the floats are equal
//     or 1 ulp apart. scale: the sum of |terms| of the reduction (dgamma: |dy xhat|, dbeta: |dy|,
//     running_mean: momentum mean|x|).
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "cuda_parity.h"
#include "cuda_util.h"
#include "engine/ops.h"
#include "test_util.h"
#ifdef ENGINE_WITH_CUDA
#include "kernels/cuda/batch_norm.h"
#endif

using namespace engine;
using testing_util::all_close;
using testing_util::normwise_scale;

namespace {

constexpr double kMomentum = 0.1, kEps = 1e-5;
constexpr double kF32Ulp = 1.0 / (1 << 23);  // float32 spacing at 1

double elementwise_tol(DType dtype) { return dtype == DType::F64 ? 1e-12 : 8 * kF32Ulp; }
double rounded_double_tol(DType dtype) { return dtype == DType::F64 ? 1e-12 : 2 * kF32Ulp; }

// Every batch norm of ResNet50 (torchvision: stride in the 3x3 convolution) as (spatial side at
// a 224x224 input, channels): the stem, then per stage the 1x1-reduce, 3x3 and expand outputs
// (a stage's first 1x1 runs at the previous stage's resolution).
const int64_t kResNet50BatchNorms[][2] = {{112, 64}, {56, 64},   {56, 256}, {56, 128},
                                          {28, 128}, {28, 512},  {28, 256}, {14, 256},
                                          {14, 1024}, {14, 512}, {7, 512},  {7, 2048}};

std::vector<Shape> resnet50_shapes(int64_t input_side, int64_t batch) {
  std::vector<Shape> shapes;
  for (const auto& bn : kResNet50BatchNorms) {
    const int64_t side = bn[0] * input_side / 224;
    shapes.push_back({batch, side, side, bn[1]});
  }
  return shapes;
}

// C = 1 and 3, C not a multiple of the 4-float vector (2049, 5, 17) or of the 32-channel
// tile (36), 1x1 spatial, 2-D [N, C] inputs, and enough rows per channel (8085, 90000) for
// many reduction chunks.
const Shape kOddShapes[] = {{2, 5, 7, 3},   {3, 4, 4, 1},    {4, 1, 1, 64}, {2, 1, 1, 3},
                            {7, 33, 35, 5}, {3, 3, 3, 2049}, {2, 3, 3, 36}, {7, 5},
                            {2, 2048},      {1, 300, 300, 1}, {5, 17, 3, 17}};

// Activations as batch norm meets them: per channel an offset in [-2, 2) and a spread in
// [0.5, 2.5).
Tensor activations(const Shape& shape, uint64_t seed, DType dtype) {
  const int64_t channels = shape.back();
  std::vector<double> v = Tensor::randn(shape, seed, 0, DType::F64).to_vector();
  const std::vector<double> u = Tensor::rand({2, channels}, seed + 1, 0, DType::F64).to_vector();
  for (size_t i = 0; i < v.size(); ++i) {
    const size_t c = i % channels;
    v[i] = v[i] * (0.5 + 2 * u[channels + c]) + (4 * u[c] - 2);
  }
  return Tensor::from_vector(v, shape, dtype);
}

struct Inputs {
  Tensor x, gamma, beta, running_mean, running_var, r;  // r: the projection of the checked loss
};

Inputs make_inputs(const Shape& shape, DType dtype, uint64_t seed) {
  const int64_t channels = shape.back();
  Inputs in;
  in.x = activations(shape, seed, dtype);
  in.gamma = Tensor::randn({channels}, seed + 2, 0, dtype);
  in.beta = Tensor::randn({channels}, seed + 3, 0, dtype);
  in.running_mean = scale(Tensor::randn({channels}, seed + 4, 0, dtype), 0.5);
  in.running_var = add(Tensor::rand({channels}, seed + 5, 0, dtype), Tensor::full({channels}, 0.5, dtype));
  in.r = Tensor::randn(shape, seed + 6, 0, dtype);
  return in;
}

// y, running_mean, running_var, dx, dgamma, dbeta (undefined where not requested) of
// sum(batch_norm2d(...) * r) on `device`.
struct Results {
  Tensor y, running_mean, running_var, dx, dgamma, dbeta;
};

Tensor copy_to(const Tensor& t, Device device) { return device == Device::CPU ? t.clone() : t.to(device); }

Results run(const Inputs& in, Device device, bool training, bool grad_x = true, bool grad_gamma = true,
            bool grad_beta = true) {
  testing_util::PoisonDeviceAllocations poison;
  Tensor x = copy_to(in.x, device), gamma = copy_to(in.gamma, device), beta = copy_to(in.beta, device);
  x.set_requires_grad(grad_x);
  gamma.set_requires_grad(grad_gamma);
  beta.set_requires_grad(grad_beta);
  Results out;
  out.running_mean = copy_to(in.running_mean, device);
  out.running_var = copy_to(in.running_var, device);
  out.y = batch_norm2d(x, gamma, beta, out.running_mean, out.running_var, training, kMomentum, kEps);
  if (grad_x || grad_gamma || grad_beta) {
    sum(mul(out.y, copy_to(in.r, device))).backward();
    out.dx = x.grad();
    out.dgamma = gamma.grad();
    out.dbeta = beta.grad();
  }
  return out;
}

// Per-channel scales of the reductions, from the CPU inputs: sum |r xhat| (dgamma), sum |r|
// (dbeta), momentum mean |x| (running_mean), with xhat from the statistics the mode uses.
struct ReductionScales {
  std::vector<double> dgamma, dbeta, running_mean;
};

ReductionScales reduction_scales(const Inputs& in, bool training) {
  const int64_t channels = in.x.dim(-1), rows = in.x.numel() / channels;
  const std::vector<double> x = in.x.to_vector(), r = in.r.to_vector();
  std::vector<double> mean(channels, 0.0), var(channels, 0.0), abs_x(channels, 0.0);
  for (size_t i = 0; i < x.size(); ++i) {
    mean[i % channels] += x[i] / rows;
    abs_x[i % channels] += std::fabs(x[i]) / rows;
  }
  for (size_t i = 0; i < x.size(); ++i) var[i % channels] += std::pow(x[i] - mean[i % channels], 2) / rows;
  if (!training) {
    mean = in.running_mean.to_vector();
    var = in.running_var.to_vector();
  }
  ReductionScales s{std::vector<double>(channels, 0.0), std::vector<double>(channels, 0.0), {}};
  for (size_t i = 0; i < x.size(); ++i) {
    const size_t c = i % channels;
    s.dgamma[c] += std::fabs(r[i] * (x[i] - mean[c]) / std::sqrt(var[c] + kEps));
    s.dbeta[c] += std::fabs(r[i]);
  }
  for (double a : abs_x) s.running_mean.push_back(kMomentum * a);
  return s;
}

void expect_on_gpu(const Results& r) {
  for (const Tensor* t : {&r.y, &r.running_mean, &r.running_var, &r.dx, &r.dgamma, &r.dbeta})
    if (t->defined()) {
      EXPECT_EQ(t->device(), Device::CUDA) << t->desc();
    }
}

void check_against_cpu(const Shape& shape, DType dtype, bool training, uint64_t seed) {
  const std::string tag = std::string("batch_norm2d ") + dtype_name(dtype) + shape_str(shape) +
                          (training ? " train " : " eval ");
  SCOPED_TRACE(tag);
  const Inputs in = make_inputs(shape, dtype, seed);
  const Results cpu = run(in, Device::CPU, training), gpu = run(in, Device::CUDA, training);
  expect_on_gpu(gpu);
  const ReductionScales s = reduction_scales(in, training);
  const double tol = elementwise_tol(dtype), tol_rounded = rounded_double_tol(dtype);
  EXPECT_TRUE(all_close(tag + "y", gpu.y, cpu.y, tol, normwise_scale(cpu.y)));
  EXPECT_TRUE(all_close(tag + "running_mean", gpu.running_mean, cpu.running_mean, tol_rounded, s.running_mean));
  EXPECT_TRUE(all_close(tag + "running_var", gpu.running_var, cpu.running_var, tol_rounded));
  EXPECT_TRUE(all_close(tag + "dx", gpu.dx, cpu.dx, tol, normwise_scale(cpu.dx)));
  EXPECT_TRUE(all_close(tag + "dgamma", gpu.dgamma, cpu.dgamma, tol_rounded, s.dgamma));
  EXPECT_TRUE(all_close(tag + "dbeta", gpu.dbeta, cpu.dbeta, tol_rounded, s.dbeta));
}

void check_shapes(const std::vector<Shape>& shapes, uint64_t seed) {
  for (const Shape& shape : shapes)
    for (DType dtype : {DType::F32, DType::F64})
      for (bool training : {true, false}) check_against_cpu(shape, dtype, training, seed += 10);
}

}  // namespace

TEST(CudaBatchNorm, ResNet50ShapesAt224MatchCpu) {
  REQUIRE_GPU();
  check_shapes(resnet50_shapes(224, 2), 1000);
}

TEST(CudaBatchNorm, ResNet50ShapesAt64MatchCpu) {
  REQUIRE_GPU();
  check_shapes(resnet50_shapes(64, 2), 2000);
}

TEST(CudaBatchNorm, OddShapesMatchCpu) {
  REQUIRE_GPU();
  check_shapes(std::vector<Shape>(std::begin(kOddShapes), std::end(kOddShapes)), 3000);
}

// Only some inputs require a gradient: the backward skips the others (dx only in evaluation
// mode needs no reduction at all).
TEST(CudaBatchNorm, PartialGradientsMatchCpu) {
  REQUIRE_GPU();
  const Shape shape{2, 9, 7, 40};
  for (DType dtype : {DType::F32, DType::F64})
    for (bool training : {true, false})
      for (int which = 0; which < 3; ++which) {
        const std::string tag = std::string("batch_norm2d ") + dtype_name(dtype) + (training ? " train" : " eval") +
                                " only " + (which == 0 ? "dx " : which == 1 ? "dgamma " : "dbeta ");
        SCOPED_TRACE(tag);
        const Inputs in = make_inputs(shape, dtype, 4000 + which);
        const Results cpu = run(in, Device::CPU, training, which == 0, which == 1, which == 2);
        const Results gpu = run(in, Device::CUDA, training, which == 0, which == 1, which == 2);
        const ReductionScales s = reduction_scales(in, training);
        const double tol = elementwise_tol(dtype), tol_rounded = rounded_double_tol(dtype);
        if (which == 0) {
          EXPECT_TRUE(all_close(tag, gpu.dx, cpu.dx, tol, normwise_scale(cpu.dx)));
        }
        if (which == 1) {
          EXPECT_TRUE(all_close(tag, gpu.dgamma, cpu.dgamma, tol_rounded, s.dgamma));
        }
        if (which == 2) {
          EXPECT_TRUE(all_close(tag, gpu.dbeta, cpu.dbeta, tol_rounded, s.dbeta));
        }
        EXPECT_EQ(gpu.dx.defined(), which == 0);
        EXPECT_EQ(gpu.dgamma.defined(), which == 1);
        EXPECT_EQ(gpu.dbeta.defined(), which == 2);
      }
}

// float32 inputs with |mean| = 1000 >> std = 0.01 (x spaced 6e-5 apart at 1000): the GPU's
// float32 results against float64 on the same values. A naive sum(x^2) - sum(x)^2 / n in
// float32 would lose every digit of the variance. Tolerances: y 8 ulp normwise as above
// (x - mean_hi is exact, the rest are the usual roundings); running_var 2 ulp (a double
// rounded once).
TEST(CudaBatchNorm, Float32StatisticsStayAccurateWhenMeanDominates) {
  REQUIRE_GPU();
  const Shape shape{2, 56, 56, 64};
  std::vector<double> v = Tensor::randn(shape, 5000, 0, DType::F64).to_vector();
  for (double& e : v) e = 1000 + 0.01 * e;
  Inputs in = make_inputs(shape, DType::F32, 5001);
  in.x = Tensor::from_vector(v, shape, DType::F32);
  Inputs in64{in.x.to(DType::F64), in.gamma.to(DType::F64), in.beta.to(DType::F64),
              in.running_mean.to(DType::F64), in.running_var.to(DType::F64), in.r.to(DType::F64)};
  const Results gpu = run(in, Device::CUDA, true), exact = run(in64, Device::CPU, true);
  EXPECT_TRUE(all_close("batch_norm2d f32 |mean| >> std: y vs f64", gpu.y, exact.y.to(DType::F32), 8 * kF32Ulp,
                        normwise_scale(exact.y)));
  EXPECT_TRUE(all_close("batch_norm2d f32 |mean| >> std: running_var vs f64", gpu.running_var,
                        exact.running_var.to(DType::F32), 2 * kF32Ulp));
}

// The fused batch-norm + ReLU kernels against batch_norm2d followed by relu, both on the GPU:
// the same statistics, constants and rounded operations, so every result is bit-equal
// (tolerance 0). The unfused path is checked against the CPU above.
TEST(CudaBatchNorm, FusedReluMatchesUnfusedOps) {
  REQUIRE_GPU();
#ifdef ENGINE_WITH_CUDA
  std::vector<Shape> shapes = resnet50_shapes(64, 2);
  for (const Shape& s : resnet50_shapes(224, 2)) shapes.push_back(s);
  shapes.insert(shapes.end(), std::begin(kOddShapes), std::end(kOddShapes));
  uint64_t seed = 6000;
  for (const Shape& shape : shapes)
    for (DType dtype : {DType::F32, DType::F64})
      for (bool training : {true, false}) {
        const std::string tag = std::string("batch_norm2d+relu ") + dtype_name(dtype) + shape_str(shape) +
                                (training ? " train " : " eval ");
        SCOPED_TRACE(tag);
        testing_util::PoisonDeviceAllocations poison;
        const Inputs host = make_inputs(shape, dtype, seed += 10);
        const int64_t channels = shape.back();
        const kernels::cuda::BatchNormShape bn_shape{host.x.numel() / channels, channels};
        Tensor x = host.x.to(Device::CUDA), gamma = host.gamma.to(Device::CUDA), beta = host.beta.to(Device::CUDA);
        Tensor r = host.r.to(Device::CUDA);
        // unfused, through the ops
        Tensor rm = host.running_mean.to(Device::CUDA), rv = host.running_var.to(Device::CUDA);
        Tensor xu = x.clone(), gu = gamma.clone(), bu = beta.clone();
        for (Tensor* t : {&xu, &gu, &bu}) t->set_requires_grad(true);
        Tensor yu = relu(batch_norm2d(xu, gu, bu, rm, rv, training, kMomentum, kEps));
        sum(mul(yu, r)).backward();
        // fused kernels
        Tensor rm_f = host.running_mean.to(Device::CUDA), rv_f = host.running_var.to(Device::CUDA);
        Tensor y = Tensor::empty(shape, dtype, Device::CUDA), dx = Tensor::empty(shape, dtype, Device::CUDA);
        Tensor dgamma = Tensor::empty({channels}, dtype, Device::CUDA);
        Tensor dbeta = Tensor::empty({channels}, dtype, Device::CUDA);
        Tensor mean = Tensor::empty({channels}, DType::F64, Device::CUDA);
        Tensor invstd = Tensor::empty({channels}, DType::F64, Device::CUDA);
        auto fused = [&](auto tag_value) {
          using T = decltype(tag_value);
          if (training)
            kernels::cuda::batch_norm_relu_forward_train<T>(
                x.data<T>(), gamma.data<T>(), beta.data<T>(), y.data<T>(), mean.data<double>(), invstd.data<double>(),
                rm_f.data<T>(), rv_f.data<T>(), kMomentum, kEps, bn_shape);
          else
            kernels::cuda::batch_norm_relu_forward_eval<T>(x.data<T>(), gamma.data<T>(), beta.data<T>(),
                                                           rm_f.data<T>(), rv_f.data<T>(), kEps, y.data<T>(),
                                                           mean.data<double>(), invstd.data<double>(), bn_shape);
          kernels::cuda::batch_norm_relu_backward<T>(x.data<T>(), y.data<T>(), r.data<T>(), gamma.data<T>(),
                                                     mean.data<double>(), invstd.data<double>(), training,
                                                     dx.data<T>(), dgamma.data<T>(), dbeta.data<T>(), bn_shape);
        };
        if (dtype == DType::F32) fused(float{});
        else fused(double{});
        EXPECT_TRUE(all_close(tag + "y", y, yu, 0));
        EXPECT_TRUE(all_close(tag + "running_mean", rm_f, rm, 0));
        EXPECT_TRUE(all_close(tag + "running_var", rv_f, rv, 0));
        EXPECT_TRUE(all_close(tag + "dx", dx, xu.grad(), 0));
        EXPECT_TRUE(all_close(tag + "dgamma", dgamma, gu.grad(), 0));
        EXPECT_TRUE(all_close(tag + "dbeta", dbeta, bu.grad(), 0));
      }
#endif
}

TEST(CudaBatchNorm, MixedDevicesAndBadInputsAreRejected) {
  REQUIRE_GPU();
  Tensor x = Tensor::zeros({2, 3, 3, 4}, DType::F32, Device::CUDA);
  Tensor gamma = Tensor::full({4}, 1.0), beta = Tensor::zeros({4});
  testing_util::expect_error([&] { batch_norm2d(x, gamma, beta, Tensor(), Tensor(), true); },
                             "batch_norm2d: device mismatch");
  Tensor gamma_gpu = gamma.to(Device::CUDA), beta_gpu = beta.to(Device::CUDA);
  testing_util::expect_error(
      [&] { batch_norm2d(x, gamma_gpu, beta_gpu, Tensor::zeros({4}), Tensor::full({4}, 1.0), true); },
      "batch_norm2d: device mismatch");
  // the CPU op's checks hold on the GPU too
  testing_util::expect_error(
      [&] { batch_norm2d(Tensor::zeros({1, 1, 1, 4}, DType::F32, Device::CUDA), gamma_gpu, beta_gpu, Tensor(), Tensor(), true); },
      "training needs more than one value per channel");
  testing_util::expect_error([&] { batch_norm2d(x, beta_gpu, gamma_gpu.to(DType::F64), Tensor(), Tensor(), true); },
                             "dtype mismatch");
}
