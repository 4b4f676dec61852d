#!/usr/bin/env bash
# Installs everything minipretrain needs to build, test and run on Debian 12:
# Debian's packages for the C++ libraries and tools, and the project's Python
# environment .venv (scripts/requirements.txt) whose torch is the LibTorch we
# build against. Idempotent: what is present is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake ninja-build pkg-config ccache
  python3 python3-venv    # .venv: LibTorch (the pinned torch wheel) and the test oracles
  libgloo-dev             # headers that c10d's ProcessGroupGloo.hpp includes (the wheel ships none)
  libcli11-dev libspdlog-dev nlohmann-json3-dev libgtest-dev
  libsentencepiece-dev sentencepiece
  libxxhash-dev           # checkpoint hashes (XXH3)
  openmpi-bin libopenmpi-dev
  iproute2                # network namespaces: the two-node tests
  clang-14 libclang-rt-14-dev  # scripts/fuzz.sh: libFuzzer and the sanitizers
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all Debian packages present"
else
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q
  $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The venv is made by Debian's python3 when the PATH's python3 cannot make one.
venv=${MINIPRETRAIN_VENV:-.venv}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" 2> /dev/null || /usr/bin/python3 -m venv "$venv"
fi
# pip answers quickly when every pin is already installed.
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r scripts/requirements.txt
"$venv/bin/python" -c 'import torch; print("install_deps: LibTorch", torch.__version__, "in", torch.utils.cmake_prefix_path)'
