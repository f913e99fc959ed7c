// labels: cuda
// CUDA conv2d (kernels/cuda/conv2d.h) against the CPU backend: every pass (forward with and
// without bias, dx, dw, db) in float32 FP32, float32 TF32 and float64, on every distinct ResNet50
// convolution shape at 224x224 and 64x64 input (batch 2) and on odd shapes, with device
// allocations poisoned (NaN) so that an unwritten output element fails. Where cuDNN and cuBLAS
// were found at configure time, against them too. Then the engine's dispatch (conv2d and its
// backward on CUDA tensors) against the CPU engine, split-K determinism and mixed devices.
// Each shape prints one line of errors, so that one run on a GPU tells the whole story:
//   build-cuda-conv/tests/test_cuda_conv2d
//
// Error: normwise, max|out - ref| / max|ref| (an element-wise relative error would measure the
// cancellation in sums of signed products, not the kernel). The reference is the CPU backend in
// float64 on the very float32 values the GPU gets, so it is exact to ~1e-16 and the error is the
// GPU's own. An output is a sum of L products of random sign (L = R*S*C forward, R*S*K/stride^2
// backward-data, N*P*Q backward-weight) and max|ref| is about 5 rms, so one missing or wrong
// term (a tap, channel or pixel) costs about 1/(5 sqrt(L)): >= 1.3e-3 for the longest
// reduction here, L = 2*112*112 = 25088.
// Tolerances:
//   float64  1e-12  rounding of sums of <= 25088 terms: ~1e-16 * sqrt(L) ~ 2e-14.
//   FP32     1e-5   sequential float32 sums (a thread adds its split-K slice in order): the
//                   random-walk error is about 6e-8 * sqrt(L / 6) of the output rms, 4e-6 at
//                   L = 25088, below 2e-6 for the lengths the kernels really sum in one run.
//   TF32     2e-3   tensor cores take inputs rounded to 10 mantissa bits (relative error up to
//                   2^-11 each, so up to 2^-10 ~ 1e-3 per product, random in sign): normwise
//                   ~4e-4 (~ sqrt(2/3) 2^-11), and at most 1e-3 for a single-product output.
//                   TF32 shares the loaders with FP32, which checks the indexing more tightly.
//   db       as the dtype's FP32/f64 tolerance (summed in double, rounded once).
//   cuDNN    1e-4   ours against cuDNN in FMA-only mode: cuDNN's heuristics may pick FFT or
//                   Winograd algorithms, whose float32 error reaches 1e-5..1e-4.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "cuda_util.h"
#include "engine/ops.h"
#include "gradcheck.h"
#include "kernels/common/conv2d_shape.h"
#include "kernels/cpu/conv2d.h"
#ifdef ENGINE_WITH_CUDA
#include "gpu_reference.h"
#include "kernels/cuda/conv2d.h"
#include "kernels/cuda/runtime.h"
#endif

using namespace engine;
using kernels::Conv2dShape;

namespace {

constexpr double kF64Tol = 1e-12, kFp32Tol = 1e-5, kTf32Tol = 2e-3, kCudnnTol = 1e-4;

std::string describe(const Conv2dShape& s) {
  std::ostringstream os;
  os << "N" << s.N << " " << s.H << "x" << s.W << "x" << s.C << " -> K" << s.K << " " << s.R << "x"
     << s.S << " s" << s.stride << " p" << s.pad << " (out " << s.P << "x" << s.Q << ")";
  return os.str();
}

// max|out - ref| / max|ref|; infinite where out has a NaN or infinity (an unwritten element).
double normwise_error(const std::vector<double>& out, const std::vector<double>& ref) {
  if (out.size() != ref.size()) return INFINITY;
  double worst = 0, scale = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    if (!std::isfinite(out[i])) return INFINITY;
    worst = std::max(worst, std::fabs(out[i] - ref[i]));
    scale = std::max(scale, std::fabs(ref[i]));
  }
  return worst / std::max(scale, 1e-300);
}

std::vector<double> values(const Tensor& t) { return t.to(Device::CPU).to(DType::F64).to_vector(); }

// ResNet50 (torchvision, stride on the 3x3) convolutions, input size = image size / downscale.
struct Layer {
  const char* name;
  int downscale;
  int64_t C, K, R, stride, pad;
};
const Layer kResNet50[] = {
    {"stem", 1, 3, 64, 7, 2, 3},
    {"layer1 reduce (block 1)", 4, 64, 64, 1, 1, 0},
    {"layer1 3x3", 4, 64, 64, 3, 1, 1},
    {"layer1 expand, downsample", 4, 64, 256, 1, 1, 0},
    {"layer1 reduce", 4, 256, 64, 1, 1, 0},
    {"layer2 reduce (block 1)", 4, 256, 128, 1, 1, 0},
    {"layer2 3x3 stride 2", 4, 128, 128, 3, 2, 1},
    {"layer2 downsample", 4, 256, 512, 1, 2, 0},
    {"layer2 3x3", 8, 128, 128, 3, 1, 1},
    {"layer2 expand", 8, 128, 512, 1, 1, 0},
    {"layer2 reduce", 8, 512, 128, 1, 1, 0},
    {"layer3 reduce (block 1)", 8, 512, 256, 1, 1, 0},
    {"layer3 3x3 stride 2", 8, 256, 256, 3, 2, 1},
    {"layer3 downsample", 8, 512, 1024, 1, 2, 0},
    {"layer3 3x3", 16, 256, 256, 3, 1, 1},
    {"layer3 expand", 16, 256, 1024, 1, 1, 0},
    {"layer3 reduce", 16, 1024, 256, 1, 1, 0},
    {"layer4 reduce (block 1)", 16, 1024, 512, 1, 1, 0},
    {"layer4 3x3 stride 2", 16, 512, 512, 3, 2, 1},
    {"layer4 downsample", 16, 1024, 2048, 1, 2, 0},
    {"layer4 3x3", 32, 512, 512, 3, 1, 1},
    {"layer4 expand", 32, 512, 2048, 1, 1, 0},
    {"layer4 reduce", 32, 2048, 512, 1, 1, 0},
};

Conv2dShape shape(int64_t N, int64_t H, int64_t W, int64_t C, int64_t K, int64_t R, int64_t S,
                  int64_t stride, int64_t pad) {
  return Conv2dShape::make(N, H, W, C, K, R, S, stride, pad);
}

// C and K not multiples of the vector width, tiny and non-square images, tiles overhanging
// 128 rows or columns, strides above the kernel (phases without taps), wide padding.
const std::pair<const char*, Conv2dShape> kOddShapes[] = {
    {"1x1 plain GEMM", shape(2, 5, 7, 19, 23, 1, 1, 1, 0)},
    {"1x1 stride 2, K over one tile row", shape(3, 7, 6, 17, 70, 1, 1, 2, 0)},
    {"3x3 s1 p1", shape(2, 9, 6, 13, 35, 3, 3, 1, 1)},
    {"3x3 s2 p1 even input", shape(2, 9, 8, 21, 18, 3, 3, 2, 1)},
    {"3x3 s2 p1 odd input", shape(1, 7, 5, 6, 9, 3, 3, 2, 1)},
    {"7x7 s2 p3 stem, C=3", shape(2, 15, 13, 3, 10, 7, 7, 2, 3)},
    {"7x7 s2 p3, C=8", shape(2, 11, 10, 8, 16, 7, 7, 2, 3)},
    {"kernel 11x11 p5", shape(1, 12, 11, 15, 4, 11, 11, 1, 5)},
    {"no padding", shape(2, 6, 9, 5, 7, 3, 3, 1, 0)},
    {"non-square kernel 5x3 s2 p2", shape(2, 8, 7, 4, 6, 5, 3, 2, 2)},
    {"kernel as large as the padded input", shape(2, 3, 4, 3, 5, 5, 3, 1, 1)},
    {"stride 3 > kernel 2: unused pixels", shape(2, 8, 7, 5, 4, 2, 2, 3, 0)},
    {"stride 3 > kernel 2, C=20", shape(2, 8, 7, 20, 4, 2, 2, 3, 0)},
    {"one of everything", shape(1, 1, 1, 1, 1, 1, 1, 1, 0)},
    {"5x5 s2 p2", shape(2, 9, 7, 24, 5, 5, 5, 2, 2)},
    {"channels over a tile, 3x3", shape(2, 10, 9, 160, 130, 3, 3, 1, 1)},
    {"many pixels, few channels", shape(2, 40, 40, 16, 8, 3, 3, 1, 1)},
    {"1x1 image, 3x3 p1", shape(3, 1, 1, 20, 12, 3, 3, 1, 1)},
    {"2x2 image, 3x3 s2 p1", shape(2, 2, 2, 36, 40, 3, 3, 2, 1)},
    {"non-square image, C and K over 128", shape(2, 5, 3, 132, 130, 3, 3, 1, 1)},
    {"K = 1, C = 257", shape(2, 6, 6, 257, 1, 1, 1, 1, 0)},
    {"K = 67, stride 2 1x1", shape(2, 20, 18, 64, 67, 1, 1, 2, 0)},
    {"batch 5, H != W, 3x3 s2 p1", shape(5, 13, 6, 12, 28, 3, 3, 2, 1)},
};

#ifdef ENGINE_WITH_CUDA
namespace kc = kernels::cuda;

// float32 inputs and the float64 CPU reference of every pass.
struct Problem {
  Conv2dShape s;
  Tensor x, w, b, dy;                       // float32, CPU
  std::vector<double> y, yb, dx, dw, db;    // reference: forward, forward + bias, gradients
};

Problem make_problem(const Conv2dShape& s, uint64_t seed) {
  Problem p;
  p.s = s;
  p.x = Tensor::randn({s.N, s.H, s.W, s.C}, seed, 0);
  p.w = Tensor::randn({s.K, s.R, s.S, s.C}, seed + 1, 0);
  p.b = Tensor::randn({s.K}, seed + 2, 0);
  p.dy = Tensor::randn({s.N, s.P, s.Q, s.K}, seed + 3, 0);
  Tensor x = p.x.to(DType::F64), w = p.w.to(DType::F64), b = p.b.to(DType::F64), dy = p.dy.to(DType::F64);
  Tensor y = Tensor::empty(dy.shape(), DType::F64), yb = Tensor::empty(dy.shape(), DType::F64);
  Tensor dx = Tensor::empty(x.shape(), DType::F64), dw = Tensor::empty(w.shape(), DType::F64);
  Tensor db = Tensor::empty({s.K}, DType::F64);
  namespace cpu = kernels::cpu;
  cpu::conv2d_forward<double>(s, x.data<double>(), w.data<double>(), nullptr, y.data<double>());
  cpu::conv2d_forward<double>(s, x.data<double>(), w.data<double>(), b.data<double>(), yb.data<double>());
  cpu::conv2d_backward_data<double>(s, dy.data<double>(), w.data<double>(), dx.data<double>());
  cpu::conv2d_backward_weight<double>(s, x.data<double>(), dy.data<double>(), dw.data<double>());
  cpu::conv2d_backward_bias<double>(s, dy.data<double>(), db.data<double>());
  p.y = y.to_vector(), p.yb = yb.to_vector(), p.dx = dx.to_vector(), p.dw = dw.to_vector(), p.db = db.to_vector();
  return p;
}

// A device array `offset` elements into a poisoned allocation (offset 1: not 16-byte aligned,
// which must send the kernels down their scalar paths).
template <typename T>
struct DeviceArray {
  Tensor storage;
  T* ptr;
  int64_t n;
  DeviceArray(int64_t count, int64_t offset)
      : storage(Tensor::empty({count + offset}, dtype_of<T>::value, Device::CUDA)),
        ptr(storage.data<T>() + offset), n(count) {}
  static DeviceArray upload(const Tensor& host, int64_t offset) {
    Tensor t = host.to(dtype_of<T>::value);
    DeviceArray a(t.numel(), offset);
    kc::copy_host_to_device(a.ptr, t.data<T>(), sizeof(T) * t.numel());
    return a;
  }
  std::vector<double> download() const {
    std::vector<T> host(n);
    kc::copy_device_to_host(host.data(), ptr, sizeof(T) * n);
    return std::vector<double>(host.begin(), host.end());
  }
};

struct Outputs {
  std::vector<double> y, yb, dx, dw, db;
};

// Every pass on the GPU in dtype T, under the current ConvMath.
template <typename T>
Outputs run_gpu(const Problem& p, int64_t offset) {
  testing_util::PoisonDeviceAllocations poison;
  const Conv2dShape& s = p.s;
  auto x = DeviceArray<T>::upload(p.x, offset), w = DeviceArray<T>::upload(p.w, offset);
  auto b = DeviceArray<T>::upload(p.b, offset), dy = DeviceArray<T>::upload(p.dy, offset);
  DeviceArray<T> y(s.output_size(), offset), yb(s.output_size(), offset), dx(s.input_size(), offset),
      dw(s.weight_size(), offset), db(s.K, offset);
  kc::conv2d_forward<T>(s, x.ptr, w.ptr, nullptr, y.ptr);
  kc::conv2d_forward<T>(s, x.ptr, w.ptr, b.ptr, yb.ptr);
  kc::conv2d_backward_data<T>(s, dy.ptr, w.ptr, dx.ptr);
  kc::conv2d_backward_weight<T>(s, x.ptr, dy.ptr, dw.ptr);
  kc::conv2d_backward_bias<T>(s, dy.ptr, db.ptr);
  kc::synchronize();
  return {y.download(), yb.download(), dx.download(), dw.download(), db.download()};
}

struct Errors {
  double y, yb, dx, dw, db;
  double max() const { return std::max({y, yb, dx, dw, db}); }
};

Errors errors(const Outputs& o, const Problem& p) {
  return {normwise_error(o.y, p.y), normwise_error(o.yb, p.yb), normwise_error(o.dx, p.dx),
          normwise_error(o.dw, p.dw), normwise_error(o.db, p.db)};
}

void expect_within(const Errors& e, double tol, double db_tol, const char* mode) {
  EXPECT_LT(e.y, tol) << mode << " forward";
  EXPECT_LT(e.yb, tol) << mode << " forward with bias";
  EXPECT_LT(e.dx, tol) << mode << " backward-data (dx)";
  EXPECT_LT(e.dw, tol) << mode << " backward-weight (dw)";
  EXPECT_LT(e.db, db_tol) << mode << " backward-bias (db)";
}

std::string format(const Errors& e) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "y %.1e yb %.1e dx %.1e dw %.1e db %.1e", e.y, e.yb, e.dx, e.dw, e.db);
  return buf;
}

// cuDNN (FMA math) and, for a 1x1 stride-1 convolution, cuBLAS: against the reference and
// against our FP32 results. Returns the summary for the printed line.
std::string compare_with_vendors(const Problem& p, const Outputs& ours) {
  std::string line;
#ifdef ENGINE_HAVE_CUDNN
  {
    testing_util::PoisonDeviceAllocations poison;
    const Conv2dShape& s = p.s;
    auto x = DeviceArray<float>::upload(p.x, 0), w = DeviceArray<float>::upload(p.w, 0);
    auto dy = DeviceArray<float>::upload(p.dy, 0);
    DeviceArray<float> y(s.output_size(), 0), dx(s.input_size(), 0), dw(s.weight_size(), 0), db(s.K, 0);
    gpu_reference::CudnnConv conv(s, /*tensor_ops=*/false, /*fastest=*/false);
    conv.forward(x.ptr, w.ptr, y.ptr);
    conv.backward_data(dy.ptr, w.ptr, dx.ptr);
    conv.backward_weight(x.ptr, dy.ptr, dw.ptr);
    conv.backward_bias(dy.ptr, db.ptr);
    kc::synchronize();
    const Outputs c{y.download(), {}, dx.download(), dw.download(), db.download()};
    const double ref_err = std::max({normwise_error(c.y, p.y), normwise_error(c.dx, p.dx),
                                     normwise_error(c.dw, p.dw), normwise_error(c.db, p.db)});
    const double vs_y = normwise_error(ours.y, c.y), vs_dx = normwise_error(ours.dx, c.dx);
    const double vs_dw = normwise_error(ours.dw, c.dw), vs_db = normwise_error(ours.db, c.db);
    EXPECT_LT(ref_err, kCudnnTol) << "cuDNN itself against the float64 reference";
    EXPECT_LT(vs_y, kCudnnTol) << "forward against cuDNN";
    EXPECT_LT(vs_dx, kCudnnTol) << "dx against cuDNN";
    EXPECT_LT(vs_dw, kCudnnTol) << "dw against cuDNN";
    EXPECT_LT(vs_db, kCudnnTol) << "db against cuDNN";
    char buf[160];
    std::snprintf(buf, sizeof buf, " | cuDNN: vs ref %.1e, ours vs cuDNN %.1e",
                  ref_err, std::max({vs_y, vs_dx, vs_dw, vs_db}));
    line += buf;
  }
#else
  line += " | cuDNN: not built in";
#endif
#ifdef ENGINE_HAVE_CUBLAS
  if (p.s.R == 1 && p.s.S == 1 && p.s.stride == 1 && p.s.pad == 0) {
    testing_util::PoisonDeviceAllocations poison;
    auto x = DeviceArray<float>::upload(p.x, 0), w = DeviceArray<float>::upload(p.w, 0);
    DeviceArray<float> y(p.s.output_size(), 0);
    gpu_reference::conv1x1_gemm(p.s, x.ptr, w.ptr, y.ptr, /*tensor_ops=*/false);
    kc::synchronize();
    const std::vector<double> g = y.download();
    const double ref_err = normwise_error(g, p.y), vs = normwise_error(ours.y, g);
    EXPECT_LT(ref_err, kFp32Tol) << "cuBLAS SGEMM itself against the float64 reference";
    EXPECT_LT(vs, 2 * kFp32Tol) << "forward against cuBLAS (each within 1e-5 of the reference)";
    char buf[96];
    std::snprintf(buf, sizeof buf, " | cuBLAS: vs ref %.1e, ours vs cuBLAS %.1e", ref_err, vs);
    line += buf;
  }
#endif
  return line;
}

// Every pass, every precision, on one shape; prints one line.
void check_case(const std::string& name, const Conv2dShape& s, uint64_t seed, int64_t offset = 0) {
  SCOPED_TRACE(name + ": " + describe(s));
  const Problem p = make_problem(s, seed);
  Outputs fp32;
  {
    kc::ConvMathScope math(kc::ConvMath::FP32);
    fp32 = run_gpu<float>(p, offset);
  }
  Outputs tf32;
  {
    kc::ConvMathScope math(kc::ConvMath::TF32);
    tf32 = run_gpu<float>(p, offset);
  }
  const Errors e32 = errors(fp32, p), etf = errors(tf32, p), e64 = errors(run_gpu<double>(p, offset), p);
  expect_within(e32, kFp32Tol, kFp32Tol, "FP32");
  expect_within(etf, kTf32Tol, kFp32Tol, "TF32");
  expect_within(e64, kF64Tol, kF64Tol, "float64");
  const std::string vendors = offset == 0 ? compare_with_vendors(p, fp32) : std::string();
  std::printf("%-36s %-44s FP32 %s | TF32 %s | F64 %s%s\n", name.c_str(), describe(s).c_str(),
              format(e32).c_str(), format(etf).c_str(), format(e64).c_str(), vendors.c_str());
  std::fflush(stdout);
}

void check_resnet50(int64_t image, int64_t batch) {
  uint64_t seed = 100;
  for (const Layer& l : kResNet50) {
    const int64_t in = image / l.downscale;
    check_case(std::string(l.name) + " @" + std::to_string(image),
               shape(batch, in, in, l.C, l.K, l.R, l.R, l.stride, l.pad), seed += 10);
  }
}
#endif  // ENGINE_WITH_CUDA

}  // namespace

#ifdef ENGINE_WITH_CUDA

TEST(CudaConv2d, DefaultMathIsFp32) {
  EXPECT_EQ(kc::conv_math(), kc::ConvMath::FP32);
  {
    kc::ConvMathScope math(kc::ConvMath::TF32);
    EXPECT_EQ(kc::conv_math(), kc::ConvMath::TF32);
  }
  EXPECT_EQ(kc::conv_math(), kc::ConvMath::FP32);
}

TEST(CudaConv2d, EveryResNet50ShapeAt224) {
  REQUIRE_GPU();
  check_resnet50(224, 2);
}

TEST(CudaConv2d, EveryResNet50ShapeAt64) {
  REQUIRE_GPU();
  check_resnet50(64, 2);
}

TEST(CudaConv2d, OddShapes) {
  REQUIRE_GPU();
  uint64_t seed = 1000;
  for (const auto& [name, s] : kOddShapes) check_case(name, s, seed += 10);
}

// Pointers one element past 16-byte alignment: every view must fall back to scalar loads and
// the epilogue to scalar stores.
TEST(CudaConv2d, MisalignedPointers) {
  REQUIRE_GPU();
  check_case("misaligned, 3x3 s1 p1", shape(2, 9, 7, 32, 40, 3, 3, 1, 1), 2000, 1);
  check_case("misaligned, 1x1 s2", shape(2, 8, 8, 64, 64, 1, 1, 2, 0), 2010, 1);
}

// Split-K partials are summed in a fixed order: two runs agree bit for bit.
TEST(CudaConv2d, SplitKIsDeterministic) {
  REQUIRE_GPU();
  // backward-weight of the stem (reduction over 2*112*112 pixels) and a late layer forward
  // (M = 2*2*2 rows, long reduction), both split
  for (const Conv2dShape& s : {shape(2, 224, 224, 3, 64, 7, 7, 2, 3), shape(2, 4, 4, 512, 512, 3, 3, 2, 1)}) {
    SCOPED_TRACE(describe(s));
    const Problem p = make_problem(s, 77);
    for (kc::ConvMath m : {kc::ConvMath::FP32, kc::ConvMath::TF32}) {
      kc::ConvMathScope math(m);
      const Outputs a = run_gpu<float>(p, 0), b = run_gpu<float>(p, 0);
      EXPECT_EQ(a.y, b.y) << "forward differs between runs";
      EXPECT_EQ(a.dx, b.dx) << "dx differs between runs";
      EXPECT_EQ(a.dw, b.dw) << "dw differs between runs";
      EXPECT_EQ(a.db, b.db) << "db differs between runs";
    }
  }
}

#endif  // ENGINE_WITH_CUDA

TEST(CudaConv2d, VendorReferences) {
#ifndef ENGINE_HAVE_CUDNN
  GTEST_SKIP() << "cuDNN was not found at configure time: the cuDNN comparisons are compiled out";
#endif
  REQUIRE_GPU();
  std::printf("cuDNN comparisons are on (see the cuDNN column of the shape tests)\n");
}

// engine::conv2d on CUDA tensors, forward and backward through autograd, against the CPU
// engine on the same values. Tolerance: float32 2e-5 (both backends within 1e-5 of the exact
// result; the CPU's float32 error is about 1e-6), float64 1e-12.
TEST(CudaConv2d, EngineDispatchMatchesCpu) {
  REQUIRE_GPU();
  [[maybe_unused]] testing_util::PoisonDeviceAllocations poison;  // empty in CPU-only builds
  struct Config {
    Conv2dShape s;
    bool bias, grad_x;
  };
  const Config configs[] = {{shape(2, 9, 8, 21, 18, 3, 3, 2, 1), true, true},
                            {shape(2, 15, 13, 3, 10, 7, 7, 2, 3), true, true},
                            {shape(2, 8, 8, 64, 72, 1, 1, 1, 0), false, true},
                            {shape(3, 7, 6, 16, 24, 1, 1, 2, 0), true, false}};
  for (DType dt : {DType::F32, DType::F64}) {
    const double tol = dt == DType::F32 ? 2e-5 : 1e-12;
    for (const Config& c : configs) {
      const Conv2dShape& s = c.s;
      SCOPED_TRACE(describe(s) + (dt == DType::F32 ? " f32" : " f64") + (c.bias ? " bias" : "") +
                   (c.grad_x ? "" : " (no dx)"));
      Tensor x = Tensor::randn({s.N, s.H, s.W, s.C}, 5, 0, dt), w = Tensor::randn({s.K, s.R, s.S, s.C}, 6, 0, dt);
      Tensor b = c.bias ? Tensor::randn({s.K}, 7, 0, dt) : Tensor();
      Tensor r = Tensor::randn({s.N, s.P, s.Q, s.K}, 8, 0, dt);
      auto run = [&](Device d) {
        Tensor xd = x.to(d).set_requires_grad(c.grad_x), wd = w.to(d).set_requires_grad(true);
        Tensor bd = c.bias ? b.to(d).set_requires_grad(true) : Tensor();
        Tensor y = conv2d(xd, wd, bd, static_cast<int>(s.stride), static_cast<int>(s.pad));
        EXPECT_EQ(y.device(), d);
        sum(mul(y, r.to(d))).backward();
        return std::vector<Tensor>{y, c.grad_x ? xd.grad() : Tensor(), wd.grad(), c.bias ? bd.grad() : Tensor()};
      };
      const std::vector<Tensor> cpu = run(Device::CPU), gpu = run(Device::CUDA);
      const char* what[] = {"forward", "dx", "dw", "db"};
      for (size_t i = 0; i < cpu.size(); ++i) {
        ASSERT_EQ(cpu[i].defined(), gpu[i].defined()) << what[i];
        if (!cpu[i].defined()) continue;
        EXPECT_EQ(gpu[i].device(), Device::CUDA) << what[i];
        EXPECT_LT(normwise_error(values(gpu[i]), values(cpu[i])), tol) << what[i];
      }
    }
  }
}

TEST(CudaConv2d, MixedDevicesAreRejected) {
  REQUIRE_GPU();
  Tensor x = Tensor::zeros({1, 4, 4, 3}), w = Tensor::zeros({2, 3, 3, 3}, DType::F32, Device::CUDA);
  EXPECT_THROW(conv2d(x, w, Tensor(), 1, 1), Error);
  EXPECT_THROW(conv2d(x.to(Device::CUDA), w, Tensor::zeros({2}), 1, 1), Error);
}
