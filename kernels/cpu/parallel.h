// CPU threading: OpenMP over index ranges. The thread count is OpenMP's (set_num_threads).
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstdint>

namespace kernels::cpu {

inline int num_threads() { return omp_get_max_threads(); }
inline void set_num_threads(int n) { omp_set_num_threads(std::max(1, n)); }

// f(begin, end) on contiguous chunks of [0, n); runs inline when n is below `grain`
// (so small tensors pay no threading overhead) or when already inside a parallel region.
template <typename F>
void parallel_for(int64_t n, int64_t grain, F&& f) {
  if (n <= 0) return;
  int threads = num_threads();
  if (n < 2 * grain || threads == 1 || omp_in_parallel()) {
    f(int64_t{0}, n);
    return;
  }
  int64_t chunks = std::min<int64_t>(threads, (n + grain - 1) / grain);
#pragma omp parallel for num_threads(static_cast<int>(chunks)) schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    int64_t begin = n * c / chunks, end = n * (c + 1) / chunks;
    f(begin, end);
  }
}

}  // namespace kernels::cpu
