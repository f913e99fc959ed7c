// Marks functions shared by the CPU and CUDA backends (kernels/common/*).
#pragma once
#if defined(__CUDACC__)
#define KERNEL_HD __host__ __device__ __forceinline__
#else
#define KERNEL_HD inline
#endif
