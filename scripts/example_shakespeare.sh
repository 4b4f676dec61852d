#!/usr/bin/env bash
# Real text end to end: trains a 4096-piece tokenizer on CORPUS, preprocesses
# it into a Megatron indexed dataset, trains configs/tiny.json on it with a
# 98/2 validation split, samples a continuation and exports the model for
# Hugging Face. Usage: scripts/example_shakespeare.sh CORPUS [WORK_DIR]
#   e.g. scripts/example_shakespeare.sh ../shared/data/tinyshakespeare/input.txt
set -euo pipefail
corpus=${1:?usage: $0 CORPUS [WORK_DIR]}
root=$(cd "$(dirname "$0")/.." && pwd)
work=${2:-$root/runs/shakespeare}
bin=${MINIPRETRAIN_BIN:-$root/build/minipretrain}
mkdir -p "$work"

"$bin" tokenizer --input "$corpus" --vocab-size 4096 --output "$work/tok.model"
"$bin" preprocess --tokenizer "$work/tok.model" --input "$corpus" --blank-line-documents \
  --output-prefix "$work/shakespeare"
"$bin" --config "$root/configs/tiny.json" --vocab-size 4096 --data-path "$work/shakespeare" \
  --split 98,2 --eval-interval 100 --eval-iters 4 --max-steps ${MAX_STEPS:-600} --log-interval 50 \
  --output-dir "$work/checkpoints" --tensorboard-dir "$work/tensorboard"
"$bin" generate --checkpoint "$work/checkpoints" --tokenizer "$work/tok.model" \
  --prompt "ROMEO:" --max-new-tokens 60 --seed 1
"$bin" export --checkpoint "$work/checkpoints" --tokenizer "$work/tok.model" --output "$work/hf"
# Debian's python3 has python3-matplotlib; a python3 earlier on PATH (pyenv, venv) may not.
"$(command -v /usr/bin/python3 || command -v python3)" "$root/scripts/plot_metrics.py" "$work/checkpoints" -o "$work/curves.png" ||
  echo "example_shakespeare: no curves.png (python3-matplotlib missing?)" >&2
