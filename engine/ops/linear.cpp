// linear: y = x w^T + b.
#include "engine/ops/op_common.h"
#include "kernels/cpu/linear.h"

namespace engine {

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias) {
  const char* op = "linear";
  ops::check_ndim(op, x, 2, "input x");
  ops::check_ndim(op, w, 2, "weight");
  ops::check_same(op, {&x, &w, &bias});
  int64_t n = x.dim(0), in = x.dim(1), out = w.dim(0);
  ENGINE_CHECK(w.dim(1) == in, op, ": input ", x.desc(), " has ", in, " features but weight ",
               w.desc(), " expects ", w.dim(1));
  if (bias.defined())
    ENGINE_CHECK(bias.shape() == Shape{out}, op, ": bias ", bias.desc(), " must be [", out, "]");
  if (!x.is_cpu()) ops::no_cuda_kernel(op);  // CUDA linear: issue 5
  Tensor y = Tensor::empty({n, out}, x.dtype(), x.device());
  ENGINE_DISPATCH_FLOAT(x.dtype(), T,
                        kernels::cpu::linear_forward<T>(x.data<T>(), w.data<T>(),
                                                        bias.defined() ? bias.data<T>() : nullptr,
                                                        y.data<T>(), n, in, out));
  if (needs_grad({&x, &w, &bias})) {
    Tensor xs = x.detach(), ws = w.detach();
    bool gx = x.requires_grad(), gw = w.requires_grad(), gb = bias.defined() && bias.requires_grad();
    record(y, op, {&x, &w, &bias}, [=](const Tensor& dy) -> std::vector<Tensor> {
      Tensor dx = gx ? Tensor::empty(xs.shape(), dy.dtype(), dy.device()) : Tensor();
      Tensor dw = gw ? Tensor::empty(ws.shape(), dy.dtype(), dy.device()) : Tensor();
      Tensor db = gb ? Tensor::empty({out}, dy.dtype(), dy.device()) : Tensor();
      ENGINE_DISPATCH_FLOAT(dy.dtype(), T,
                            kernels::cpu::linear_backward<T>(
                                xs.data<T>(), ws.data<T>(), dy.data<T>(), gx ? dx.data<T>() : nullptr,
                                gw ? dw.data<T>() : nullptr, gb ? db.data<T>() : nullptr, n, in, out));
      return {dx, dw, db};
    });
  }
  return y;
}

}  // namespace engine
