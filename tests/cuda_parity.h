// Backend parity checks for the CUDA op tests: a CUDA result against the CPU reference with a
// tolerance stated per comparison, and a one-line report of how close each comparison came,
// so that a single run on a GPU shows the margins as well as the failures.
//
// all_close(got, want, tol, scale) passes when, for every element i,
//     |got_i - want_i| <= tol * (|want_i| + scale_i)
// scale_i is the size of the terms whose rounding element i carries: 0 for an element that
// is a correctly rounded function of identical inputs (pure relative error), max|want| for a
// difference of terms of the tensor's size (normwise error), the sum of |terms| for a
// reduction. tol 0 demands bit-equal values. A NaN or infinity in got fails unless want has
// the same (device allocations are poisoned with NaN, so an unwritten element fails), which
// testing_util::max_rel_error would not catch: std::max(worst, NaN) keeps worst.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace testing_util {

// scale_i = max |want| for every element.
inline std::vector<double> normwise_scale(const engine::Tensor& want) {
  const std::vector<double> w = want.to_vector();
  double top = 0;
  for (double v : w) top = std::max(top, std::fabs(v));
  return std::vector<double>(w.size(), top);
}

inline ::testing::AssertionResult all_close(const std::string& what, const engine::Tensor& got,
                                            const engine::Tensor& want, double tol,
                                            const std::vector<double>& scale = {}) {
  if (!got.defined() || !want.defined())
    return ::testing::AssertionFailure() << what << ": undefined tensor (got "
                                         << (got.defined() ? got.desc() : "undefined") << ", want "
                                         << (want.defined() ? want.desc() : "undefined") << ")";
  if (got.shape() != want.shape() || got.dtype() != want.dtype())
    return ::testing::AssertionFailure() << what << ": got " << got.desc() << ", want " << want.desc();
  const std::vector<double> g = got.to_vector(), w = want.to_vector();
  if (!scale.empty() && scale.size() != w.size())
    return ::testing::AssertionFailure() << what << ": " << scale.size() << " scales for " << w.size()
                                         << " elements";
  int64_t bad = 0, worst_at = -1;
  double worst = 0;  // largest |got - want| / allowed, over the elements with an allowance
  std::ostringstream first_bad;
  for (size_t i = 0; i < w.size(); ++i) {
    const double s = scale.empty() ? 0.0 : scale[i];
    const double allowed = tol * (std::fabs(w[i]) + s);
    bool ok;
    double ratio = 0;
    if (std::isnan(w[i]) || std::isinf(w[i])) {
      ok = std::isnan(w[i]) ? std::isnan(g[i]) : g[i] == w[i];
      ratio = ok ? 0.0 : INFINITY;
    } else if (!std::isfinite(g[i])) {
      ok = false;
      ratio = INFINITY;
    } else {
      const double err = std::fabs(g[i] - w[i]);
      ok = err <= allowed;
      ratio = allowed > 0 ? err / allowed : (err > 0 ? INFINITY : 0.0);
    }
    if (ratio > worst) {
      worst = ratio;
      worst_at = static_cast<int64_t>(i);
    }
    if (!ok && bad++ < 5)
      first_bad << "\n    element " << i << ": got " << g[i] << ", want " << w[i] << ", allowed |error| "
                << allowed;
  }
  if (worst_at < 0)
    std::printf("[  parity  ] %-64s exact (tolerance %.3g)%s\n", what.c_str(), tol, bad ? "  FAILED" : "");
  else
    std::printf("[  parity  ] %-64s worst %.3g of tolerance %.3g (element %lld)%s\n", what.c_str(), worst, tol,
                static_cast<long long>(worst_at), bad ? "  FAILED" : "");
  if (bad)
    return ::testing::AssertionFailure() << what << ": " << bad << " of " << w.size()
                                         << " elements outside |got - want| <= " << tol
                                         << " (|want| + scale)" << first_bad.str();
  return ::testing::AssertionSuccess();
}

}  // namespace testing_util
