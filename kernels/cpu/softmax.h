// Softmax, log-softmax and softmax cross-entropy on the CPU, over the last dimension of a
// row-major [rows, cols] array. Numerically stable: every exponent is taken of x - max(row),
// so logits of +-1000 give exact probabilities instead of inf / nan.
// Gradient rule: activation gradients are written (=).
#pragma once
#include <cstdint>

namespace kernels::cpu {

template <typename T> void softmax_forward(const T* x, T* y, int64_t rows, int64_t cols);
// dx = y * (dy - sum(dy * y)), from the forward output y.
template <typename T>
void softmax_backward(const T* y, const T* dy, T* dx, int64_t rows, int64_t cols);

template <typename T> void log_softmax_forward(const T* x, T* y, int64_t rows, int64_t cols);
// dx = dy - exp(y) * sum(dy), from the forward output y.
template <typename T>
void log_softmax_backward(const T* y, const T* dy, T* dx, int64_t rows, int64_t cols);

// Sum over rows of -log softmax(logits)[label] (the caller divides by rows for the mean);
// writes each row's log(sum(exp(logits - max(row)))) to row_log_sum for the backward.
// Labels must be in [0, cols).
template <typename T> double cross_entropy_forward(const T* logits, const int64_t* labels,
                                                   T* row_log_sum, int64_t rows, int64_t cols);
// dlogits = (softmax(logits) - onehot(label)) * scale, with scale = dL/dloss / rows.
template <typename T> void cross_entropy_backward(const T* logits, const int64_t* labels,
                                                  const T* row_log_sum, T scale, T* dlogits,
                                                  int64_t rows, int64_t cols);

}  // namespace kernels::cpu
