// Central finite-difference gradient checks in float64.
// For f: inputs -> tensor y, the checked scalar is L = sum(y * r) with r a fixed random
// projection, so every output element contributes. For each input with requires_grad set,
// dL/dx from backward is compared with (L(x + h e_j) - L(x - h e_j)) / 2h, element by element
// (all elements, or `max_checks` spread evenly over the tensor).
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <sstream>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"

namespace testing_util {

using engine::Tensor;
using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

struct GradcheckOptions {
  double step = 1e-6;
  double atol = 1e-7;
  double rtol = 1e-5;
  int64_t max_checks = 400;  // per input
  uint64_t seed = 1234;
};

inline double projected(const Fn& f, const std::vector<Tensor>& inputs, const Tensor& r) {
  engine::NoGradGuard guard;
  Tensor y = f(inputs);
  double total = 0;
  std::vector<double> yv = y.to_vector(), rv = r.to_vector();
  for (size_t i = 0; i < yv.size(); ++i) total += yv[i] * rv[i];
  return total;
}

inline ::testing::AssertionResult gradcheck(const Fn& f, std::vector<Tensor> inputs,
                                            GradcheckOptions opt = {}) {
  for (auto& t : inputs)
    if (t.defined() && t.dtype() != engine::DType::F64)
      return ::testing::AssertionFailure() << "gradcheck needs f64 inputs, got " << t.desc();
  for (auto& t : inputs)
    if (t.defined()) t.zero_grad();
  Tensor y = f(inputs);
  Tensor r = Tensor::randn(y.shape(), opt.seed, 0, engine::DType::F64);
  engine::sum(engine::mul(y, r)).backward();
  std::ostringstream failures;
  int bad = 0;
  for (size_t k = 0; k < inputs.size(); ++k) {
    Tensor x = inputs[k];
    if (!x.defined() || !x.requires_grad()) continue;
    Tensor g = x.grad();
    if (!g.defined()) return ::testing::AssertionFailure() << "input " << k << " got no gradient";
    std::vector<double> analytic = g.to_vector();
    int64_t n = x.numel();
    int64_t stride = std::max<int64_t>(1, n / opt.max_checks);
    double* xp = x.data<double>();
    for (int64_t j = 0; j < n; j += stride) {
      double saved = xp[j];
      xp[j] = saved + opt.step;
      double plus = projected(f, inputs, r);
      xp[j] = saved - opt.step;
      double minus = projected(f, inputs, r);
      xp[j] = saved;
      double numeric = (plus - minus) / (2 * opt.step);
      double err = std::fabs(numeric - analytic[j]);
      if (!(err <= opt.atol + opt.rtol * std::fabs(numeric))) {
        if (++bad <= 8)
          failures << "\n  input " << k << " " << x.desc() << " element " << j << ": analytic "
                   << analytic[j] << ", numeric " << numeric;
      }
    }
  }
  if (bad) return ::testing::AssertionFailure() << bad << " gradient mismatches" << failures.str();
  return ::testing::AssertionSuccess();
}

// f64 tensor of standard normals, requiring a gradient.
inline Tensor param(const engine::Shape& shape, uint64_t seed, double scale = 1.0) {
  Tensor t = Tensor::randn(shape, seed, 0, engine::DType::F64);
  if (scale != 1.0) t = engine::scale(t, scale);
  t.set_requires_grad(true);
  return t;
}

// Largest |a - b| / max(|b|, floor) over all elements.
// Infinite when the shapes differ or where one side is NaN (or infinite) and the other is not,
// so an output left unwritten (poisoned with NaN) or a NaN that should not be there always
// fails a comparison; positions where both sides hold the same non-finite value agree.
inline double max_rel_error(const Tensor& a, const Tensor& b, double floor = 1e-3) {
  const double inf = std::numeric_limits<double>::infinity();
  if (!a.defined() || !b.defined() || a.shape() != b.shape()) return inf;
  std::vector<double> av = a.to_vector(), bv = b.to_vector();
  double worst = 0;
  for (size_t i = 0; i < av.size(); ++i) {
    if (!std::isfinite(av[i]) || !std::isfinite(bv[i])) {
      const bool same = (std::isnan(av[i]) && std::isnan(bv[i])) || av[i] == bv[i];
      if (!same) return inf;
      continue;
    }
    worst = std::max(worst, std::fabs(av[i] - bv[i]) / std::max(std::fabs(bv[i]), floor));
  }
  return worst;
}

}  // namespace testing_util
