// Softmax family on the CPU: rows are independent and split across threads. The row sums
// are accumulated in double: a row may be long (a vocabulary) and the cost is negligible
// next to exp.
#include "kernels/cpu/softmax.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/parallel.h"

namespace kernels::cpu {
namespace {

// Rows per thread chunk: about this many elements, so short rows are not split too finely.
constexpr int64_t kSoftmaxGrainElements = 1 << 14;

int64_t row_grain(int64_t cols) {
  return std::max<int64_t>(1, kSoftmaxGrainElements / std::max<int64_t>(1, cols));
}

template <typename F> void for_each_row(int64_t rows, int64_t cols, F&& f) {
  if (cols == 0) return;  // empty rows: nothing to read or write
  parallel_for(rows, row_grain(cols), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) f(r);
  });
}

template <typename T> T row_max(const T* x, int64_t cols) {
  T m = x[0];
  for (int64_t c = 1; c < cols; ++c) m = x[c] > m ? x[c] : m;
  return m;
}

// log(sum(exp(x))) of a row as max + log_sum, log_sum = log(sum(exp(x - max))) in [0, log cols].
// Kept in two parts: x - max is exact for neighbouring values, and adding the small log_sum
// to it last keeps results precise for logits far from zero (+-1000 in float has an ulp of 6e-5).
template <typename T> struct RowLogSumExp {
  T max;
  double log_sum;
};

template <typename T> RowLogSumExp<T> row_log_sum_exp(const T* x, int64_t cols) {
  T m = row_max(x, cols);
  double total = 0;
  for (int64_t c = 0; c < cols; ++c) total += std::exp(x[c] - m);
  return {m, std::log(total)};
}

}  // namespace

template <typename T> void softmax_forward(const T* x, T* y, int64_t rows, int64_t cols) {
  for_each_row(rows, cols, [=](int64_t r) {
    const T* xr = x + r * cols;
    T* yr = y + r * cols;
    T m = row_max(xr, cols);
    double total = 0;
    for (int64_t c = 0; c < cols; ++c) {
      yr[c] = std::exp(xr[c] - m);
      total += yr[c];
    }
    T inv = static_cast<T>(1.0 / total);
    for (int64_t c = 0; c < cols; ++c) yr[c] *= inv;
  });
}

template <typename T>
void softmax_backward(const T* y, const T* dy, T* dx, int64_t rows, int64_t cols) {
  for_each_row(rows, cols, [=](int64_t r) {
    const T* yr = y + r * cols;
    const T* dyr = dy + r * cols;
    double dot = 0;
    for (int64_t c = 0; c < cols; ++c) dot += static_cast<double>(dyr[c]) * yr[c];
    for (int64_t c = 0; c < cols; ++c) dx[r * cols + c] = yr[c] * (dyr[c] - static_cast<T>(dot));
  });
}

template <typename T> void log_softmax_forward(const T* x, T* y, int64_t rows, int64_t cols) {
  for_each_row(rows, cols, [=](int64_t r) {
    const T* xr = x + r * cols;
    RowLogSumExp<T> lse = row_log_sum_exp(xr, cols);
    T log_sum = static_cast<T>(lse.log_sum);
    for (int64_t c = 0; c < cols; ++c) y[r * cols + c] = (xr[c] - lse.max) - log_sum;
  });
}

template <typename T>
void log_softmax_backward(const T* y, const T* dy, T* dx, int64_t rows, int64_t cols) {
  for_each_row(rows, cols, [=](int64_t r) {
    const T* dyr = dy + r * cols;
    double total = 0;
    for (int64_t c = 0; c < cols; ++c) total += dyr[c];
    for (int64_t c = 0; c < cols; ++c)
      dx[r * cols + c] = dyr[c] - std::exp(y[r * cols + c]) * static_cast<T>(total);
  });
}

template <typename T> double cross_entropy_forward(const T* logits, const int64_t* labels,
                                                   T* row_log_sum, int64_t rows, int64_t cols) {
  // Serial over rows: a classifier's batch is small, and a fixed summation order makes the
  // loss independent of the thread count.
  double total = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = logits + r * cols;
    RowLogSumExp<T> lse = row_log_sum_exp(xr, cols);
    row_log_sum[r] = static_cast<T>(lse.log_sum);
    total += (static_cast<double>(lse.max) - xr[labels[r]]) + lse.log_sum;
  }
  return total;
}

template <typename T> void cross_entropy_backward(const T* logits, const int64_t* labels,
                                                  const T* row_log_sum, T scale, T* dlogits,
                                                  int64_t rows, int64_t cols) {
  for_each_row(rows, cols, [=](int64_t r) {
    const T* xr = logits + r * cols;
    T* dr = dlogits + r * cols;
    T m = row_max(xr, cols);
    for (int64_t c = 0; c < cols; ++c) dr[c] = std::exp((xr[c] - m) - row_log_sum[r]) * scale;
    dr[labels[r]] -= scale;
  });
}

#define INSTANTIATE_SOFTMAX(T)                                                                \
  template void softmax_forward<T>(const T*, T*, int64_t, int64_t);                           \
  template void softmax_backward<T>(const T*, const T*, T*, int64_t, int64_t);                \
  template void log_softmax_forward<T>(const T*, T*, int64_t, int64_t);                       \
  template void log_softmax_backward<T>(const T*, const T*, T*, int64_t, int64_t);            \
  template double cross_entropy_forward<T>(const T*, const int64_t*, T*, int64_t, int64_t);   \
  template void cross_entropy_backward<T>(const T*, const int64_t*, const T*, T, T*, int64_t, \
                                          int64_t);
INSTANTIATE_SOFTMAX(float)
INSTANTIATE_SOFTMAX(double)
#undef INSTANTIATE_SOFTMAX

}  // namespace kernels::cpu
