// CUDA elementwise kernels (math in kernels/common/elementwise.h), instantiated for float
// and double in elementwise.cu. Same contract as kernels/cpu/elementwise.h.
#pragma once
#include <cstdint>

#include "kernels/common/elementwise.h"

namespace kernels::cuda {

template <UnaryOp OP, typename T> void unary_forward(const T* x, T* y, int64_t n, T alpha);
template <UnaryOp OP, typename T>
void unary_backward(const T* x, const T* y, const T* dy, T* dx, int64_t n, T alpha);
template <BinaryOp OP, typename T> void binary_forward(const T* a, const T* b, T* y, int64_t n);
template <BinaryOp OP, typename T>
void binary_backward(const T* a, const T* b, const T* y, const T* dy, T* da, T* db, int64_t n);
template <typename T> double sum(const T* x, int64_t n);

}  // namespace kernels::cuda
