// Spatial-attention kernels on the GPU over NHWC activations viewed as [pixels, channels],
// device pointers, float and double; the same contracts as kernels/cpu/attention.h.
//   channel_mean_max: y[p] = (mean over c of x[p, c], max over c of x[p, c]) in one pass over
//     the row (one warp per pixel); the max's gradient goes to the first maximal channel
//     (argmax, saved by the forward). The mean is accumulated in double (the CPU sums in T,
//     so float32 means differ by the CPU's rounding, a few ulp of mean(|x|)).
//   gate_mul: y[p, c] = x[p, c] * g[p]; its backward's dg[p] = sum over c of dy x is also
//     accumulated in double.
// Gradient rule: activation gradients are written (=).
// Test: build/tests/test_cuda_attention   Bench: bench_kernels --benchmark_filter=CudaAttention
#pragma once
#include <cstdint>

namespace kernels::cuda {

// y is [pixels, 2]. argmax (device, one per pixel) is written when not null.
template <typename T>
void channel_mean_max_forward(const T* x, T* y, int32_t* argmax, int64_t pixels, int64_t channels);
// dx[p, c] = dy[p, 0] / channels + (c == argmax[p] ? dy[p, 1] : 0).
template <typename T>
void channel_mean_max_backward(const T* dy, const int32_t* argmax, T* dx, int64_t pixels,
                               int64_t channels);

template <typename T>
void gate_mul_forward(const T* x, const T* g, T* y, int64_t pixels, int64_t channels);
// dx[p, c] = dy[p, c] * g[p]; dg[p] = sum over c of dy[p, c] * x[p, c]. dx or dg may be null
// (x is read only for dg, g only for dx).
template <typename T>
void gate_mul_backward(const T* x, const T* g, const T* dy, T* dx, T* dg, int64_t pixels,
                       int64_t channels);

}  // namespace kernels::cuda
