// Spatial-attention kernels on the CPU, over NHWC activations viewed as [pixels, channels]
// (pixels = N*H*W): every channel row is contiguous.
//   channel_mean_max: y[p] = (mean over c of x[p, c], max over c of x[p, c]), in one pass over
//     the row; the max's gradient goes to the first maximal channel (argmax, saved by the
//     forward). A NaN in a row shows in its mean; the max ignores it.
//   gate_mul: y[p, c] = x[p, c] * g[p], the sigmoid gate broadcast over channels.
// Gradient rule: activation gradients are written (=).
#pragma once
#include <cstdint>

namespace kernels::cpu {

// y is [pixels, 2]. argmax (one per pixel) is written when not null: the backward needs it.
template <typename T>
void channel_mean_max_forward(const T* x, T* y, int32_t* argmax, int64_t pixels, int64_t channels);
// dx[p, c] = dy[p, 0] / channels + (c == argmax[p] ? dy[p, 1] : 0).
template <typename T> void channel_mean_max_backward(const T* dy, const int32_t* argmax, T* dx,
                                                     int64_t pixels, int64_t channels);

template <typename T>
void gate_mul_forward(const T* x, const T* g, T* y, int64_t pixels, int64_t channels);
// dx[p, c] = dy[p, c] * g[p]; dg[p] = sum over c of dy[p, c] * x[p, c]. dx or dg may be null.
template <typename T> void gate_mul_backward(const T* x, const T* g, const T* dy, T* dx, T* dg,
                                             int64_t pixels, int64_t channels);

}  // namespace kernels::cpu
