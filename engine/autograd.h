// Define-by-run autograd. Every differentiable op records a Node holding a backward closure
// (which owns the tensors it saved) and one Edge per input. Tensor::backward walks the graph
// in reverse topological order, accumulates gradients into leaves that require them, and
// releases each node's saved tensors unless retain_graph is set; a second backward through
// a released node throws, naming the op.
#pragma once
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace engine {

// Gradient rules: a backward closure receives dL/d(output) and returns one tensor per input,
// in input order; an undefined Tensor means "no gradient for this input".
using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_output)>;

struct Edge {
  std::shared_ptr<Node> node;          // the op that produced the input, or
  std::shared_ptr<TensorImpl> leaf;    // the leaf tensor that requires a gradient, or neither
};

struct Node {
  std::string op;
  std::vector<Edge> next;
  BackwardFn backward;
  bool released = false;
};

bool grad_enabled();

// RAII: no graph is recorded while one is alive (evaluation, optimiser updates).
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

// Used by ops: when gradients are enabled and an input requires one, attaches a Node to
// `out` (which must be freshly created by the op) and marks it as requiring a gradient.
// `backward` is only built (and its tensors only saved) in that case.
bool needs_grad(std::initializer_list<const Tensor*> inputs);
void record(Tensor& out, const char* op, std::initializer_list<const Tensor*> inputs,
            BackwardFn backward);

// Watches the ops of this thread's graphs: the profiler and the non-finite detector use it.
// on_forward runs when a recorded op has computed `out` (ops that record nothing, e.g. under
// NoGradGuard, are not seen); on_backward_begin/end run around each node's backward, `grads`
// being the gradients it returned, one per input (undefined where none). An exception thrown
// from a callback propagates out of the op or out of backward().
class OpObserver {
 public:
  virtual ~OpObserver() = default;
  virtual void on_forward(const char* /*op*/, const Tensor& /*out*/) {}
  virtual void on_backward_begin(const std::string& /*op*/) {}
  virtual void on_backward_end(const std::string& /*op*/, const std::vector<Tensor>& /*grads*/) {}
};

// RAII: `observer` watches this thread's ops while the guard lives; the one installed before
// (if any) is restored after, and is not called meanwhile.
class ScopedOpObserver {
 public:
  explicit ScopedOpObserver(OpObserver* observer);
  ~ScopedOpObserver();
  ScopedOpObserver(const ScopedOpObserver&) = delete;
  ScopedOpObserver& operator=(const ScopedOpObserver&) = delete;

 private:
  OpObserver* previous_;
};

}  // namespace engine
