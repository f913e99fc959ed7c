// Error measures for comparing the CUDA backend with the CPU backend.
//
// Products (linear layers): two correct summation orders of y = sum_k a_k b_k differ by
// rounding errors that grow with the partial sums, so the meaningful yardstick of an element
// is sum_k |a_k| |b_k| (its condition), not |y| (which may cancel to nearly 0). scaled_error
// divides each difference by that scale. For random data the rounding of one float sum is,
// in these units, about 0.6 unit roundoffs (one standard deviation: partial sums grow like
// sqrt(k), each rounding adds up to u of them), so two backends rarely differ by more than
// 5 u; a wrong, missing or doubled term costs about 1 / (0.64 K) in these units, more than
// 7e-4 for every K up to 2048.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/tensor.h"
#include "kernels/cpu/linear.h"

namespace testing_util {

// Unit roundoff: 2^-24 (float), 2^-53 (double).
inline double unit_roundoff(engine::DType dtype) {
  return dtype == engine::DType::F32 ? 5.960464477539063e-08 : 1.1102230246251565e-16;
}

// max_i |got_i - ref_i| / (scale_i + |ref_i|); NaN anywhere in `got` gives infinity.
inline double scaled_error(const engine::Tensor& got, const engine::Tensor& ref, const std::vector<double>& scale) {
  std::vector<double> g = got.to_vector(), r = ref.to_vector();
  EXPECT_EQ(g.size(), r.size());
  EXPECT_EQ(g.size(), scale.size());
  double worst = 0;
  for (size_t i = 0; i < g.size() && i < r.size() && i < scale.size(); ++i) {
    if (std::isnan(g[i]) != std::isnan(r[i])) return INFINITY;
    double denom = scale[i] + std::fabs(r[i]);
    double diff = std::fabs(g[i] - r[i]);
    if (diff > 0) worst = std::max(worst, denom > 0 ? diff / denom : INFINITY);
  }
  return worst;
}

// max |got - ref| / max |ref| over the tensor (norm-wise relative); NaN gives infinity.
inline double normwise_error(const engine::Tensor& got, const engine::Tensor& ref) {
  std::vector<double> g = got.to_vector(), r = ref.to_vector();
  EXPECT_EQ(g.size(), r.size());
  double diff = 0, scale = 0;
  for (size_t i = 0; i < g.size() && i < r.size(); ++i) {
    if (std::isnan(g[i]) != std::isnan(r[i])) return INFINITY;
    diff = std::max(diff, std::fabs(g[i] - r[i]));
    scale = std::max(scale, std::fabs(r[i]));
  }
  return diff == 0 ? 0 : diff / std::max(scale, 1e-300);
}

inline std::vector<double> abs_values(const engine::Tensor& t) {
  std::vector<double> v = t.to_vector();
  for (double& x : v) x = std::fabs(x);
  return v;
}

// The condition scales of y = x w^T + b and of its gradients dx = dy w, dw = dy^T x,
// db = column sums of dy: the same products on absolute values, in double.
struct LinearScales {
  std::vector<double> y, dx, dw, db;
};
inline LinearScales linear_scales(const engine::Tensor& x, const engine::Tensor& w, const engine::Tensor& b,
                                  const engine::Tensor& dy) {
  const int64_t n = x.dim(0), in = x.dim(1), out = w.dim(0);
  std::vector<double> ax = abs_values(x), aw = abs_values(w), ady = abs_values(dy);
  std::vector<double> ab = b.defined() ? abs_values(b) : std::vector<double>(out, 0.0);
  LinearScales s{std::vector<double>(n * out), std::vector<double>(n * in), std::vector<double>(out * in),
                 std::vector<double>(out)};
  kernels::cpu::linear_forward<double>(ax.data(), aw.data(), ab.data(), s.y.data(), n, in, out);
  kernels::cpu::linear_backward<double>(ax.data(), aw.data(), ady.data(), s.dx.data(), s.dw.data(), s.db.data(),
                                        n, in, out);
  return s;
}

// scale[i] * factor[i], elementwise.
inline std::vector<double> times(std::vector<double> scale, const std::vector<double>& factor) {
  for (size_t i = 0; i < scale.size(); ++i) scale[i] *= factor[i];
  return scale;
}

}  // namespace testing_util
