// Helpers for CUDA tests: skip with the reason where no GPU is usable (or the build has no
// CUDA backend), and poison device allocations so unwritten outputs show up as NaN.
#pragma once
#include <gtest/gtest.h>

#include <string>

#ifdef ENGINE_WITH_CUDA
#include "kernels/cuda/runtime.h"
#endif

namespace testing_util {

// Empty when a GPU is usable, else the reason none is.
inline std::string gpu_unavailable_reason() {
#ifdef ENGINE_WITH_CUDA
  std::string why;
  return kernels::cuda::available(&why) ? std::string() : why;
#else
  return "this build has no CUDA backend";
#endif
}

struct PoisonDeviceAllocations {
#ifdef ENGINE_WITH_CUDA
  PoisonDeviceAllocations() { kernels::cuda::set_poison_allocations(true); }
  ~PoisonDeviceAllocations() { kernels::cuda::set_poison_allocations(false); }
#else
  PoisonDeviceAllocations() {}  // user-provided: no unused-variable warning in CPU-only builds
#endif
};

}  // namespace testing_util

#define REQUIRE_GPU()                                                              \
  do {                                                                             \
    std::string why_ = ::testing_util::gpu_unavailable_reason();                   \
    if (!why_.empty()) GTEST_SKIP() << "CUDA test skipped, no usable GPU: " << why_; \
  } while (0)
