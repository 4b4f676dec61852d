#!/usr/bin/env bash
# Installs everything minipretrain needs to build, test and run on Debian 12.
# Idempotent: packages already present are left alone by apt.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  libtorch-dev            # LibTorch 1.13 (CPU) with c10d, Gloo and TCPStore
  libgloo-dev             # headers that c10d's ProcessGroupGloo.hpp includes
  libopenblas0-openmp     # without it LibTorch falls back to the ~8 GFLOP/s reference BLAS
  libcli11-dev libspdlog-dev nlohmann-json3-dev libgtest-dev
  libsentencepiece-dev sentencepiece
  libxxhash-dev           # checkpoint hashes (XXH3)
  openmpi-bin libopenmpi-dev
  python3-matplotlib      # scripts/plot_metrics.py
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all packages present"
  exit 0
fi

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
