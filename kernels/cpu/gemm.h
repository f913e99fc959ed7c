// Row-major GEMM on the CPU: C = alpha * op(A) * op(B) + beta * C, op(X) = X or X^T.
// op(A) is [M, K], op(B) is [K, N], C is [M, N]; lda/ldb/ldc are row strides of the stored
// matrices. Backed by Eigen's blocked, vectorised product, threaded with OpenMP when called
// outside a parallel region (inside one it runs on the calling thread).
#pragma once
#include <cstdint>

namespace kernels::cpu {

template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

}  // namespace kernels::cpu
