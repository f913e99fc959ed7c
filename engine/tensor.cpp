#include "engine/tensor.h"

#include <cstdlib>
#include <cstring>
#include <sstream>

#include "engine/autograd.h"
#include "engine/host_memory.h"
#include "kernels/common/philox.h"
#include "kernels/cpu/parallel.h"
#ifdef ENGINE_WITH_CUDA
#include "kernels/cuda/runtime.h"
#endif

namespace engine {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F64: return 8;
    case DType::BF16: return 2;
  }
  return 0;
}
const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::F64: return "f64";
    case DType::BF16: return "bf16";
  }
  return "?";
}
const char* device_name(Device d) { return d == Device::CPU ? "cpu" : "cuda"; }

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << ']';
  return os.str();
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

namespace {
[[maybe_unused]] [[noreturn]] void no_cuda() {
  detail::fail("this build has no CUDA backend (configure with nvcc present, or -DENGINE_CUDA=ON)");
}
}  // namespace

Storage::Storage(Device device, size_t bytes) : bytes_(bytes), device_(device) {
  if (device == Device::CPU) {
    data_ = host_memory::allocate(bytes);
  } else {
#ifdef ENGINE_WITH_CUDA
    data_ = kernels::cuda::device_malloc(bytes);
#else
    no_cuda();
#endif
  }
}

Storage::~Storage() {
  if (device_ == Device::CPU) {
    host_memory::release(data_, bytes_);
  } else {
#ifdef ENGINE_WITH_CUDA
    try {
      kernels::cuda::device_free(data_);
    } catch (...) {  // a destructor must not throw; the block is leaked
    }
#endif
  }
}

namespace {
void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) {
  if (bytes == 0) return;
  if (dst_dev == Device::CPU && src_dev == Device::CPU) {
    std::memcpy(dst, src, bytes);
    return;
  }
#ifdef ENGINE_WITH_CUDA
  if (dst_dev == Device::CUDA && src_dev == Device::CPU) kernels::cuda::copy_host_to_device(dst, src, bytes);
  else if (dst_dev == Device::CPU) kernels::cuda::copy_device_to_host(dst, src, bytes);
  else kernels::cuda::copy_device_to_device(dst, src, bytes);
#else
  no_cuda();
#endif
}

template <typename T>
void fill_host(T* p, int64_t n, double value) {
  T v = static_cast<T>(value);
  kernels::cpu::parallel_for(n, 1 << 16, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) p[i] = v;
  });
}

void check_float(DType t, const char* what) {
  ENGINE_CHECK(t == DType::F32 || t == DType::F64, what, ": dtype ", dtype_name(t),
               " is not supported here (f32 or f64)");
}

// Fills a host tensor from draw(i) and moves it to `device`.
template <typename Draw>
Tensor generate(const Shape& shape, DType dtype, Device device, Draw draw, const char* what) {
  check_float(dtype, what);
  Tensor host = Tensor::empty(shape, dtype, Device::CPU);
  int64_t n = host.numel();
  kernels::cpu::parallel_for(n, 1 << 14, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      double v = draw(static_cast<uint64_t>(i));
      if (dtype == DType::F32) host.data<float>()[i] = static_cast<float>(v);
      else host.data<double>()[i] = v;
    }
  });
  return host.to(device);
}
}  // namespace

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t d : shape)
    ENGINE_CHECK(d >= 0, "Tensor::empty: negative dimension in shape ", shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->dtype = dtype;
  impl->device = device;
  impl->storage = std::make_shared<Storage>(device, shape_numel(shape) * dtype_size(dtype));
  return Tensor(std::move(impl));
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  return full(shape, 0.0, dtype, device);
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill_(value);
  return t;
}

Tensor Tensor::from_vector(const std::vector<double>& values, const Shape& shape, DType dtype,
                           Device device) {
  ENGINE_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape), "Tensor::from_vector: ",
               values.size(), " values for shape ", shape_str(shape));
  return generate(shape, dtype, device, [&](uint64_t i) { return values[i]; }, "Tensor::from_vector");
}

Tensor Tensor::randn(const Shape& shape, uint64_t seed, uint64_t offset, DType dtype, Device device) {
  return generate(shape, dtype, device,
                  [&](uint64_t i) { return kernels::philox_normal(seed, offset, i); }, "Tensor::randn");
}

Tensor Tensor::rand(const Shape& shape, uint64_t seed, uint64_t offset, DType dtype, Device device) {
  return generate(shape, dtype, device,
                  [&](uint64_t i) { return kernels::philox_uniform(seed, offset, i); }, "Tensor::rand");
}

int64_t Tensor::dim(int i) const {
  int n = ndim();
  int k = i < 0 ? i + n : i;
  ENGINE_CHECK(k >= 0 && k < n, "Tensor::dim(", i, ") out of range for ", desc());
  return impl().shape[k];
}

std::string Tensor::desc() const {
  if (!defined()) return "undefined";
  return std::string(dtype_name(dtype())) + shape_str(shape()) + " " + device_name(device());
}

void* Tensor::raw_data() const {
  return static_cast<char*>(impl().storage->data()) + impl().offset_bytes;
}

double Tensor::item() const {
  ENGINE_CHECK(numel() == 1, "item: needs a one-element tensor, got ", desc());
  return to_vector()[0];
}

std::vector<double> Tensor::to_vector() const {
  check_float(dtype(), "to_vector");
  Tensor host = to(Device::CPU);
  std::vector<double> out(numel());
  for (int64_t i = 0; i < numel(); ++i)
    out[i] = dtype() == DType::F32 ? host.data<float>()[i] : host.data<double>()[i];
  return out;
}

Tensor Tensor::to(Device device) const {
  if (device == this->device()) return *this;
  Tensor out = empty(shape(), dtype(), device);
  copy_bytes(out.raw_data(), device, raw_data(), this->device(), nbytes());
  return out;
}

Tensor Tensor::to(DType dtype) const {
  if (dtype == this->dtype()) return *this;
  check_float(dtype, "Tensor::to");
  check_float(this->dtype(), "Tensor::to");
  Tensor host = this->to(Device::CPU);
  Tensor out = empty(shape(), dtype, Device::CPU);
  int64_t n = numel();
  for (int64_t i = 0; i < n; ++i) {
    if (dtype == DType::F32) out.data<float>()[i] = static_cast<float>(host.data<double>()[i]);
    else out.data<double>()[i] = host.data<float>()[i];
  }
  return out.to(device());
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape(), dtype(), device());
  copy_bytes(out.raw_data(), device(), raw_data(), device(), nbytes());
  return out;
}

Tensor Tensor::detach() const {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = this->impl().storage;
  impl->offset_bytes = this->impl().offset_bytes;
  impl->shape = shape();
  impl->dtype = dtype();
  impl->device = device();
  return Tensor(std::move(impl));
}

void Tensor::fill_(double value) {
  int64_t n = numel();
  if (device() == Device::CPU) {
    switch (dtype()) {
      case DType::F32: fill_host(data<float>(), n, value); return;
      case DType::F64: fill_host(data<double>(), n, value); return;
      default: check_float(dtype(), "fill_");
    }
  }
#ifdef ENGINE_WITH_CUDA
  check_float(dtype(), "fill_");
  if (dtype() == DType::F32) kernels::cuda::fill_f32(data<float>(), static_cast<float>(value), n);
  else kernels::cuda::fill_f64(data<double>(), value, n);
#else
  no_cuda();
#endif
}

void Tensor::copy_(const Tensor& src) {
  ENGINE_CHECK(src.shape() == shape() && src.dtype() == dtype(), "copy_: source ", src.desc(),
               " does not match destination ", desc());
  copy_bytes(raw_data(), device(), src.raw_data(), src.device(), nbytes());
}

bool Tensor::shares_storage(const Tensor& other) const {
  return defined() && other.defined() && impl().storage == other.impl().storage;
}

Tensor& Tensor::set_requires_grad(bool r) {
  ENGINE_CHECK(!grad_fn() || r, "set_requires_grad(false) on a non-leaf tensor; use detach()");
  impl().requires_grad = r;
  return *this;
}

Tensor Tensor::grad() const { return Tensor(impl().grad); }

void Tensor::set_grad(const Tensor& g) const {
  if (g.defined())
    ENGINE_CHECK(g.shape() == shape() && g.dtype() == dtype() && g.device() == device(),
                 "set_grad: gradient ", g.desc(), " does not match tensor ", desc());
  impl().grad = g.impl_ptr();
}

}  // namespace engine
