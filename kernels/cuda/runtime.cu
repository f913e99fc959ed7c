// Device discovery, a caching allocator, copies and fills.
// The allocator keeps freed blocks in per-size free lists (sizes rounded up to 512 bytes,
// or to 2 MiB above 1 MiB) so that a training step reuses the previous step's memory
// instead of calling cudaMalloc/cudaFree, which synchronise the device.
#include <cuda_runtime.h>

#include <cstring>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/runtime.h"

namespace kernels::cuda {

bool available(std::string* why) {
  int count = 0;
  cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    if (why) *why = std::string("cudaGetDeviceCount failed: ") + cudaGetErrorString(status);
    cudaGetLastError();  // clear the sticky error so later CPU-only work is unaffected
    return false;
  }
  if (count == 0) {
    if (why) *why = "no CUDA device found";
    return false;
  }
  return true;
}

namespace {

size_t round_size(size_t bytes) {
  const size_t small = 512, large = size_t{2} << 20;
  if (bytes == 0) bytes = 1;
  size_t unit = bytes > (size_t{1} << 20) ? large : small;
  return (bytes + unit - 1) / unit * unit;
}

class CachingAllocator {
 public:
  void* allocate(size_t bytes) {
    size_t size = round_size(bytes);
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = free_.lower_bound(size);
    // reuse a cached block no more than twice the request, to bound waste
    if (it != free_.end() && it->first <= 2 * size && !it->second.empty()) {
      void* p = it->second.back();
      it->second.pop_back();
      if (it->second.empty()) free_.erase(it);
      return p;
    }
    void* p = nullptr;
    cudaError_t status = cudaMalloc(&p, size);
    if (status == cudaErrorMemoryAllocation) {  // give the cache back and retry once
      cudaGetLastError();
      release_cached_locked();
      status = cudaMalloc(&p, size);
    }
    check_status(status, "cudaMalloc", __FILE__, __LINE__);
    sizes_[p] = size;
    return p;
  }
  void release(void* p) {
    if (!p) return;
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = sizes_.find(p);
    if (it == sizes_.end()) throw std::runtime_error("device_free: pointer not from device_malloc");
    free_[it->second].push_back(p);
  }

 private:
  void release_cached_locked() {
    for (auto& [size, blocks] : free_)
      for (void* p : blocks) {
        CUDA_CHECK(cudaFree(p));
        sizes_.erase(p);
      }
    free_.clear();
  }
  std::mutex mutex_;
  std::map<size_t, std::vector<void*>> free_;
  std::unordered_map<void*, size_t> sizes_;
};

bool g_poison = false;

CachingAllocator& allocator() {
  static auto* a = new CachingAllocator();  // never destroyed: outlives static tensors
  return *a;
}

template <typename T>
__global__ void fill_kernel(T* dst, T value, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = value;
}

template <typename T>
void fill(T* dst, T value, int64_t n) {
  if (n <= 0) return;
  int threads = 256;
  int blocks = static_cast<int>(std::min<int64_t>((n + threads - 1) / threads, 65535));
  fill_kernel<<<blocks, threads>>>(dst, value, n);
  CUDA_CHECK_LAUNCH("fill");
}

}  // namespace

void* device_malloc(size_t bytes) {
  void* p = allocator().allocate(bytes);
  if (g_poison) CUDA_CHECK(cudaMemset(p, 0xFF, bytes));
  return p;
}
void set_poison_allocations(bool on) { g_poison = on; }
void device_free(void* ptr) { allocator().release(ptr); }
void copy_host_to_device(void* dst, const void* src, size_t bytes) {
  CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}
void copy_device_to_host(void* dst, const void* src, size_t bytes) {
  CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}
void copy_device_to_device(void* dst, const void* src, size_t bytes) {
  CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice));
}

int multiprocessor_count() {
  static const int count = [] {
    int device = 0, sms = 0;
    CUDA_CHECK(cudaGetDevice(&device));
    CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    return sms;
  }();
  return count;
}

void* pinned_malloc(size_t bytes) {
  void* p = nullptr;
  CUDA_CHECK(cudaHostAlloc(&p, bytes ? bytes : 1, cudaHostAllocDefault));
  return p;
}
void pinned_free(void* ptr) {
  if (ptr) CUDA_CHECK(cudaFreeHost(ptr));
}
void copy_host_to_device_async(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, 0));
}

namespace {

// Two pinned buffers used in turn, each with the event recorded after its last copy.
class StagingBuffers {
 public:
  void upload(void* dst, const void* src, size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    Slot& slot = slots_[next_];
    next_ = (next_ + 1) % 2;
    if (!slot.done) CUDA_CHECK(cudaEventCreateWithFlags(&slot.done, cudaEventDisableTiming));
    else CUDA_CHECK(cudaEventSynchronize(slot.done));  // its previous copy has run
    if (slot.capacity < bytes) {
      pinned_free(slot.host);
      slot = Slot{nullptr, 0, slot.done};  // consistent even if the allocation below throws
      slot.host = pinned_malloc(round_size(bytes));
      slot.capacity = round_size(bytes);
    }
    std::memcpy(slot.host, src, bytes);
    copy_host_to_device_async(dst, slot.host, bytes);
    CUDA_CHECK(cudaEventRecord(slot.done, 0));
  }

 private:
  struct Slot {
    void* host = nullptr;
    size_t capacity = 0;
    cudaEvent_t done = nullptr;
  };
  std::mutex mutex_;
  Slot slots_[2];
  int next_ = 0;
};

}  // namespace

void copy_host_to_device_staged(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  static auto* staging = new StagingBuffers();  // never destroyed, like the allocator
  staging->upload(dst, src, bytes);
}

void fill_f32(float* dst, float value, int64_t n) { fill(dst, value, n); }
void fill_f64(double* dst, double value, int64_t n) { fill(dst, value, n); }
void synchronize() { CUDA_CHECK(cudaDeviceSynchronize()); }

}  // namespace kernels::cuda
