// max_pool2d and global_avg_pool over NHWC activations, PyTorch's semantics.
#include "engine/ops/op_common.h"
#include "kernels/cpu/pool.h"

namespace engine {

Tensor max_pool2d(const Tensor& x, int kernel, int stride, int pad) {
  const char* op = "max_pool2d";
  ops::check_ndim(op, x, 4, "input x [N, H, W, C]");
  ops::check_same(op, {&x});
  ENGINE_CHECK(kernel > 0 && stride > 0 && pad >= 0, op,
               ": needs kernel > 0, stride > 0, pad >= 0, got kernel ", kernel, ", stride ", stride,
               ", pad ", pad);
  // As PyTorch: a larger pad would make windows of padding only, whose max is -inf.
  ENGINE_CHECK(pad <= kernel / 2, op, ": pad ", pad, " must be at most half the kernel size ", kernel);
  const int64_t in_h = x.dim(1), in_w = x.dim(2);
  ENGINE_CHECK(in_h + 2 * pad >= kernel && in_w + 2 * pad >= kernel, op, ": kernel ", kernel,
               " is larger than the padded input ", in_h + 2 * pad, "x", in_w + 2 * pad, " of x ", x.desc(),
               " (pad ", pad, ")");
  const kernels::cpu::MaxPoolShape shape{x.dim(0), in_h, in_w, x.dim(3), kernel, stride, pad,
                                         kernels::cpu::pool_output_size(in_h, kernel, stride, pad),
                                         kernels::cpu::pool_output_size(in_w, kernel, stride, pad)};
  if (!x.is_cpu()) ops::no_cuda_kernel(op);
  Tensor y = Tensor::empty({shape.batch, shape.out_h, shape.out_w, shape.channels}, x.dtype(), x.device());
  ENGINE_DISPATCH_FLOAT(x.dtype(), T, kernels::cpu::max_pool2d_forward<T>(x.data<T>(), y.data<T>(), shape));
  if (needs_grad({&x})) {
    Tensor xs = x.detach(), ys = y.detach();
    record(y, op, {&x}, [xs, ys, shape](const Tensor& dy) -> std::vector<Tensor> {
      Tensor dx = Tensor::empty(xs.shape(), dy.dtype(), dy.device());
      ENGINE_DISPATCH_FLOAT(dy.dtype(), T,
                            kernels::cpu::max_pool2d_backward<T>(xs.data<T>(), ys.data<T>(), dy.data<T>(),
                                                                 dx.data<T>(), shape));
      return {dx};
    });
  }
  return y;
}

Tensor global_avg_pool(const Tensor& x) {
  const char* op = "global_avg_pool";
  ops::check_ndim(op, x, 4, "input x [N, H, W, C]");
  ops::check_same(op, {&x});
  const int64_t batch = x.dim(0), spatial = x.dim(1) * x.dim(2), channels = x.dim(3);
  ENGINE_CHECK(spatial > 0, op, ": input x ", x.desc(), " has no spatial positions to average");
  if (!x.is_cpu()) ops::no_cuda_kernel(op);
  Tensor y = Tensor::empty({batch, channels}, x.dtype(), x.device());
  ENGINE_DISPATCH_FLOAT(x.dtype(), T,
                        kernels::cpu::global_avg_pool_forward<T>(x.data<T>(), y.data<T>(), batch, spatial,
                                                                 channels));
  if (needs_grad({&x})) {
    Shape in_shape = x.shape();
    record(y, op, {&x}, [in_shape, batch, spatial, channels](const Tensor& dy) -> std::vector<Tensor> {
      Tensor dx = Tensor::empty(in_shape, dy.dtype(), dy.device());
      ENGINE_DISPATCH_FLOAT(dy.dtype(), T,
                            kernels::cpu::global_avg_pool_backward<T>(dy.data<T>(), dx.data<T>(), batch,
                                                                      spatial, channels));
      return {dx};
    });
  }
  return y;
}

}  // namespace engine
