// Softmax, log-softmax and softmax cross-entropy on the GPU over the last dimension of a
// row-major [rows, cols] array, device pointers, float and double: the same contracts and
// order of operations as kernels/cpu/softmax.h (exponents of x - max(row), row sums in
// double, no fused multiply-adds where the CPU has none). One warp per row. Results differ
// from the CPU's by the exponential's rounding (CUDA's expf is within 2 ulp, exp within 1)
// and the order of the double row sums.
// Gradient rule: activation gradients are written (=).
// Test: build/tests/test_cuda_loss   Bench: bench_kernels --benchmark_filter=CudaSoftmax
#pragma once
#include <cstdint>

namespace kernels::cuda {

template <typename T> void softmax_forward(const T* x, T* y, int64_t rows, int64_t cols);
// dx = y * (dy - sum(dy * y)), from the forward output y.
template <typename T>
void softmax_backward(const T* y, const T* dy, T* dx, int64_t rows, int64_t cols);

template <typename T> void log_softmax_forward(const T* x, T* y, int64_t rows, int64_t cols);
// dx = dy - exp(y) * sum(dy), from the forward output y.
template <typename T>
void log_softmax_backward(const T* y, const T* dy, T* dx, int64_t rows, int64_t cols);

// Sum over rows of -log softmax(logits)[label] (the caller divides by rows for the mean),
// returned to the host (this synchronises); writes each row's log(sum(exp(logits - max)))
// to row_log_sum for the backward. labels (device, int64) must be in [0, cols): a row with a
// label outside contributes NaN. Rows are added in order on the host, as on the CPU.
template <typename T>
double cross_entropy_forward(const T* logits, const int64_t* labels, T* row_log_sum, int64_t rows,
                             int64_t cols);
// dlogits = (softmax(logits) - onehot(label)) * scale, with scale = dL/dloss / rows.
template <typename T>
void cross_entropy_backward(const T* logits, const int64_t* labels, const T* row_log_sum, T scale,
                            T* dlogits, int64_t rows, int64_t cols);

}  // namespace kernels::cuda
