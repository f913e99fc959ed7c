// batch_norm2d: normalisation over the channel (last) dimension, PyTorch's semantics.
#include "engine/ops/op_common.h"
#include "kernels/cpu/batch_norm.h"
#ifdef ENGINE_WITH_CUDA
#include "kernels/cuda/batch_norm.h"
#endif

namespace engine {
namespace {

template <typename T> T* data_or_null(const Tensor& t) { return t.defined() ? t.data<T>() : nullptr; }

// The forward kernels of x's device. mean and invstd (f64) receive the statistics y was
// normalised with.
template <typename T>
void forward_kernels(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& running_mean,
                     const Tensor& running_var, bool training, double momentum, double eps,
                     const Tensor& y, const Tensor& mean, const Tensor& invstd,
                     kernels::cpu::BatchNormShape shape) {
  if (x.is_cpu()) {
    if (training)
      kernels::cpu::batch_norm_forward_train<T>(x.data<T>(), gamma.data<T>(), beta.data<T>(), y.data<T>(),
                                                mean.data<double>(), invstd.data<double>(),
                                                data_or_null<T>(running_mean), data_or_null<T>(running_var),
                                                momentum, eps, shape);
    else
      kernels::cpu::batch_norm_forward_eval<T>(x.data<T>(), gamma.data<T>(), beta.data<T>(),
                                               running_mean.data<T>(), running_var.data<T>(), eps, y.data<T>(),
                                               mean.data<double>(), invstd.data<double>(), shape);
    return;
  }
#ifdef ENGINE_WITH_CUDA
  const kernels::cuda::BatchNormShape cuda_shape{shape.rows, shape.channels};
  if (training)
    kernels::cuda::batch_norm_forward_train<T>(x.data<T>(), gamma.data<T>(), beta.data<T>(), y.data<T>(),
                                               mean.data<double>(), invstd.data<double>(),
                                               data_or_null<T>(running_mean), data_or_null<T>(running_var),
                                               momentum, eps, cuda_shape);
  else
    kernels::cuda::batch_norm_forward_eval<T>(x.data<T>(), gamma.data<T>(), beta.data<T>(),
                                              running_mean.data<T>(), running_var.data<T>(), eps, y.data<T>(),
                                              mean.data<double>(), invstd.data<double>(), cuda_shape);
#else
  ops::no_cuda_kernel("batch_norm2d");
#endif
}

template <typename T>
void backward_kernels(const Tensor& x, const Tensor& dy, const Tensor& gamma, const Tensor& mean,
                      const Tensor& invstd, bool training, const Tensor& dx, const Tensor& dgamma,
                      const Tensor& dbeta, kernels::cpu::BatchNormShape shape) {
  if (dy.is_cpu()) {
    kernels::cpu::batch_norm_backward<T>(x.data<T>(), dy.data<T>(), gamma.data<T>(), mean.data<double>(),
                                         invstd.data<double>(), training, data_or_null<T>(dx),
                                         data_or_null<T>(dgamma), data_or_null<T>(dbeta), shape);
    return;
  }
#ifdef ENGINE_WITH_CUDA
  kernels::cuda::batch_norm_backward<T>(x.data<T>(), dy.data<T>(), gamma.data<T>(), mean.data<double>(),
                                        invstd.data<double>(), training, data_or_null<T>(dx),
                                        data_or_null<T>(dgamma), data_or_null<T>(dbeta),
                                        kernels::cuda::BatchNormShape{shape.rows, shape.channels});
#else
  ops::no_cuda_kernel("batch_norm2d backward");
#endif
}

// gamma, beta and the running statistics are per-channel vectors [C].
void check_channel_vector(const char* op, const Tensor& t, const char* name, const Tensor& x) {
  if (!t.defined()) return;
  const int64_t channels = x.dim(-1);
  ENGINE_CHECK(t.shape() == Shape{channels}, op, ": ", name, " ", t.desc(), " must be [", channels,
               "], the channels of x ", x.desc());
}

}  // namespace

Tensor batch_norm2d(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                    const Tensor& running_mean, const Tensor& running_var, bool training,
                    double momentum, double eps) {
  const char* op = "batch_norm2d";
  ops::check_defined(op, x, "input x");
  ENGINE_CHECK(x.ndim() == 4 || x.ndim() == 2, op, ": input x must be [N, H, W, C] or [N, C], got ",
               x.desc());
  ops::check_defined(op, gamma, "gamma");
  ops::check_defined(op, beta, "beta");
  if (!training) {
    // Training may run without running statistics (PyTorch's track_running_stats=False).
    ops::check_defined(op, running_mean, "running_mean (needed when not training)");
    ops::check_defined(op, running_var, "running_var (needed when not training)");
  }
  ENGINE_CHECK(running_mean.defined() == running_var.defined(), op,
               ": running_mean and running_var must be both defined or both undefined");
  ops::check_same(op, {&x, &gamma, &beta, &running_mean, &running_var});
  check_channel_vector(op, gamma, "gamma", x);
  check_channel_vector(op, beta, "beta", x);
  check_channel_vector(op, running_mean, "running_mean", x);
  check_channel_vector(op, running_var, "running_var", x);
  for (const Tensor* stat : {&running_mean, &running_var})
    ENGINE_CHECK(!stat->defined() || !stat->requires_grad(), op,
                 ": running statistics are buffers updated in place and must not require a gradient, got ",
                 stat->desc());
  ENGINE_CHECK(momentum >= 0 && momentum <= 1, op, ": momentum ", momentum, " is outside [0, 1]");
  ENGINE_CHECK(eps > 0, op, ": eps ", eps, " must be positive");
  const int64_t channels = x.dim(-1);
  const kernels::cpu::BatchNormShape shape{channels ? x.numel() / channels : 0, channels};
  ENGINE_CHECK(!training || shape.rows > 1, op,
               ": training needs more than one value per channel, got x ", x.desc());
#ifndef ENGINE_WITH_CUDA
  if (!x.is_cpu()) ops::no_cuda_kernel(op);
#endif

  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  // The statistics y was normalised with, for the backward pass (in double: see
  // kernels/cpu/batch_norm.h). Copies, because a later training step updates the running
  // statistics in place before this backward may run.
  Tensor mean = Tensor::empty({channels}, DType::F64, x.device());
  Tensor invstd = Tensor::empty({channels}, DType::F64, x.device());
  ENGINE_DISPATCH_FLOAT(x.dtype(), T,
                        forward_kernels<T>(x, gamma, beta, running_mean, running_var, training, momentum, eps,
                                           y, mean, invstd, shape));

  if (needs_grad({&x, &gamma, &beta})) {
    Tensor xs = x.detach(), gs = gamma.detach();
    const bool gx = x.requires_grad(), gg = gamma.requires_grad(), gb = beta.requires_grad();
    record(y, op, {&x, &gamma, &beta}, [=](const Tensor& dy) -> std::vector<Tensor> {
      Tensor dx = gx ? Tensor::empty(xs.shape(), dy.dtype(), dy.device()) : Tensor();
      Tensor dgamma = gg ? Tensor::empty({channels}, dy.dtype(), dy.device()) : Tensor();
      Tensor dbeta = gb ? Tensor::empty({channels}, dy.dtype(), dy.device()) : Tensor();
      ENGINE_DISPATCH_FLOAT(dy.dtype(), T,
                            backward_kernels<T>(xs, dy, gs, mean, invstd, training, dx, dgamma, dbeta, shape));
      return {dx, dgamma, dbeta};
    });
  }
  return y;
}

}  // namespace engine
