// 2-D convolution on the CPU: x [N,H,W,C] (NHWC), w [K,R,S,C] (KRSC), y [N,P,Q,K]; geometry in
// kernels/common/conv2d_shape.h. Every pass is an implicit GEMM on the engine of gemm.h, which
// reads the input pixels in place (no im2col matrix):
//   forward          y[(n,p,q), k]  = sum_(r,s,c) x[pixel (n,p,q) tap (r,s), c] w[k, (r,s,c)]
//   backward-data    dx, one GEMM per stride phase (below) over the taps that reach it
//   backward-weight  dw[k, (r,s,c)] = sum_(n,p,q) dy[(n,p,q), k] x[pixel (n,p,q) tap (r,s), c]
// A 1x1 stride-1 convolution is thus a plain GEMM [N*H*W, C] x [C, K].
// Backward-data by stride phases: input rows h = ph + stride * i (0 <= ph < stride) receive
// gradient only from the taps r with (ph + pad - r) divisible by the stride, each reading
// output row p = i + (ph + pad - r) / stride; so each phase is a stride-1 correlation of dy with
// the transposed sub-kernel, written straight into its rows of dx (no col2im, no scatter).
// Below 16 input channels (the RGB stem) the forward and backward-weight read whole kernel
// rows (S*C contiguous elements) per step, and backward-data is a GEMM into columns + col2im.
// float32 3x3 stride-1 convolutions go through the Winograd algorithm instead where it is
// faster (winograd.h: winograd_tile decides per pass; ENGINE_CONV_WINOGRAD=0 turns it off).
// Gradient rule: dx, dw and db are written (=); the engine accumulates parameter gradients.
// Bench: build/bench/bench_kernels --benchmark_filter=Conv2d
#pragma once

#include "kernels/common/conv2d_shape.h"

namespace kernels::cpu {

// bias may be null.
template <typename T>
void conv2d_forward(const Conv2dShape& s, const T* x, const T* w, const T* bias, T* y);

// Inference fusion, in the forward product's own pass over y (the GEMM epilogue, gemm.h):
//   y = act((conv(x, w) - center[k]) * scale[k] + shift[k] + residual[n, p, q, k])
// a convolution followed by an evaluation-mode batch normalisation (center = running mean,
// scale = gamma / sqrt(running var + eps), shift = beta), the residual join and ReLU. Any of
// center, scale, shift, residual (laid out as y) may be null (0, 1, 0, 0); act is ReLU when
// relu (a NaN stays NaN), else the identity.
template <typename T>
void conv2d_forward_fused(const Conv2dShape& s, const T* x, const T* w, const T* center, const T* scale,
                          const T* shift, const T* residual, bool relu, T* y);

template <typename T>
void conv2d_backward_data(const Conv2dShape& s, const T* dy, const T* w, T* dx);

template <typename T>
void conv2d_backward_weight(const Conv2dShape& s, const T* x, const T* dy, T* dw);

// db[k] = sum over n, p, q of dy[n, p, q, k]
template <typename T>
void conv2d_backward_bias(const Conv2dShape& s, const T* dy, T* db);

}  // namespace kernels::cpu
