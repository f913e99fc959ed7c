// Elementwise ops, reductions to a scalar, and reshape.
#include "engine/ops/op_common.h"
#include "kernels/cpu/elementwise.h"
#ifdef ENGINE_WITH_CUDA
#include "kernels/cuda/elementwise.h"
#endif

namespace engine {
namespace {

using kernels::BinaryOp;
using kernels::UnaryOp;

const void* ptr_or_null(const Tensor& t) { return t.defined() ? t.raw_data() : nullptr; }
void* ptr_or_null_mut(const Tensor& t) { return t.defined() ? t.raw_data() : nullptr; }

template <UnaryOp OP, typename T>
void unary_fwd(const Tensor& x, const Tensor& y, double alpha) {
  auto xp = x.data<T>();
  auto yp = y.data<T>();
  if (x.is_cpu()) return kernels::cpu::unary_forward<OP>(xp, yp, x.numel(), T(alpha));
#ifdef ENGINE_WITH_CUDA
  kernels::cuda::unary_forward<OP, T>(xp, yp, x.numel(), T(alpha));
#else
  ops::no_cuda_kernel("unary op");
#endif
}

template <UnaryOp OP, typename T>
void unary_bwd(const Tensor& x, const Tensor& y, const Tensor& dy, const Tensor& dx, double alpha) {
  auto xp = static_cast<const T*>(ptr_or_null(x));
  auto yp = static_cast<const T*>(ptr_or_null(y));
  if (dy.is_cpu())
    return kernels::cpu::unary_backward<OP>(xp, yp, dy.data<T>(), dx.data<T>(), dx.numel(), T(alpha));
#ifdef ENGINE_WITH_CUDA
  kernels::cuda::unary_backward<OP, T>(xp, yp, dy.data<T>(), dx.data<T>(), dx.numel(), T(alpha));
#else
  ops::no_cuda_kernel("unary op backward");
#endif
}

// y = f(x); the backward needs x (save_x) and/or y (save_y).
template <UnaryOp OP>
Tensor unary(const char* name, const Tensor& x, double alpha, bool save_x, bool save_y) {
  ops::check_defined(name, x, "input");
  ops::check_same(name, {&x});
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  ENGINE_DISPATCH_FLOAT(x.dtype(), T, unary_fwd<OP, T>(x, y, alpha));
  if (needs_grad({&x})) {
    Tensor xs = save_x ? x.detach() : Tensor();
    Tensor ys = save_y ? y.detach() : Tensor();
    record(y, name, {&x}, [xs, ys, alpha](const Tensor& dy) -> std::vector<Tensor> {
      Tensor dx = Tensor::empty(dy.shape(), dy.dtype(), dy.device());
      ENGINE_DISPATCH_FLOAT(dy.dtype(), T, unary_bwd<OP, T>(xs, ys, dy, dx, alpha));
      return {dx};
    });
  }
  return y;
}

template <BinaryOp OP, typename T>
void binary_fwd(const Tensor& a, const Tensor& b, const Tensor& y) {
  if (a.is_cpu()) return kernels::cpu::binary_forward<OP>(a.data<T>(), b.data<T>(), y.data<T>(), y.numel());
#ifdef ENGINE_WITH_CUDA
  kernels::cuda::binary_forward<OP, T>(a.data<T>(), b.data<T>(), y.data<T>(), y.numel());
#else
  ops::no_cuda_kernel("binary op");
#endif
}

template <BinaryOp OP, typename T>
void binary_bwd(const Tensor& a, const Tensor& b, const Tensor& y, const Tensor& dy, const Tensor& da,
                const Tensor& db) {
  auto ap = static_cast<const T*>(ptr_or_null(a));
  auto bp = static_cast<const T*>(ptr_or_null(b));
  auto yp = static_cast<const T*>(ptr_or_null(y));
  auto dap = static_cast<T*>(ptr_or_null_mut(da));
  auto dbp = static_cast<T*>(ptr_or_null_mut(db));
  if (dy.is_cpu()) return kernels::cpu::binary_backward<OP>(ap, bp, yp, dy.data<T>(), dap, dbp, dy.numel());
#ifdef ENGINE_WITH_CUDA
  kernels::cuda::binary_backward<OP, T>(ap, bp, yp, dy.data<T>(), dap, dbp, dy.numel());
#else
  ops::no_cuda_kernel("binary op backward");
#endif
}

template <BinaryOp OP>
Tensor binary(const char* name, const Tensor& a, const Tensor& b, bool save_inputs, bool save_y) {
  ops::check_defined(name, a, "first input");
  ops::check_defined(name, b, "second input");
  ops::check_same(name, {&a, &b});
  ENGINE_CHECK(a.shape() == b.shape(), name, ": shape mismatch, ", a.desc(), " vs ", b.desc());
  Tensor y = Tensor::empty(a.shape(), a.dtype(), a.device());
  ENGINE_DISPATCH_FLOAT(a.dtype(), T, binary_fwd<OP, T>(a, b, y));
  if (needs_grad({&a, &b})) {
    Tensor as = save_inputs ? a.detach() : Tensor();
    Tensor bs = save_inputs ? b.detach() : Tensor();
    Tensor ys = save_y ? y.detach() : Tensor();
    bool ga = a.requires_grad(), gb = b.requires_grad();
    record(y, name, {&a, &b}, [as, bs, ys, ga, gb](const Tensor& dy) -> std::vector<Tensor> {
      Tensor da = ga ? Tensor::empty(dy.shape(), dy.dtype(), dy.device()) : Tensor();
      Tensor db = gb ? Tensor::empty(dy.shape(), dy.dtype(), dy.device()) : Tensor();
      ENGINE_DISPATCH_FLOAT(dy.dtype(), T, binary_bwd<OP, T>(as, bs, ys, dy, da, db));
      return {da, db};
    });
  }
  return y;
}

template <typename T>
double sum_all(const Tensor& x) {
  if (x.is_cpu()) return kernels::cpu::sum(x.data<T>(), x.numel());
#ifdef ENGINE_WITH_CUDA
  return kernels::cuda::sum(x.data<T>(), x.numel());
#else
  ops::no_cuda_kernel("sum");
#endif
}

// sum(x) * factor as a [1] tensor; the gradient is factor * dy everywhere.
Tensor scaled_sum(const char* name, const Tensor& x, double factor) {
  ops::check_defined(name, x, "input");
  ops::check_same(name, {&x});
  double total = ENGINE_DISPATCH_FLOAT(x.dtype(), T, sum_all<T>(x)) * factor;
  Tensor y = Tensor::full({1}, total, x.dtype(), x.device());
  if (needs_grad({&x})) {
    Shape shape = x.shape();
    record(y, name, {&x}, [shape, factor](const Tensor& dy) -> std::vector<Tensor> {
      return {Tensor::full(shape, dy.item() * factor, dy.dtype(), dy.device())};
    });
  }
  return y;
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) { return binary<BinaryOp::Add>("add", a, b, false, false); }
Tensor add_relu(const Tensor& a, const Tensor& b) {
  return binary<BinaryOp::AddRelu>("add_relu", a, b, false, true);
}
Tensor sub(const Tensor& a, const Tensor& b) { return binary<BinaryOp::Sub>("sub", a, b, false, false); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary<BinaryOp::Mul>("mul", a, b, true, false); }
Tensor scale(const Tensor& a, double s) { return unary<UnaryOp::Scale>("scale", a, s, false, false); }
Tensor relu(const Tensor& x) { return unary<UnaryOp::Relu>("relu", x, 0, true, false); }
Tensor sigmoid(const Tensor& x) { return unary<UnaryOp::Sigmoid>("sigmoid", x, 0, false, true); }
Tensor softplus(const Tensor& x) { return unary<UnaryOp::Softplus>("softplus", x, 0, true, false); }
Tensor sum(const Tensor& x) { return scaled_sum("sum", x, 1.0); }
Tensor mean(const Tensor& x) {
  ENGINE_CHECK(x.defined() && x.numel() > 0, "mean: empty or undefined input");
  return scaled_sum("mean", x, 1.0 / static_cast<double>(x.numel()));
}

Tensor reshape(const Tensor& x, const Shape& shape) {
  ops::check_defined("reshape", x, "input");
  Shape resolved = shape;
  int infer = -1;
  int64_t known = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      ENGINE_CHECK(infer < 0, "reshape: more than one -1 in ", shape_str(shape));
      infer = static_cast<int>(i);
    } else {
      ENGINE_CHECK(shape[i] >= 0, "reshape: invalid dimension in ", shape_str(shape));
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    ENGINE_CHECK(known > 0 && x.numel() % known == 0, "reshape: cannot view ", x.desc(), " as ",
                 shape_str(shape));
    resolved[infer] = x.numel() / known;
  }
  ENGINE_CHECK(shape_numel(resolved) == x.numel(), "reshape: cannot view ", x.desc(), " (",
               x.numel(), " elements) as ", shape_str(shape));
  Tensor y = x.detach();
  y.impl().shape = resolved;
  if (needs_grad({&x})) {
    Shape in_shape = x.shape();
    record(y, "reshape", {&x}, [in_shape](const Tensor& dy) -> std::vector<Tensor> {
      Tensor dx = dy.detach();
      dx.impl().shape = in_shape;
      return {dx};
    });
  }
  return y;
}

Tensor flatten(const Tensor& x) {
  ops::check_defined("flatten", x, "input");
  ENGINE_CHECK(x.ndim() >= 1, "flatten: needs at least one dimension, got ", x.desc());
  return reshape(x, {x.dim(0), -1});
}

}  // namespace engine
