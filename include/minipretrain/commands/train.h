// `minipretrain` (train, the default command): sets up the process for its
// launcher (device, threads, logging), builds the trainer and runs the step
// loop with its log sinks and checkpoint policy.
#pragma once

#include "minipretrain/config/config.h"
#include "minipretrain/train/trainer.h"  // DivergedError: exit code 3

namespace minipretrain {

// Trains to --max-steps, or until a stop (--exit-interval, a signal,
// --exit-duration-mins) after a checkpoint. With `print_config`, prints the
// resolved config, parameter counts and the memory estimate instead.
void run_train(Config config, bool print_config);

}  // namespace minipretrain
