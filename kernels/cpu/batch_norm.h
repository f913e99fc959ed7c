// Batch normalisation on the CPU over the channel dimension of NHWC activations. The
// activations are viewed as a matrix x[rows, channels] with rows = N*H*W: the channel
// dimension is contiguous, so every loop runs over channels (vectorised) inside a loop over
// rows (split between threads).
//
//   y = (x - mean) * invstd * gamma + beta,   invstd = 1 / sqrt(var + eps)
//
// Training uses the batch mean and biased variance; evaluation the running statistics.
// Batch statistics take one pass over x: sums in double about a shift (each 64-row block's
// first row), turned into each block's mean and squared deviations and merged with Chan's
// formula, so float32 statistics stay accurate over millions of elements and when
// |mean| >> std.
//
// Gradient rule: dx is written (=); dgamma and dbeta are written too (the engine accumulates
// them into the parameter gradients). Any of dx, dgamma, dbeta may be null when not needed.
#pragma once
#include <cstdint>

namespace kernels::cpu {

struct BatchNormShape {
  int64_t rows;      // N*H*W (or N for a [N, C] input): the count each statistic is taken over
  int64_t channels;  // C, the contiguous dimension
};

// Per-channel mean and biased variance of x, computed in double.
template <typename T>
void batch_norm_statistics(const T* x, BatchNormShape shape, double* mean, double* var);

// The saved statistics (mean, invstd) are double in both precisions: with float32 ones,
// x - mean would carry the rounding of the mean (up to 3e-5 at |mean| = 1000), which is large
// next to a small standard deviation. The kernels subtract the mean as a float hi + lo pair.

// Training forward: normalises with the batch statistics, writes y, and saves the batch mean
// and invstd for the backward pass (either may be null). When running_mean/running_var are not
// null, updates them in place as PyTorch does: r = (1 - momentum) r + momentum b, where
// running_var takes the unbiased batch variance (needs rows > 1).
template <typename T>
void batch_norm_forward_train(const T* x, const T* gamma, const T* beta, T* y, double* save_mean,
                              double* save_invstd, T* running_mean, T* running_var, double momentum,
                              double eps, BatchNormShape shape);

// Evaluation forward with the running statistics. save_mean and save_invstd (either may be
// null) receive running_mean and 1 / sqrt(running_var + eps) for the backward pass.
template <typename T>
void batch_norm_forward_eval(const T* x, const T* gamma, const T* beta, const T* running_mean,
                             const T* running_var, double eps, T* y, double* save_mean,
                             double* save_invstd, BatchNormShape shape);

// Backward from the saved mean and invstd. training selects the full formula (the statistics
// depend on x):
//   dx = gamma invstd (dy - mean(dy) - xhat mean(dy xhat)),  xhat = (x - mean) invstd
// otherwise the statistics are constants: dx = gamma invstd dy.
// dgamma = sum(dy xhat), dbeta = sum(dy) over the rows in both modes.
template <typename T>
void batch_norm_backward(const T* x, const T* dy, const T* gamma, const double* mean,
                         const double* invstd, bool training, T* dx, T* dgamma, T* dbeta,
                         BatchNormShape shape);

}  // namespace kernels::cpu
