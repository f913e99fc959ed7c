// max_pool2d and global_avg_pool over NHWC activations, PyTorch's semantics.
#include "engine/ops/op_common.h"
#include "kernels/cpu/pool.h"
#ifdef ENGINE_WITH_CUDA
#include "kernels/cuda/pool.h"
#endif

namespace engine {
namespace {

#ifdef ENGINE_WITH_CUDA
kernels::cuda::MaxPoolShape cuda_shape(const kernels::cpu::MaxPoolShape& s) {
  return {s.batch, s.in_h, s.in_w, s.channels, s.kernel, s.stride, s.pad, s.out_h, s.out_w};
}
#endif

template <typename T>
void max_pool_forward(const Tensor& x, const Tensor& y, const kernels::cpu::MaxPoolShape& shape) {
  if (x.is_cpu()) return kernels::cpu::max_pool2d_forward<T>(x.data<T>(), y.data<T>(), shape);
#ifdef ENGINE_WITH_CUDA
  kernels::cuda::max_pool2d_forward<T>(x.data<T>(), y.data<T>(), cuda_shape(shape));
#else
  ops::no_cuda_kernel("max_pool2d");
#endif
}

template <typename T>
void max_pool_backward(const Tensor& x, const Tensor& y, const Tensor& dy, const Tensor& dx,
                       const kernels::cpu::MaxPoolShape& shape) {
  if (dy.is_cpu())
    return kernels::cpu::max_pool2d_backward<T>(x.data<T>(), y.data<T>(), dy.data<T>(), dx.data<T>(), shape);
#ifdef ENGINE_WITH_CUDA
  kernels::cuda::max_pool2d_backward<T>(x.data<T>(), y.data<T>(), dy.data<T>(), dx.data<T>(), cuda_shape(shape));
#else
  ops::no_cuda_kernel("max_pool2d backward");
#endif
}

template <typename T>
void avg_pool_forward(const Tensor& x, const Tensor& y, int64_t batch, int64_t spatial, int64_t channels) {
  if (x.is_cpu())
    return kernels::cpu::global_avg_pool_forward<T>(x.data<T>(), y.data<T>(), batch, spatial, channels);
#ifdef ENGINE_WITH_CUDA
  kernels::cuda::global_avg_pool_forward<T>(x.data<T>(), y.data<T>(), batch, spatial, channels);
#else
  ops::no_cuda_kernel("global_avg_pool");
#endif
}

template <typename T>
void avg_pool_backward(const Tensor& dy, const Tensor& dx, int64_t batch, int64_t spatial, int64_t channels) {
  if (dy.is_cpu())
    return kernels::cpu::global_avg_pool_backward<T>(dy.data<T>(), dx.data<T>(), batch, spatial, channels);
#ifdef ENGINE_WITH_CUDA
  kernels::cuda::global_avg_pool_backward<T>(dy.data<T>(), dx.data<T>(), batch, spatial, channels);
#else
  ops::no_cuda_kernel("global_avg_pool backward");
#endif
}

}  // namespace

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
#ifndef ENGINE_WITH_CUDA
  if (!x.is_cpu()) ops::no_cuda_kernel(op);
#endif
  Tensor y = Tensor::empty({shape.batch, shape.out_h, shape.out_w, shape.channels}, x.dtype(), x.device());
  ENGINE_DISPATCH_FLOAT(x.dtype(), T, max_pool_forward<T>(x, y, shape));
  if (needs_grad({&x})) {
    Tensor xs = x.detach(), ys = y.detach();
    record(y, op, {&x}, [xs, ys, shape](const Tensor& dy) -> std::vector<Tensor> {
      Tensor dx = Tensor::empty(xs.shape(), dy.dtype(), dy.device());
      ENGINE_DISPATCH_FLOAT(dy.dtype(), T, max_pool_backward<T>(xs, ys, dy, dx, shape));
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
#ifndef ENGINE_WITH_CUDA
  if (!x.is_cpu()) ops::no_cuda_kernel(op);
#endif
  Tensor y = Tensor::empty({batch, channels}, x.dtype(), x.device());
  ENGINE_DISPATCH_FLOAT(x.dtype(), T, avg_pool_forward<T>(x, y, batch, spatial, channels));
  if (needs_grad({&x})) {
    Shape in_shape = x.shape();
    record(y, op, {&x}, [in_shape, batch, spatial, channels](const Tensor& dy) -> std::vector<Tensor> {
      Tensor dx = Tensor::empty(in_shape, dy.dtype(), dy.device());
      ENGINE_DISPATCH_FLOAT(dy.dtype(), T, avg_pool_backward<T>(dy, dx, batch, spatial, channels));
      return {dx};
    });
  }
  return y;
}

}  // namespace engine
