// Per-op profile of training steps, from the autograd OpObserver hooks: where a step's time
// goes. Forward: the time between an op's recorded output and the previous event is that
// op's forward time (ops run one after another; argument checks and allocation count with
// the op). Backward: each node's backward, timed from begin to end; the gaps between nodes
// (graph walk, gradient accumulation) are "autograd glue". Named phases outside the graph
// (the optimiser step) are timed with phase(); what none of these saw (zero_grad, loss.item,
// the topological sort before the first backward node, input copies) is the remainder.
// Ops that record nothing (under NoGradGuard, or with no input needing a gradient) are not
// seen one by one, so profile training steps, not inference. On CUDA every event first
// synchronises the device, so times are real (and the step is slower than unprofiled).
//
//   engine::OpProfiler prof(device);
//   { auto step = prof.step();
//     Tensor loss = ...; loss.backward();
//     prof.phase("optimizer step", [&] { opt.step(); }); }
//   std::fputs(prof.table().c_str(), stdout);   // sorted, ms per step and % of the step
#pragma once
#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "engine/autograd.h"

namespace engine {

class OpProfiler : public OpObserver {
 public:
  using Clock = std::chrono::steady_clock;

  enum class Kind { Forward, Backward, AutogradGlue, Phase, Remainder };
  struct Entry {
    Kind kind;
    std::string name;     // op name, phase name, or a description for glue and remainder
    double seconds = 0;   // summed over all profiled steps
    int64_t count = 0;    // calls over all profiled steps (0 for the remainder)
  };

  explicit OpProfiler(Device device = Device::CPU) : device_(device) {}

  // RAII: one profiled step. Installs the profiler as this thread's op observer and times
  // the whole step; steps accumulate (the table reports the mean per step).
  class Step {
   public:
    ~Step();
    Step(const Step&) = delete;
    Step& operator=(const Step&) = delete;
    Step(Step&&) = delete;

   private:
    friend class OpProfiler;
    explicit Step(OpProfiler& profiler);
    OpProfiler& profiler_;
    ScopedOpObserver observer_;
  };
  Step step() { return Step(*this); }

  // Times fn() as the named phase (inside a step).
  template <typename F>
  void phase(const std::string& name, F&& fn) {
    mark_gap(false);
    fn();
    add(Kind::Phase, name, elapsed_since_last());
  }

  // Every entry (the remainder included), longest first.
  std::vector<Entry> entries() const;
  int64_t steps() const { return steps_; }
  double step_seconds() const { return step_seconds_; }  // summed over the steps
  // A text table: kind, name, calls per step, ms per step, % of the step; then the totals per
  // kind. Entries under min_percent are folded into one "other" line per kind.
  std::string table(double min_percent = 0.0) const;
  void reset();

  void on_forward(const char* op, const Tensor& out) override;
  void on_backward_begin(const std::string& op) override;
  void on_backward_end(const std::string& op, const std::vector<Tensor>& grads) override;

 private:
  void sync() const;
  double elapsed_since_last();                 // syncs, reads the clock, moves last_
  void mark_gap(bool glue);                    // the gap up to now: glue, or left to the remainder
  void add(Kind kind, const std::string& name, double seconds);

  Device device_;
  Clock::time_point step_start_, last_;
  bool after_backward_node_ = false;           // last event was a backward end
  std::map<std::pair<Kind, std::string>, Entry> totals_;
  int64_t steps_ = 0;
  double step_seconds_ = 0;
};

const char* profile_kind_name(OpProfiler::Kind kind);

}  // namespace engine
