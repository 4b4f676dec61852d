#!/usr/bin/env bash
# From a fresh Debian 12 clone to a training run: installs the dependencies,
# builds, and trains configs/tiny.json on the built-in synthetic data. Watch
# the loss fall towards the floor printed in the banner. Extra flags are
# passed to minipretrain (e.g. --max-steps 100).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
# Only what the run needs: the test suite would double the first build.
TARGETS=minipretrain bash scripts/build.sh
exec build/minipretrain --config configs/tiny.json "$@"
