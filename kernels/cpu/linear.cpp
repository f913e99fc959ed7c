#include "kernels/cpu/linear.h"

#include "kernels/cpu/gemm.h"

namespace kernels::cpu {

template <typename T>
void linear_forward(const T* x, const T* w, const T* b, T* y, int64_t n, int64_t in, int64_t out) {
  if (b) {
    for (int64_t i = 0; i < n; ++i)
      for (int64_t o = 0; o < out; ++o) y[i * out + o] = b[o];
  }
  gemm<T>(false, true, n, out, in, T(1), x, in, w, in, b ? T(1) : T(0), y, out);
}

template <typename T>
void linear_backward(const T* x, const T* w, const T* dy, T* dx, T* dw, T* db, int64_t n,
                     int64_t in, int64_t out) {
  if (dx) gemm<T>(false, false, n, in, out, T(1), dy, out, w, in, T(0), dx, in);
  if (dw) gemm<T>(true, false, out, in, n, T(1), dy, out, x, in, T(0), dw, in);
  if (db) {
    for (int64_t o = 0; o < out; ++o) db[o] = T(0);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t o = 0; o < out; ++o) db[o] += dy[i * out + o];
  }
}

template void linear_forward<float>(const float*, const float*, const float*, float*, int64_t, int64_t, int64_t);
template void linear_forward<double>(const double*, const double*, const double*, double*, int64_t, int64_t, int64_t);
template void linear_backward<float>(const float*, const float*, const float*, float*, float*, float*,
                                     int64_t, int64_t, int64_t);
template void linear_backward<double>(const double*, const double*, const double*, double*, double*,
                                      double*, int64_t, int64_t, int64_t);

}  // namespace kernels::cpu
