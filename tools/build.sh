#!/usr/bin/env bash
# Configures and builds the Release tree in build/ (CUDA backend included where nvcc exists).
# Usage: bash tools/build.sh [extra cmake arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
[[ -f build/CMakeCache.txt ]] && generator=()  # keep the generator an existing tree was made with
cmake -S . -B build "${generator[@]}" -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build build -j"$(nproc)"
