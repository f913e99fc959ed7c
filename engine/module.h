// Modules: a tree of named parameters, buffers and child modules, as in torch.nn.Module.
// Dotted names follow PyTorch's state_dict keys exactly ("layer1.0.downsample.0.weight"), so
// torchvision checkpoints map onto our models key by key (after the layout conversion).
//
// Tensor handles held by a module stay valid for its whole life: to(Device) swaps the storage
// inside each TensorImpl and load_state_dict copies values in place, so layers that keep their
// parameters as members, and optimisers built before or after, keep working.
#pragma once
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace engine {

using NamedTensor = std::pair<std::string, Tensor>;

// Tensors by name, kept in insertion order (state dicts, optimiser state, checkpoints).
class StateDict {
 public:
  // Appends `name`, or replaces its tensor in place in the order.
  void set(const std::string& name, const Tensor& tensor);
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  const Tensor* find(const std::string& name) const;
  const Tensor& at(const std::string& name) const;  // throws, naming the key, if absent
  size_t size() const { return entries_.size(); }
  bool empty() const { return entries_.empty(); }
  std::vector<std::string> keys() const;
  std::vector<NamedTensor>::const_iterator begin() const { return entries_.begin(); }
  std::vector<NamedTensor>::const_iterator end() const { return entries_.end(); }

 private:
  std::vector<NamedTensor> entries_;
  std::unordered_map<std::string, size_t> index_;
};

// What a non-strict load_state_dict skipped. (Shape mismatches always throw, as in PyTorch.)
struct LoadStateDictResult {
  std::vector<std::string> missing_keys;     // in the module, absent from the state dict
  std::vector<std::string> unexpected_keys;  // in the state dict, absent from the module
  bool ok() const { return missing_keys.empty() && unexpected_keys.empty(); }
};

class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // ---- the tree, recursively; dotted names, registration order, each tensor once ----
  std::vector<NamedTensor> named_parameters() const;
  std::vector<NamedTensor> named_buffers() const;
  std::vector<Tensor> parameters() const;
  // This module ("") and every descendant, depth first, with its dotted path.
  std::vector<std::pair<std::string, Module*>> named_modules();
  // Direct children only.
  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& named_children() const {
    return children_;
  }
  int64_t num_parameters() const;  // total elements over all parameters

  // Parameters then buffers of each module, depth first (PyTorch's key order). The tensors
  // share storage with the module's (detached handles): clone them to snapshot.
  StateDict state_dict() const;
  // Copies values in place, converting dtype and device as needed. Every problem is checked
  // before anything is copied. Shape mismatches always throw; with `strict`, missing and
  // unexpected keys throw too (the message names every key); otherwise they are returned.
  LoadStateDictResult load_state_dict(const StateDict& state, bool strict = true);

  // ---- modes and housekeeping ----
  void train(bool on = true);  // recursive
  void eval() { train(false); }
  bool is_training() const { return training_; }
  void zero_grad();            // drops every parameter's gradient (PyTorch's set_to_none)
  // Moves parameters, their gradients and buffers to `device`, in place.
  void to(Device device);

  // ---- registration, normally from a layer's constructor ----
  // Names are unique within a module and may not contain '.'. The returned handle is the
  // registered tensor itself. Public, as in PyTorch, so containers can be filled from outside.
  Tensor register_parameter(const std::string& name, Tensor tensor, bool requires_grad = true);
  Tensor register_buffer(const std::string& name, Tensor tensor);
  template <typename M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> module) {
    check_new_name(name, "module");
    ENGINE_CHECK(module != nullptr, "Module: child module '", name, "' is null");
    children_.emplace_back(name, module);
    return module;
  }

 private:
  void check_new_name(const std::string& name, const char* kind) const;
  // The tree's parameters and/or buffers with dotted names: each module's own parameters,
  // then its buffers, then its children's, depth first. A tensor registered under several
  // names (tied weights) is listed once unless `keep_repeats` (state_dict keeps every name).
  std::vector<NamedTensor> collect(bool parameters, bool buffers, bool keep_repeats) const;

  std::vector<NamedTensor> parameters_;
  std::vector<NamedTensor> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

}  // namespace engine
