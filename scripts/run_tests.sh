#!/usr/bin/env bash
# Installs the dependencies, builds, and runs the whole test suite (unit tests
# and the multi-process runs over Gloo) through ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
cd "${BUILD_DIR:-build}"
ctest --output-on-failure "$@"
