// linear: y = x w^T + b.
#include "engine/ops/op_common.h"
#include "kernels/cpu/linear.h"
#ifdef ENGINE_WITH_CUDA
#include "kernels/cuda/linear.h"
#endif

namespace engine {
namespace {

template <typename T> T* data_or_null(const Tensor& t) { return t.defined() ? t.data<T>() : nullptr; }

template <typename T>
void forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& y, int64_t n, int64_t in,
             int64_t out) {
  if (x.is_cpu())
    return kernels::cpu::linear_forward<T>(x.data<T>(), w.data<T>(), data_or_null<T>(bias), y.data<T>(), n, in,
                                           out);
#ifdef ENGINE_WITH_CUDA
  kernels::cuda::linear_forward<T>(x.data<T>(), w.data<T>(), data_or_null<T>(bias), y.data<T>(), n, in, out);
#else
  ops::no_cuda_kernel("linear");
#endif
}

template <typename T>
void backward(const Tensor& x, const Tensor& w, const Tensor& dy, const Tensor& dx, const Tensor& dw,
              const Tensor& db, int64_t n, int64_t in, int64_t out) {
  if (dy.is_cpu())
    return kernels::cpu::linear_backward<T>(x.data<T>(), w.data<T>(), dy.data<T>(), data_or_null<T>(dx),
                                            data_or_null<T>(dw), data_or_null<T>(db), n, in, out);
#ifdef ENGINE_WITH_CUDA
  kernels::cuda::linear_backward<T>(x.data<T>(), w.data<T>(), dy.data<T>(), data_or_null<T>(dx),
                                    data_or_null<T>(dw), data_or_null<T>(db), n, in, out);
#else
  ops::no_cuda_kernel("linear backward");
#endif
}

}  // namespace

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
  Tensor y = Tensor::empty({n, out}, x.dtype(), x.device());
  ENGINE_DISPATCH_FLOAT(x.dtype(), T, forward<T>(x, w, bias, y, n, in, out));
  if (needs_grad({&x, &w, &bias})) {
    Tensor xs = x.detach(), ws = w.detach();
    bool gx = x.requires_grad(), gw = w.requires_grad(), gb = bias.defined() && bias.requires_grad();
    record(y, op, {&x, &w, &bias}, [=](const Tensor& dy) -> std::vector<Tensor> {
      Tensor dx = gx ? Tensor::empty(xs.shape(), dy.dtype(), dy.device()) : Tensor();
      Tensor dw = gw ? Tensor::empty(ws.shape(), dy.dtype(), dy.device()) : Tensor();
      Tensor db = gb ? Tensor::empty({out}, dy.dtype(), dy.device()) : Tensor();
      ENGINE_DISPATCH_FLOAT(dy.dtype(), T, backward<T>(xs, ws, dy, dx, dw, db, n, in, out));
      return {dx, dw, db};
    });
  }
  return y;
}

}  // namespace engine
