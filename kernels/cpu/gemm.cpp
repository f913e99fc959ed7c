#include "kernels/cpu/gemm.h"

#include <Eigen/Core>

namespace kernels::cpu {
namespace {

template <typename T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using ConstMap = Eigen::Map<const RowMat<T>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <typename T>
using MutMap = Eigen::Map<RowMat<T>, Eigen::Unaligned, Eigen::OuterStride<>>;

template <typename T, typename DA, typename DB>
void product(const DA& a, const DB& b, T alpha, T beta, MutMap<T>& c) {
  if (beta == T(0)) {
    if (alpha == T(1)) c.noalias() = a * b;
    else c.noalias() = alpha * (a * b);
  } else {
    if (beta != T(1)) c *= beta;
    if (alpha == T(1)) c.noalias() += a * b;
    else c.noalias() += alpha * (a * b);
  }
}

}  // namespace

template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  MutMap<T> c(C, M, N, Eigen::OuterStride<>(ldc));
  if (K == 0) {
    if (beta == T(0)) c.setZero();
    else c *= beta;
    return;
  }
  // stored shapes: A is [M,K] or [K,M]; B is [K,N] or [N,K]
  ConstMap<T> a(A, trans_a ? K : M, trans_a ? M : K, Eigen::OuterStride<>(lda));
  ConstMap<T> b(B, trans_b ? N : K, trans_b ? K : N, Eigen::OuterStride<>(ldb));
  if (!trans_a && !trans_b) product<T>(a, b, alpha, beta, c);
  else if (!trans_a && trans_b) product<T>(a, b.transpose(), alpha, beta, c);
  else if (trans_a && !trans_b) product<T>(a.transpose(), b, alpha, beta, c);
  else product<T>(a.transpose(), b.transpose(), alpha, beta, c);
}

template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t,
                          const float*, int64_t, float, float*, int64_t);
template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t,
                           const double*, int64_t, double, double*, int64_t);

}  // namespace kernels::cpu
