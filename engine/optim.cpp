#include "engine/optim.h"

#include <cmath>
#include <unordered_set>

#include "engine/autograd.h"
#include "engine/ops/op_common.h"
#include "kernels/cpu/optim.h"
#ifdef ENGINE_WITH_CUDA
#include "kernels/cuda/optim.h"
#endif

namespace engine {

// ---- Optimizer ----

Optimizer::Optimizer(const char* kind, std::vector<NamedTensor> params, double lr) : kind_(kind) {
  set_lr(lr);
  std::unordered_set<std::string> names;
  std::unordered_set<const TensorImpl*> tensors;
  for (auto& [name, param] : params) {
    ENGINE_CHECK(param.defined(), kind_, ": parameter '", name, "' is undefined");
    ENGINE_CHECK(names.insert(name).second, kind_, ": parameter name '", name, "' appears twice");
    ENGINE_CHECK(tensors.insert(&param.impl()).second, kind_, ": parameter '", name,
                 "' is the same tensor as an earlier one");
    ENGINE_CHECK(!param.grad_fn(), kind_, ": parameter '", name, "' is not a leaf tensor");
    slots_.push_back(Slot{name, param, 0, {}});
  }
}

void Optimizer::init_buffers() {
  size_t count = buffer_names().size();
  for (Slot& slot : slots_) slot.buffers.resize(count);
}

void Optimizer::set_lr(double lr) {
  ENGINE_CHECK(std::isfinite(lr) && lr >= 0, kind_, ": invalid learning rate ", lr);
  lr_ = lr;
}

void Optimizer::zero_grad() {
  for (Slot& slot : slots_) slot.param.zero_grad();
}

void Optimizer::step() {
  NoGradGuard no_grad;
  for (Slot& slot : slots_) {
    Tensor grad = slot.param.grad();
    if (!grad.defined()) continue;
    const Tensor& p = slot.param;
    ENGINE_CHECK(p.dtype() == DType::F32 || p.dtype() == DType::F64, kind_, ": parameter '",
                 slot.name, "' has dtype ", dtype_name(p.dtype()), " (f32 or f64 supported)");
    ENGINE_CHECK(grad.shape() == p.shape() && grad.dtype() == p.dtype() && grad.device() == p.device(), kind_,
                 ": gradient ", grad.desc(), " does not match parameter '", slot.name, "' ", p.desc());
#ifndef ENGINE_WITH_CUDA
    if (!p.is_cpu()) ops::no_cuda_kernel(kind_);
#endif
    for (Tensor& buffer : slot.buffers)
      if (buffer.defined())
        ENGINE_CHECK(buffer.dtype() == p.dtype() && buffer.device() == p.device(), kind_,
                     ": state of '", slot.name, "' is ", buffer.desc(), " but the parameter is ",
                     p.desc(), "; build the optimiser, or load its state, after moving the model");
    ++slot.step;
    update(slot, grad);
  }
}

OptimizerState Optimizer::state() const {
  OptimizerState out;
  out.scalars["lr"] = lr_;
  std::vector<std::string> buffer_names = this->buffer_names();
  for (const Slot& slot : slots_) {
    if (slot.step == 0) continue;
    out.scalars[slot.name + ".step"] = static_cast<double>(slot.step);
    for (size_t b = 0; b < buffer_names.size(); ++b)
      if (slot.buffers[b].defined()) out.tensors.set(slot.name + "." + buffer_names[b], slot.buffers[b].clone());
  }
  return out;
}

void Optimizer::load_state(const OptimizerState& state) {
  std::vector<std::string> buffer_names = this->buffer_names();
  // Validate everything first, so a bad state leaves this optimiser unchanged.
  std::unordered_set<std::string> known_scalars{"lr"};
  std::unordered_set<std::string> known_tensors;
  for (const Slot& slot : slots_) {
    known_scalars.insert(slot.name + ".step");
    for (const auto& b : buffer_names) known_tensors.insert(slot.name + "." + b);
  }
  for (const auto& [key, value] : state.scalars)
    ENGINE_CHECK(known_scalars.count(key), kind_, ": load_state: unexpected scalar '", key,
                 "' (no such parameter in this optimiser)");
  for (const auto& [key, tensor] : state.tensors)
    ENGINE_CHECK(known_tensors.count(key), kind_, ": load_state: unexpected tensor '", key,
                 "' (no such parameter or buffer in this optimiser)");
  auto lr = state.scalars.find("lr");
  ENGINE_CHECK(lr != state.scalars.end(), kind_, ": load_state: missing scalar 'lr'");
  for (const Slot& slot : slots_) {
    auto step = state.scalars.find(slot.name + ".step");
    if (step != state.scalars.end())
      ENGINE_CHECK(step->second >= 0 && step->second == std::floor(step->second) && step->second < 0x1p63, kind_,
                   ": load_state: '", slot.name, ".step' is ", step->second, ", not a step count");
    for (const auto& b : buffer_names) {
      const Tensor* t = state.tensors.find(slot.name + "." + b);
      if (t)
        ENGINE_CHECK(t->defined() && t->shape() == slot.param.shape(), kind_, ": load_state: '",
                     slot.name, ".", b, "' is ", t->desc(), " but parameter '", slot.name, "' is ",
                     slot.param.desc());
    }
  }

  set_lr(lr->second);
  for (Slot& slot : slots_) {
    auto step = state.scalars.find(slot.name + ".step");
    slot.step = step == state.scalars.end() ? 0 : static_cast<int64_t>(step->second);
    for (size_t b = 0; b < buffer_names.size(); ++b) {
      const Tensor* t = state.tensors.find(slot.name + "." + buffer_names[b]);
      slot.buffers[b] = t ? t->to(slot.param.dtype()).to(slot.param.device()).clone() : Tensor();
    }
  }
}

// ---- SGD ----

SGD::SGD(std::vector<NamedTensor> params, const SgdOptions& options)
    : Optimizer("SGD", std::move(params), options.lr), options_(options) {
  ENGINE_CHECK(options.momentum >= 0, kind_, ": invalid momentum ", options.momentum);
  ENGINE_CHECK(options.weight_decay >= 0, kind_, ": invalid weight_decay ", options.weight_decay);
  ENGINE_CHECK(!options.nesterov || (options.momentum > 0 && options.dampening == 0), kind_,
               ": nesterov momentum requires a momentum and zero dampening");
  init_buffers();
}

std::vector<std::string> SGD::buffer_names() const { return {"momentum_buffer"}; }

void SGD::update(Slot& slot, const Tensor& grad) {
  bool with_momentum = options_.momentum != 0;
  Tensor& buffer = slot.buffers[0];
  bool first_step = with_momentum && !buffer.defined();
  if (first_step) buffer = Tensor::empty(slot.param.shape(), slot.param.dtype(), slot.param.device());
  ENGINE_DISPATCH_FLOAT(slot.param.dtype(), T, [&] {
    kernels::SgdCoeffs<T> c{T(lr()), T(options_.momentum), T(1 - options_.dampening),
                            T(options_.weight_decay), options_.nesterov, first_step};
    T* buffer_data = with_momentum ? buffer.data<T>() : nullptr;
    if (slot.param.is_cpu())
      return kernels::cpu::sgd_step<T>(slot.param.data<T>(), grad.data<T>(), buffer_data, slot.param.numel(), c);
#ifdef ENGINE_WITH_CUDA
    kernels::cuda::sgd_step<T>(slot.param.data<T>(), grad.data<T>(), buffer_data, slot.param.numel(), c);
#endif
  }());
}

// ---- Adam and AdamW ----

Adam::Adam(std::vector<NamedTensor> params, const AdamOptions& options)
    : Adam("Adam", std::move(params), options, false) {}

Adam::Adam(const char* kind, std::vector<NamedTensor> params, const AdamOptions& options, bool decoupled)
    : Optimizer(kind, std::move(params), options.lr), options_(options), decoupled_weight_decay_(decoupled) {
  ENGINE_CHECK(options.beta1 >= 0 && options.beta1 < 1, kind_, ": invalid beta1 ", options.beta1);
  ENGINE_CHECK(options.beta2 >= 0 && options.beta2 < 1, kind_, ": invalid beta2 ", options.beta2);
  ENGINE_CHECK(options.eps >= 0, kind_, ": invalid eps ", options.eps);
  ENGINE_CHECK(options.weight_decay >= 0, kind_, ": invalid weight_decay ", options.weight_decay);
  init_buffers();
}

AdamW::AdamW(std::vector<NamedTensor> params, const AdamWOptions& options)
    : Adam("AdamW", std::move(params), options, true) {}

std::vector<std::string> Adam::buffer_names() const { return {"exp_avg", "exp_avg_sq"}; }

void Adam::update(Slot& slot, const Tensor& grad) {
  Tensor& exp_avg = slot.buffers[0];
  Tensor& exp_avg_sq = slot.buffers[1];
  if (!exp_avg.defined()) exp_avg = Tensor::zeros(slot.param.shape(), slot.param.dtype(), slot.param.device());
  if (!exp_avg_sq.defined())
    exp_avg_sq = Tensor::zeros(slot.param.shape(), slot.param.dtype(), slot.param.device());
  const AdamOptions& o = options_;
  double t = static_cast<double>(slot.step);
  double bias_correction1 = 1 - std::pow(o.beta1, t);
  double bias_correction2 = 1 - std::pow(o.beta2, t);
  ENGINE_DISPATCH_FLOAT(slot.param.dtype(), T, [&] {
    kernels::AdamCoeffs<T> c{T(1 - o.beta1),
                             T(o.beta2),
                             T(1 - o.beta2),
                             T(lr() / bias_correction1),
                             T(std::sqrt(bias_correction2)),
                             T(o.eps),
                             T(decoupled_weight_decay_ ? 0 : o.weight_decay),
                             T(decoupled_weight_decay_ ? 1 - lr() * o.weight_decay : 1)};
    if (slot.param.is_cpu())
      return kernels::cpu::adam_step<T>(slot.param.data<T>(), grad.data<T>(), exp_avg.data<T>(),
                                        exp_avg_sq.data<T>(), slot.param.numel(), c);
#ifdef ENGINE_WITH_CUDA
    kernels::cuda::adam_step<T>(slot.param.data<T>(), grad.data<T>(), exp_avg.data<T>(), exp_avg_sq.data<T>(),
                                slot.param.numel(), c);
#endif
  }());
}

}  // namespace engine
