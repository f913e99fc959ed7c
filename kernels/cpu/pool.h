// Pooling on the CPU over NHWC activations: max pooling (square window, stride, padding that
// acts as -inf) and global average pooling. Channels are contiguous, so every inner loop runs
// over channels (vectorised).
//
// Max pooling follows PyTorch: output size floor((H + 2 pad - kernel) / stride) + 1, the
// first maximal element of a window in scan order (row by row) wins ties and receives the
// gradient, and a NaN in a window propagates (the first NaN wins). The backward pass finds the
// winner again from x and y instead of storing argmax indices, which would need an integer
// tensor the engine does not have and an extra output-sized write in every training step.
//
// Gradient rule: dx is written (=).
#pragma once
#include <cstdint>

namespace kernels::cpu {

struct MaxPoolShape {
  int64_t batch, in_h, in_w, channels;
  int kernel, stride, pad;
  int64_t out_h, out_w;  // pool_output_size of in_h, in_w
};

// floor((in + 2 pad - kernel) / stride) + 1; the caller ensures in + 2 pad >= kernel.
inline int64_t pool_output_size(int64_t in, int kernel, int stride, int pad) {
  return (in + 2 * pad - kernel) / stride + 1;
}

template <typename T>
void max_pool2d_forward(const T* x, T* y, const MaxPoolShape& shape);

// dx from x, the forward output y and dy.
template <typename T>
void max_pool2d_backward(const T* x, const T* y, const T* dy, T* dx, const MaxPoolShape& shape);

// x [batch, spatial, channels] -> y [batch, channels]: the mean over spatial (= H*W),
// accumulated in double.
template <typename T>
void global_avg_pool_forward(const T* x, T* y, int64_t batch, int64_t spatial, int64_t channels);

// dx[n, i, c] = dy[n, c] / spatial.
template <typename T>
void global_avg_pool_backward(const T* dy, T* dx, int64_t batch, int64_t spatial, int64_t channels);

}  // namespace kernels::cpu
