#!/usr/bin/env bash
# Launches minipretrain through Open MPI's mpirun: one command for the whole
# job, on this host or on the hosts of a hostfile. Each rank learns who it is
# from the OMPI_COMM_WORLD_* variables that mpirun sets, and finds rank 0's
# rendezvous at MASTER_ADDR:MASTER_PORT.
#
#   NPROC_PER_NODE=4 scripts/launch_mpi.sh --data-dir data/tokens
#   NP=16 HOSTFILE=hosts.txt TP_SIZE=4 scripts/launch_mpi.sh
#   MPIRUN_ARGS="-x LD_LIBRARY_PATH -x OMP_NUM_THREADS" HOSTFILE=hosts.txt NP=8 scripts/launch_mpi.sh
#
# Settings (environment, defaults in brackets):
#   NP [NPROC_PER_NODE * NNODES]: total processes (NPROC_PER_NODE [1], NNODES [1])
#   HOSTFILE []: Open MPI hostfile, passed as --hostfile
#   MASTER_ADDR [first host of HOSTFILE, else 127.0.0.1]  MASTER_PORT [29500]
#   TP_SIZE  PP_SIZE  MICRO_BATCH_SIZE  MAX_STEPS [unset: the config file's or the binary's]
#   MINIPRETRAIN_BIN [<script dir>/../build/minipretrain]; with a hostfile it
#     must exist at the same path on every host.
#   MPIRUN_ARGS []: extra mpirun arguments, split on whitespace (no quoting).
#   KILL_GRACE_SECONDS [30]: how long mpirun lets ranks stop (and save a
#     checkpoint) after SIGTERM before it SIGKILLs them.
#   MAX_RESTARTS [0]: when the job fails, run it again with --resume auto (from
#     the newest checkpoint in --output-dir), at most this many times; the
#     ranks see the attempt as MINIPRETRAIN_RESTART_COUNT. Not after a signal,
#     nor after exit code 2 (a bad configuration) or 3 (training diverged).
# Every argument goes to the binary unchanged, after the flags built from the
# settings above; the binary takes a repeated flag's last value.
#
# mpirun handles signals and failures itself. When one rank fails it stops the
# others and exits with that rank's code. On SIGINT or SIGTERM it sends the
# ranks SIGTERM, which makes them save a checkpoint and stop, and SIGKILLs
# those still running KILL_GRACE_SECONDS later; it exits non-zero even when
# every rank stopped cleanly.
set -euo pipefail

readonly PROG=launch_mpi

die() {  # one line on stderr, exit 2: a setting is wrong, nothing was started
  echo "$PROG: error: $*" >&2
  exit 2
}

NPROC_PER_NODE=${NPROC_PER_NODE:-1}
NNODES=${NNODES:-1}
HOSTFILE=${HOSTFILE:-}
MASTER_PORT=${MASTER_PORT:-29500}
MINIPRETRAIN_BIN=${MINIPRETRAIN_BIN:-$(dirname "$0")/../build/minipretrain}
MPIRUN_ARGS=${MPIRUN_ARGS:-}
KILL_GRACE_SECONDS=${KILL_GRACE_SECONDS:-30}
MAX_RESTARTS=${MAX_RESTARTS:-0}

# ---- validation: fail before anything starts, with the setting's name --------
for name in NPROC_PER_NODE NNODES; do
  [[ ${!name} =~ ^[1-9][0-9]{0,8}$ ]] || die "$name must be a positive integer, got '${!name}'"
done
NP=${NP:-$((NPROC_PER_NODE * NNODES))}
# A plain digit pattern (no leading zeros, no sign) also rules out values that
# bash arithmetic would misread, such as 08 (octal).
for name in NP MASTER_PORT TP_SIZE PP_SIZE MICRO_BATCH_SIZE MAX_STEPS KILL_GRACE_SECONDS; do
  [[ ${!name:-1} =~ ^[1-9][0-9]{0,8}$ ]] || die "$name must be a positive integer, got '${!name}'"
done
((MASTER_PORT <= 65535)) || die "MASTER_PORT must be at most 65535, got $MASTER_PORT"
[[ $MAX_RESTARTS =~ ^(0|[1-9][0-9]{0,8})$ ]] || die "MAX_RESTARTS must be a non-negative integer, got '$MAX_RESTARTS'"
if [[ -n $HOSTFILE ]]; then
  [[ -f $HOSTFILE && -r $HOSTFILE ]] || die "HOSTFILE '$HOSTFILE' is not a readable file"
fi
command -v mpirun >/dev/null 2>&1 || die "mpirun is not on PATH (install Open MPI: apt-get install openmpi-bin)"
if [[ $MINIPRETRAIN_BIN != */* ]] && command -v -- "$MINIPRETRAIN_BIN" >/dev/null 2>&1; then
  MINIPRETRAIN_BIN=$(command -v -- "$MINIPRETRAIN_BIN")  # a bare name is looked up on PATH
fi
[[ -f $MINIPRETRAIN_BIN && -x $MINIPRETRAIN_BIN ]] ||
  die "MINIPRETRAIN_BIN '$MINIPRETRAIN_BIN' is not an executable file (build it, or set MINIPRETRAIN_BIN)"
# An absolute path means the same file on every host, whatever directory
# mpirun starts the remote ranks in.
MINIPRETRAIN_BIN=$(cd "$(dirname "$MINIPRETRAIN_BIN")" && pwd)/$(basename "$MINIPRETRAIN_BIN")

# Rank 0 is the rendezvous host. mpirun fills the hostfile's first host first,
# so rank 0 lands there: that host is the natural MASTER_ADDR. A hostfile line
# reads "[user@]host [slots=N ...]"; '#' starts a comment.
if [[ -z ${MASTER_ADDR:-} ]]; then
  MASTER_ADDR=127.0.0.1
  if [[ -n $HOSTFILE ]]; then
    first_host=$(awk '{ sub(/#.*/, "") } NF { print $1; exit }' "$HOSTFILE")
    [[ -n $first_host ]] || die "HOSTFILE '$HOSTFILE' names no host"
    MASTER_ADDR=${first_host#*@}
  fi
fi
export MASTER_ADDR MASTER_PORT

# ---- the binary's command line ---------------------------------------------
source "$(dirname "$0")/launcher_flags.sh"
launcher_flags "$@"

# ---- the mpirun command line -----------------------------------------------
# --bind-to none: Open MPI would otherwise pin each rank to one core (for
# NP <= 2) or one socket, and the binary's intra-op threads, which it sizes
# itself (--num-threads), would all share that core.
# -x: pass the rendezvous address to every rank, remote ones included; mpirun
# does not forward the environment to other hosts on its own.
mpirun_cmd=(mpirun -np "$NP" --bind-to none -x MASTER_ADDR -x MASTER_PORT -x MINIPRETRAIN_RESTART_COUNT
  --mca odls_base_sigkill_timeout "$KILL_GRACE_SECONDS")
[[ -n $HOSTFILE ]] && mpirun_cmd+=(--hostfile "$HOSTFILE")
# Open MPI refuses to run as root unless told to; containers often run as root.
(($(id -u) == 0)) && mpirun_cmd+=(--allow-run-as-root)
# On a single host Open MPI offers one slot per physical core and refuses to
# start more processes than that. The processes here mostly wait on each other
# (a tiny model, a test run), so allow it. Hardware threads do not count as
# slots, so compare with the physical cores, where lscpu can tell them apart.
if [[ -z $HOSTFILE ]]; then
  slots=$(nproc)
  if command -v lscpu >/dev/null 2>&1; then
    cores=$(lscpu -p=CORE,SOCKET 2>/dev/null | grep -v '^#' | sort -u | wc -l) || cores=0
    ((cores > 0 && cores < slots)) && slots=$cores
  fi
  ((NP > slots)) && mpirun_cmd+=(--oversubscribe)
fi
# Word-split on purpose: MPIRUN_ARGS holds several arguments. read -a splits
# without expanding globs.
read -r -a extra_mpirun_args <<<"$MPIRUN_ARGS"
mpirun_cmd+=(${extra_mpirun_args[@]+"${extra_mpirun_args[@]}"})

# The binary reads several launchers' variables and refuses to start when two
# of them disagree. torchrun-style or PMI variables left in this shell would be
# inherited by the local ranks next to Open MPI's and describe another process;
# drop them. (SLURM_* must stay: mpirun reads the allocation from them, and the
# binary ignores them once it has found Open MPI's.)
unset RANK WORLD_SIZE LOCAL_RANK LOCAL_WORLD_SIZE PMI_RANK PMI_SIZE MPI_LOCALRANKID MPI_LOCALNRANKS

where="this host"
[[ -n $HOSTFILE ]] && where="the hosts of $HOSTFILE"
echo "$PROG: launching $MINIPRETRAIN_BIN via mpirun: $NP process(es) on $where," \
  "master $MASTER_ADDR:$MASTER_PORT" >&2
export MINIPRETRAIN_RESTART_COUNT=0
if ((MAX_RESTARTS == 0)); then
  # exec: mpirun gets the signals directly and its exit status is ours.
  exec "${mpirun_cmd[@]}" "$MINIPRETRAIN_BIN" "${bin_args[@]}"
fi

# With restarts this script stays, runs mpirun in the background and passes a
# signal on to it (which then stops the job, and no restart follows).
signalled=""
mpirun_pid=""
forward() {  # SIGNAL
  signalled=$1
  [[ -n $mpirun_pid ]] && { kill -s "$1" "$mpirun_pid" 2>/dev/null || true; }
  return 0
}
trap 'forward INT' INT
trap 'forward TERM' TERM
while :; do
  "${mpirun_cmd[@]}" "$MINIPRETRAIN_BIN" "${bin_args[@]}" &
  mpirun_pid=$!
  # wait returns early when a trapped signal arrives: then wait again.
  while :; do
    wait "$mpirun_pid" && rc=0 || rc=$?
    kill -0 "$mpirun_pid" 2>/dev/null || break
  done
  if ((rc == 0)) || [[ -n $signalled ]] || ((rc == 2 || rc == 3 || MINIPRETRAIN_RESTART_COUNT >= MAX_RESTARTS)); then
    exit "$rc"
  fi
  MINIPRETRAIN_RESTART_COUNT=$((MINIPRETRAIN_RESTART_COUNT + 1))
  ((MINIPRETRAIN_RESTART_COUNT == 1)) && bin_args+=(--resume auto)
  echo "$PROG: mpirun exited with code $rc; restart $MINIPRETRAIN_RESTART_COUNT of $MAX_RESTARTS with --resume auto" >&2
done
