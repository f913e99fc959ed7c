// Random draws for the data layer, all from the project's Philox generator
// (kernels/common/philox.h), so that shuffles, augmentations and synthetic images depend only
// on (seed, purpose, epoch, sample index): never on thread count or scheduling.
//
// Each purpose (shuffle, augmentation, synthetic images) gets its own Philox key derived
// from the user's seed, so a trainer that also draws Bayesian noise from the same seed never
// sees correlated streams.
#pragma once
#include <cstdint>

#include "kernels/common/philox.h"

namespace data {

// The purposes that draw random numbers; each is mixed into the key.
enum class RandomPurpose : uint64_t { Shuffle = 1, Augment = 2, Synthetic = 3 };

// SplitMix64 finaliser: a bijective mix, so distinct inputs give distinct, unrelated keys.
inline uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Philox key for one purpose in one epoch (or, for synthetic data, one split).
inline uint64_t derive_key(uint64_t seed, RandomPurpose purpose, uint64_t epoch) {
  return mix64(mix64(seed ^ (static_cast<uint64_t>(purpose) << 56)) + epoch);
}

// Sequential draws from the Philox stream (key, stream): draw i is lane i % 4 of block i / 4,
// exactly as kernels::philox_uniform(key, stream, i), with each block computed once.
class DrawStream {
 public:
  DrawStream(uint64_t key, uint64_t stream) : key_(key), stream_(stream) {}

  uint32_t next_u32() {
    if ((next_ & 3) == 0) block_ = kernels::philox_block(key_, stream_, next_ >> 2);
    return block_.v[next_++ & 3];
  }
  // Uniform in (0, 1].
  double uniform() { return kernels::philox_to_unit(next_u32()); }
  // Uniform in [lo, hi).
  double uniform(double lo, double hi) { return lo + (hi - lo) * (1.0 - uniform()); }
  // Integer uniform in [0, n), n <= 2^32 (multiply-shift: bias below n / 2^32).
  uint64_t below(uint64_t n) { return (static_cast<uint64_t>(next_u32()) * n) >> 32; }
  // Standard normal (Box-Muller on two draws).
  double normal() {
    double u1 = uniform(), u2 = uniform();
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
  }

 private:
  uint64_t key_, stream_;
  uint64_t next_ = 0;
  kernels::Philox4 block_{};
};

}  // namespace data
