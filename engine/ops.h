// The op API. Every op checks its inputs (shape, dtype, device; errors name the op and the
// shapes), dispatches to kernels/cpu or kernels/cuda by device, and records its backward when
// an input requires a gradient. Layouts: activations NHWC, convolution weights KRSC
// (out channels, kernel rows, kernel cols, in channels), linear weights [out, in].
// Each op family lives in engine/ops/<family>.cpp with its kernels in kernels/<backend>/.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/tensor.h"

namespace engine {

// ---- elementwise and shape (engine/ops/elementwise.cpp) ----
Tensor add(const Tensor& a, const Tensor& b);        // same shape
Tensor add_relu(const Tensor& a, const Tensor& b);   // relu(a + b): the residual join, fused
Tensor sub(const Tensor& a, const Tensor& b);        // same shape
Tensor mul(const Tensor& a, const Tensor& b);        // same shape
Tensor scale(const Tensor& a, double s);             // a * s
Tensor relu(const Tensor& x);  // max(x, 0); a NaN stays NaN, as in torch.relu
Tensor sigmoid(const Tensor& x);
Tensor softplus(const Tensor& x);                    // log(1 + exp(x)), stable
Tensor sum(const Tensor& x);                         // all elements -> shape [1]
Tensor mean(const Tensor& x);                        // all elements -> shape [1]
Tensor reshape(const Tensor& x, const Shape& shape); // a view; one dimension may be -1
Tensor flatten(const Tensor& x);                     // [N, ...] -> [N, rest]

// ---- convolution (engine/ops/conv2d.cpp) ----
// x [N, H, W, C], w [K, R, S, C], bias [K] or undefined -> [N, P, Q, K] with
// P = (H + 2 pad - R) / stride + 1, Q likewise. Zero padding, dilation 1, groups 1.
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, int stride, int pad);

// ---- normalisation (engine/ops/batch_norm.cpp) ----
// Over the last (channel) dimension of x [N, H, W, C] (or [N, C]); gamma, beta [C].
// training: normalises with the biased batch variance and updates running_mean/running_var
// in place (momentum as in PyTorch: r = (1 - m) r + m batch; running_var takes the unbiased
// variance). Not training: uses the running statistics.
Tensor batch_norm2d(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                    const Tensor& running_mean, const Tensor& running_var, bool training,
                    double momentum = 0.1, double eps = 1e-5);

// ---- inference fusion (engine/ops/conv2d.cpp) ----
// act(batch_norm2d(conv2d(x, w, no bias, stride, pad), gamma, beta, running_mean, running_var,
// training = false, eps) + residual), act = ReLU when relu, else the identity; residual (the
// output's shape) may be undefined. For inference: records no gradient, and refuses inputs that
// require one while gradients are enabled. On the CPU one pass (the normalisation, residual and
// ReLU applied as the convolution stores its output, kernels/cpu/conv2d.h), normalising as
// (conv - running_mean) * scale + beta with scale = gamma / sqrt(running_var + eps) computed in
// double; on CUDA the ops one after another.
Tensor conv2d_bn_inference(const Tensor& x, const Tensor& w, int stride, int pad, const Tensor& gamma,
                           const Tensor& beta, const Tensor& running_mean, const Tensor& running_var,
                           double eps, const Tensor& residual, bool relu);

// ---- pooling (engine/ops/pool.cpp) ----
Tensor max_pool2d(const Tensor& x, int kernel, int stride, int pad);  // pads with -inf
Tensor global_avg_pool(const Tensor& x);                              // [N,H,W,C] -> [N,C]

// ---- linear and losses (engine/ops/linear.cpp, engine/ops/loss.cpp) ----
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias);  // x [N,in], w [out,in]
Tensor softmax(const Tensor& x);        // over the last dimension
Tensor log_softmax(const Tensor& x);    // over the last dimension
// Mean over the batch of -log softmax(logits)[label]; logits [N, K], labels in [0, K).
Tensor cross_entropy(const Tensor& logits, const std::vector<int64_t>& labels);

// ---- spatial attention (engine/ops/attention.cpp) ----
// x [N,H,W,C] -> [N,H,W,2]: channel 0 the mean over C, channel 1 the max over C (one pass).
Tensor channel_mean_max(const Tensor& x);
// x [N,H,W,C] * g [N,H,W,1], g broadcast over channels.
Tensor gate_mul(const Tensor& x, const Tensor& g);

// ---- Bayesian linear (engine/ops/bayes.cpp) ----
// y = x W^T + b with W = w_mu + softplus(w_rho) * eps_w, b = b_mu + softplus(b_rho) * eps_b.
// With explicit noise (eps_w [out,in], eps_b [out]), or drawn from the Philox stream
// (seed, offset): eps_w[j] is draw j, eps_b[k] is draw out*in + k.
struct PhiloxKey {
  uint64_t seed = 0;
  uint64_t offset = 0;
};
Tensor bayes_linear(const Tensor& x, const Tensor& w_mu, const Tensor& w_rho, const Tensor& b_mu,
                    const Tensor& b_rho, const Tensor& eps_w, const Tensor& eps_b);
Tensor bayes_linear(const Tensor& x, const Tensor& w_mu, const Tensor& w_rho, const Tensor& b_mu,
                    const Tensor& b_rho, PhiloxKey key);
// The noise bayes_linear(..., key) uses, as tensors (for tests and parity checks).
std::vector<Tensor> bayes_noise(const Tensor& w_mu, const Tensor& b_mu, PhiloxKey key);
// sum over weight and bias of KL(N(mu, softplus(rho)^2) || N(0, prior_sigma^2)) -> shape [1]
Tensor bayes_kl(const Tensor& w_mu, const Tensor& w_rho, const Tensor& b_mu, const Tensor& b_rho,
                double prior_sigma);

}  // namespace engine
