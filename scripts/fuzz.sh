#!/usr/bin/env bash
# Builds every fuzz harness in fuzz/ with clang's libFuzzer, AddressSanitizer
# and UndefinedBehaviorSanitizer, and runs each for SECONDS (default 60) on
# its seed corpus (fuzz/corpus/NAME, committed; what a run adds goes to
# build-fuzz/corpus/NAME). Exits non-zero on any finding: a crash, a
# sanitizer report, an exception other than the parser's own error, a hang
# (the reproducer is in build-fuzz/). HARNESSES may name a subset.
#   bash scripts/fuzz.sh 30
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
out=build-fuzz
venv=${MINIPRETRAIN_VENV:-.venv}
torch=$("$venv/bin/python" -c 'import os, torch; print(os.path.dirname(torch.__file__))')
cxx=${CXX_FUZZ:-clang++-14}
mkdir -p "$out"

flags=(-std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
       -Iinclude -isystem "$torch/include" -isystem "$torch/include/torch/csrc/api/include"
       -D_GLIBCXX_USE_CXX11_ABI=1 -Wno-unused-command-line-argument)
with_torch=(-L"$torch/lib" -Wl,-rpath,"$torch/lib" -ltorch_cpu -lc10)

# name: the sources it needs beyond fuzz/NAME.cpp, and its libraries.
declare -A sources=(
  [config_json]="src/config/json_input.cpp src/config/config.cpp src/config/fields.cpp src/config/choices.cpp"
  [store_server]="src/distributed/store_server.cpp src/distributed/store_protocol.cpp src/distributed/sockets.cpp"
  [shard_index]="src/config/json_input.cpp src/parallel/shard.cpp"
  [safetensors]="src/config/json_input.cpp src/checkpoint/safetensors.cpp"
  [megatron_idx]="src/data/indexed_dataset.cpp src/data/indexed_writer.cpp src/data/mapped_file.cpp"
  [hf_config]="src/config/hf_config.cpp src/config/json_input.cpp src/config/config.cpp src/config/fields.cpp src/config/choices.cpp"
  [hf_index]="src/checkpoint/tensor_source.cpp src/checkpoint/safetensors.cpp src/config/json_input.cpp src/parallel/shard.cpp"
  [command_line]="src/commands/cli.cpp src/config/json_input.cpp src/config/config.cpp src/config/fields.cpp src/config/choices.cpp"
)
declare -A libraries=(
  [config_json]=""
  [store_server]="-lpthread"
  [shard_index]="${with_torch[*]}"
  [safetensors]="${with_torch[*]} -lxxhash"
  [megatron_idx]="${with_torch[*]}"
  [hf_config]=""
  [hf_index]="${with_torch[*]} -lxxhash"
  [command_line]=""
)

names=${HARNESSES:-"config_json hf_config command_line store_server shard_index safetensors hf_index megatron_idx"}
for name in $names; do
  echo "fuzz: building $name"
  # shellcheck disable=SC2086
  "$cxx" "${flags[@]}" "fuzz/$name.cpp" ${sources[$name]} ${libraries[$name]} -o "$out/$name"
done

failed=0
for name in $names; do
  mkdir -p "$out/corpus/$name"
  echo "fuzz: running $name for $seconds s"
  log="$out/$name.log"
  # The leak check is off: harnesses keep a server and static state for the
  # whole run by design; ASan still reports every invalid access. Standard
  # output is closed (-close_fd_mask=1): command_line's --help prints there.
  if ! ASAN_OPTIONS=detect_leaks=0 "$out/$name" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 \
      -close_fd_mask=1 -max_len=65536 -print_final_stats=1 -artifact_prefix="$out/$name-" "$out/corpus/$name" "fuzz/corpus/$name" \
      > "$log" 2>&1; then
    echo "fuzz: $name FOUND something: see $log and $out/$name-*"
    tail -n 30 "$log"
    failed=1
  fi
  grep -E "stat::number_of_executed_units|cov: " "$log" | tail -n 2 | sed "s/^/fuzz: $name: /"
done
exit $failed
