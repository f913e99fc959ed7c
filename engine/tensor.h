// Tensor: a shape, a dtype, a device and shared contiguous storage, plus autograd state.
// Activations are NHWC, convolution weights KRSC (see DESIGN.md). Tensors are always
// contiguous; reshape returns a view that shares storage.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/error.h"

namespace engine {

enum class DType : uint8_t { F32, F64, BF16 };
enum class Device : uint8_t { CPU, CUDA };

using Shape = std::vector<int64_t>;

size_t dtype_size(DType t);
const char* dtype_name(DType t);
const char* device_name(Device d);
std::string shape_str(const Shape& s);
int64_t shape_numel(const Shape& s);

template <typename T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::F32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::F64; };

// Raw memory on one device. CPU memory is 64-byte aligned, from engine/host_memory.h (which
// keeps freed large blocks for reuse).
class Storage {
 public:
  Storage(Device device, size_t bytes);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  Device device_;
};

struct Node;
struct TensorImpl {
  std::shared_ptr<Storage> storage;
  size_t offset_bytes = 0;
  Shape shape;
  DType dtype = DType::F32;
  Device device = Device::CPU;
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;   // accumulated gradient of a leaf
  std::shared_ptr<Node> grad_fn;      // the op that produced this tensor (null for leaves)
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- factories ----
  static Tensor empty(const Shape& shape, DType dtype = DType::F32, Device device = Device::CPU);
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device device = Device::CPU);
  static Tensor full(const Shape& shape, double value, DType dtype = DType::F32,
                     Device device = Device::CPU);
  static Tensor from_vector(const std::vector<double>& values, const Shape& shape,
                            DType dtype = DType::F32, Device device = Device::CPU);
  // Standard normal / uniform (0,1] values from the Philox stream (seed, offset): element i
  // takes draw i of the stream, so the result is the same on every device and thread count.
  static Tensor randn(const Shape& shape, uint64_t seed, uint64_t offset = 0,
                      DType dtype = DType::F32, Device device = Device::CPU);
  static Tensor rand(const Shape& shape, uint64_t seed, uint64_t offset = 0,
                     DType dtype = DType::F32, Device device = Device::CPU);

  // ---- metadata ----
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl().shape; }
  int64_t dim(int i) const;  // negative i counts from the end
  int ndim() const { return static_cast<int>(impl().shape.size()); }
  int64_t numel() const { return shape_numel(impl().shape); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype()); }
  DType dtype() const { return impl().dtype; }
  Device device() const { return impl().device; }
  bool is_cpu() const { return device() == Device::CPU; }
  // "f32[2, 3] cpu", for error messages
  std::string desc() const;

  // ---- data ----
  void* raw_data() const;
  template <typename T> T* data() const {
    ENGINE_CHECK(dtype() == dtype_of<T>::value, "Tensor::data: tensor is ", dtype_name(dtype()),
                 ", requested ", dtype_name(dtype_of<T>::value));
    return static_cast<T*>(raw_data());
  }
  double item() const;                      // one-element tensor, any device
  std::vector<double> to_vector() const;    // copies to the host
  Tensor to(Device device) const;           // copy (or self if already there); not differentiable
  Tensor to(DType dtype) const;             // copy with conversion; not differentiable
  Tensor clone() const;                     // deep copy, no autograd history
  Tensor detach() const;                    // shares storage, no autograd history
  void fill_(double value);                 // in place, no autograd
  void copy_(const Tensor& src);            // in place, same shape and dtype, any devices
  bool shares_storage(const Tensor& other) const;

  // ---- autograd ----
  bool requires_grad() const { return impl().requires_grad; }
  Tensor& set_requires_grad(bool r);
  Tensor grad() const;                      // undefined until a backward reaches this leaf
  void set_grad(const Tensor& g) const;  // handles share state: const like fill_ on data
  void zero_grad() const { impl().grad.reset(); }
  const std::shared_ptr<Node>& grad_fn() const { return impl().grad_fn; }
  // Backward from a one-element tensor. retain_graph keeps saved tensors for a second pass.
  void backward(bool retain_graph = false) const;

  TensorImpl& impl() const {
    ENGINE_CHECK(impl_ != nullptr, "use of an undefined tensor");
    return *impl_;
  }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }

 private:
  std::shared_ptr<TensorImpl> impl_;
};

}  // namespace engine
