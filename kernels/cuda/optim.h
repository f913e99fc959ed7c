// Optimiser updates on the GPU: one fused kernel per parameter reads the parameter, its
// gradient and its state once and writes the parameter and state once. The per-element math
// is kernels/common/optim.h, shared with the CPU (kernels/cpu/optim.h has the same contract).
// Device pointers; work is queued on the default stream.
#pragma once
#include <cstdint>

#include "kernels/common/optim.h"

namespace kernels::cuda {

// `momentum_buffer` may be null when c.momentum is 0.
template <typename T>
void sgd_step(T* param, const T* grad, T* momentum_buffer, int64_t n, const SgdCoeffs<T>& c);

template <typename T>
void adam_step(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, int64_t n, const AdamCoeffs<T>& c);

}  // namespace kernels::cuda
