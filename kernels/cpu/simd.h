// Vectors for the CPU kernels: GCC/Clang vector extensions as wide as the instruction set the
// build targets (AVX-512, AVX or SSE), so that one source serves every -march; arithmetic
// on them compiles to that set's instructions, a scalar operand being broadcast.
#pragma once

namespace kernels::cpu::simd {

#if defined(__AVX512F__)
inline constexpr int kVectorBytes = 64;
#elif defined(__AVX__)
inline constexpr int kVectorBytes = 32;
#else
inline constexpr int kVectorBytes = 16;
#endif

template <typename T> struct Simd;
template <> struct Simd<float> {
  typedef float Vec __attribute__((vector_size(kVectorBytes)));
};
template <> struct Simd<double> {
  typedef double Vec __attribute__((vector_size(kVectorBytes)));
};
template <typename T> using Vec = typename Simd<T>::Vec;
template <typename T> inline constexpr int kLanes = kVectorBytes / static_cast<int>(sizeof(T));

}  // namespace kernels::cpu::simd
