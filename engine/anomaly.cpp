#include "engine/anomaly.h"

#include <atomic>
#include <cmath>
#include <cstring>

#include "kernels/cpu/parallel.h"
#ifdef ENGINE_WITH_CUDA
#include "kernels/cuda/elementwise.h"
#endif

namespace engine {

namespace {

// A float is non-finite exactly when its exponent bits are all ones, i.e. when its bits
// without the sign are >= those of +Inf. An unsigned max over the masked bits vectorises
// without -ffast-math (a float reduction would not).
template <typename Bits>
bool bits_all_finite(const void* data, int64_t n, Bits abs_mask, Bits inf_bits) {
  typedef Bits __attribute__((may_alias)) AliasBits;
  const AliasBits* bits = static_cast<const AliasBits*>(data);
  std::atomic<bool> finite{true};
  kernels::cpu::parallel_for(n, int64_t{1} << 16, [&](int64_t begin, int64_t end) {
    Bits largest = 0;
    for (int64_t i = begin; i < end; ++i) {
      Bits b = bits[i] & abs_mask;
      largest = b > largest ? b : largest;
    }
    if (largest >= inf_bits) finite.store(false, std::memory_order_relaxed);
  });
  return finite.load();
}

bool host_all_finite(const Tensor& t) {
  if (t.dtype() == DType::F32)
    return bits_all_finite<uint32_t>(t.raw_data(), t.numel(), 0x7fffffffu, 0x7f800000u);
  if (t.dtype() == DType::F64)
    return bits_all_finite<uint64_t>(t.raw_data(), t.numel(), 0x7fffffffffffffffull, 0x7ff0000000000000ull);
  return host_all_finite(t.to(DType::F32));  // BF16: exact in F32
}

struct Counts {
  int64_t nan = 0, inf = 0;
};

template <typename T>
Counts count_host(const T* x, int64_t n) {
  Counts c;
  for (int64_t i = 0; i < n; ++i) {
    c.nan += std::isnan(x[i]);
    c.inf += std::isinf(x[i]);
  }
  return c;
}

}  // namespace

bool all_finite(const Tensor& t) {
  if (!t.defined() || t.numel() == 0) return true;
  if (t.is_cpu()) return host_all_finite(t);
#ifdef ENGINE_WITH_CUDA
  // A sum is non-finite when an element is; F32 values cannot overflow a double sum.
  double total = 0;
  if (t.dtype() == DType::F32) return std::isfinite(kernels::cuda::sum(t.data<float>(), t.numel()));
  if (t.dtype() == DType::F64) {
    total = kernels::cuda::sum(t.data<double>(), t.numel());
    return std::isfinite(total) || host_all_finite(t.to(Device::CPU));  // overflow: look closer
  }
#endif
  return host_all_finite(t.to(Device::CPU));
}

std::string describe_nonfinite(const Tensor& t) {
  Tensor host = t.to(Device::CPU);
  if (host.dtype() != DType::F32 && host.dtype() != DType::F64) host = host.to(DType::F32);
  Counts c = host.dtype() == DType::F32 ? count_host(host.data<float>(), host.numel())
                                        : count_host(host.data<double>(), host.numel());
  return std::to_string(c.nan) + " NaN and " + std::to_string(c.inf) + " infinite of " +
         std::to_string(t.numel()) + " values in " + t.desc();
}

void NonFiniteDetector::on_forward(const char* op, const Tensor& out) {
  if (all_finite(out)) return;
  throw NonFiniteError(std::string("op '") + op + "' produced non-finite values in the forward pass: " +
                           describe_nonfinite(out),
                       op, "forward");
}

void NonFiniteDetector::on_backward_end(const std::string& op, const std::vector<Tensor>& grads) {
  if (!noted_.empty()) return;  // the first fault is the one worth naming; spare the rest
  for (size_t k = 0; k < grads.size(); ++k) {
    if (all_finite(grads[k])) continue;
    noted_op_ = op;
    noted_ = "the backward of op '" + op + "' produced a non-finite gradient for its input " +
             std::to_string(k + 1) + " of " + std::to_string(grads.size()) + ": " + describe_nonfinite(grads[k]);
    if (backward_ == Backward::Throw) {
      std::string what = noted_;
      noted_.clear();
      throw NonFiniteError(what, op, "backward");
    }
    return;
  }
}

void NonFiniteDetector::check_gradients(const std::vector<NamedTensor>& params) {
  std::string noted = std::move(noted_), op = std::move(noted_op_);
  noted_.clear();
  noted_op_.clear();
  constexpr size_t kNamed = 3;
  std::vector<std::string> bad;
  size_t bad_count = 0;
  for (const auto& [name, param] : params) {
    Tensor g = param.defined() ? param.grad() : Tensor();
    if (!g.defined() || all_finite(g)) continue;
    if (bad.size() < kNamed) bad.push_back(name + " (" + describe_nonfinite(g) + ")");
    ++bad_count;
  }
  if (noted.empty() && bad_count == 0) return;
  std::string what = noted.empty() ? "non-finite gradients" : noted;
  if (bad_count > 0) {
    what += "; parameters with non-finite gradients: ";
    for (size_t i = 0; i < bad.size(); ++i) what += (i ? ", " : "") + bad[i];
    if (bad_count > bad.size()) what += " and " + std::to_string(bad_count - bad.size()) + " more";
  }
  throw NonFiniteError(what, op, "backward");
}

}  // namespace engine
