#include "engine/module.h"

#include <sstream>
#include <unordered_set>

#include "engine/autograd.h"

namespace engine {

// ---- StateDict ----

void StateDict::set(const std::string& name, const Tensor& tensor) {
  auto found = index_.find(name);
  if (found != index_.end()) {
    entries_[found->second].second = tensor;
    return;
  }
  index_.emplace(name, entries_.size());
  entries_.emplace_back(name, tensor);
}

const Tensor* StateDict::find(const std::string& name) const {
  auto found = index_.find(name);
  return found == index_.end() ? nullptr : &entries_[found->second].second;
}

const Tensor& StateDict::at(const std::string& name) const {
  const Tensor* t = find(name);
  ENGINE_CHECK(t != nullptr, "state dict has no key '", name, "'");
  return *t;
}

std::vector<std::string> StateDict::keys() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const auto& [name, tensor] : entries_) out.push_back(name);
  return out;
}

// ---- Module: registration ----

void Module::check_new_name(const std::string& name, const char* kind) const {
  ENGINE_CHECK(!name.empty() && name.find('.') == std::string::npos, "Module: cannot register ",
               kind, " '", name, "': names must be non-empty and contain no '.'");
  auto taken = [&](const auto& list) {
    for (const auto& entry : list)
      if (entry.first == name) return true;
    return false;
  };
  ENGINE_CHECK(!taken(parameters_) && !taken(buffers_) && !taken(children_), "Module: cannot register ",
               kind, " '", name, "': the name is already taken");
}

Tensor Module::register_parameter(const std::string& name, Tensor tensor, bool requires_grad) {
  check_new_name(name, "parameter");
  ENGINE_CHECK(tensor.defined(), "Module: parameter '", name, "' is undefined");
  ENGINE_CHECK(!tensor.grad_fn(), "Module: parameter '", name,
               "' has autograd history; register a leaf (detach() it)");
  tensor.set_requires_grad(requires_grad);
  parameters_.emplace_back(name, tensor);
  return tensor;
}

Tensor Module::register_buffer(const std::string& name, Tensor tensor) {
  check_new_name(name, "buffer");
  ENGINE_CHECK(tensor.defined(), "Module: buffer '", name, "' is undefined");
  buffers_.emplace_back(name, tensor);
  return tensor;
}

// ---- Module: traversal ----

std::vector<NamedTensor> Module::collect(bool parameters, bool buffers, bool keep_repeats) const {
  std::vector<NamedTensor> out;
  std::unordered_set<const TensorImpl*> seen;
  // Iterative so the recursion depth of a deep model never matters; children are pushed in
  // reverse so they are visited in registration order.
  std::vector<std::pair<std::string, const Module*>> stack{{"", this}};
  while (!stack.empty()) {
    const std::string prefix = stack.back().first;
    const Module* module = stack.back().second;
    stack.pop_back();
    auto add = [&](const std::vector<NamedTensor>& list) {
      for (const auto& [name, tensor] : list)
        if (keep_repeats || seen.insert(&tensor.impl()).second) out.emplace_back(prefix + name, tensor);
    };
    if (parameters) add(module->parameters_);
    if (buffers) add(module->buffers_);
    for (auto it = module->children_.rbegin(); it != module->children_.rend(); ++it)
      stack.emplace_back(prefix + it->first + ".", it->second.get());
  }
  return out;
}

std::vector<NamedTensor> Module::named_parameters() const { return collect(true, false, false); }
std::vector<NamedTensor> Module::named_buffers() const { return collect(false, true, false); }

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [name, tensor] : named_parameters()) out.push_back(tensor);
  return out;
}

std::vector<std::pair<std::string, Module*>> Module::named_modules() {
  std::vector<std::pair<std::string, Module*>> out;
  std::vector<std::pair<std::string, Module*>> stack{{"", this}};
  while (!stack.empty()) {
    auto entry = stack.back();
    stack.pop_back();
    out.push_back(entry);
    std::string prefix = entry.first.empty() ? "" : entry.first + ".";
    const auto& children = entry.second->children_;
    for (auto it = children.rbegin(); it != children.rend(); ++it)
      stack.emplace_back(prefix + it->first, it->second.get());
  }
  return out;
}

int64_t Module::num_parameters() const {
  int64_t total = 0;
  for (const auto& [name, tensor] : named_parameters()) total += tensor.numel();
  return total;
}

// ---- Module: state dicts ----

namespace {
// Values load across dtypes only between f32 and f64 (what Tensor::to converts).
bool convertible(DType from, DType to) {
  auto is_float = [](DType t) { return t == DType::F32 || t == DType::F64; };
  return from == to || (is_float(from) && is_float(to));
}
}  // namespace

StateDict Module::state_dict() const {
  StateDict out;
  for (const auto& [name, tensor] : collect(true, true, true)) out.set(name, tensor.detach());
  return out;
}

LoadStateDictResult Module::load_state_dict(const StateDict& state, bool strict) {
  std::vector<NamedTensor> own = collect(true, true, true);
  LoadStateDictResult result;
  std::vector<std::string> mismatched;
  std::unordered_set<std::string> own_names;
  for (const auto& [name, tensor] : own) {
    own_names.insert(name);
    const Tensor* source = state.find(name);
    if (!source) {
      result.missing_keys.push_back(name);
    } else if (!source->defined() || source->shape() != tensor.shape() ||
               !convertible(source->dtype(), tensor.dtype())) {
      mismatched.push_back("'" + name + "': checkpoint " + source->desc() + ", module " +
                           tensor.desc());
    }
  }
  for (const auto& [name, tensor] : state)
    if (!own_names.count(name)) result.unexpected_keys.push_back(name);

  if (!mismatched.empty() || (strict && !result.ok())) {
    std::ostringstream msg;
    msg << "load_state_dict: ";
    auto list = [&](const char* what, const std::vector<std::string>& keys, bool quote) {
      if (keys.empty()) return;
      msg << what << " (" << keys.size() << "):";
      for (const auto& k : keys) msg << (quote ? " '" : " ") << k << (quote ? "'" : "") << ";";
      msg << " ";
    };
    list("shape or dtype mismatches", mismatched, false);
    if (strict) {
      list("missing keys", result.missing_keys, true);
      list("unexpected keys", result.unexpected_keys, true);
    }
    std::string text = msg.str();
    text.pop_back();
    detail::fail(text);
  }

  NoGradGuard no_grad;
  for (auto& [name, tensor] : own) {
    const Tensor* source = state.find(name);
    if (!source) continue;
    // Loading a module's own state_dict back is a no-op, not an overlapping copy.
    if (source->shares_storage(tensor) && source->impl().offset_bytes == tensor.impl().offset_bytes)
      continue;
    tensor.copy_(source->dtype() == tensor.dtype() ? *source : source->to(tensor.dtype()));
  }
  return result;
}

// ---- Module: modes and devices ----

void Module::train(bool on) {
  for (auto& [path, module] : named_modules()) module->training_ = on;
}

void Module::zero_grad() {
  for (const auto& [name, tensor] : named_parameters()) tensor.zero_grad();
}

namespace {
// Re-homes `tensor` on `device` inside its TensorImpl, so every handle to it sees the move.
void move_in_place(const Tensor& tensor, Device device) {
  if (tensor.device() == device) return;
  Tensor moved = tensor.to(device);
  TensorImpl& impl = tensor.impl();
  impl.storage = moved.impl().storage;
  impl.offset_bytes = moved.impl().offset_bytes;
  impl.device = device;
}
}  // namespace

void Module::to(Device device) {
  for (const auto& [name, tensor] : collect(true, true, false)) {
    move_in_place(tensor, device);
    if (tensor.grad().defined()) move_in_place(tensor.grad(), device);
  }
}

}  // namespace engine
