#!/usr/bin/env bash
# Builds the in-process tests (minipretrain_unit_tests) with clang 14 under
# AddressSanitizer and UndefinedBehaviorSanitizer into build-asan (BUILD_DIR)
# and runs them; arguments go to the test binary (--gtest_filter=...). Exits
# non-zero on a failed case or any sanitizer report: UBSan does not recover,
# and ASan's leak check stays on.
#   bash scripts/sanitize.sh
#
# Only our code (and the tests) is instrumented; LibTorch, Gloo and the
# system libraries are not, so an error inside them is not seen. No
# ASAN_OPTIONS are needed: the tier ran clean with the defaults, leaks
# included (2026-12-07).
set -euo pipefail
cd "$(dirname "$0")/.."
# CMake takes the compiler and flags from the environment when it first
# configures the directory.
export CXX=${CXX_SANITIZE:-clang++-14}
export CXXFLAGS="-g -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
export LDFLAGS="-fsanitize=address,undefined"
build_dir=${BUILD_DIR:-build-asan}
BUILD_DIR=$build_dir TARGETS=minipretrain_unit_tests bash scripts/build.sh
UBSAN_OPTIONS=print_stacktrace=1 "$build_dir/tests/minipretrain_unit_tests" "$@"
