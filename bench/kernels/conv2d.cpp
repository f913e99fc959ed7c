// Convolution throughput on the CPU: forward, backward-data and backward-weight of every
// distinct ResNet50 convolution shape, at 224x224 batch 8 and at 64x64 batch 32.
// GFLOP/s counts 2*N*P*Q*K*R*S*C per pass; "uses" is how often the shape occurs in ResNet50.
// Names: Conv2d/<pass>/<batch config>/<input HxW>_<C>to<K>_<R>x<S>s<stride>, the keys that
// bench/torch_conv.py joins with PyTorch's timings of the same shapes (conv2d's own choice of
// algorithm). The stride-1 3x3 shapes also run as Conv2dAlgo/.../{direct,F2,F4}: each
// algorithm forced, for kernels/cpu/winograd.cpp's cost model (GFLOP/s there counts the direct
// algorithm's multiply-adds: an effective rate). Run:
//   build/bench/bench_kernels --benchmark_filter='Conv2d/.*/b8_224'
//   build/bench/bench_kernels --benchmark_filter='Conv2dAlgo' --benchmark_repetitions=5 --benchmark_report_aggregates_only
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "kernels/common/conv2d_shape.h"
#include "kernels/cpu/conv2d.h"
#include "kernels/cpu/winograd.h"

namespace {

// A ResNet50 (torchvision, stride on the 3x3) convolution, its input size given as the
// network's input size divided by `downscale`.
struct LayerShape {
  int downscale;
  int64_t C, K, R, stride, pad;
  int uses;
};

const LayerShape kResNet50Convs[] = {
    {1, 3, 64, 7, 2, 3, 1},  // stem
    // layer1
    {4, 64, 64, 1, 1, 0, 1},
    {4, 64, 64, 3, 1, 1, 3},
    {4, 64, 256, 1, 1, 0, 4},
    {4, 256, 64, 1, 1, 0, 2},
    // layer2
    {4, 256, 128, 1, 1, 0, 1},
    {4, 128, 128, 3, 2, 1, 1},
    {4, 256, 512, 1, 2, 0, 1},
    {8, 128, 128, 3, 1, 1, 3},
    {8, 128, 512, 1, 1, 0, 4},
    {8, 512, 128, 1, 1, 0, 3},
    // layer3
    {8, 512, 256, 1, 1, 0, 1},
    {8, 256, 256, 3, 2, 1, 1},
    {8, 512, 1024, 1, 2, 0, 1},
    {16, 256, 256, 3, 1, 1, 5},
    {16, 256, 1024, 1, 1, 0, 6},
    {16, 1024, 256, 1, 1, 0, 5},
    // layer4
    {16, 1024, 512, 1, 1, 0, 1},
    {16, 512, 512, 3, 2, 1, 1},
    {16, 1024, 2048, 1, 2, 0, 1},
    {32, 512, 512, 3, 1, 1, 2},
    {32, 512, 2048, 1, 1, 0, 3},
    {32, 2048, 512, 1, 1, 0, 2},
};

struct BatchConfig {
  const char* name;
  int64_t batch, image;
};
const BatchConfig kConfigs[] = {{"b8_224", 8, 224}, {"b32_64", 32, 64}};

enum class Pass { Forward, BackwardData, BackwardWeight };

// Deterministic, non-trivial values (denormal-free) without an RNG dependency.
std::vector<float> filled(int64_t n, float scale) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = scale * static_cast<float>((i * 7919) % 1013 - 506) / 506.0f;
  return v;
}

void run_pass(benchmark::State& state, kernels::Conv2dShape s, Pass pass, int uses) {
  std::vector<float> x = filled(s.input_size(), 1.0f), w = filled(s.weight_size(), 0.05f);
  std::vector<float> y = filled(s.output_size(), 1.0f);
  for (auto _ : state) {
    switch (pass) {
      case Pass::Forward:
        kernels::cpu::conv2d_forward<float>(s, x.data(), w.data(), nullptr, y.data());
        break;
      case Pass::BackwardData:  // y holds dy, x receives dx
        kernels::cpu::conv2d_backward_data<float>(s, y.data(), w.data(), x.data());
        break;
      case Pass::BackwardWeight:  // y holds dy, w receives dw
        kernels::cpu::conv2d_backward_weight<float>(s, x.data(), y.data(), w.data());
        break;
    }
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * s.macs() * state.iterations() / 1e9,
                                                 benchmark::Counter::kIsRate);
  state.counters["uses"] = uses;
}

// The pass with one algorithm: 0 the direct one, else Winograd with tiles of m.
void run_pass_algorithm(benchmark::State& state, kernels::Conv2dShape s, Pass pass, int m) {
  std::vector<float> x = filled(s.input_size(), 1.0f), w = filled(s.weight_size(), 0.05f);
  std::vector<float> y = filled(s.output_size(), 1.0f);
  const bool winograd_was = kernels::cpu::winograd_enabled();
  kernels::cpu::set_winograd_enabled(false);
  for (auto _ : state) {
    switch (pass) {
      case Pass::Forward:
        if (m) kernels::cpu::winograd_forward<float>(s, m, x.data(), w.data(), {}, y.data());
        else kernels::cpu::conv2d_forward<float>(s, x.data(), w.data(), nullptr, y.data());
        break;
      case Pass::BackwardData:
        if (m) kernels::cpu::winograd_backward_data<float>(s, m, y.data(), w.data(), x.data());
        else kernels::cpu::conv2d_backward_data<float>(s, y.data(), w.data(), x.data());
        break;
      case Pass::BackwardWeight:
        if (m) kernels::cpu::winograd_backward_weight<float>(s, m, x.data(), y.data(), w.data());
        else kernels::cpu::conv2d_backward_weight<float>(s, x.data(), y.data(), w.data());
        break;
    }
    benchmark::ClobberMemory();
  }
  kernels::cpu::set_winograd_enabled(winograd_was);
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * s.macs() * state.iterations() / 1e9,
                                                 benchmark::Counter::kIsRate);
  const auto choice = pass == Pass::BackwardWeight ? kernels::cpu::WinogradPass::BackwardWeight
                      : pass == Pass::BackwardData ? kernels::cpu::WinogradPass::BackwardData
                                                   : kernels::cpu::WinogradPass::Forward;
  state.counters["chosen"] = kernels::cpu::winograd_tile(s, choice);  // what conv2d takes: 0 direct, 2, 4
}

std::string shape_name(const kernels::Conv2dShape& s) {
  return std::to_string(s.H) + "x" + std::to_string(s.W) + "_" + std::to_string(s.C) + "to" +
         std::to_string(s.K) + "_" + std::to_string(s.R) + "x" + std::to_string(s.S) + "s" +
         std::to_string(s.stride);
}

bool register_all() {
  const std::pair<Pass, const char*> passes[] = {
      {Pass::Forward, "fwd"}, {Pass::BackwardData, "bwd_data"}, {Pass::BackwardWeight, "bwd_weight"}};
  for (const BatchConfig& cfg : kConfigs)
    for (const LayerShape& l : kResNet50Convs) {
      const int64_t in = cfg.image / l.downscale;
      const auto s = kernels::Conv2dShape::make(cfg.batch, in, in, l.C, l.K, l.R, l.R, l.stride, l.pad);
      for (const auto& [pass, pass_name] : passes) {
        std::string name = std::string("Conv2d/") + pass_name + "/" + cfg.name + "/" + shape_name(s);
        const Pass p = pass;
        const int uses = l.uses;
        benchmark::RegisterBenchmark(name.c_str(), [s, p, uses](benchmark::State& st) { run_pass(st, s, p, uses); })
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
        if (l.R != 3 || l.stride != 1) continue;
        for (int m : {0, 2, 4}) {
          const std::string algo = name.substr(std::string("Conv2d").size()) + (m ? "/F" + std::to_string(m) : "/direct");
          benchmark::RegisterBenchmark(("Conv2dAlgo" + algo).c_str(),
                                       [s, p, m](benchmark::State& st) { run_pass_algorithm(st, s, p, m); })
              ->Unit(benchmark::kMillisecond)
              ->UseRealTime();
        }
      }
    }
  return true;
}

const bool kRegistered = register_all();

}  // namespace
