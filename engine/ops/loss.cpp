// softmax, log_softmax (over the last dimension) and the softmax cross-entropy loss.
#include <memory>

#include "engine/ops/op_common.h"
#include "kernels/cpu/softmax.h"
#ifdef ENGINE_WITH_CUDA
#include "kernels/cuda/runtime.h"
#include "kernels/cuda/softmax.h"
#endif

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

template <SoftmaxKind KIND, typename T> void softmax_forward(const Tensor& x, const Tensor& y, Rows r) {
  if (x.is_cpu()) {
    if constexpr (KIND == SoftmaxKind::Softmax)
      kernels::cpu::softmax_forward<T>(x.data<T>(), y.data<T>(), r.rows, r.cols);
    else
      kernels::cpu::log_softmax_forward<T>(x.data<T>(), y.data<T>(), r.rows, r.cols);
    return;
  }
#ifdef ENGINE_WITH_CUDA
  if constexpr (KIND == SoftmaxKind::Softmax)
    kernels::cuda::softmax_forward<T>(x.data<T>(), y.data<T>(), r.rows, r.cols);
  else
    kernels::cuda::log_softmax_forward<T>(x.data<T>(), y.data<T>(), r.rows, r.cols);
#else
  ops::no_cuda_kernel(KIND == SoftmaxKind::Softmax ? "softmax" : "log_softmax");
#endif
}

// Both backwards need only the forward output y.
template <SoftmaxKind KIND, typename T>
void softmax_backward(const Tensor& y, const Tensor& dy, const Tensor& dx, Rows r) {
  if (dy.is_cpu()) {
    if constexpr (KIND == SoftmaxKind::Softmax)
      kernels::cpu::softmax_backward<T>(y.data<T>(), dy.data<T>(), dx.data<T>(), r.rows, r.cols);
    else
      kernels::cpu::log_softmax_backward<T>(y.data<T>(), dy.data<T>(), dx.data<T>(), r.rows, r.cols);
    return;
  }
#ifdef ENGINE_WITH_CUDA
  if constexpr (KIND == SoftmaxKind::Softmax)
    kernels::cuda::softmax_backward<T>(y.data<T>(), dy.data<T>(), dx.data<T>(), r.rows, r.cols);
  else
    kernels::cuda::log_softmax_backward<T>(y.data<T>(), dy.data<T>(), dx.data<T>(), r.rows, r.cols);
#else
  ops::no_cuda_kernel(KIND == SoftmaxKind::Softmax ? "softmax backward" : "log_softmax backward");
#endif
}

// The labels where the logits are: the host vector itself on the CPU, a device copy on the
// GPU (kept alive by the backward closure).
struct LabelBuffer {
  std::shared_ptr<Storage> device;
  const int64_t* host = nullptr;
  const int64_t* data() const { return device ? static_cast<const int64_t*>(device->data()) : host; }
};

LabelBuffer labels_on(Device device, const std::vector<int64_t>& labels) {
  LabelBuffer buffer;
  if (device == Device::CPU) {
    buffer.host = labels.data();
    return buffer;
  }
#ifdef ENGINE_WITH_CUDA
  const size_t bytes = labels.size() * sizeof(int64_t);
  buffer.device = std::make_shared<Storage>(device, bytes);
  kernels::cuda::copy_host_to_device(buffer.device->data(), labels.data(), bytes);
#else
  ops::no_cuda_kernel("cross_entropy");
#endif
  return buffer;
}

template <typename T>
double cross_entropy_forward(const Tensor& logits, const int64_t* labels, const Tensor& row_log_sum, int64_t n,
                             int64_t classes) {
  if (logits.is_cpu())
    return kernels::cpu::cross_entropy_forward<T>(logits.data<T>(), labels, row_log_sum.data<T>(), n, classes);
#ifdef ENGINE_WITH_CUDA
  return kernels::cuda::cross_entropy_forward<T>(logits.data<T>(), labels, row_log_sum.data<T>(), n, classes);
#else
  ops::no_cuda_kernel("cross_entropy");
#endif
}

template <typename T>
void cross_entropy_backward(const Tensor& logits, const int64_t* labels, const Tensor& row_log_sum, double scale,
                            const Tensor& dx, int64_t n, int64_t classes) {
  if (logits.is_cpu())
    return kernels::cpu::cross_entropy_backward<T>(logits.data<T>(), labels, row_log_sum.data<T>(), T(scale),
                                                   dx.data<T>(), n, classes);
#ifdef ENGINE_WITH_CUDA
  kernels::cuda::cross_entropy_backward<T>(logits.data<T>(), labels, row_log_sum.data<T>(), T(scale),
                                           dx.data<T>(), n, classes);
#else
  ops::no_cuda_kernel("cross_entropy backward");
#endif
}

template <SoftmaxKind KIND> Tensor softmax_op(const char* op, const Tensor& x) {
  ops::check_defined(op, x, "input");
  ops::check_same(op, {&x});
  ENGINE_CHECK(x.ndim() >= 1, op, ": needs at least one dimension, got ", x.desc());
#ifndef ENGINE_WITH_CUDA
  if (!x.is_cpu()) ops::no_cuda_kernel(op);
#endif
  Rows r = rows_of(x);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  ENGINE_DISPATCH_FLOAT(x.dtype(), T, softmax_forward<KIND, T>(x, y, r));
  if (needs_grad({&x})) {
    Tensor ys = y.detach();
    record(y, op, {&x}, [ys, r](const Tensor& dy) -> std::vector<Tensor> {
      Tensor dx = Tensor::empty(dy.shape(), dy.dtype(), dy.device());
      ENGINE_DISPATCH_FLOAT(dy.dtype(), T, softmax_backward<KIND, T>(ys, dy, dx, r));
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
#ifndef ENGINE_WITH_CUDA
  if (!logits.is_cpu()) ops::no_cuda_kernel(op);
#endif

  // Per-row log(sum(exp(logits - max))) from the forward, reused by the backward.
  Tensor row_log_sum = Tensor::empty({n}, logits.dtype(), logits.device());
  const LabelBuffer label_buffer = labels_on(logits.device(), labels);
  double total = ENGINE_DISPATCH_FLOAT(
      logits.dtype(), T, cross_entropy_forward<T>(logits, label_buffer.data(), row_log_sum, n, classes));
  Tensor loss = Tensor::full({1}, total / static_cast<double>(n), logits.dtype(), logits.device());
  if (needs_grad({&logits})) {
    Tensor xs = logits.detach();
    // The closure owns a host copy of the labels, and the device copy when there is one.
    record(loss, op, {&logits},
           [xs, row_log_sum, labels, device_labels = label_buffer.device, n,
            classes](const Tensor& dy) -> std::vector<Tensor> {
             Tensor dx = Tensor::empty(xs.shape(), dy.dtype(), dy.device());
             const double scale = dy.item() / static_cast<double>(n);
             const int64_t* label_data =
                 device_labels ? static_cast<const int64_t*>(device_labels->data()) : labels.data();
             ENGINE_DISPATCH_FLOAT(dy.dtype(), T,
                                   cross_entropy_backward<T>(xs, label_data, row_log_sum, scale, dx, n, classes));
             return {dx};
           });
  }
  return loss;
}

}  // namespace engine
