// The pipeline schedules simulated in one process (parallel/schedule.h), as
// the planner and the step line use them: with unit costs their bubble is the
// literature's closed form; with unequal stages they follow the critical path.
#include <gtest/gtest.h>

#include <algorithm>

#include "minipretrain/parallel/schedule.h"
#include "test_support.h"

using namespace minipretrain;
using minipretrain::test::literature_bubble;

// GPipe and 1F1B at any PP and M; interleaved 1F1B where Megatron runs it
// (M a multiple of PP); ZB-H1 from M = PP on, where its steady state exists.
TEST(Plan, BubbleTheoryIsTheSchedulesFormula) {
  for (PipelineSchedule schedule : {PipelineSchedule::GPipe, PipelineSchedule::OneFOneB})
    for (int64_t pp : {1, 2, 3, 4, 8})
      for (int64_t m : {1, 2, 3, 8, 16})
        EXPECT_NEAR(simulate_schedule(schedule, pp, m).bubble, literature_bubble(schedule, pp, m), 1e-12)
            << name_of(schedule) << " PP " << pp << " M " << m;
  for (int64_t pp : {2, 3, 4, 8})
    for (int64_t v : {2, 3})
      for (int64_t groups : {1, 2, 4}) {
        const int64_t m = groups * pp;
        EXPECT_NEAR(simulate_schedule(PipelineSchedule::Interleaved1F1B, pp, m, v).bubble,
                    literature_bubble(PipelineSchedule::Interleaved1F1B, pp, m, v), 1e-12)
            << "PP " << pp << " V " << v << " M " << m;
      }
  for (int64_t pp : {2, 3, 4, 8})
    for (int64_t m : {pp, pp + 1, 2 * pp, int64_t{16}})
      EXPECT_NEAR(simulate_schedule(PipelineSchedule::ZeroBubbleH1, pp, m).bubble,
                  literature_bubble(PipelineSchedule::ZeroBubbleH1, pp, m), 1e-12)
          << "PP " << pp << " M " << m;
}

// Unequal stages: the slowest stage sets the pace, and transfers add up on
// the critical path (2 stages, 1 microbatch: F0, send, F1, B1, send, B0).
TEST(Plan, SimulatedScheduleFollowsTheCriticalPath) {
  const StageCosts costs{{1.0, 3.0}, {2.0, 6.0}, 0.5};
  const PipelineSimulation one = simulate_schedule(PipelineSchedule::OneFOneB, 2, 1, 1, &costs);
  EXPECT_DOUBLE_EQ(one.makespan, 1.0 + 0.5 + 3.0 + 6.0 + 0.5 + 2.0);
  EXPECT_DOUBLE_EQ(one.busy[0], 3.0);
  EXPECT_DOUBLE_EQ(one.busy[1], 9.0);
  // GPipe holds every microbatch, 1F1B at most PP - stage.
  for (int64_t m : {2, 8}) {
    EXPECT_EQ(peak_in_flight(make_schedule(PipelineSchedule::GPipe, 4, 0, m)), m);
    EXPECT_EQ(peak_in_flight(make_schedule(PipelineSchedule::OneFOneB, 4, 0, m)), std::min<int64_t>(4, m));
  }
}
