// CPU elementwise kernels over contiguous arrays, threaded with OpenMP. The math is in
// kernels/common/elementwise.h, shared with the CUDA backend.
// Gradient rule: activation gradients are written (=), never accumulated.
#pragma once
#include <cstdint>

#include "kernels/common/elementwise.h"
#include "kernels/cpu/parallel.h"

namespace kernels::cpu {

constexpr int64_t kElementwiseGrain = 1 << 15;

template <UnaryOp OP, typename T>
void unary_forward(const T* x, T* y, int64_t n, T alpha = T(0)) {
  parallel_for(n, kElementwiseGrain, [=](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) y[i] = unary_forward_fn<OP>(x[i], alpha);
  });
}

template <UnaryOp OP, typename T>
void unary_backward(const T* x, const T* y, const T* dy, T* dx, int64_t n, T alpha = T(0)) {
  parallel_for(n, kElementwiseGrain, [=](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      dx[i] = unary_backward_fn<OP>(x ? x[i] : T(0), y ? y[i] : T(0), dy[i], alpha);
  });
}

template <BinaryOp OP, typename T>
void binary_forward(const T* a, const T* b, T* y, int64_t n) {
  parallel_for(n, kElementwiseGrain, [=](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) y[i] = binary_forward_fn<OP>(a[i], b[i]);
  });
}

// da or db may be null when that input needs no gradient.
template <BinaryOp OP, typename T>
void binary_backward(const T* a, const T* b, const T* y, const T* dy, T* da, T* db, int64_t n) {
  parallel_for(n, kElementwiseGrain, [=](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) {
      T ga, gb;
      binary_backward_fn<OP>(a ? a[i] : T(0), b ? b[i] : T(0), y ? y[i] : T(0), dy[i], &ga, &gb);
      if (da) da[i] = ga;
      if (db) db[i] = gb;
    }
  });
}

// Sum of all elements, accumulated in double.
template <typename T>
double sum(const T* x, int64_t n) {
  double total = 0;
#pragma omp parallel for reduction(+ : total) schedule(static) if (n > kElementwiseGrain)
  for (int64_t i = 0; i < n; ++i) total += x[i];
  return total;
}

}  // namespace kernels::cpu
