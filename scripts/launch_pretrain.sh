#!/usr/bin/env bash
# Launches minipretrain on this node: NPROC_PER_NODE processes that find each
# other through MASTER_ADDR:MASTER_PORT, with the same environment contract as
# torchrun (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,
# MASTER_PORT). Run it once per node, with NODE_RANK 0..NNODES-1.
#
#   NPROC_PER_NODE=4 TP_SIZE=2 scripts/launch_pretrain.sh --data-dir data/tokens
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=node0 NPROC_PER_NODE=8 scripts/launch_pretrain.sh
#   LAUNCHER=torchrun NPROC_PER_NODE=8 scripts/launch_pretrain.sh
#
# Settings (environment, defaults in brackets):
#   NPROC_PER_NODE [1]  NNODES [1]  NODE_RANK [0]
#   MASTER_ADDR [127.0.0.1]  MASTER_PORT [29500]
#   TP_SIZE  PP_SIZE  MICRO_BATCH_SIZE  MAX_STEPS [unset: the config file's or the binary's]
#   MINIPRETRAIN_BIN [<script dir>/../build/minipretrain]
#   LAUNCHER [builtin]: builtin | torchrun
#   TORCHRUN [torchrun on PATH, else <script dir>/../.venv/bin/torchrun, the
#     project's pinned PyTorch]: the torchrun that LAUNCHER=torchrun runs.
#   KILL_GRACE_SECONDS [5]: how long ranks get between SIGTERM and SIGKILL
#     when another rank has failed.
#   MAX_RESTARTS [0]: when a rank fails, stop all and start them all again
#     with --resume auto (from the newest checkpoint in --output-dir), at most
#     this many times (torchrun's --max-restarts). The ranks see the attempt
#     as MINIPRETRAIN_RESTART_COUNT. Not after a signal, nor after exit code 2
#     (a bad configuration) or 3 (training diverged): they fail again. With
#     several nodes, each node's launcher restarts its own ranks; give every
#     node the same MAX_RESTARTS. Under LAUNCHER=torchrun, torchrun restarts
#     on any failure, codes 2 and 3 included.
# Every argument goes to the binary unchanged, after the flags built from the
# settings above (--tensor-parallel-size, --pipeline-parallel-size,
# --micro-batch-size, --max-steps); the binary takes a repeated flag's last
# value, so the command line wins over the environment.
#
# Exit status: the first failing rank's exit code (of the last attempt); 0 when
# every rank succeeded, or stopped cleanly after a signal; 2 for a bad setting.
#
# Signals: SIGINT, SIGTERM (and SIGHUP, as SIGTERM) are passed on to every rank
# once, and the launcher waits while the ranks agree on a step, save a
# checkpoint and exit 0; a second signal SIGKILLs the ranks.
set -euo pipefail

readonly PROG=launch_pretrain

die() {  # one line on stderr, exit 2: a setting is wrong, nothing was started
  echo "$PROG: error: $*" >&2
  exit 2
}
log() { echo "$PROG: $*" >&2; }

NPROC_PER_NODE=${NPROC_PER_NODE:-1}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}
MINIPRETRAIN_BIN=${MINIPRETRAIN_BIN:-$(dirname "$0")/../build/minipretrain}
LAUNCHER=${LAUNCHER:-builtin}
KILL_GRACE_SECONDS=${KILL_GRACE_SECONDS:-5}
MAX_RESTARTS=${MAX_RESTARTS:-0}

# ---- validation: fail before anything starts, with the setting's name --------
# A plain digit pattern (no leading zeros, no sign) also rules out values that
# bash arithmetic would misread, such as 08 (octal).
for name in NPROC_PER_NODE NNODES MASTER_PORT TP_SIZE PP_SIZE MICRO_BATCH_SIZE MAX_STEPS KILL_GRACE_SECONDS; do
  [[ ${!name:-1} =~ ^[1-9][0-9]{0,8}$ ]] || die "$name must be a positive integer, got '${!name}'"
done
[[ $NODE_RANK =~ ^(0|[1-9][0-9]{0,8})$ ]] || die "NODE_RANK must be a non-negative integer, got '$NODE_RANK'"
[[ $MAX_RESTARTS =~ ^(0|[1-9][0-9]{0,8})$ ]] || die "MAX_RESTARTS must be a non-negative integer, got '$MAX_RESTARTS'"
((NODE_RANK < NNODES)) || die "NODE_RANK=$NODE_RANK must be below NNODES=$NNODES"
((MASTER_PORT <= 65535)) || die "MASTER_PORT must be at most 65535, got $MASTER_PORT"
[[ -n $MASTER_ADDR ]] || die "MASTER_ADDR is empty"
case $LAUNCHER in
  builtin | torchrun) ;;
  *) die "LAUNCHER must be 'builtin' or 'torchrun', got '$LAUNCHER'" ;;
esac
if [[ $LAUNCHER == torchrun ]]; then
  TORCHRUN=${TORCHRUN:-$(command -v torchrun || echo "$(dirname "$0")/../.venv/bin/torchrun")}
  [[ -f $TORCHRUN && -x $TORCHRUN ]] ||
    die "LAUNCHER=torchrun but TORCHRUN '$TORCHRUN' is not an executable file (run scripts/install_deps.sh, or set TORCHRUN)"
fi
# A bare name (no slash) is looked up on PATH, like any command.
if [[ $MINIPRETRAIN_BIN != */* ]] && command -v -- "$MINIPRETRAIN_BIN" >/dev/null 2>&1; then
  MINIPRETRAIN_BIN=$(command -v -- "$MINIPRETRAIN_BIN")
fi
[[ -f $MINIPRETRAIN_BIN && -x $MINIPRETRAIN_BIN ]] ||
  die "MINIPRETRAIN_BIN '$MINIPRETRAIN_BIN' is not an executable file (build it, or set MINIPRETRAIN_BIN)"

# ---- the binary's command line ---------------------------------------------
source "$(dirname "$0")/launcher_flags.sh"
launcher_flags "$@"

WORLD_SIZE=$((NNODES * NPROC_PER_NODE))
export MASTER_ADDR MASTER_PORT

# The binary reads several launchers' variables and refuses to start when two
# of them disagree. Variables inherited from an outer launcher (this script run
# under mpirun or mpiexec, say) describe that launcher's process, not ours, so
# they must not reach the ranks. SLURM_* may stay: the binary ignores them once
# it has found RANK/WORLD_SIZE.
unset OMPI_COMM_WORLD_RANK OMPI_COMM_WORLD_SIZE OMPI_COMM_WORLD_LOCAL_RANK OMPI_COMM_WORLD_LOCAL_SIZE \
  PMI_RANK PMI_SIZE MPI_LOCALRANKID MPI_LOCALNRANKS

log "launching $MINIPRETRAIN_BIN via $LAUNCHER: $NNODES node(s) x $NPROC_PER_NODE proc(s)/node," \
  "world size $WORLD_SIZE, node rank $NODE_RANK, master $MASTER_ADDR:$MASTER_PORT"

# ---- torchrun: it does the spawning, signal handling and teardown -----------
if [[ $LAUNCHER == torchrun ]]; then
  # exec, so that signals reach torchrun itself and its exit status is ours.
  # torchrun restarts with the same arguments: --resume auto from the start
  # (no checkpoint yet means step 1).
  ((MAX_RESTARTS == 0)) || bin_args+=(--resume auto)
  exec "$TORCHRUN" --nnodes "$NNODES" --node_rank "$NODE_RANK" --nproc_per_node "$NPROC_PER_NODE" \
    --max-restarts "$MAX_RESTARTS" \
    --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
    --no_python "$MINIPRETRAIN_BIN" "${bin_args[@]}"
fi

# ---- builtin launcher --------------------------------------------------------
pids=()      # pids[local_rank]; emptied once that rank has been reaped
live_count=0
exit_code=0  # what the script exits with
stopping=""  # why we are tearing down: "", "failure" or "signal"
signalled="" # a signal came: no restart, whatever else happened
restarts=0   # attempts so far after the first

signal_ranks() {  # SIGNAL: send it to every rank not yet reaped
  local pid
  for pid in "${pids[@]}"; do
    # A rank may have exited since it was last looked at: a failed kill is fine
    # (and must not trip set -e).
    [[ -n $pid ]] && { kill -s "$1" "$pid" 2>/dev/null || true; }
  done
  return 0
}

any_rank_alive() {
  local pid
  for pid in "${pids[@]}"; do
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && return 0
  done
  return 1
}

# shellcheck disable=SC2317  # only ever called from the traps below
on_signal() {  # SIGNAL NUMBER
  signalled=$1
  if [[ -z $stopping ]]; then
    stopping=signal
    log "got SIG$1, passing it to $live_count rank(s), which save a checkpoint and stop (a second signal kills them)"
    # SIGHUP means the terminal went away; the ranks run in sessions of their
    # own and never see it, so ask them to stop the usual way.
    if [[ $1 == HUP ]]; then signal_ranks TERM; else signal_ranks "$1"; fi
  else
    # A second signal, or one during the teardown after a failure: stop waiting.
    log "got SIG$1 while stopping, killing $live_count rank(s)"
    signal_ranks KILL
  fi
}
trap 'on_signal INT 2' INT
trap 'on_signal TERM 15' TERM
trap 'on_signal HUP 1' HUP
# Should this script die of an error of its own, it must not leave ranks behind.
trap 'signal_ranks KILL' EXIT

# Runs in the forked child: becomes rank LOCAL_RANK of this node.
start_rank() {
  # bash starts background commands with SIGINT and SIGQUIT ignored, and a
  # program started that way would never see the SIGINT we pass on.
  trap - INT QUIT TERM HUP EXIT
  export RANK=$((NODE_RANK * NPROC_PER_NODE + $1)) WORLD_SIZE LOCAL_RANK=$1 LOCAL_WORLD_SIZE=$NPROC_PER_NODE \
    MINIPRETRAIN_RESTART_COUNT=$restarts
  # setsid (which execs in place, keeping the pid) gives the rank a session of
  # its own, so a Ctrl-C at the terminal reaches only this script, which passes
  # it on once. Otherwise each rank would get SIGINT twice, and a program that
  # takes a second SIGINT as "abort now" would skip its clean stop.
  if command -v setsid >/dev/null 2>&1; then
    exec setsid "$MINIPRETRAIN_BIN" "${bin_args[@]}"
  fi
  exec "$MINIPRETRAIN_BIN" "${bin_args[@]}"
}

start_ranks() {
  local local_rank
  for ((local_rank = 0; local_rank < NPROC_PER_NODE; local_rank++)); do
    start_rank "$local_rank" &
    pids[local_rank]=$!
    live_count=$((live_count + 1))
  done
}

# After a failure: SIGTERM to the other ranks, then SIGKILL to those still alive
# after the grace period. Ranks blocked in a collective with the failed one
# would otherwise hang until their own timeout.
stop_the_rest() {
  local ticks=$((KILL_GRACE_SECONDS * 10))
  signal_ranks TERM
  while any_rank_alive && ((ticks-- > 0)); do sleep 0.1; done
  if any_rank_alive; then
    log "ranks still alive after ${KILL_GRACE_SECONDS}s, sending SIGKILL"
    signal_ranks KILL
  fi
}

# Wait for the ranks. This polls rather than blocking in `wait -n`: bash drops
# a child that died of a signal from its job table as soon as it notices, and
# `wait -n` then never reports it, so a SIGKILLed (say, OOM-killed) rank could
# go unnoticed until all the others had exited. `wait PID` still returns such a
# child's status, so each finished rank is found with kill -0 and collected
# with `wait PID`.
wait_for_ranks() {
  local local_rank pid rc
  while ((live_count > 0)); do
    for local_rank in "${!pids[@]}"; do
      pid=${pids[local_rank]}
      [[ -z $pid ]] && continue                # reaped earlier
      kill -0 "$pid" 2>/dev/null && continue  # still running
      rc=0
      wait "$pid" || rc=$?
      pids[local_rank]=""  # reaped: never signal or wait on this pid again
      live_count=$((live_count - 1))
      if ((rc != 0)) && [[ -z $stopping ]]; then
        stopping=failure
        exit_code=$rc
        log "rank $((NODE_RANK * NPROC_PER_NODE + local_rank)) (local rank $local_rank, pid $pid)" \
          "exited with code $rc; stopping the other $live_count rank(s)"
        ((live_count > 0)) && stop_the_rest
      elif ((rc != 0 && exit_code == 0)); then
        exit_code=$rc  # after a signal: a rank that did not stop cleanly
      fi
    done
    ((live_count > 0)) || break
    # Waiting on a background sleep, not a foreground one, lets a trapped signal
    # be handled at once instead of after the sleep.
    sleep 0.2 &
    wait $! || true
  done
}

start_ranks
wait_for_ranks
# torchrun's --max-restarts: all ranks again, from the newest checkpoint.
# Not after a signal, a bad configuration (2) or a diverged run (3): those
# fail the same way again.
while [[ $stopping == failure && -z $signalled ]] && ((restarts < MAX_RESTARTS && exit_code != 2 && exit_code != 3)); do
  restarts=$((restarts + 1))
  log "restart $restarts of $MAX_RESTARTS: starting all $NPROC_PER_NODE rank(s) again with --resume auto"
  ((restarts == 1)) && bin_args+=(--resume auto)
  pids=()
  stopping=""
  exit_code=0
  start_ranks
  wait_for_ranks
done

trap - EXIT
case $stopping in
  failure) log "exiting with code $exit_code" ;;
  signal) ((exit_code == 0)) && log "every rank stopped cleanly after the signal; resume with --resume auto" ;;
esac
exit "$exit_code"
