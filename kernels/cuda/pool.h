// Pooling on the GPU over NHWC activations, device pointers, float and double: the same
// semantics and results as kernels/cpu/pool.h.
//
// Max pooling follows PyTorch: output size floor((H + 2 pad - kernel) / stride) + 1, padding
// acts as -inf, the first maximal element of a window in scan order (row by row) wins ties
// and receives the gradient, and a NaN in a window propagates (the first NaN wins). The
// backward pass finds each window's winner again from x and y, as on the CPU. It gathers
// rather than scatters: each input element adds the gradients of the windows it wins, in the
// CPU's order (window rows, then columns), so dx matches the CPU bit for bit and no atomics
// are needed.
//
// Gradient rule: dx is written (=).
// Test: build/tests/test_cuda_pool   Bench: bench_kernels --benchmark_filter=CudaPool
#pragma once
#include <cstdint>

namespace kernels::cuda {

struct MaxPoolShape {
  int64_t batch, in_h, in_w, channels;
  int kernel, stride, pad;
  int64_t out_h, out_w;  // floor((in + 2 pad - kernel) / stride) + 1
};

template <typename T>
void max_pool2d_forward(const T* x, T* y, const MaxPoolShape& shape);
// dx from x, the forward output y and dy.
template <typename T>
void max_pool2d_backward(const T* x, const T* y, const T* dy, T* dx, const MaxPoolShape& shape);

// x [batch, spatial, channels] -> y [batch, channels]: the mean over spatial, accumulated in
// double.
template <typename T>
void global_avg_pool_forward(const T* x, T* y, int64_t batch, int64_t spatial, int64_t channels);
// dx[n, i, c] = dy[n, c] / spatial.
template <typename T>
void global_avg_pool_backward(const T* dy, T* dx, int64_t batch, int64_t spatial, int64_t channels);

}  // namespace kernels::cuda
