#include "minipretrain/distributed/launch_env.h"

#include <cstdlib>
#include <vector>

#include "minipretrain/config/config.h"

namespace minipretrain {
namespace {

using Getenv = std::function<std::optional<std::string>(const std::string&)>;

// The variables each launcher sets: rank, size, local rank, local size.
struct Scheme {
  const char* name;
  const char* rank;
  const char* size;
  const char* local_rank;
  const char* local_size;  // may be null: derived from the size on one node
};

const std::vector<Scheme>& schemes() {
  static const std::vector<Scheme> all = {
      {"torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"},
      {"openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
       "OMPI_COMM_WORLD_LOCAL_SIZE"},
      {"pmi", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"},
      {"slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE"},
  };
  return all;
}

int64_t to_int(const std::string& name, const std::string& text) {
  size_t used = 0;
  int64_t value = -1;
  try {
    value = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size() || value < 0)
    throw ConfigError("launch variable " + name + "='" + text + "' is not a non-negative integer");
  return value;
}

// SLURM_NTASKS_PER_NODE may read "4(x2)"; the leading count is what we need.
std::string leading_count(const std::string& text) {
  size_t end = 0;
  while (end < text.size() && std::isdigit(static_cast<unsigned char>(text[end]))) ++end;
  return end == 0 ? text : text.substr(0, end);
}

std::optional<LaunchEnv> read_scheme(const Scheme& s, const Getenv& getenv) {
  auto rank = getenv(s.rank), size = getenv(s.size);
  if (!rank && !size) return std::nullopt;
  if (!rank || !size)
    throw ConfigError(std::string("incomplete launch environment: ") + (rank ? s.rank : s.size) +
                      " is set but " + (rank ? s.size : s.rank) + " is not");
  LaunchEnv env;
  env.launcher = s.name;
  env.rank = to_int(s.rank, *rank);
  env.world_size = to_int(s.size, *size);
  if (env.world_size == 0 || env.rank >= env.world_size)
    throw ConfigError(std::string("launch variables contradict: ") + s.rank + "=" + *rank + " with " +
                      s.size + "=" + *size);
  auto local_rank = getenv(s.local_rank);
  auto local_size = s.local_size ? getenv(s.local_size) : std::nullopt;
  env.local_rank = local_rank ? to_int(s.local_rank, *local_rank) : env.rank;
  env.local_world_size = local_size ? to_int(s.local_size, leading_count(*local_size)) : env.world_size;
  if (env.local_world_size == 0 || env.local_rank >= env.local_world_size || env.local_world_size > env.world_size)
    throw ConfigError(std::string("launch variables contradict: ") + s.local_rank + "=" +
                      std::to_string(env.local_rank) + ", local size " + std::to_string(env.local_world_size) +
                      ", world size " + std::to_string(env.world_size));
  return env;
}

// SLURM_JOB_NODELIST "node[01-04],gpu7" -> "node01": the first host of the job.
std::string first_slurm_host(const std::string& nodelist) {
  std::string host;
  for (size_t i = 0; i < nodelist.size() && nodelist[i] != ','; ++i) {
    if (nodelist[i] != '[') {
      host += nodelist[i];
      continue;
    }
    for (++i; i < nodelist.size() && std::isdigit(static_cast<unsigned char>(nodelist[i])); ++i)
      host += nodelist[i];
    break;
  }
  return host;
}

}  // namespace

LaunchEnv detect_launch_env(const Getenv& getenv) {
  std::optional<LaunchEnv> found;
  for (const Scheme& s : schemes()) {
    // Under an allocation, mpirun's processes also inherit the job's SLURM_*
    // variables, which then describe the job step, not this process.
    if (found && std::string(s.name) == "slurm") break;
    auto env = read_scheme(s, getenv);
    if (!env) continue;
    // Two launchers' variables at once (a torchrun inside mpirun): they must agree.
    if (found && (found->rank != env->rank || found->world_size != env->world_size))
      throw ConfigError("launch variables contradict: " + found->launcher + " says rank " +
                        std::to_string(found->rank) + " of " + std::to_string(found->world_size) + ", " +
                        env->launcher + " says rank " + std::to_string(env->rank) + " of " +
                        std::to_string(env->world_size));
    if (!found) found = env;
  }
  LaunchEnv env = found.value_or(LaunchEnv{});
  if (auto addr = getenv("MASTER_ADDR")) env.master_addr = *addr;
  if (auto port = getenv("MASTER_PORT")) env.master_port = to_int("MASTER_PORT", *port);
  // torchrun's agent serves its own TCPStore on MASTER_PORT for the whole run
  // and says so with TORCHELASTIC_USE_AGENT_STORE=True; rank 0 could not bind
  // it, and our store speaks another protocol, so ours takes the next port.
  if (env.launcher == "torchrun" && env.master_port > 0 && getenv("TORCHELASTIC_USE_AGENT_STORE") == "True") {
    if (env.master_port == 65535)
      throw ConfigError("MASTER_PORT=65535 is torchrun's own store, and the rendezvous takes the port after it: "
                        "give torchrun a lower --master-port");
    ++env.master_port;
  }
  if (env.master_addr.empty() && env.launcher == "slurm")
    if (auto nodes = getenv("SLURM_JOB_NODELIST")) env.master_addr = first_slurm_host(*nodes);
  return env;
}

int gpu_of_local_rank(const LaunchEnv& env, int visible, bool per_process_visibility) {
  if (env.local_world_size <= visible) return static_cast<int>(env.local_rank);
  if (visible == 1 && per_process_visibility) return 0;
  throw ConfigError(std::to_string(env.local_world_size) + " processes on this node, " + std::to_string(visible) +
                    " GPU" + (visible == 1 ? "" : "s") +
                    " visible to each: one GPU per process (start fewer per node, give each its own through "
                    "CUDA_VISIBLE_DEVICES, or use --device cpu)");
}

LaunchEnv detect_launch_env() {
  return detect_launch_env([](const std::string& name) -> std::optional<std::string> {
    const char* value = std::getenv(name.c_str());
    return value ? std::optional<std::string>(value) : std::nullopt;
  });
}

}  // namespace minipretrain
