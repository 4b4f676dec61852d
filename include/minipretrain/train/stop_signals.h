// SIGTERM (what SLURM sends before preemption), SIGINT (Ctrl-C, as the
// launchers pass it on) and SIGUSR1 ask the run to stop at the next step
// boundary with a checkpoint. The handler only records which signal came;
// the trainer reads it once per step and agrees with the other ranks. Repeats
// within 10 s are the same request (SLURM and a launcher both pass one on); a
// later one ends the process at once, the way it would have without us.
#pragma once

namespace minipretrain {

void install_stop_handlers();
// The first stop signal received, or 0.
int stop_signal();

}  // namespace minipretrain
