// Status checks for every CUDA call and kernel launch: a failure throws std::runtime_error
// naming the call (or op), the file and line, and CUDA's own message.
#pragma once
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace kernels::cuda {

inline void check_status(cudaError_t status, const char* what, const char* file, int line) {
  if (status != cudaSuccess)
    throw std::runtime_error(std::string("CUDA error in ") + what + " (" + file + ":" +
                             std::to_string(line) + "): " + cudaGetErrorString(status));
}

}  // namespace kernels::cuda

#define CUDA_CHECK(call) ::kernels::cuda::check_status((call), #call, __FILE__, __LINE__)
// After a <<<...>>> launch: launch-configuration errors surface here, named by `op`.
#define CUDA_CHECK_LAUNCH(op) ::kernels::cuda::check_status(cudaGetLastError(), op, __FILE__, __LINE__)
