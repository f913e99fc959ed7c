// The spatial-attention ops: channel mean/max pooling and the gate multiply.
#include <limits>
#include <memory>

#include "engine/ops/op_common.h"
#include "kernels/cpu/attention.h"

namespace engine {
namespace {

// x [N, H, W, C] seen as [pixels, C].
int64_t pixels_of(const Tensor& x) { return x.dim(0) * x.dim(1) * x.dim(2); }

}  // namespace

Tensor channel_mean_max(const Tensor& x) {
  const char* op = "channel_mean_max";
  ops::check_ndim(op, x, 4, "input x (NHWC)");
  ops::check_same(op, {&x});
  const int64_t pixels = pixels_of(x), channels = x.dim(3);
  ENGINE_CHECK(channels > 0, op, ": input ", x.desc(), " has no channels");
  ENGINE_CHECK(channels <= std::numeric_limits<int32_t>::max(), op, ": input ", x.desc(),
               " has too many channels for 32-bit argmax indices");
  if (!x.is_cpu()) ops::no_cuda_kernel(op);
  Tensor y = Tensor::empty({x.dim(0), x.dim(1), x.dim(2), 2}, x.dtype(), x.device());
  const bool grad = needs_grad({&x});
  // The max's gradient goes to one channel per pixel: its index is kept for the backward.
  std::shared_ptr<Storage> argmax =
      grad ? std::make_shared<Storage>(x.device(), static_cast<size_t>(pixels) * sizeof(int32_t))
           : nullptr;
  auto argmax_ptr = [](const std::shared_ptr<Storage>& s) {
    return s ? static_cast<int32_t*>(s->data()) : nullptr;
  };
  ENGINE_DISPATCH_FLOAT(x.dtype(), T,
                        kernels::cpu::channel_mean_max_forward<T>(
                            x.data<T>(), y.data<T>(), argmax_ptr(argmax), pixels, channels));
  if (grad) {
    Shape in_shape = x.shape();
    record(y, op, {&x}, [=](const Tensor& dy) -> std::vector<Tensor> {
      Tensor dx = Tensor::empty(in_shape, dy.dtype(), dy.device());
      ENGINE_DISPATCH_FLOAT(dy.dtype(), T,
                            kernels::cpu::channel_mean_max_backward<T>(
                                dy.data<T>(), argmax_ptr(argmax), dx.data<T>(), pixels, channels));
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
  if (!x.is_cpu()) ops::no_cuda_kernel(op);
  const int64_t pixels = pixels_of(x), channels = x.dim(3);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  ENGINE_DISPATCH_FLOAT(
      x.dtype(), T,
      kernels::cpu::gate_mul_forward<T>(x.data<T>(), g.data<T>(), y.data<T>(), pixels, channels));
  if (needs_grad({&x, &g})) {
    const bool gx = x.requires_grad(), gg = g.requires_grad();
    // dx needs the gate, dg needs the input: save only what is used.
    Tensor xs = gg ? x.detach() : Tensor();
    Tensor gs = gx ? g.detach() : Tensor();
    Shape x_shape = x.shape(), g_shape = g.shape();
    record(y, op, {&x, &g}, [=](const Tensor& dy) -> std::vector<Tensor> {
      Tensor dx = gx ? Tensor::empty(x_shape, dy.dtype(), dy.device()) : Tensor();
      Tensor dg = gg ? Tensor::empty(g_shape, dy.dtype(), dy.device()) : Tensor();
      ENGINE_DISPATCH_FLOAT(
          dy.dtype(), T,
          kernels::cpu::gate_mul_backward<T>(
              gg ? xs.data<T>() : nullptr, gx ? gs.data<T>() : nullptr, dy.data<T>(),
              gx ? dx.data<T>() : nullptr, gg ? dg.data<T>() : nullptr, pixels, channels));
      return {dx, dg};
    });
  }
  return y;
}

}  // namespace engine
