// labels: cpu
// Tensor basics, the Philox generator (reproducibility and distribution), error messages.
#include <gtest/gtest.h>

#include <cmath>

#include "engine/ops.h"
#include "kernels/common/philox.h"

using namespace engine;

TEST(Tensor, FactoriesShapeAndData) {
  Tensor t = Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  EXPECT_EQ(t.shape(), (Shape{2, 3}));
  EXPECT_EQ(t.numel(), 6);
  EXPECT_EQ(t.dim(-1), 3);
  EXPECT_EQ(t.dtype(), DType::F32);
  EXPECT_EQ(t.data<float>()[4], 5.0f);
  EXPECT_EQ(Tensor::zeros({3}, DType::F64).to_vector(), (std::vector<double>{0, 0, 0}));
  EXPECT_EQ(Tensor::full({2}, 2.5).to_vector(), (std::vector<double>{2.5, 2.5}));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw_data()) % 64, 0u);
  EXPECT_THROW(t.data<double>(), Error);
  EXPECT_THROW(Tensor::from_vector({1, 2}, {3}), Error);
  EXPECT_THROW(t.dim(2), Error);
}

TEST(Tensor, CloneDetachConvert) {
  Tensor a = Tensor::from_vector({1, 2, 3}, {3}, DType::F64);
  Tensor c = a.clone();
  Tensor d = a.detach();
  a.data<double>()[0] = 9;
  EXPECT_EQ(c.to_vector()[0], 1);
  EXPECT_EQ(d.to_vector()[0], 9);
  EXPECT_TRUE(d.shares_storage(a));
  Tensor f = a.to(DType::F32);
  EXPECT_EQ(f.dtype(), DType::F32);
  EXPECT_EQ(f.to_vector(), (std::vector<double>{9, 2, 3}));
}

TEST(Tensor, ReshapeIsAViewAndChecksSize) {
  Tensor a = Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor b = reshape(a, {3, -1});
  EXPECT_EQ(b.shape(), (Shape{3, 2}));
  EXPECT_TRUE(b.shares_storage(a));
  try {
    reshape(a, {4, 2});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("reshape"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[2, 3]"), std::string::npos) << e.what();
  }
}

TEST(Tensor, CudaTensorsFailCleanlyWithoutGpu) {
  // On a machine without a GPU (or a build without CUDA), asking for CUDA memory must throw
  // an engine or runtime error, never abort.
  try {
    Tensor t = Tensor::zeros({4}, DType::F32, Device::CUDA);
    SUCCEED() << "a GPU is present";
  } catch (const std::exception& e) {
    SUCCEED() << e.what();
  }
}

TEST(Philox, KnownAnswer) {
  // Random123's published known-answer test for philox4x32_10: counter and key all ones
  // (0xffffffff...), and the pi-digits vector.
  kernels::Philox4 ones{{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}};
  kernels::Philox4 r = kernels::philox4x32_10(ones, 0xffffffffu, 0xffffffffu);
  EXPECT_EQ(r.v[0], 0x408f276du);
  EXPECT_EQ(r.v[1], 0x41c83b0eu);
  EXPECT_EQ(r.v[2], 0xa20bc7c6u);
  EXPECT_EQ(r.v[3], 0x6d5451fdu);
  kernels::Philox4 pi{{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}};
  r = kernels::philox4x32_10(pi, 0xa4093822u, 0x299f31d0u);
  EXPECT_EQ(r.v[0], 0xd16cfe09u);
  EXPECT_EQ(r.v[1], 0x94fdccebu);
  EXPECT_EQ(r.v[2], 0x5001e420u);
  EXPECT_EQ(r.v[3], 0x24126ea1u);
}

TEST(Philox, ReproducibleFromSeedAndOffset) {
  Tensor a = Tensor::randn({1000}, 42, 7, DType::F64);
  Tensor b = Tensor::randn({1000}, 42, 7, DType::F64);
  Tensor c = Tensor::randn({1000}, 42, 8, DType::F64);
  Tensor d = Tensor::randn({1000}, 43, 7, DType::F64);
  EXPECT_EQ(a.to_vector(), b.to_vector());
  EXPECT_NE(a.to_vector(), c.to_vector());
  EXPECT_NE(a.to_vector(), d.to_vector());
  // element i depends only on (seed, offset, i): a prefix of a longer draw is the same
  Tensor longer = Tensor::randn({3001}, 42, 7, DType::F64);
  std::vector<double> lv = longer.to_vector();
  EXPECT_EQ(std::vector<double>(lv.begin(), lv.begin() + 1000), a.to_vector());
  // f32 draws are the f64 draws rounded
  Tensor f = Tensor::randn({1000}, 42, 7, DType::F32);
  std::vector<double> fv = f.to_vector(), av = a.to_vector();
  for (size_t i = 0; i < fv.size(); ++i) EXPECT_EQ(fv[i], static_cast<float>(av[i]));
}

TEST(Philox, Distribution) {
  const int64_t n = 1 << 20;
  std::vector<double> z = Tensor::randn({n}, 7, 0, DType::F64).to_vector();
  std::vector<double> u = Tensor::rand({n}, 7, 0, DType::F64).to_vector();
  double m = 0, v = 0, mu = 0, vu = 0, m3 = 0;
  int64_t beyond3 = 0;
  for (int64_t i = 0; i < n; ++i) {
    m += z[i];
    mu += u[i];
    EXPECT_GT(u[i], 0.0);
    EXPECT_LE(u[i], 1.0);
  }
  m /= n;
  mu /= n;
  for (int64_t i = 0; i < n; ++i) {
    v += (z[i] - m) * (z[i] - m);
    m3 += std::pow(z[i] - m, 3);
    vu += (u[i] - mu) * (u[i] - mu);
    beyond3 += std::fabs(z[i]) > 3;
  }
  v /= n;
  m3 /= n;
  vu /= n;
  // standard errors at n = 2^20: mean 0.001, variance 0.0014, skewness 0.0024
  EXPECT_NEAR(m, 0.0, 0.005);
  EXPECT_NEAR(v, 1.0, 0.007);
  EXPECT_NEAR(m3, 0.0, 0.012);
  EXPECT_NEAR(mu, 0.5, 0.002);
  EXPECT_NEAR(vu, 1.0 / 12, 0.001);
  // P(|z| > 3) = 0.0027
  EXPECT_NEAR(static_cast<double>(beyond3) / n, 0.0027, 0.0003);
}
