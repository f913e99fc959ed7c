// The geometry of a 2-D convolution, shared by the CPU and CUDA kernels.
// Layouts: input x [N, H, W, C] (NHWC), weight w [K, R, S, C] (KRSC), output y [N, P, Q, K].
// Zero padding `pad` on every side, dilation 1, groups 1:
//   y[n, p, q, k] = sum_{r, s, c} x[n, p*stride - pad + r, q*stride - pad + s, c] * w[k, r, s, c]
#pragma once
#include <cstdint>

#include "kernels/common/macros.h"

namespace kernels {

struct Conv2dShape {
  int64_t N = 0, H = 0, W = 0, C = 0;  // input
  int64_t K = 0, R = 0, S = 0;         // output channels, kernel rows, kernel columns
  int64_t stride = 1, pad = 0;
  int64_t P = 0, Q = 0;                // output rows, columns

  // Fills P and Q from the rest; the caller has checked that the kernel fits the padded input.
  static KERNEL_HD Conv2dShape make(int64_t N, int64_t H, int64_t W, int64_t C, int64_t K,
                                    int64_t R, int64_t S, int64_t stride, int64_t pad) {
    Conv2dShape s;
    s.N = N, s.H = H, s.W = W, s.C = C, s.K = K, s.R = R, s.S = S, s.stride = stride, s.pad = pad;
    s.P = (H + 2 * pad - R) / stride + 1;
    s.Q = (W + 2 * pad - S) / stride + 1;
    return s;
  }

  KERNEL_HD int64_t input_size() const { return N * H * W * C; }
  KERNEL_HD int64_t weight_size() const { return K * R * S * C; }
  KERNEL_HD int64_t output_size() const { return N * P * Q * K; }
  // Multiply-adds of one pass (forward, backward-data and backward-weight each do this many).
  KERNEL_HD int64_t macs() const { return N * P * Q * K * R * S * C; }
};

}  // namespace kernels
