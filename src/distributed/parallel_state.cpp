#include "minipretrain/distributed/parallel_state.h"

#include <spdlog/spdlog.h>

#include "minipretrain/distributed/gloo_communicator.h"
#include "minipretrain/distributed/gloo_peers.h"
#include "minipretrain/distributed/network.h"
#include "minipretrain/distributed/rendezvous.h"
#include "minipretrain/distributed/nccl_communicator.h"
#include "minipretrain/distributed/nccl_rules_communicator.h"

namespace minipretrain {
namespace {

constexpr int kDefaultMasterPort = 29500;

// The communicator follows the device: Gloo (bound to `gloo_address`) for CPU
// tensors, NCCL for CUDA. A device group on the CPU keeps NCCL's rules when
// asked (tests), so that what would hang on GPUs hangs here too.
std::shared_ptr<Communicator> make_group(const std::string& name, const c10::intrusive_ptr<c10d::Store>& store,
                                         int rank, int size, const torch::Device& device, bool device_group,
                                         std::chrono::milliseconds timeout, const std::string& gloo_address) {
  if (size == 1) return std::make_shared<SoloCommunicator>(name);
  if (device.is_cuda()) {
    return std::make_shared<NcclCommunicator>(name, store, rank, size, device.index(), timeout);
  }
  if (device_group && NcclRulesCommunicator::requested())
    return std::make_shared<NcclRulesCommunicator>(name, store, rank, size, timeout, gloo_address);
  return std::make_shared<GlooCommunicator>(name, store, rank, size, timeout, gloo_address);
}

}  // namespace

ParallelState::ParallelState()
    : world_(std::make_shared<SoloCommunicator>("world")),
      tp_(std::make_shared<SoloCommunicator>("tp")),
      dp_(std::make_shared<SoloCommunicator>("dp")),
      pp_(std::make_shared<SoloCommunicator>("pp")) {}

ParallelState::ParallelState(const LaunchEnv& env, const Config& config, const torch::Device& device) {
  layout_ = {config.parallel.tensor_parallel_size, config.data_parallel_size, config.parallel.pipeline_parallel_size};
  rank_ = env.rank;
  coords_ = layout_.coordinates(rank_);
  if (env.world_size == 1) {
    *this = ParallelState();
    return;
  }
  std::string addr = config.parallel.master_addr.empty() ? env.master_addr : config.parallel.master_addr;
  int64_t port = config.parallel.master_port ? config.parallel.master_port : env.master_port;
  if (addr.empty())
    throw ConfigError("MASTER_ADDR is not set: " + std::to_string(env.world_size) + " processes (launcher " +
                      env.launcher + ") need a rendezvous host; export MASTER_ADDR or pass --master-addr");
  if (port == 0) port = kDefaultMasterPort;
  if (port < 1 || port > 65535) throw ConfigError("master_port must be in 1..65535, got " + std::to_string(port));

  const std::chrono::milliseconds timeout(config.parallel.dist_timeout * 1000);
  const int global_rank = static_cast<int>(rank_), world_size = static_cast<int>(env.world_size);
  const std::string where = addr + ":" + std::to_string(port);
  // Every run has Gloo: the world group carries host values on any device.
  // Chosen before the rendezvous, so that a bad GLOO_SOCKET_IFNAME fails at once.
  GlooAddress gloo_address = choose_gloo_address(addr);
  const bool one_host = env.world_size == env.local_world_size;
  auto store = rendezvous(addr, static_cast<int>(port), global_rank, world_size, one_host, timeout);
  gloo_address = settle_gloo_address(store, where, global_rank, world_size, gloo_address, timeout);
  if (env.local_rank == 0)
    spdlog::info("Gloo binds to {}{}: {}", gloo_address.address,
                 gloo_address.interface.empty() ? "" : " on " + gloo_address.interface, gloo_address.reason);
  check_peers_reachable(store, where, global_rank, world_size, gloo_address.address, timeout);
  if (global_rank == 0 && !device.is_cuda() && NcclRulesCommunicator::requested())
    spdlog::info("The tp, dp and pp groups keep NCCL's rules (MINIPRETRAIN_NCCL_RULES=1)");

  const Layout& l = layout_;
  const Coordinates& c = coords_;
  const std::string& bound = gloo_address.address;
  // The step-boundary vote, non-finite reports, validation loss and the save
  // and resume agreements are host numbers: a CPU group for them, as PyTorch
  // and Megatron keep, instead of copying each to the GPU for NCCL.
  world_ = make_group("world", store, global_rank, static_cast<int>(l.world()), torch::kCPU, false, timeout, bound);
  tp_ = make_group("tp.pp" + std::to_string(c.pp) + ".dp" + std::to_string(c.dp), store, static_cast<int>(c.tp),
                   static_cast<int>(l.tp), device, true, timeout, bound);
  dp_ = make_group("dp.pp" + std::to_string(c.pp) + ".tp" + std::to_string(c.tp), store, static_cast<int>(c.dp),
                   static_cast<int>(l.dp), device, true, timeout, bound);
  pp_ = make_group("pp.dp" + std::to_string(c.dp) + ".tp" + std::to_string(c.tp), store, static_cast<int>(c.pp),
                   static_cast<int>(l.pp), device, true, timeout, bound);
  if (config.log.async_save)
    saves_ = make_group("saves", store, global_rank, static_cast<int>(l.world()), torch::kCPU, false, timeout, bound);
}

std::string ParallelState::describe() const {
  return "Rank " + std::to_string(rank_) + " | DP: " + std::to_string(coords_.dp) + "/" + std::to_string(layout_.dp) +
         " | TP: " + std::to_string(coords_.tp) + "/" + std::to_string(layout_.tp) +
         " | PP: " + std::to_string(coords_.pp) + "/" + std::to_string(layout_.pp);
}

}  // namespace minipretrain
