#include "engine/host_memory.h"

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "engine/error.h"

#if defined(__SANITIZE_ADDRESS__)
#define ENGINE_HOST_MEMORY_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ENGINE_HOST_MEMORY_ASAN 1
#endif
#endif

namespace engine::host_memory {
namespace {

size_t default_limit() {
#ifdef ENGINE_HOST_MEMORY_ASAN
  size_t limit = 0;
#else
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  size_t limit = pages > 0 && page > 0 ? static_cast<size_t>(pages) * static_cast<size_t>(page) / 4 : 0;
#endif
  if (const char* env = std::getenv("ENGINE_HOST_CACHE_MB")) {
    char* end = nullptr;
    unsigned long long mb = std::strtoull(env, &end, 10);
    if (end != env && *end == '\0') limit = static_cast<size_t>(mb) << 20;
  }
  return limit;
}

bool default_poison() {
  const char* env = std::getenv("ENGINE_HOST_MEMORY_POISON");
  return env && std::string(env) != "0" && std::string(env) != "";
}

struct Cache {
  std::mutex mutex;
  std::map<size_t, std::vector<void*>> free_blocks;  // size class -> blocks
  Stats stats;
  std::atomic<bool> poison{default_poison()};
  Cache() { stats.limit_bytes = default_limit(); }

  // Frees cached blocks, largest classes first, until at most `keep` bytes stay. Locked.
  void shrink_to(size_t keep) {
    for (auto it = free_blocks.rbegin(); it != free_blocks.rend() && stats.cached_bytes > keep; ++it) {
      auto& blocks = it->second;
      while (!blocks.empty() && stats.cached_bytes > keep) {
        std::free(blocks.back());
        blocks.pop_back();
        stats.cached_bytes -= it->first;
        --stats.cached_blocks;
      }
    }
  }
};

// Never destroyed: tensors held in static objects may be freed after static destruction.
Cache& cache() {
  static Cache* c = new Cache;
  return *c;
}

// When the system has no memory left, the cache is emptied and the request tried once more.
void* system_allocate(size_t bytes) {
  const size_t rounded = (bytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded);
  if (!p) {
    Cache& c = cache();
    {
      std::lock_guard<std::mutex> lock(c.mutex);
      c.shrink_to(0);
    }
    p = std::aligned_alloc(64, rounded);
  }
  ENGINE_CHECK(p != nullptr, "out of host memory allocating ", bytes, " bytes");
  return p;
}

}  // namespace

size_t size_class(size_t bytes) noexcept {
  if (bytes < kMinCachedBytes) return (bytes + 63) / 64 * 64;
  size_t power = size_t{1} << (63 - __builtin_clzll(static_cast<unsigned long long>(bytes)));
  const size_t step = power / 8;  // >= 32 KiB: whole pages
  return (bytes + step - 1) / step * step;
}

void* allocate(size_t bytes) {
  if (bytes == 0) bytes = 64;
  Cache& c = cache();
  if (bytes < kMinCachedBytes) {
    void* p = system_allocate(bytes);
    if (c.poison) std::memset(p, 0xFF, bytes);
    return p;
  }
  const size_t cls = size_class(bytes);
  void* p = nullptr;
  {
    std::lock_guard<std::mutex> lock(c.mutex);
    auto it = c.free_blocks.find(cls);
    if (it != c.free_blocks.end() && !it->second.empty()) {
      p = it->second.back();
      it->second.pop_back();
      c.stats.cached_bytes -= cls;
      --c.stats.cached_blocks;
      ++c.stats.hits;
    } else {
      ++c.stats.misses;
    }
  }
  if (!p) p = system_allocate(cls);
  if (c.poison) std::memset(p, 0xFF, cls);
  return p;
}

void release(void* p, size_t bytes) noexcept {
  if (!p) return;
  if (bytes == 0) bytes = 64;
  if (bytes < kMinCachedBytes) {
    std::free(p);
    return;
  }
  const size_t cls = size_class(bytes);
  Cache& c = cache();
  {
    std::lock_guard<std::mutex> lock(c.mutex);
    if (c.stats.cached_bytes + cls <= c.stats.limit_bytes) {
      try {
        c.free_blocks[cls].push_back(p);
        c.stats.cached_bytes += cls;
        ++c.stats.cached_blocks;
        return;
      } catch (...) {  // no memory for the bookkeeping: give the block back instead
      }
    }
  }
  std::free(p);
}

Stats stats() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  return c.stats;
}

void empty_cache() noexcept {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  c.shrink_to(0);
}

void set_cache_limit(size_t bytes) noexcept {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  c.stats.limit_bytes = bytes;
  c.shrink_to(bytes);
}

void set_poison(bool on) noexcept {
  cache().poison = on;
}

}  // namespace engine::host_memory
