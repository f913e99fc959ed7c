#include "engine/profile.h"

#include <algorithm>
#include <cstdio>

#ifdef ENGINE_WITH_CUDA
#include "kernels/cuda/runtime.h"
#endif

namespace engine {

const char* profile_kind_name(OpProfiler::Kind kind) {
  switch (kind) {
    case OpProfiler::Kind::Forward: return "forward";
    case OpProfiler::Kind::Backward: return "backward";
    case OpProfiler::Kind::AutogradGlue: return "autograd";
    case OpProfiler::Kind::Phase: return "phase";
    case OpProfiler::Kind::Remainder: return "other";
  }
  return "?";
}

OpProfiler::Step::Step(OpProfiler& profiler) : profiler_(profiler), observer_(&profiler) {
  profiler_.sync();
  profiler_.step_start_ = profiler_.last_ = Clock::now();
  profiler_.after_backward_node_ = false;
}

OpProfiler::Step::~Step() {
  profiler_.sync();
  profiler_.step_seconds_ += std::chrono::duration<double>(Clock::now() - profiler_.step_start_).count();
  ++profiler_.steps_;
}

void OpProfiler::sync() const {
#ifdef ENGINE_WITH_CUDA
  if (device_ == Device::CUDA) kernels::cuda::synchronize();
#endif
}

double OpProfiler::elapsed_since_last() {
  sync();
  Clock::time_point now = Clock::now();
  double seconds = std::chrono::duration<double>(now - last_).count();
  last_ = now;
  return seconds;
}

void OpProfiler::mark_gap(bool glue) {
  double seconds = elapsed_since_last();
  if (glue) add(Kind::AutogradGlue, "between nodes: graph walk, grad accumulation", seconds);
  after_backward_node_ = false;
}

void OpProfiler::add(Kind kind, const std::string& name, double seconds) {
  Entry& e = totals_[{kind, name}];
  e.kind = kind;
  e.name = name;
  e.seconds += seconds;
  ++e.count;
}

void OpProfiler::on_forward(const char* op, const Tensor& /*out*/) {
  add(Kind::Forward, op, elapsed_since_last());
  after_backward_node_ = false;
}

void OpProfiler::on_backward_begin(const std::string& /*op*/) { mark_gap(after_backward_node_); }

void OpProfiler::on_backward_end(const std::string& op, const std::vector<Tensor>& /*grads*/) {
  add(Kind::Backward, op, elapsed_since_last());
  after_backward_node_ = true;
}

std::vector<OpProfiler::Entry> OpProfiler::entries() const {
  std::vector<Entry> out;
  double seen = 0;
  for (const auto& [key, e] : totals_) {
    out.push_back(e);
    seen += e.seconds;
  }
  Entry rest{Kind::Remainder, "unobserved: zero_grad, loss.item, graph sort",
             std::max(0.0, step_seconds_ - seen), 0};
  out.push_back(rest);
  std::stable_sort(out.begin(), out.end(), [](const Entry& a, const Entry& b) { return a.seconds > b.seconds; });
  return out;
}

std::string OpProfiler::table(double min_percent) const {
  if (steps_ == 0) return "(no profiled step)\n";
  const double per_step = step_seconds_ / static_cast<double>(steps_);
  const double n = static_cast<double>(steps_);
  std::string out;
  char line[256];
  std::snprintf(line, sizeof line, "%-9s %-44s %7s %10s %7s\n", "kind", "name", "calls", "ms/step", "% step");
  out += line;
  std::map<Kind, Entry> folded, totals;
  for (const Entry& e : entries()) {
    Entry& t = totals[e.kind];
    t.seconds += e.seconds;
    t.count += e.count;
    const double percent = 100.0 * e.seconds / step_seconds_;
    if (percent < min_percent) {
      Entry& f = folded[e.kind];
      f.seconds += e.seconds;
      f.count += e.count;
      continue;
    }
    std::snprintf(line, sizeof line, "%-9s %-44s %7.0f %10.2f %7.1f\n", profile_kind_name(e.kind), e.name.c_str(),
                  e.count / n, 1e3 * e.seconds / n, percent);
    out += line;
  }
  for (const auto& [kind, f] : folded) {
    std::snprintf(line, sizeof line, "%-9s %-44s %7.0f %10.2f %7.1f\n", profile_kind_name(kind),
                  "(others, each under the threshold)", f.count / n, 1e3 * f.seconds / n,
                  100.0 * f.seconds / step_seconds_);
    out += line;
  }
  out += "totals:";
  for (const auto& [kind, t] : totals) {
    std::snprintf(line, sizeof line, " %s %.1f ms (%.1f%%);", profile_kind_name(kind), 1e3 * t.seconds / n,
                  100.0 * t.seconds / step_seconds_);
    out += line;
  }
  std::snprintf(line, sizeof line, " step %.1f ms (mean of %lld)\n", 1e3 * per_step, static_cast<long long>(steps_));
  out += line;
  return out;
}

void OpProfiler::reset() {
  totals_.clear();
  steps_ = 0;
  step_seconds_ = 0;
}

}  // namespace engine
