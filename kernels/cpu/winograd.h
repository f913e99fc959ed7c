// Winograd convolution F(m x m, 3 x 3) on the CPU (Lavin and Gray, "Fast Algorithms for
// Convolutional Neural Networks", CVPR 2016), for the 3x3 stride-1 layers: each m x m tile of
// output pixels comes from an (m + 2) x (m + 2) tile of input pixels as
//   Y = A^T [ (G g G^T) (.) (B^T d B) ] A        ((.): elementwise)
// which costs (m + 2)^2 multiply-adds per tile and channel pair instead of 9 m^2: 2.25 times
// fewer for m = 2, 4 times fewer for m = 4. Summed over input channels, the elementwise
// products become (m + 2)^2 independent GEMMs [tiles x C] x [C x K] on the engine of gemm.h;
// the transforms of the input, weight and output tiles are passes over memory, vectorised
// over channels (NHWC keeps a pixel's channels contiguous).
//   forward          y  = winograd(x, w)
//   backward-data    dx = winograd(dy, w rotated by 180 degrees, K and C swapped), padding 2 - pad
//   backward-weight  dw = G^T [ sum over tiles (B^T d B) (.) (A dy A^T) ] G, the exact gradient
//                    of the forward's formula: (m + 2)^2 GEMMs [K x tiles] x [tiles x C]
// Tiles are processed in groups sized to stay in cache; within a group, threads split the
// tiles for the transforms and the (m + 2)^2 products between them.
//
// Accuracy: the transforms' coefficients amplify rounding. In float32 the error against an
// exact result, relative to the output's largest magnitude, measured in tests/test_winograd.cpp
// on ResNet50's shapes: 2-4e-7 for m = 2, like the direct algorithm's 2-5e-7, and 1-4e-6 for
// m = 4 (on the points 0, 1, -1, 2, -1/2, which halve it against the usual 0, +-1, +-2): well
// below what training resolves (tests/test_parity.cpp: a train-mode float32 step stays within
// PyTorch's own float32 spread), the trade cuDNN makes on GPUs. conv2d keeps the direct
// algorithm for float64, the precision of the gradient checks and the reference.
//
// Gradient rule: dx and dw are written (=).
// Bench: build/bench/bench_kernels --benchmark_filter='Conv2d.*3x3s1'   (ENGINE_CONV_WINOGRAD=0: direct)
#pragma once
#include <cstdint>

#include "kernels/common/conv2d_shape.h"

namespace kernels::cpu {

// Whether conv2d (conv2d.h) uses Winograd for the float32 convolutions where winograd_tile
// says it pays. Default on; ENGINE_CONV_WINOGRAD=0 in the environment (read at first use) or
// set_winograd_enabled(false) selects the direct algorithm everywhere.
void set_winograd_enabled(bool enabled);
bool winograd_enabled();

// The output tile side m (2 or 4) conv2d uses for a pass of s, or 0 where Winograd does not
// apply (a kernel other than 3x3, stride above 1, padding above 2, fewer than 16 channels in or
// out) or would not be faster than the direct algorithm (see winograd.cpp for the cost model:
// small batches of small images do not repay the filter's transform).
enum class WinogradPass { Forward, BackwardData, BackwardWeight };
int winograd_tile(const Conv2dShape& s, WinogradPass pass = WinogradPass::Forward);

// What the forward applies to each output element v (the sum over channels and taps):
//   act(((v + bias[k]) - center[k]) * scale[k] + shift[k] + residual[n, p, q, k])
// each part optional (null: 0, 1, 0, 0); act = max(v, 0) keeping NaN when relu.
template <typename T>
struct ConvEpilogue {
  const T* bias = nullptr;
  const T* center = nullptr;
  const T* scale = nullptr;
  const T* shift = nullptr;
  const T* residual = nullptr;  // laid out as y
  bool relu = false;
};

// The three passes for a 3x3, stride-1 convolution with pad <= 2 (checked), with tiles of
// m x m outputs, m = 2 or 4. Shapes and layouts as conv2d.h.
template <typename T>
void winograd_forward(const Conv2dShape& s, int m, const T* x, const T* w, const ConvEpilogue<T>& epilogue, T* y);
template <typename T>
void winograd_backward_data(const Conv2dShape& s, int m, const T* dy, const T* w, T* dx);
template <typename T>
void winograd_backward_weight(const Conv2dShape& s, int m, const T* x, const T* dy, T* dw);

}  // namespace kernels::cpu
