// Fully connected layer on the GPU: y[n, out] = x[n, in] w[out, in]^T + b[out], float and
// double, on the project's own tiled GEMM (kernels/cuda/linear_gemm.cuh; cuBLAS appears only
// as a reference in the tests and bench_kernels). Same contract as kernels/cpu/linear.h:
// dx, dw and db are written (the engine accumulates into parameter gradients); any of them,
// and b, may be null. All pointers are device pointers; work is queued on the default stream.
#pragma once
#include <cstdint>

namespace kernels::cuda {

template <typename T>
void linear_forward(const T* x, const T* w, const T* b, T* y, int64_t n, int64_t in, int64_t out);

template <typename T>
void linear_backward(const T* x, const T* w, const T* dy, T* dx, T* dw, T* db, int64_t n,
                     int64_t in, int64_t out);

// db[c] = sum over rows r of dy[r * cols + c], the rows added in a fixed order.
template <typename T> void column_sums(const T* dy, T* db, int64_t rows, int64_t cols);

}  // namespace kernels::cuda
