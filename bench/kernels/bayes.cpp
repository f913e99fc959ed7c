// Bayesian linear head (2048 -> 2, batch 32) on the CPU: forward (sample W and b from the
// Philox stream, then the matmul), backward (dx, dmu, drho, drawing the noise again), and
// the closed-form KL. The sampling dominates: 4,098 weights, a Philox block per four.
//   build/bench/bench_kernels --benchmark_filter=Bayes
#include <benchmark/benchmark.h>

#include <cstdint>
#include <vector>

#include "engine/tensor.h"
#include "kernels/cpu/bayes.h"

namespace {

struct BayesHead {
  int64_t n, in, out;
  std::vector<float> x, w_mu, w_rho, b_mu, b_rho, w_sample, b_sample, y, dy;
  kernels::BayesNoise<float> w_noise, b_noise;

  BayesHead(int64_t n_, int64_t in_, int64_t out_) : n(n_), in(in_), out(out_) {
    x = values(n * in, 1, 0.0);
    w_mu = values(out * in, 2, 0.0);
    w_rho = values(out * in, 3, -3.0);  // bayesian-torch's initial rho
    b_mu = values(out, 4, 0.0);
    b_rho = values(out, 5, -3.0);
    dy = values(n * out, 6, 0.0);
    w_sample.resize(out * in);
    b_sample.resize(out);
    y.resize(n * out);
    w_noise.seed = b_noise.seed = 1234;
    b_noise.first_draw = static_cast<uint64_t>(out * in);
  }
  static std::vector<float> values(int64_t count, uint64_t seed, double shift) {
    std::vector<double> v = engine::Tensor::randn({count}, seed).to_vector();
    std::vector<float> out(v.size());
    for (size_t i = 0; i < v.size(); ++i) out[i] = static_cast<float>(0.1 * v[i] + shift);
    return out;
  }
  void forward() {
    kernels::cpu::bayes_linear_forward<float>(x.data(), w_mu.data(), w_rho.data(), b_mu.data(),
                                              b_rho.data(), w_noise, b_noise, w_sample.data(),
                                              b_sample.data(), y.data(), n, in, out);
  }
};

void BM_BayesLinearForward(benchmark::State& state) {
  BayesHead head(state.range(0), state.range(1), state.range(2));
  for (auto _ : state) {
    head.forward();
    benchmark::DoNotOptimize(head.y.data());
  }
  state.counters["weights/s"] =
      benchmark::Counter(static_cast<double>(head.out * (head.in + 1)) * state.iterations(),
                         benchmark::Counter::kIsRate);
}

void BM_BayesLinearBackward(benchmark::State& state) {
  BayesHead head(state.range(0), state.range(1), state.range(2));
  head.forward();
  std::vector<float> dx(head.n * head.in), dw_mu(head.out * head.in), dw_rho(head.out * head.in);
  std::vector<float> db_mu(head.out), db_rho(head.out);
  kernels::cpu::BayesLinearGrads<float> grads;
  grads.dx = dx.data();
  grads.dw_mu = dw_mu.data();
  grads.dw_rho = dw_rho.data();
  grads.db_mu = db_mu.data();
  grads.db_rho = db_rho.data();
  for (auto _ : state) {
    kernels::cpu::bayes_linear_backward<float>(
        head.x.data(), head.w_sample.data(), head.w_rho.data(), head.b_rho.data(), head.w_noise,
        head.b_noise, head.dy.data(), grads, head.n, head.in, head.out);
    benchmark::DoNotOptimize(dw_rho.data());
  }
  state.counters["weights/s"] =
      benchmark::Counter(static_cast<double>(head.out * (head.in + 1)) * state.iterations(),
                         benchmark::Counter::kIsRate);
}

void BM_BayesKl(benchmark::State& state) {
  BayesHead head(1, state.range(1), state.range(2));
  std::vector<float> dmu(head.out * head.in), drho(head.out * head.in);
  for (auto _ : state) {
    double kl = kernels::cpu::bayes_kl_sum<float>(head.w_mu.data(), head.w_rho.data(),
                                                  head.out * head.in, 1.0f);
    kernels::cpu::bayes_kl_backward<float>(head.w_mu.data(), head.w_rho.data(), head.out * head.in,
                                           1.0f, 1.0f, dmu.data(), drho.data());
    benchmark::DoNotOptimize(kl);
    benchmark::DoNotOptimize(drho.data());
  }
}

BENCHMARK(BM_BayesLinearForward)->Args({32, 2048, 2})->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_BayesLinearBackward)
    ->Args({32, 2048, 2})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
BENCHMARK(BM_BayesKl)->Args({1, 2048, 2})->Unit(benchmark::kMicrosecond)->UseRealTime();

}  // namespace
