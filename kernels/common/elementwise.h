// Elementwise math shared by the CPU and CUDA backends: forward and backward of each
// unary and binary op, as inline functions that both compilers inline into their loops.
#pragma once
#include <cmath>

#include "kernels/common/macros.h"

namespace kernels {

enum class UnaryOp { Relu, Sigmoid, Softplus, Scale };
enum class BinaryOp { Add, AddRelu, Sub, Mul };

// softplus(x) = log(1 + exp(x)), computed without overflow: max(x,0) + log1p(exp(-|x|)).
template <typename T> KERNEL_HD T softplus_fn(T x) {
  return (x > T(0) ? x : T(0)) + log1p(exp(-fabs(x)));
}
template <typename T> KERNEL_HD T sigmoid_fn(T x) {
  // two branches so that exp never overflows
  if (x >= T(0)) return T(1) / (T(1) + exp(-x));
  T e = exp(x);
  return e / (T(1) + e);
}

template <UnaryOp OP, typename T> KERNEL_HD T unary_forward_fn(T x, T alpha) {
  if constexpr (OP == UnaryOp::Relu) return x < T(0) ? T(0) : x;  // a NaN stays NaN, as in PyTorch
  if constexpr (OP == UnaryOp::Sigmoid) return sigmoid_fn(x);
  if constexpr (OP == UnaryOp::Softplus) return softplus_fn(x);
  if constexpr (OP == UnaryOp::Scale) return x * alpha;
  return x;
}

// dL/dx from the input x, the output y and dL/dy.
template <UnaryOp OP, typename T> KERNEL_HD T unary_backward_fn(T x, T y, T dy, T alpha) {
  if constexpr (OP == UnaryOp::Relu) return x > T(0) ? dy : T(0);
  if constexpr (OP == UnaryOp::Sigmoid) return dy * y * (T(1) - y);
  if constexpr (OP == UnaryOp::Softplus) return dy * sigmoid_fn(x);
  if constexpr (OP == UnaryOp::Scale) return dy * alpha;
  (void)x; (void)y;
  return dy;
}

template <BinaryOp OP, typename T> KERNEL_HD T binary_forward_fn(T a, T b) {
  if constexpr (OP == BinaryOp::Add) return a + b;
  if constexpr (OP == BinaryOp::AddRelu) return a + b < T(0) ? T(0) : a + b;  // NaN stays NaN
  if constexpr (OP == BinaryOp::Sub) return a - b;
  if constexpr (OP == BinaryOp::Mul) return a * b;
  return a;
}

// dL/da and dL/db from the inputs, the output y and dL/dy.
template <BinaryOp OP, typename T> KERNEL_HD void binary_backward_fn(T a, T b, T y, T dy, T* da, T* db) {
  if constexpr (OP == BinaryOp::Add) { *da = dy; *db = dy; }
  if constexpr (OP == BinaryOp::AddRelu) { T g = y > T(0) ? dy : T(0); *da = g; *db = g; }
  if constexpr (OP == BinaryOp::Sub) { *da = dy; *db = -dy; }
  if constexpr (OP == BinaryOp::Mul) { *da = dy * b; *db = dy * a; }
  (void)a; (void)b; (void)y;
}

}  // namespace kernels
