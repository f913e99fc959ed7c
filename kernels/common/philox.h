// Philox 4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011),
// the one generator behind every random draw in the project, on CPU and GPU alike.
//
// Stream layout: draw i of stream (seed, offset) comes from block counter
// (i / 4 low, i / 4 high, offset low, offset high) under key (seed low, seed high), lane i % 4.
// A draw depends only on (seed, offset, i): any thread can produce any element, and the CPU
// and the GPU produce the same numbers. Normal draws use Box-Muller on lane pairs (0,1) and
// (2,3) of the same block.
#pragma once
#include <cmath>
#include <cstdint>

#include "kernels/common/macros.h"

namespace kernels {

struct Philox4 {
  uint32_t v[4];
};

KERNEL_HD uint32_t philox_mulhi(uint32_t a, uint32_t b, uint32_t* lo) {
  uint64_t p = static_cast<uint64_t>(a) * b;
  *lo = static_cast<uint32_t>(p);
  return static_cast<uint32_t>(p >> 32);
}

KERNEL_HD Philox4 philox4x32_10(Philox4 ctr, uint32_t k0, uint32_t k1) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    uint32_t lo0, lo1;
    uint32_t hi0 = philox_mulhi(M0, ctr.v[0], &lo0);
    uint32_t hi1 = philox_mulhi(M1, ctr.v[2], &lo1);
    Philox4 next;
    next.v[0] = hi1 ^ ctr.v[1] ^ k0;
    next.v[1] = lo1;
    next.v[2] = hi0 ^ ctr.v[3] ^ k1;
    next.v[3] = lo0;
    ctr = next;
    k0 += W0;
    k1 += W1;
  }
  return ctr;
}

KERNEL_HD Philox4 philox_block(uint64_t seed, uint64_t offset, uint64_t block) {
  Philox4 c{{static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32),
             static_cast<uint32_t>(offset), static_cast<uint32_t>(offset >> 32)}};
  return philox4x32_10(c, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// Uniform in (0, 1], never 0 (safe for log).
KERNEL_HD double philox_to_unit(uint32_t x) { return (static_cast<double>(x) + 1.0) * (1.0 / 4294967296.0); }

KERNEL_HD double philox_uniform(uint64_t seed, uint64_t offset, uint64_t i) {
  Philox4 r = philox_block(seed, offset, i >> 2);
  return philox_to_unit(r.v[i & 3]);
}

// Standard normal draw i of the stream.
KERNEL_HD double philox_normal(uint64_t seed, uint64_t offset, uint64_t i) {
  Philox4 r = philox_block(seed, offset, i >> 2);
  unsigned pair = static_cast<unsigned>(i & 2);
  double u1 = philox_to_unit(r.v[pair]);
  double u2 = philox_to_unit(r.v[pair + 1]);
  double radius = sqrt(-2.0 * log(u1));
  double angle = 6.283185307179586476925286766559 * u2;
  return (i & 1) ? radius * sin(angle) : radius * cos(angle);
}

}  // namespace kernels
