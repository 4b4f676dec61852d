// Where this process sits in the job, read from whichever launcher started it:
// torchrun, Open MPI, MPICH / Intel MPI (PMI), or SLURM srun. No launcher
// variables at all means a single process.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace minipretrain {

struct LaunchEnv {
  std::string launcher = "none";  // torchrun | openmpi | pmi | slurm | none
  int64_t rank = 0;
  int64_t world_size = 1;
  int64_t local_rank = 0;
  int64_t local_world_size = 1;
  std::string master_addr;  // empty when unknown
  int64_t master_port = 0;  // 0 when unknown
};

// Reads the launch variables through `getenv` (injectable for tests). Throws
// ConfigError for partial or contradicting variables, naming them.
LaunchEnv detect_launch_env(const std::function<std::optional<std::string>(const std::string&)>& getenv);
LaunchEnv detect_launch_env();

// The GPU of this process among the `visible` ones: its local rank, one GPU
// per process; or the only one, where the launcher gave each process its own
// through CUDA_VISIBLE_DEVICES (`per_process_visibility`). Throws ConfigError
// where processes would share a GPU (NCCL refuses that with an obscure error).
int gpu_of_local_rank(const LaunchEnv& env, int visible, bool per_process_visibility);

}  // namespace minipretrain
