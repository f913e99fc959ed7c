// Fully connected layer on the CPU: y[N,out] = x[N,in] w[out,in]^T + b[out].
// Gradient rule: dx is written; dw and db are written too (the engine accumulates into
// parameter gradients). Any of dx, dw, db may be null when not needed.
#pragma once
#include <cstdint>

namespace kernels::cpu {

template <typename T>
void linear_forward(const T* x, const T* w, const T* b, T* y, int64_t n, int64_t in, int64_t out);

template <typename T>
void linear_backward(const T* x, const T* w, const T* dy, T* dx, T* dw, T* db, int64_t n,
                     int64_t in, int64_t out);

}  // namespace kernels::cpu
