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

}  // namespace kernels::cuda
