// Batch normalisation on the GPU over NHWC activations viewed as x[rows, channels]
// (rows = N*H*W): the same maths, saved statistics and gradient rule as
// kernels/cpu/batch_norm.h, on device pointers, for float and double.
//
//   y = (x - mean) * invstd * gamma + beta,   invstd = 1 / sqrt(var + eps)
//
// Statistics (one pass over x, in double): a block owns a tile of 32 channels and a range of
// rows; each thread takes its rows in groups of 16, sums d = x - shift (shift: the group's
// first value, so the cancellation in sum(d^2) - sum(d)^2 / n stays small) and merges each
// group's (count, mean, m2) into its own with Chan's pairwise formula. Threads, then blocks,
// are merged with the same formula in a fixed order, so results are deterministic and
// float32 statistics stay accurate over millions of rows and when |mean| >> std.
// The elementwise passes use the CPU's per-channel constants and its order of operations,
// without fused multiply-adds, so the two backends differ only by the statistics' rounding.
//
// The *_relu variants fuse a ReLU: the forward writes relu(bn(x)); the backward takes that
// output y and uses dy masked by y > 0 (the gradient of relu(bn(x)) with respect to
// x, gamma and beta).
//
// Gradient rule: dx, dgamma and dbeta are written (=); the engine accumulates parameter
// gradients. Any of them may be null. Work runs on the default stream; temporary device
// memory comes from the caching allocator (kernels/cuda/runtime.h).
// Test: build/tests/test_cuda_batch_norm   Bench: bench_kernels --benchmark_filter=CudaBatchNorm
#pragma once
#include <cstdint>

namespace kernels::cuda {

struct BatchNormShape {
  int64_t rows;      // N*H*W (or N for [N, C]): the count each statistic is taken over
  int64_t channels;  // C, the contiguous dimension
};

// Training forward. save_mean / save_invstd (device, double, may be null) receive the batch
// statistics for the backward pass. running_mean / running_var (device, may be null) are
// updated in place as PyTorch does: r = (1 - momentum) r + momentum b, with the unbiased
// batch variance in running_var (rows > 1 needed, as on the CPU).
template <typename T>
void batch_norm_forward_train(const T* x, const T* gamma, const T* beta, T* y, double* save_mean,
                              double* save_invstd, T* running_mean, T* running_var, double momentum,
                              double eps, BatchNormShape shape);
template <typename T>
void batch_norm_relu_forward_train(const T* x, const T* gamma, const T* beta, T* y,
                                   double* save_mean, double* save_invstd, T* running_mean,
                                   T* running_var, double momentum, double eps, BatchNormShape shape);

// Evaluation forward with the running statistics; save_mean / save_invstd (may be null)
// receive running_mean and 1 / sqrt(running_var + eps).
template <typename T>
void batch_norm_forward_eval(const T* x, const T* gamma, const T* beta, const T* running_mean,
                             const T* running_var, double eps, T* y, double* save_mean,
                             double* save_invstd, BatchNormShape shape);
template <typename T>
void batch_norm_relu_forward_eval(const T* x, const T* gamma, const T* beta, const T* running_mean,
                                  const T* running_var, double eps, T* y, double* save_mean,
                                  double* save_invstd, BatchNormShape shape);

// Backward from the saved mean and invstd (training: the full formula, the statistics depend
// on x; otherwise they are constants):
//   dx = gamma invstd (dy - mean(dy) - xhat mean(dy xhat)),  xhat = (x - mean) invstd
//   dgamma = sum(dy xhat), dbeta = sum(dy) over the rows.
template <typename T>
void batch_norm_backward(const T* x, const T* dy, const T* gamma, const double* mean,
                         const double* invstd, bool training, T* dx, T* dgamma, T* dbeta,
                         BatchNormShape shape);
// The same for y = relu(bn(x)), from the fused forward's output y.
template <typename T>
void batch_norm_relu_backward(const T* x, const T* y, const T* dy, const T* gamma,
                              const double* mean, const double* invstd, bool training, T* dx,
                              T* dgamma, T* dbeta, BatchNormShape shape);

}  // namespace kernels::cuda
