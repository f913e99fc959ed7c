#!/usr/bin/env bash
# Installs what the project needs to build and test on Debian 12 (bookworm), with apt-get.
# Runs as root, or through sudo when not root. The CUDA toolkit is optional: where nvcc is
# installed (/usr/local/cuda), the CUDA backend is compiled too.
# Usage: bash tools/setup.sh
set -euo pipefail
packages=(
  build-essential cmake ninja-build pkg-config
  libgtest-dev libgmock-dev libbenchmark-dev
  libstb-dev libcli11-dev nlohmann-json3-dev
  clang libclang-rt-14-dev
  python3 python3-numpy python3-torch python3-torchvision python3-matplotlib python3-pil python3-jsonschema
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "setup: all packages present"
  exit 0
fi
as_root=()
[[ $(id -u) -eq 0 ]] || as_root=(sudo)
echo "setup: installing ${missing[*]}"
"${as_root[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done"
