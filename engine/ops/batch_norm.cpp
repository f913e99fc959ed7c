// batch_norm2d: normalisation over the channel (last) dimension, PyTorch's semantics.
#include "engine/ops/op_common.h"
#include "kernels/cpu/batch_norm.h"

namespace engine {
namespace {

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
  if (!x.is_cpu()) ops::no_cuda_kernel(op);

  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  // The statistics y was normalised with, for the backward pass (in double: see
  // kernels/cpu/batch_norm.h). Copies, because a later training step updates the running
  // statistics in place before this backward may run.
  Tensor mean = Tensor::empty({channels}, DType::F64, x.device());
  Tensor invstd = Tensor::empty({channels}, DType::F64, x.device());
  ENGINE_DISPATCH_FLOAT(x.dtype(), T, [&] {
    if (training)
      kernels::cpu::batch_norm_forward_train<T>(
          x.data<T>(), gamma.data<T>(), beta.data<T>(), y.data<T>(), mean.data<double>(),
          invstd.data<double>(), running_mean.defined() ? running_mean.data<T>() : nullptr,
          running_var.defined() ? running_var.data<T>() : nullptr, momentum, eps, shape);
    else
      kernels::cpu::batch_norm_forward_eval<T>(x.data<T>(), gamma.data<T>(), beta.data<T>(),
                                               running_mean.data<T>(), running_var.data<T>(), eps,
                                               y.data<T>(), mean.data<double>(), invstd.data<double>(),
                                               shape);
  }());

  if (needs_grad({&x, &gamma, &beta})) {
    Tensor xs = x.detach(), gs = gamma.detach();
    const bool gx = x.requires_grad(), gg = gamma.requires_grad(), gb = beta.requires_grad();
    record(y, op, {&x, &gamma, &beta}, [=](const Tensor& dy) -> std::vector<Tensor> {
      Tensor dx = gx ? Tensor::empty(xs.shape(), dy.dtype(), dy.device()) : Tensor();
      Tensor dgamma = gg ? Tensor::empty({channels}, dy.dtype(), dy.device()) : Tensor();
      Tensor dbeta = gb ? Tensor::empty({channels}, dy.dtype(), dy.device()) : Tensor();
      ENGINE_DISPATCH_FLOAT(dy.dtype(), T,
                            kernels::cpu::batch_norm_backward<T>(
                                xs.data<T>(), dy.data<T>(), gs.data<T>(), mean.data<double>(),
                                invstd.data<double>(), training, gx ? dx.data<T>() : nullptr,
                                gg ? dgamma.data<T>() : nullptr, gb ? dbeta.data<T>() : nullptr, shape));
      return {dx, dgamma, dbeta};
    });
  }
  return y;
}

}  // namespace engine
