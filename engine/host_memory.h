// Host (CPU) memory for tensors: 64-byte aligned blocks, with a cache of freed large blocks.
//
// Why: a training step frees and re-allocates the same activation and gradient sizes every
// step. Through malloc, each large block is a fresh mmap that the kernel must zero page by
// page at first touch (a quarter of a 224x224 training step was page faults before this
// cache); kept here, a freed block is handed out again at once.
//
// Blocks of kMinCachedBytes or more are rounded up to a size class (eight classes per power
// of two, whole pages: at most 12.5% over) and, when freed, kept for the next request of
// the same class, up to a limit of cached bytes (default: a quarter of the physical memory;
// environment variable ENGINE_HOST_CACHE_MB sets it in MiB, 0 turns the cache off). A free
// that would pass the limit returns the block to the system. Smaller blocks go straight to
// malloc. Under AddressSanitizer the cache is off by default, so that use-after-free stays
// visible.
//
// ENGINE_HOST_MEMORY_POISON=1 (the test suite sets it) fills every block handed out with
// 0xFF bytes, a NaN in float32 and float64, so code that reads memory it never wrote (or
// counts on fresh pages being zero) fails its tests instead of passing by luck.
#pragma once
#include <cstddef>

namespace engine::host_memory {

constexpr size_t kMinCachedBytes = size_t{256} << 10;

// 64-byte aligned; throws engine::Error when the system has no memory left. `bytes` may be 0.
void* allocate(size_t bytes);
// `p` from allocate(bytes) with the same `bytes`; nullptr is ignored.
void release(void* p, size_t bytes) noexcept;

struct Stats {
  size_t cached_bytes = 0;   // held in the cache now (not in use)
  size_t cached_blocks = 0;
  size_t limit_bytes = 0;
  size_t hits = 0;           // large requests served from the cache
  size_t misses = 0;         // large requests that went to the system
};
Stats stats();
// Returns every cached block to the system.
void empty_cache() noexcept;
// Changes the limit (bytes); blocks over it are returned at once. 0 turns the cache off.
void set_cache_limit(size_t bytes) noexcept;
// Turns poisoning on or off (initially from ENGINE_HOST_MEMORY_POISON).
void set_poison(bool on) noexcept;

// The size class of a large request (what allocate really reserves); exposed for tests.
size_t size_class(size_t bytes) noexcept;

}  // namespace engine::host_memory
