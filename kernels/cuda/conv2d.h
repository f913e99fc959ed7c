// 2-D convolution on the GPU: x [N,H,W,C] (NHWC), w [K,R,S,C] (KRSC), y [N,P,Q,K]; geometry in
// kernels/common/conv2d_shape.h; the same contract as kernels/cpu/conv2d.h (dx, dw and db are
// written, not accumulated). Pointers are device pointers; work runs on the default stream.
// Every pass is an implicit GEMM tiled through shared memory (no im2col buffer):
//   forward          y[(n,p,q), k]      = sum_(r,s,c) x[pixel (n,p,q) tap (r,s), c] w[k,(r,s,c)]
//   backward-data    dx[(n,h,w), c]     = sum_(r,s,k) dy[pixel reached by tap (r,s), k] w[k,r,s,c]
//                    one GEMM per stride phase, over only the taps that reach it (conv2d.cu)
//   backward-weight  dw[k, (r,s,c)]     = sum_(n,p,q) dy[(n,p,q), k] x[pixel (n,p,q) tap (r,s), c]
// GEMMs with too few output tiles to fill the GPU split their reduction (split-K) into slices
// whose partial results go to a workspace and are summed in a fixed order by a second kernel:
// results are deterministic (bitwise the same from run to run on a given GPU model).
// Math for float32: FP32 (CUDA cores, fused multiply-adds, the default: results agree with the
// CPU to float32 rounding) or TF32 (tensor cores; inputs rounded to 10 mantissa bits, float32
// accumulation). float64 always uses CUDA cores.
// Tests: tests/test_cuda_conv2d.cpp. Bench: bench_kernels --benchmark_filter=CudaConv2d
#pragma once

#include "kernels/common/conv2d_shape.h"

namespace kernels::cuda {

enum class ConvMath { FP32, TF32 };

// Process-wide choice for float32 convolutions; takes effect at the next launch.
void set_conv_math(ConvMath math);
ConvMath conv_math();

// Sets the math for a scope and restores the previous choice after it.
class ConvMathScope {
 public:
  explicit ConvMathScope(ConvMath math) : saved_(conv_math()) { set_conv_math(math); }
  ~ConvMathScope() { set_conv_math(saved_); }
  ConvMathScope(const ConvMathScope&) = delete;
  ConvMathScope& operator=(const ConvMathScope&) = delete;

 private:
  ConvMath saved_;
};

// bias may be null.
template <typename T>
void conv2d_forward(const Conv2dShape& s, const T* x, const T* w, const T* bias, T* y);

template <typename T>
void conv2d_backward_data(const Conv2dShape& s, const T* dy, const T* w, T* dx);

template <typename T>
void conv2d_backward_weight(const Conv2dShape& s, const T* x, const T* dy, T* dw);

// db[k] = sum over n, p, q of dy[n, p, q, k]
template <typename T>
void conv2d_backward_bias(const Conv2dShape& s, const T* dy, T* db);

}  // namespace kernels::cuda
