// Non-finite detection. NonFiniteDetector is an OpObserver (engine/autograd.h) that checks the
// output of every recorded op in the forward pass and every gradient in the backward pass for
// NaN and infinities, so a fault is reported at the op that produced it rather than as a NaN
// loss some steps later. The trainer installs one around every training step (the cost is
// measured in models/train.cpp's header comment).
//
//   engine::NonFiniteDetector detector(engine::NonFiniteDetector::Backward::Defer);
//   engine::ScopedOpObserver watch(&detector);
//   Tensor loss = ...;                               // throws at the first non-finite output
//   loss.backward();                                 // notes the first non-finite gradient
//   detector.check_gradients(model.named_parameters());  // throws, naming op and parameters
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/error.h"
#include "engine/module.h"

namespace engine {

// A NaN or an infinity was found. what() is a complete sentence; the fields let a caller
// build its own message or decide what to do.
class NonFiniteError : public Error {
 public:
  NonFiniteError(const std::string& what, std::string op, std::string phase)
      : Error(what), op_(std::move(op)), phase_(std::move(phase)) {}
  // The op whose output (forward) or returned gradient (backward) held the first non-finite
  // value; empty when no op was identified (e.g. only a parameter's gradient was checked).
  const std::string& op() const { return op_; }
  // "forward", "backward" or "loss".
  const std::string& phase() const { return phase_; }

 private:
  std::string op_;
  std::string phase_;
};

// True when every element is finite. F32 and F64 on the CPU: a vectorised pass, threaded
// over large tensors. CUDA: a device sum (exact for F32; an F64 sum that overflows is
// re-checked on the host). BF16: converted to F32 first.
bool all_finite(const Tensor& t);

// "3 NaN and 1 infinite of 4096 values in f32[4, 32, 32, 4] cpu": counts on the host (a
// copy for device tensors); for messages, after all_finite has said false.
std::string describe_nonfinite(const Tensor& t);

class NonFiniteDetector : public OpObserver {
 public:
  // What to do at the first non-finite gradient in the backward pass: throw at once (from
  // Tensor::backward), or note it and let the pass finish so that check_gradients can name
  // the parameters whose gradients are non-finite.
  enum class Backward { Throw, Defer };
  explicit NonFiniteDetector(Backward backward = Backward::Throw) : backward_(backward) {}

  // Throws NonFiniteError naming `op`, phase "forward", when `out` holds a NaN or an Inf.
  void on_forward(const char* op, const Tensor& out) override;
  // Checks each returned gradient; Throw: throws NonFiniteError (phase "backward").
  void on_backward_end(const std::string& op, const std::vector<Tensor>& grads) override;

  // After a backward pass with Backward::Defer: throws NonFiniteError (phase "backward")
  // when the pass met a non-finite gradient or any of `params` has a non-finite gradient,
  // naming the first op and the parameters (up to a few). Clears what it noted either way.
  void check_gradients(const std::vector<NamedTensor>& params);
  // Forgets a noted backward fault (a new step begins).
  void reset() { noted_.clear(); }

 private:
  Backward backward_;
  std::string noted_op_;
  std::string noted_;  // the sentence for the first non-finite gradient of this pass
};

}  // namespace engine
