// Optimiser updates on the CPU: one fused pass over a parameter, its gradient and its state,
// threaded with OpenMP. The per-element math is in kernels/common/optim.h (shared with CUDA).
// Parameters and state are updated in place; the gradient is only read.
#pragma once
#include <cstdint>

#include "kernels/common/optim.h"

namespace kernels::cpu {

// `momentum_buffer` may be null when c.momentum is 0.
template <typename T>
void sgd_step(T* param, const T* grad, T* momentum_buffer, int64_t n, const SgdCoeffs<T>& c);

template <typename T>
void adam_step(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, int64_t n, const AdamCoeffs<T>& c);

}  // namespace kernels::cpu
