// Per-element optimiser updates shared by the CPU and CUDA backends. Each function updates one
// parameter element (and its state) from its gradient, following torch.optim's single-tensor
// code paths step for step, so float32 results match PyTorch's to rounding.
// The per-step scalars (bias corrections, step size) are computed once per parameter on the
// host, in double, and passed in the parameter's type, as PyTorch does.
#pragma once
#include <cmath>

#include "kernels/common/macros.h"

namespace kernels {

template <typename T>
struct SgdCoeffs {
  T lr;
  T momentum;             // 0: plain SGD, no buffer
  T one_minus_dampening;
  T weight_decay;         // L2: added to the gradient
  bool nesterov;
  bool first_step;        // the momentum buffer starts as a copy of the gradient
};

// torch.optim.SGD: g += wd p; buf = first ? g : momentum buf + (1 - dampening) g;
// g = nesterov ? g + momentum buf : buf; p -= lr g. `buf` is unused when momentum is 0.
template <typename T>
KERNEL_HD void sgd_update_fn(T* p, T g, T* buf, const SgdCoeffs<T>& c) {
  if (c.weight_decay != T(0)) g += c.weight_decay * *p;
  if (c.momentum != T(0)) {
    *buf = c.first_step ? g : c.momentum * *buf + c.one_minus_dampening * g;
    g = c.nesterov ? g + c.momentum * *buf : *buf;
  }
  *p -= c.lr * g;
}

template <typename T>
struct AdamCoeffs {
  T one_minus_beta1;
  T beta2;
  T one_minus_beta2;
  T step_size;              // lr / (1 - beta1^t)
  T bias_correction2_sqrt;  // sqrt(1 - beta2^t)
  T eps;
  T l2_weight_decay;        // Adam: added to the gradient
  T decay_factor;           // AdamW: p *= 1 - lr wd before the update (1 for Adam)
};

// torch.optim.Adam / AdamW: m = lerp(m, g, 1 - beta1); v = beta2 v + (1 - beta2) g^2;
// p -= step_size m / (sqrt(v) / sqrt(1 - beta2^t) + eps).
template <typename T>
KERNEL_HD void adam_update_fn(T* p, T g, T* m, T* v, const AdamCoeffs<T>& c) {
  if (c.l2_weight_decay != T(0)) g += c.l2_weight_decay * *p;
  *p *= c.decay_factor;
  *m += c.one_minus_beta1 * (g - *m);
  *v = c.beta2 * *v + c.one_minus_beta2 * g * g;
  T denom = sqrt(*v) / c.bias_correction2_sqrt + c.eps;
  *p -= c.step_size * *m / denom;
}

}  // namespace kernels
