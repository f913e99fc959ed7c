// softmax, log_softmax (over the last dimension) and the softmax cross-entropy loss.
#include "engine/ops/op_common.h"
#include "kernels/cpu/softmax.h"

namespace engine {
namespace {

// The softmax family sees x as [rows, cols] with cols the last dimension.
struct Rows {
  int64_t rows, cols;
};
Rows rows_of(const Tensor& x) {
  int64_t cols = x.dim(-1);
  return {cols == 0 ? 0 : x.numel() / cols, cols};
}

enum class SoftmaxKind { Softmax, LogSoftmax };

template <SoftmaxKind KIND> Tensor softmax_op(const char* op, const Tensor& x) {
  ops::check_defined(op, x, "input");
  ops::check_same(op, {&x});
  ENGINE_CHECK(x.ndim() >= 1, op, ": needs at least one dimension, got ", x.desc());
  if (!x.is_cpu()) ops::no_cuda_kernel(op);
  Rows r = rows_of(x);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  ENGINE_DISPATCH_FLOAT(x.dtype(), T, [&] {
    if constexpr (KIND == SoftmaxKind::Softmax)
      kernels::cpu::softmax_forward<T>(x.data<T>(), y.data<T>(), r.rows, r.cols);
    else
      kernels::cpu::log_softmax_forward<T>(x.data<T>(), y.data<T>(), r.rows, r.cols);
  }());
  if (needs_grad({&x})) {
    // Both backwards need only the output.
    Tensor ys = y.detach();
    record(y, op, {&x}, [ys, r](const Tensor& dy) -> std::vector<Tensor> {
      Tensor dx = Tensor::empty(dy.shape(), dy.dtype(), dy.device());
      ENGINE_DISPATCH_FLOAT(dy.dtype(), T, [&] {
        if constexpr (KIND == SoftmaxKind::Softmax)
          kernels::cpu::softmax_backward<T>(ys.data<T>(), dy.data<T>(), dx.data<T>(), r.rows,
                                            r.cols);
        else
          kernels::cpu::log_softmax_backward<T>(ys.data<T>(), dy.data<T>(), dx.data<T>(), r.rows,
                                                r.cols);
      }());
      return {dx};
    });
  }
  return y;
}

}  // namespace

Tensor softmax(const Tensor& x) { return softmax_op<SoftmaxKind::Softmax>("softmax", x); }
Tensor log_softmax(const Tensor& x) {
  return softmax_op<SoftmaxKind::LogSoftmax>("log_softmax", x);
}

Tensor cross_entropy(const Tensor& logits, const std::vector<int64_t>& labels) {
  const char* op = "cross_entropy";
  ops::check_ndim(op, logits, 2, "logits");
  ops::check_same(op, {&logits});
  const int64_t n = logits.dim(0), classes = logits.dim(1);
  ENGINE_CHECK(n > 0 && classes > 0, op, ": logits ", logits.desc(),
               " must have at least one row and one class");
  ENGINE_CHECK(static_cast<int64_t>(labels.size()) == n, op, ": ", labels.size(),
               " labels for logits ", logits.desc(), " (", n, " rows)");
  for (size_t i = 0; i < labels.size(); ++i)
    ENGINE_CHECK(labels[i] >= 0 && labels[i] < classes, op, ": label ", labels[i], " at index ", i,
                 " is outside [0, ", classes, ") for logits ", logits.desc());
  if (!logits.is_cpu()) ops::no_cuda_kernel(op);

  // Per-row log(sum(exp(logits - max))) from the forward, reused by the backward.
  Tensor row_log_sum = Tensor::empty({n}, logits.dtype(), logits.device());
  double total = ENGINE_DISPATCH_FLOAT(
      logits.dtype(), T,
      kernels::cpu::cross_entropy_forward<T>(logits.data<T>(), labels.data(), row_log_sum.data<T>(),
                                             n, classes));
  Tensor loss = Tensor::full({1}, total / static_cast<double>(n), logits.dtype(), logits.device());
  if (needs_grad({&logits})) {
    Tensor xs = logits.detach();
    record(loss, op, {&logits},
           [xs, row_log_sum, labels, n, classes](const Tensor& dy) -> std::vector<Tensor> {
             Tensor dx = Tensor::empty(xs.shape(), dy.dtype(), dy.device());
             const double scale = dy.item() / static_cast<double>(n);
             ENGINE_DISPATCH_FLOAT(dy.dtype(), T,
                                   kernels::cpu::cross_entropy_backward<T>(
                                       xs.data<T>(), labels.data(), row_log_sum.data<T>(), T(scale),
                                       dx.data<T>(), n, classes));
             return {dx};
           });
  }
  return loss;
}

}  // namespace engine
