#!/usr/bin/env bash
# Configures and builds minipretrain (binary and tests) into build/.
# BUILD_DIR and CMAKE_ARGS may be set; -j2 suits the 2-core machines we test on.
# TARGETS (e.g. "minipretrain minipretrain-text") builds only those targets.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build}
generator=()
command -v ninja > /dev/null && generator=(-G Ninja)
targets=()
for t in ${TARGETS:-}; do targets+=(--target "$t"); done
cmake -S . -B "$build_dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release ${CMAKE_ARGS:-}
cmake --build "$build_dir" -j "${JOBS:-2}" "${targets[@]}"
