// Host-side entry points of the CUDA backend: device discovery, memory, copies, fills.
// Plain C++ declarations (no CUDA headers) so engine/ can call them from .cpp files.
// Every CUDA call's status is checked; failures throw std::runtime_error naming the call.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace kernels::cuda {

// True when a usable GPU is present. Any error from the driver or runtime (for example
// "CUDA driver version is insufficient for CUDA runtime version" on a machine without a
// GPU) counts as "no GPU" and is reported through `why`; it never aborts the caller.
bool available(std::string* why = nullptr);

void* device_malloc(size_t bytes);   // through the caching allocator
void device_free(void* ptr);
void copy_host_to_device(void* dst, const void* src, size_t bytes);
void copy_device_to_host(void* dst, const void* src, size_t bytes);
void copy_device_to_device(void* dst, const void* src, size_t bytes);
void fill_f32(float* dst, float value, int64_t n);
void fill_f64(double* dst, double value, int64_t n);
void synchronize();
// Tests: when on, every block handed out by device_malloc is first filled with 0xFF bytes
// (NaN as float or double), so a kernel that leaves an output element unwritten fails.
void set_poison_allocations(bool on);

// Streaming multiprocessors of the current device (queried once), for sizing grids.
int multiprocessor_count();

// ---- pinned host memory and uploads that do not wait ----
// Every kernel and copy of this backend runs on the legacy default stream, in the order the
// host issued it: no stream handles, events or waits are needed for correctness anywhere,
// and a device block freed to the caching allocator can be handed out again at once (whoever
// gets it queues work after everything that used it). The functions below keep that rule:
// their copies are queued on the default stream too; what they save is host time, not order.

// Page-locked host memory (cudaHostAlloc). The copy engines read it directly, so copies from
// it run at full bus speed and may be queued without waiting.
void* pinned_malloc(size_t bytes);
void pinned_free(void* ptr);  // waits for nothing: no queued copy may still read `ptr`

// Queues a host-to-device copy and returns at once. `src` must be pinned (pinned_malloc) and
// stay unchanged until the copy has run: until synchronize(), or any later device-to-host
// copy, returns.
void copy_host_to_device_async(void* dst, const void* src, size_t bytes);

// Uploads from any (pageable) host memory without waiting for the transfer: copies `src`
// into one of two pinned staging buffers and queues the copy from there. `src` may be reused
// as soon as this returns. A staging buffer is refilled only once its previous copy has run
// (an event per buffer), so at most one upload is in flight per buffer. Thread-safe.
// The trainer's batch upload is the intended user: images.to(Device::CUDA) blocks until the
// bytes are on the GPU; this returns after the host-side memcpy into pinned memory.
void copy_host_to_device_staged(void* dst, const void* src, size_t bytes);

}  // namespace kernels::cuda
