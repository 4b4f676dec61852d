# Sourced by the launchers: the binary's flags for the settings TP_SIZE,
# PP_SIZE, MICRO_BATCH_SIZE and MAX_STEPS that are set (a --config file's
# values stand for the others), then the user's arguments, which come last:
# minipretrain takes the last occurrence of a repeated flag.
launcher_flags() {
  bin_args=()
  local setting name
  for setting in TP_SIZE:--tensor-parallel-size PP_SIZE:--pipeline-parallel-size \
    MICRO_BATCH_SIZE:--micro-batch-size MAX_STEPS:--max-steps; do
    name=${setting%%:*}
    if [[ -n ${!name:-} ]]; then bin_args+=("${setting#*:}" "${!name}"); fi
  done
  bin_args+=("$@")
}
