// Optimisers over named parameters: SGD, Adam and AdamW, each exactly as its torch.optim
// namesake (single parameter group). step() updates every parameter that has a gradient, in
// place, in one fused pass per parameter, under NoGradGuard; parameters whose gradient is
// undefined are skipped and their state is left untouched. float32 and float64, on the CPU or
// the GPU (the state lives on the parameter's device).
//
//   SGD opt(model.named_parameters(), SgdOptions{/*lr=*/0.1, /*momentum=*/0.9});
//   loss.backward(); opt.step(); opt.zero_grad();
//
// The state (per-parameter step counts and buffers, and the learning rate) can be exported
// and restored, for checkpoints: a restored optimiser continues exactly where the saved one
// would have.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "engine/module.h"

namespace engine {

// Everything an optimiser needs to resume. tensors: "<parameter>.<buffer>", e.g.
// "fc.weight.exp_avg"; scalars: "lr" and "<parameter>.step" for each stepped parameter.
struct OptimizerState {
  std::map<std::string, double> scalars;
  StateDict tensors;
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  void step();
  void zero_grad();  // drops the gradients (PyTorch's set_to_none)
  double lr() const { return lr_; }
  void set_lr(double lr);  // for schedules; takes effect at the next step
  // Deep copies: later steps do not change an exported state.
  OptimizerState state() const;
  // Replaces the whole state (parameters absent from it start fresh). Every entry must name
  // one of this optimiser's parameters and buffers with the parameter's shape; errors name
  // the key. Values are converted to the parameter's dtype and device.
  void load_state(const OptimizerState& state);

 protected:
  // One parameter and its state. Buffers are undefined until the first update creates them.
  struct Slot {
    std::string name;
    Tensor param;
    int64_t step = 0;  // updates applied so far
    std::vector<Tensor> buffers;  // in buffer_names() order
  };

  Optimizer(const char* kind, std::vector<NamedTensor> params, double lr);
  // Called by constructors of derived classes (virtual calls are not possible in the base
  // constructor): sizes each slot's buffer list.
  void init_buffers();
  virtual std::vector<std::string> buffer_names() const = 0;
  // Applies one update; slot.step already counts it. Runs under NoGradGuard.
  virtual void update(Slot& slot, const Tensor& grad) = 0;

  const char* kind_;

 private:
  std::vector<Slot> slots_;
  double lr_ = 0;
};

struct SgdOptions {
  double lr = 1e-3;
  double momentum = 0;
  double dampening = 0;
  double weight_decay = 0;
  bool nesterov = false;
};

class SGD : public Optimizer {
 public:
  SGD(std::vector<NamedTensor> params, const SgdOptions& options);
  const SgdOptions& options() const { return options_; }

 private:
  std::vector<std::string> buffer_names() const override;
  void update(Slot& slot, const Tensor& grad) override;
  SgdOptions options_;
};

struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0;  // Adam: L2 added to the gradient; AdamW: decoupled decay
};

class Adam : public Optimizer {
 public:
  Adam(std::vector<NamedTensor> params, const AdamOptions& options);
  const AdamOptions& options() const { return options_; }

 protected:
  Adam(const char* kind, std::vector<NamedTensor> params, const AdamOptions& options, bool decoupled);

 private:
  std::vector<std::string> buffer_names() const override;
  void update(Slot& slot, const Tensor& grad) override;
  AdamOptions options_;
  bool decoupled_weight_decay_;
};

// torch.optim.AdamW: p *= 1 - lr weight_decay, then the Adam update without L2. Its default
// weight decay is 0.01 (AdamW's default, not Adam's).
struct AdamWOptions : AdamOptions {
  AdamWOptions() { weight_decay = 1e-2; }
};

class AdamW : public Adam {
 public:
  AdamW(std::vector<NamedTensor> params, const AdamWOptions& options);
};

}  // namespace engine
