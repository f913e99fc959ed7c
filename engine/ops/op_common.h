// Shared input checks and dtype dispatch for the op implementations in engine/ops/.
#pragma once
#include <initializer_list>
#include <string>

#include "engine/autograd.h"
#include "engine/ops.h"

namespace engine::ops {

// All defined tensors in `ts` on one device, one float dtype (f32 or f64 on the CPU).
inline void check_same(const char* op, std::initializer_list<const Tensor*> ts) {
  const Tensor* first = nullptr;
  for (const Tensor* t : ts) {
    if (!t || !t->defined()) continue;
    if (!first) {
      first = t;
      ENGINE_CHECK(t->dtype() == DType::F32 || t->dtype() == DType::F64, op, ": dtype ",
                   dtype_name(t->dtype()), " is not supported (", t->desc(), ")");
      continue;
    }
    ENGINE_CHECK(t->device() == first->device(), op, ": device mismatch, ", first->desc(), " vs ",
                 t->desc());
    ENGINE_CHECK(t->dtype() == first->dtype(), op, ": dtype mismatch, ", first->desc(), " vs ",
                 t->desc());
  }
}

inline void check_defined(const char* op, const Tensor& t, const char* name) {
  ENGINE_CHECK(t.defined(), op, ": ", name, " is undefined");
}

inline void check_ndim(const char* op, const Tensor& t, int ndim, const char* name) {
  check_defined(op, t, name);
  ENGINE_CHECK(t.ndim() == ndim, op, ": ", name, " must have ", ndim, " dimensions, got ", t.desc());
}

[[noreturn]] inline void no_cuda_kernel(const char* op) {
  detail::fail(op, ": no CUDA kernel in this build (CUDA backend not compiled in)");
}

}  // namespace engine::ops

namespace engine::ops {
template <typename F>
decltype(auto) dispatch_float(DType dtype, F&& f) {
  if (dtype == DType::F32) return f(float{});
  ENGINE_CHECK(dtype == DType::F64, "dtype ", dtype_name(dtype), " is not supported by this op");
  return f(double{});
}
}  // namespace engine::ops

// Evaluates EXPR with T bound to float or double by `dtype`, and yields its value:
//   ENGINE_DISPATCH_FLOAT(x.dtype(), T, relu_kernel<T>(x.data<T>(), n))
#define ENGINE_DISPATCH_FLOAT(dtype, T, ...) \
  ::engine::ops::dispatch_float((dtype), [&](auto tag_) { using T = decltype(tag_); return __VA_ARGS__; })
