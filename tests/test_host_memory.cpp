// labels: cpu
// The host caching allocator behind CPU tensors (engine/host_memory.h): size classes, reuse
// of freed large blocks, the limit, poisoning, alignment.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "engine/host_memory.h"
#include "engine/tensor.h"

namespace hm = engine::host_memory;

namespace {
// Restores the limit and poisoning a test changed.
struct Restore {
  size_t limit = hm::stats().limit_bytes;
  ~Restore() {
    hm::set_cache_limit(limit);
    hm::set_poison(std::getenv("ENGINE_HOST_MEMORY_POISON") != nullptr);
  }
};
}  // namespace

TEST(HostMemory, SizeClassesAreAtMostAnEighthOverAndWholePages) {
  EXPECT_EQ(hm::size_class(100), 128u);
  for (size_t bytes : {hm::kMinCachedBytes, hm::kMinCachedBytes + 1, size_t{300000}, size_t{1} << 20,
                       (size_t{1} << 20) + 1, size_t{25690112}, size_t{123456789}}) {
    size_t cls = hm::size_class(bytes);
    EXPECT_GE(cls, bytes);
    EXPECT_LE(cls - bytes, bytes / 8) << bytes;
    EXPECT_EQ(cls % 4096, 0u) << bytes;
    EXPECT_EQ(hm::size_class(cls), cls) << "a class is its own class";
  }
}

TEST(HostMemory, FreedLargeBlocksAreReusedUpToTheLimit) {
  Restore restore;
  hm::set_cache_limit(size_t{64} << 20);
  hm::empty_cache();
  const size_t bytes = size_t{3} << 20;
  void* a = hm::allocate(bytes);
  ASSERT_EQ(reinterpret_cast<uintptr_t>(a) % 64, 0u);
  std::memset(a, 1, bytes);  // the whole block is usable
  hm::release(a, bytes);
  EXPECT_EQ(hm::stats().cached_blocks, 1u);
  EXPECT_EQ(hm::stats().cached_bytes, hm::size_class(bytes));
  const size_t hits = hm::stats().hits;
  void* b = hm::allocate(bytes - 1000);  // same class
  EXPECT_EQ(b, a);
  EXPECT_EQ(hm::stats().hits, hits + 1);
  EXPECT_EQ(hm::stats().cached_bytes, 0u);
  void* c = hm::allocate(bytes * 2);  // another class: a new block
  EXPECT_NE(c, a);
  hm::release(b, bytes - 1000);
  hm::release(c, bytes * 2);
  EXPECT_EQ(hm::stats().cached_blocks, 2u);

  // Lowering the limit returns blocks at once; a free past the limit goes to the system.
  hm::set_cache_limit(hm::size_class(bytes));
  EXPECT_LE(hm::stats().cached_bytes, hm::size_class(bytes));
  hm::set_cache_limit(0);
  EXPECT_EQ(hm::stats().cached_bytes, 0u);
  void* d = hm::allocate(bytes);
  hm::release(d, bytes);
  EXPECT_EQ(hm::stats().cached_blocks, 0u);
}

TEST(HostMemory, PoisonedBlocksReadAsNaN) {
  Restore restore;
  hm::set_poison(true);
  for (size_t bytes : {size_t{64}, size_t{1} << 20}) {
    float* p = static_cast<float*>(hm::allocate(bytes));
    EXPECT_TRUE(std::isnan(p[0]));
    EXPECT_TRUE(std::isnan(p[bytes / sizeof(float) - 1]));
    p[0] = 1.0f;
    hm::release(p, bytes);
    p = static_cast<float*>(hm::allocate(bytes));  // a reused block is poisoned again
    EXPECT_TRUE(std::isnan(p[0]));
    hm::release(p, bytes);
  }
}

TEST(HostMemory, TensorsOfATrainingStepReuseTheirBlocks) {
  Restore restore;
  hm::set_cache_limit(size_t{256} << 20);
  hm::empty_cache();
  auto step = [] {
    engine::Tensor x = engine::Tensor::randn({8, 56, 56, 64}, 1);  // 6.4 MB
    engine::Tensor y = engine::Tensor::zeros({8, 56, 56, 64});
    return x.numel() + y.numel();
  };
  step();
  const size_t misses = hm::stats().misses;
  for (int i = 0; i < 3; ++i) step();
  EXPECT_EQ(hm::stats().misses, misses) << "the second and later steps allocate nothing new";
  engine::Tensor z = engine::Tensor::zeros({8, 56, 56, 64});
  EXPECT_EQ(z.to_vector()[12345], 0.0) << "zeros() writes its zeros, reused block or not";
}
