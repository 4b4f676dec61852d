// `minipretrain plan`: every valid layout of a config, best first, with what
// each would cost (plan/estimate.h) on the cluster its flags describe.
#pragma once

#include <string>

#include "minipretrain/commands/cli.h"
#include "minipretrain/config/config.h"
#include "minipretrain/plan/estimate.h"

namespace minipretrain {

// "80GB", "80GiB", "512MB", "1e9" -> bytes; "450GB/s" -> bytes per second.
// Throws ConfigError naming `flag` for anything else.
double parse_bytes(const std::string& text, const std::string& flag);
double parse_bandwidth(const std::string& text, const std::string& flag);

Cluster cluster_of(const PlanCommand& command, const Config& config);
void run_plan(const PlanCommand& command, const Config& config);

}  // namespace minipretrain
