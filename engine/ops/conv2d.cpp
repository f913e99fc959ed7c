// conv2d: y = x (*) w + b, a cross-correlation as in PyTorch; NHWC input, KRSC weight.
#include <cmath>
#include <utility>
#include <vector>

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

// The geometry of x (*) w, checked.
kernels::Conv2dShape checked_shape(const char* op, const Tensor& x, const Tensor& w, int stride, int pad) {
  ops::check_ndim(op, x, 4, "input x");
  ops::check_ndim(op, w, 4, "weight");
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
  return kernels::Conv2dShape::make(N, H, W, C, K, R, S, stride, pad);
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, int stride, int pad) {
  const char* op = "conv2d";
  const kernels::Conv2dShape s = checked_shape(op, x, w, stride, pad);
  ops::check_same(op, {&x, &w, &bias});
  const int64_t N = s.N, H = s.H, W = s.W, C = s.C, K = s.K, R = s.R, S = s.S;
  if (bias.defined())
    ENGINE_CHECK(bias.shape() == Shape{K}, op, ": bias ", bias.desc(), " must be [", K, "]");

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

Tensor conv2d_bn_inference(const Tensor& x, const Tensor& w, int stride, int pad, const Tensor& gamma,
                           const Tensor& beta, const Tensor& running_mean, const Tensor& running_var,
                           double eps, const Tensor& residual, bool relu) {
  const char* op = "conv2d_bn_inference";
  const kernels::Conv2dShape s = checked_shape(op, x, w, stride, pad);
  ops::check_same(op, {&x, &w, &gamma, &beta, &running_mean, &running_var, &residual});
  const std::pair<const Tensor*, const char*> vectors[] = {
      {&gamma, "gamma"}, {&beta, "beta"}, {&running_mean, "running_mean"}, {&running_var, "running_var"}};
  for (const auto& [t, name] : vectors) {
    ops::check_defined(op, *t, name);
    ENGINE_CHECK(t->shape() == Shape{s.K}, op, ": ", name, " ", t->desc(), " must be [", s.K,
                 "], the output channels of weight ", w.desc());
  }
  const Shape out{s.N, s.P, s.Q, s.K};
  if (residual.defined())
    ENGINE_CHECK(residual.shape() == out, op, ": residual ", residual.desc(), " must have the output's shape ",
                 shape_str(out));
  ENGINE_CHECK(!needs_grad({&x, &w, &gamma, &beta, &residual}), op,
               ": records no gradient (inference only); with gradients enabled use conv2d and batch_norm2d, or "
               "run under NoGradGuard");
  ENGINE_CHECK(eps >= 0, op, ": eps must not be negative, got ", eps);
  if (!x.is_cpu()) {  // no fused kernel on the GPU: the same ops one after another
    Tensor y = batch_norm2d(conv2d(x, w, Tensor(), stride, pad), gamma, beta, running_mean, running_var,
                            /*training=*/false, 0.1, eps);
    if (residual.defined()) return relu ? add_relu(y, residual) : add(y, residual);
    return relu ? engine::relu(y) : y;
  }
  Tensor y = Tensor::empty(out, x.dtype(), x.device());
  ENGINE_DISPATCH_FLOAT(x.dtype(), T, [&] {
    // the normalisation as center, scale, shift per channel (scale computed in double)
    const T *g = gamma.data<T>(), *b = beta.data<T>(), *m = running_mean.data<T>(), *v = running_var.data<T>();
    std::vector<T> scale(static_cast<size_t>(s.K));
    for (int64_t k = 0; k < s.K; ++k)
      scale[k] = static_cast<T>(static_cast<double>(g[k]) / std::sqrt(static_cast<double>(v[k]) + eps));
    kernels::cpu::conv2d_forward_fused<T>(s, x.data<T>(), w.data<T>(), m, scale.data(), b,
                                          residual.defined() ? residual.data<T>() : nullptr, relu, y.data<T>());
  }());
  return y;
}

}  // namespace engine
