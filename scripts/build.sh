#!/usr/bin/env bash
# Configures and builds minipretrain (binary and tests) into build/ against the
# LibTorch of the project's .venv (scripts/install_deps.sh makes it). BUILD_DIR,
# CMAKE_ARGS, JOBS and TARGETS (default: everything) may be set; -j2 suits the
# 2-core machines we test on. ccache, where installed, keeps rebuilds and CI's
# clean clones short.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build}
venv=${MINIPRETRAIN_VENV:-.venv}
torch_cmake=$("$venv/bin/python" -c 'import torch; print(torch.utils.cmake_prefix_path)')
generator=()
command -v ninja > /dev/null && generator=(-G Ninja)
launcher=()
if command -v ccache > /dev/null; then
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
  # Paths below the checkout hash as relative ones, so another clone hits the
  # cache; the precompiled header needs the sloppiness.
  export CCACHE_BASEDIR="$PWD" CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
  export CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-5G}
fi
cmake -S . -B "$build_dir" "${generator[@]}" "${launcher[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$torch_cmake" ${CMAKE_ARGS:-}
targets=()
for t in ${TARGETS:-}; do targets+=(--target "$t"); done
cmake --build "$build_dir" -j "${JOBS:-2}" "${targets[@]}"
