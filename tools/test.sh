#!/usr/bin/env bash
# Builds and runs the test suite twice: a Release build (with the CUDA backend compiled where
# nvcc exists; CUDA tests skip without a GPU) and an AddressSanitizer + UndefinedBehaviorSanitizer
# build. Tests labelled `slow` are left out; run them with: ctest --test-dir build -L slow
# Usage: bash tools/test.sh            (both builds)
#        bash tools/test.sh release    (one of: release, sanitize)
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
which=${1:-all}
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)

run() {  # name, build dir, cmake args...
  local name=$1 dir=$2
  shift 2
  echo "=== $name build ($dir)"
  local gen=("${generator[@]}")
  [[ -f $dir/CMakeCache.txt ]] && gen=()  # keep the generator an existing tree was made with
  cmake -S . -B "$dir" "${gen[@]}" "$@" >"$dir/configure.log" 2>&1 || { cat "$dir/configure.log"; exit 1; }
  cmake --build "$dir" -j"$jobs"
  echo "=== $name tests"
  ctest --test-dir "$dir" -LE slow -j"$jobs" --output-on-failure --timeout 600
}

mkdir -p build build-sanitize
if [[ $which == all || $which == release ]]; then
  run release build -DCMAKE_BUILD_TYPE=Release
fi
if [[ $which == all || $which == sanitize ]]; then
  # CUDA off: sanitizers instrument host code only, and the CUDA sources were compiled above.
  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
    run sanitize build-sanitize -DCMAKE_BUILD_TYPE=RelWithDebInfo -DENGINE_CUDA=OFF \
    -DENGINE_SANITIZE="address;undefined"
fi
