#include "engine/autograd.h"

#include <unordered_map>
#include <unordered_set>

#include "engine/ops.h"

namespace engine {

namespace {
thread_local bool g_grad_enabled = true;
thread_local OpObserver* g_observer = nullptr;

// a + b out of place: gradients may share storage with tensors still in use (reshape views).
Tensor accumulate(const Tensor& acc, const Tensor& g) { return acc.defined() ? add(acc, g) : g; }
}  // namespace

bool grad_enabled() { return g_grad_enabled; }
NoGradGuard::NoGradGuard() : previous_(g_grad_enabled) { g_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { g_grad_enabled = previous_; }

ScopedOpObserver::ScopedOpObserver(OpObserver* observer) : previous_(g_observer) {
  g_observer = observer;
}
ScopedOpObserver::~ScopedOpObserver() { g_observer = previous_; }

bool needs_grad(std::initializer_list<const Tensor*> inputs) {
  if (!g_grad_enabled) return false;
  for (const Tensor* t : inputs)
    if (t && t->defined() && t->requires_grad()) return true;
  return false;
}

void record(Tensor& out, const char* op, std::initializer_list<const Tensor*> inputs,
            BackwardFn backward) {
  auto node = std::make_shared<Node>();
  node->op = op;
  node->backward = std::move(backward);
  node->next.reserve(inputs.size());
  for (const Tensor* t : inputs) {
    Edge e;
    if (t && t->defined() && t->requires_grad()) {
      if (t->grad_fn()) e.node = t->grad_fn();
      else e.leaf = t->impl_ptr();
    }
    node->next.push_back(std::move(e));
  }
  out.impl().grad_fn = std::move(node);
  out.impl().requires_grad = true;
  if (g_observer) g_observer->on_forward(op, out);
}

void Tensor::backward(bool retain_graph) const {
  ENGINE_CHECK(numel() == 1, "backward: needs a one-element tensor (a loss), got ", desc());
  ENGINE_CHECK(requires_grad(), "backward: tensor does not require a gradient (no parameter ",
               "with requires_grad contributed to it, or it was computed under NoGradGuard)");
  NoGradGuard no_grad;  // gradient computations are not themselves recorded
  Tensor seed = Tensor::full(shape(), 1.0, dtype(), device());
  if (!grad_fn()) {
    set_grad(grad().defined() ? accumulate(grad(), seed) : seed);
    return;
  }
  // Reverse topological order by iterative depth-first search.
  std::vector<Node*> order;
  std::unordered_set<Node*> seen;
  std::vector<std::pair<Node*, size_t>> stack{{grad_fn().get(), 0}};
  seen.insert(grad_fn().get());
  while (!stack.empty()) {
    auto& [node, i] = stack.back();
    if (i < node->next.size()) {
      Node* child = node->next[i++].node.get();
      if (child && seen.insert(child).second) stack.push_back({child, 0});
    } else {
      order.push_back(node);
      stack.pop_back();
    }
  }
  std::unordered_map<Node*, Tensor> grads;
  grads[grad_fn().get()] = seed;
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    Node* node = *it;
    auto found = grads.find(node);
    if (found == grads.end()) continue;  // no gradient flowed here
    Tensor g = std::move(found->second);
    grads.erase(found);
    ENGINE_CHECK(!node->released, "backward: the graph through op '", node->op,
                 "' was already released by an earlier backward; call backward(true) the first ",
                 "time to keep it, or recompute the forward pass");
    if (g_observer) g_observer->on_backward_begin(node->op);
    std::vector<Tensor> input_grads = node->backward(g);
    if (g_observer) g_observer->on_backward_end(node->op, input_grads);
    ENGINE_CHECK(input_grads.size() == node->next.size(), "backward of '", node->op, "' returned ",
                 input_grads.size(), " gradients for ", node->next.size(), " inputs");
    for (size_t k = 0; k < input_grads.size(); ++k) {
      const Edge& e = node->next[k];
      const Tensor& gi = input_grads[k];
      if (!gi.defined()) continue;
      if (e.node) {
        grads[e.node.get()] = accumulate(grads[e.node.get()], gi);
      } else if (e.leaf) {
        Tensor leaf(e.leaf);
        ENGINE_CHECK(gi.shape() == leaf.shape(), "backward of '", node->op, "': gradient ",
                     gi.desc(), " does not match its input ", leaf.desc());
        leaf.set_grad(accumulate(leaf.grad(), gi));
      }
    }
    if (!retain_graph) {
      node->backward = nullptr;  // frees the saved tensors
      node->released = true;
    }
  }
}

}  // namespace engine
