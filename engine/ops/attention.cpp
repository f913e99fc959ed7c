// The spatial-attention ops: channel mean/max pooling and the gate multiply.
#include <limits>
#include <memory>

#include "engine/ops/op_common.h"
#include "kernels/cpu/attention.h"
#ifdef ENGINE_WITH_CUDA
#include "kernels/cuda/attention.h"
#endif

namespace engine {
namespace {

// x [N, H, W, C] seen as [pixels, C].
int64_t pixels_of(const Tensor& x) { return x.dim(0) * x.dim(1) * x.dim(2); }

template <typename T> T* data_or_null(const Tensor& t) { return t.defined() ? t.data<T>() : nullptr; }

// The kernels of the tensors' device (the device of the first tensor argument).
template <typename T>
void mean_max_forward(const Tensor& x, const Tensor& y, int32_t* argmax, int64_t pixels, int64_t channels) {
  if (x.is_cpu())
    return kernels::cpu::channel_mean_max_forward<T>(x.data<T>(), y.data<T>(), argmax, pixels, channels);
#ifdef ENGINE_WITH_CUDA
  kernels::cuda::channel_mean_max_forward<T>(x.data<T>(), y.data<T>(), argmax, pixels, channels);
#else
  ops::no_cuda_kernel("channel_mean_max");
#endif
}

template <typename T>
void mean_max_backward(const Tensor& dy, const int32_t* argmax, const Tensor& dx, int64_t pixels,
                       int64_t channels) {
  if (dy.is_cpu())
    return kernels::cpu::channel_mean_max_backward<T>(dy.data<T>(), argmax, dx.data<T>(), pixels, channels);
#ifdef ENGINE_WITH_CUDA
  kernels::cuda::channel_mean_max_backward<T>(dy.data<T>(), argmax, dx.data<T>(), pixels, channels);
#else
  ops::no_cuda_kernel("channel_mean_max backward");
#endif
}

template <typename T>
void gate_forward(const Tensor& x, const Tensor& g, const Tensor& y, int64_t pixels, int64_t channels) {
  if (x.is_cpu())
    return kernels::cpu::gate_mul_forward<T>(x.data<T>(), g.data<T>(), y.data<T>(), pixels, channels);
#ifdef ENGINE_WITH_CUDA
  kernels::cuda::gate_mul_forward<T>(x.data<T>(), g.data<T>(), y.data<T>(), pixels, channels);
#else
  ops::no_cuda_kernel("gate_mul");
#endif
}

// x is needed only for dg, g only for dx: either may be undefined when its gradient is not.
template <typename T>
void gate_backward(const Tensor& x, const Tensor& g, const Tensor& dy, const Tensor& dx, const Tensor& dg,
                   int64_t pixels, int64_t channels) {
  if (dy.is_cpu())
    return kernels::cpu::gate_mul_backward<T>(data_or_null<T>(x), data_or_null<T>(g), dy.data<T>(),
                                              data_or_null<T>(dx), data_or_null<T>(dg), pixels, channels);
#ifdef ENGINE_WITH_CUDA
  kernels::cuda::gate_mul_backward<T>(data_or_null<T>(x), data_or_null<T>(g), dy.data<T>(), data_or_null<T>(dx),
                                      data_or_null<T>(dg), pixels, channels);
#else
  ops::no_cuda_kernel("gate_mul backward");
#endif
}

}  // namespace

Tensor channel_mean_max(const Tensor& x) {
  const char* op = "channel_mean_max";
  ops::check_ndim(op, x, 4, "input x (NHWC)");
  ops::check_same(op, {&x});
  const int64_t pixels = pixels_of(x), channels = x.dim(3);
  ENGINE_CHECK(channels > 0, op, ": input ", x.desc(), " has no channels");
  ENGINE_CHECK(channels <= std::numeric_limits<int32_t>::max(), op, ": input ", x.desc(),
               " has too many channels for 32-bit argmax indices");
#ifndef ENGINE_WITH_CUDA
  if (!x.is_cpu()) ops::no_cuda_kernel(op);
#endif
  Tensor y = Tensor::empty({x.dim(0), x.dim(1), x.dim(2), 2}, x.dtype(), x.device());
  const bool grad = needs_grad({&x});
  // The max's gradient goes to one channel per pixel: its index is kept for the backward.
  std::shared_ptr<Storage> argmax =
      grad ? std::make_shared<Storage>(x.device(), static_cast<size_t>(pixels) * sizeof(int32_t))
           : nullptr;
  auto argmax_ptr = [](const std::shared_ptr<Storage>& s) {
    return s ? static_cast<int32_t*>(s->data()) : nullptr;
  };
  ENGINE_DISPATCH_FLOAT(x.dtype(), T, mean_max_forward<T>(x, y, argmax_ptr(argmax), pixels, channels));
  if (grad) {
    Shape in_shape = x.shape();
    record(y, op, {&x}, [=](const Tensor& dy) -> std::vector<Tensor> {
      Tensor dx = Tensor::empty(in_shape, dy.dtype(), dy.device());
      ENGINE_DISPATCH_FLOAT(dy.dtype(), T, mean_max_backward<T>(dy, argmax_ptr(argmax), dx, pixels, channels));
      return {dx};
    });
  }
  return y;
}

Tensor gate_mul(const Tensor& x, const Tensor& g) {
  const char* op = "gate_mul";
  ops::check_ndim(op, x, 4, "input x (NHWC)");
  ops::check_ndim(op, g, 4, "gate g");
  ops::check_same(op, {&x, &g});
  ENGINE_CHECK(g.shape() == Shape({x.dim(0), x.dim(1), x.dim(2), 1}), op, ": gate ", g.desc(),
               " must be [N, H, W, 1] for input ", x.desc());
#ifndef ENGINE_WITH_CUDA
  if (!x.is_cpu()) ops::no_cuda_kernel(op);
#endif
  const int64_t pixels = pixels_of(x), channels = x.dim(3);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  ENGINE_DISPATCH_FLOAT(x.dtype(), T, gate_forward<T>(x, g, y, pixels, channels));
  if (needs_grad({&x, &g})) {
    const bool gx = x.requires_grad(), gg = g.requires_grad();
    // dx needs the gate, dg needs the input: save only what is used.
    Tensor xs = gg ? x.detach() : Tensor();
    Tensor gs = gx ? g.detach() : Tensor();
    Shape x_shape = x.shape(), g_shape = g.shape();
    record(y, op, {&x, &g}, [=](const Tensor& dy) -> std::vector<Tensor> {
      Tensor dx = gx ? Tensor::empty(x_shape, dy.dtype(), dy.device()) : Tensor();
      Tensor dg = gg ? Tensor::empty(g_shape, dy.dtype(), dy.device()) : Tensor();
      ENGINE_DISPATCH_FLOAT(dy.dtype(), T, gate_backward<T>(xs, gs, dy, dx, dg, pixels, channels));
      return {dx, dg};
    });
  }
  return y;
}

}  // namespace engine
