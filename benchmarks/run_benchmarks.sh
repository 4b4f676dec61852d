#!/usr/bin/env bash
# Speed and memory figures of the built binary on this machine. Prints one
# line per measurement; nothing here passes or fails. Takes ~5 minutes on 2
# cores. Usage: benchmarks/run_benchmarks.sh [BUILD_DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/build}/minipretrain
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
port=29700

# Median of a metrics.jsonl field over steps after the first `skip`.
median() {  # FILE FIELD SKIP
  grep -o "\"$2\":[0-9.e+-]*" "$1" | cut -d: -f2 | tail -n +"$(( $3 + 1 ))" | sort -g |
    awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# Starts NPROC ranks with torchrun's variables; waits for all.
ranks() {  # NPROC OUT ARGS...
  local n=$1 out=$2; shift 2
  port=$((port + 1))
  for ((r = 0; r < n; r++)); do
    RANK=$r WORLD_SIZE=$n LOCAL_RANK=$r LOCAL_WORLD_SIZE=$n MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
      "$bin" --output-dir "$out" --log-interval 1 --save-interval 100000 "$@" > "$out.rank$r.log" 2>&1 &
  done
  wait
}

tiny=(--config "$root/configs/tiny.json" --max-steps 40)

ranks 1 "$work/tiny" "${tiny[@]}" --num-threads 2
echo "tiny, 1 process x 2 threads: $(median "$work/tiny/metrics.jsonl" ms_per_step 5) ms/step," \
     "$(median "$work/tiny/metrics.jsonl" tokens_per_s 5) tokens/s;" \
     "$(grep -o 'Start-up took [0-9.]* s' "$work/tiny.rank0.log")"

ranks 1 "$work/small" --hidden-size 768 --intermediate-size 3072 --num-layers 12 --num-attention-heads 12 \
  --max-seq-length 512 --micro-batch-size 1 --global-batch-size 1 --max-steps 4 --num-threads 2 --num-train-samples 64
echo "Small (162M) seq 512 micro-batch 1, 1 process x 2 threads: $(median "$work/small/metrics.jsonl" ms_per_step 1) ms/step," \
     "$(median "$work/small/metrics.jsonl" tokens_per_s 1) tokens/s; $(grep -o 'Start-up took [0-9.]* s' "$work/small.rank0.log")," \
     "$(grep -o 'rank 0: .*' "$work/small.rank0.log") peak RSS"

ranks 2 "$work/dp2" "${tiny[@]}" --num-threads 1
ranks 2 "$work/dp2_nobucket" "${tiny[@]}" --num-threads 1 --ddp-bucket-mb 0
echo "tiny DP=2 x 1 thread: $(median "$work/dp2/metrics.jsonl" ms_per_step 5) ms/step (DP=1 x 2 threads above);" \
     "DP all-reduces per step: $(grep -o '"dp":{"all_reduce":{"bytes":[0-9]*,"calls":[0-9]*' "$work/dp2/metrics.jsonl" | tail -1 | grep -o '[0-9]*$') bucketed," \
     "$(grep -o '"dp":{"all_reduce":{"bytes":[0-9]*,"calls":[0-9]*' "$work/dp2_nobucket/metrics.jsonl" | tail -1 | grep -o '[0-9]*$') one per tensor"

ranks 2 "$work/tp2" "${tiny[@]}" --num-threads 1 --tensor-parallel-size 2
ranks 1 "$work/tp1" "${tiny[@]}" --num-threads 1
layers=4 micro=8 seq=64 hidden=128 m=2
echo "tiny TP=2 x 1 thread: $(median "$work/tp2/metrics.jsonl" ms_per_step 5) ms/step; TP=1 x 1 thread: $(median "$work/tp1/metrics.jsonl" ms_per_step 5) ms/step;" \
     "TP all-reduce bytes per step per rank: $(grep -o '"tp":{"all_reduce":{"bytes":[0-9]*' "$work/tp2/metrics.jsonl" | tail -1 | grep -o '[0-9]*$')" \
     "(analytic 4 x layers x M x micro x seq x hidden x 4 = $((4 * layers * m * micro * seq * hidden * 4)))"

for schedule in gpipe 1f1b; do
  ranks 2 "$work/pp_$schedule" "${tiny[@]}" --num-threads 1 --pipeline-parallel-size 2 --micro-batch-size 2 \
    --pipeline-schedule "$schedule"
  echo "tiny PP=2 M=8 $schedule: bubble $(median "$work/pp_$schedule/metrics.jsonl" bubble 5)" \
       "(theory $(median "$work/pp_$schedule/metrics.jsonl" bubble_theory 0)), $(median "$work/pp_$schedule/metrics.jsonl" ms_per_step 5) ms/step;" \
       "peak RSS $(grep -ho 'rank [0-9]: .*' "$work/pp_$schedule".rank*.log | tr '\n' ' ')"
done

# Activation memory: a wider model, so that activations outweigh the runtime.
for schedule in gpipe 1f1b; do
  ranks 2 "$work/ppmem_$schedule" --vocab-size 256 --hidden-size 512 --intermediate-size 1536 --num-layers 4 \
    --num-attention-heads 8 --max-seq-length 256 --micro-batch-size 4 --global-batch-size 32 --max-steps 3 \
    --num-threads 1 --pipeline-parallel-size 2 --pipeline-schedule "$schedule" --num-train-samples 256
  echo "PP=2 M=8 hidden 512 seq 256 micro 4, $schedule: peak RSS $(grep -ho 'rank [0-9]: .*' "$work/ppmem_$schedule".rank*.log | tr '\n' ' ')"
done
