// bench_kernels: per-op, per-layer-shape throughput (Google Benchmark), one file per op
// family in bench/kernels/. Run:
//   build/bench/bench_kernels [--benchmark_filter=Conv] [--benchmark_format=json --benchmark_out=FILE]
#include <benchmark/benchmark.h>

BENCHMARK_MAIN();
