// The pipeline schedules simulated in one process (parallel/schedule.h), as
// the planner and the step line use them: their bubble against the closed
// form, and the critical path with unequal stages.
#include <gtest/gtest.h>

#include <algorithm>

#include "minipretrain/parallel/schedule.h"

using namespace minipretrain;

TEST(Plan, BubbleTheoryIsTheSchedulesFormula) {
  for (const std::string& schedule : {"gpipe", "1f1b"})
    for (int64_t pp : {1, 2, 3, 4, 8})
      for (int64_t m : {1, 2, 3, 8, 16}) {
        const double formula = static_cast<double>(pp - 1) / static_cast<double>(m + pp - 1);
        EXPECT_NEAR(simulate_schedule(schedule, pp, m).bubble, formula, 1e-12) << schedule << " PP " << pp << " M " << m;
      }
}

// Unequal stages: the slowest stage sets the pace, and transfers add up on
// the critical path (2 stages, 1 microbatch: F0, send, F1, B1, send, B0).
TEST(Plan, SimulatedScheduleFollowsTheCriticalPath) {
  const StageCosts costs{{1.0, 3.0}, {2.0, 6.0}, 0.5};
  const PipelineSimulation one = simulate_schedule("1f1b", 2, 1, 1, &costs);
  EXPECT_DOUBLE_EQ(one.makespan, 1.0 + 0.5 + 3.0 + 6.0 + 0.5 + 2.0);
  EXPECT_DOUBLE_EQ(one.busy[0], 3.0);
  EXPECT_DOUBLE_EQ(one.busy[1], 9.0);
  // GPipe holds every microbatch, 1F1B at most PP - stage.
  for (int64_t m : {2, 8}) {
    EXPECT_EQ(peak_in_flight(make_schedule("gpipe", 4, 0, m)), m);
    EXPECT_EQ(peak_in_flight(make_schedule("1f1b", 4, 0, m)), std::min<int64_t>(4, m));
  }
}
