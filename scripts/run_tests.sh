#!/usr/bin/env bash
# Installs the dependencies, builds, and runs the whole test suite (unit tests,
# the multi-process runs over Gloo, the oracle and torchrun tests, and the GPU
# cases, which skip without a GPU) through ctest. Arguments go to ctest:
# `-L unit` runs the in-process cases alone, `-L run` those that start processes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
build_dir=${BUILD_DIR:-build}
# The CUDA path is compiled and linked on every run, GPU or not: say so.
echo "run_tests: CUDA path built: tests/minipretrain_gpu_tests; minipretrain links" \
  $(ldd "$build_dir/minipretrain" | grep -oE 'lib(torch_cuda|c10_cuda|cudart|nccl)\.so[^ ]*' | sort -u)
cd "$build_dir"
ctest --output-on-failure "$@"
