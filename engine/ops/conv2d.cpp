// conv2d: y = x (*) w + b, a cross-correlation as in PyTorch; NHWC input, KRSC weight.
#include "engine/ops/op_common.h"
#include "kernels/cpu/conv2d.h"
#ifdef ENGINE_WITH_CUDA
#include "kernels/cuda/conv2d.h"
#endif

namespace engine {
namespace {

// The four passes of one backend (kernels/cpu/conv2d.h or kernels/cuda/conv2d.h).
template <typename T>
struct Conv2dKernels {
  void (*forward)(const kernels::Conv2dShape&, const T*, const T*, const T*, T*);
  void (*backward_data)(const kernels::Conv2dShape&, const T*, const T*, T*);
  void (*backward_weight)(const kernels::Conv2dShape&, const T*, const T*, T*);
  void (*backward_bias)(const kernels::Conv2dShape&, const T*, T*);
};

template <typename T>
Conv2dKernels<T> conv2d_kernels(const Tensor& t) {
  if (t.is_cpu())
    return {kernels::cpu::conv2d_forward<T>, kernels::cpu::conv2d_backward_data<T>,
            kernels::cpu::conv2d_backward_weight<T>, kernels::cpu::conv2d_backward_bias<T>};
#ifdef ENGINE_WITH_CUDA
  return {kernels::cuda::conv2d_forward<T>, kernels::cuda::conv2d_backward_data<T>,
          kernels::cuda::conv2d_backward_weight<T>, kernels::cuda::conv2d_backward_bias<T>};
#else
  ops::no_cuda_kernel("conv2d");
#endif
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, int stride, int pad) {
  const char* op = "conv2d";
  ops::check_ndim(op, x, 4, "input x");
  ops::check_ndim(op, w, 4, "weight");
  ops::check_same(op, {&x, &w, &bias});
  ENGINE_CHECK(stride >= 1, op, ": stride must be at least 1, got ", stride);
  ENGINE_CHECK(pad >= 0, op, ": padding must not be negative, got ", pad);
  const int64_t N = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3);
  const int64_t K = w.dim(0), R = w.dim(1), S = w.dim(2);
  ENGINE_CHECK(w.dim(3) == C, op, ": input x ", x.desc(), " has ", C,
               " channels but weight [K, R, S, C] ", w.desc(), " expects ", w.dim(3));
  ENGINE_CHECK(K > 0 && R > 0 && S > 0 && C > 0, op, ": weight ", w.desc(), " has an empty dimension");
  ENGINE_CHECK(R <= H + 2 * pad && S <= W + 2 * pad, op, ": kernel ", R, "x", S, " of weight ",
               w.desc(), " is larger than the padded input ", H + 2 * pad, "x", W + 2 * pad,
               " (input x ", x.desc(), ", pad ", pad, ")");
  if (bias.defined())
    ENGINE_CHECK(bias.shape() == Shape{K}, op, ": bias ", bias.desc(), " must be [", K, "]");

  const kernels::Conv2dShape s = kernels::Conv2dShape::make(N, H, W, C, K, R, S, stride, pad);
  Tensor y = Tensor::empty({N, s.P, s.Q, K}, x.dtype(), x.device());
  ENGINE_DISPATCH_FLOAT(x.dtype(), T,
                        conv2d_kernels<T>(x).forward(s, x.data<T>(), w.data<T>(),
                                                     bias.defined() ? bias.data<T>() : nullptr,
                                                     y.data<T>()));
  if (needs_grad({&x, &w, &bias})) {
    const bool gx = x.requires_grad(), gw = w.requires_grad(), gb = bias.defined() && bias.requires_grad();
    // dx needs only the weight, dw only the input: keep no more than the gradients need.
    const Tensor xs = gw ? x.detach() : Tensor(), ws = gx ? w.detach() : Tensor();
    record(y, op, {&x, &w, &bias}, [=](const Tensor& dy) -> std::vector<Tensor> {
      Tensor dx = gx ? Tensor::empty({N, H, W, C}, dy.dtype(), dy.device()) : Tensor();
      Tensor dw = gw ? Tensor::empty({K, R, S, C}, dy.dtype(), dy.device()) : Tensor();
      Tensor db = gb ? Tensor::empty({K}, dy.dtype(), dy.device()) : Tensor();
      ENGINE_DISPATCH_FLOAT(dy.dtype(), T, [&] {
        const Conv2dKernels<T> k = conv2d_kernels<T>(dy);
        if (gx) k.backward_data(s, dy.data<T>(), ws.data<T>(), dx.data<T>());
        if (gw) k.backward_weight(s, xs.data<T>(), dy.data<T>(), dw.data<T>());
        if (gb) k.backward_bias(s, dy.data<T>(), db.data<T>());
      }());
      return {dx, dw, db};
    });
  }
  return y;
}

}  // namespace engine
