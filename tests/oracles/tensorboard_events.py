#!/usr/bin/env python3
"""TensorBoard's own reader as the oracle of our event files.

    tensorboard_events.py TB_DIR RUN_DIR [RESUMED_AT_STEP]

reads TB_DIR the way `tensorboard --logdir` does (EventAccumulator over the
directory: every file in name order, CRCs checked, what a restart orphaned
purged) and checks that every scalar it shows is RUN_DIR/metrics.jsonl's
value at that step and that nothing is missing. With RESUMED_AT_STEP, the
newest event file must open with a SessionLog START that keeps the steps
the checkpoint holds (<= RESUMED_AT_STEP) and drops the later ones.
"""
import json
import os
import sys

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
from tensorboard.compat.proto import event_pb2

from common import check, fail

# TensorBoard tag -> metrics.jsonl key, for training and validation records.
TRAIN = {f"train/{k}": k for k in ("loss", "lr", "grad_norm", "tokens_per_s", "skipped_total", "peak_rss_mb", "bubble")}
ONLY_WITH_PIPELINE = "train/bubble"  # written for PP > 1 only
VAL = {"val/loss": "val_loss", "val/ppl": "val_ppl"}


def read_metrics(run_dir):
    """(tag, step) -> value, from metrics.jsonl (a resumed run rewrites it
    without what the interrupted run logged after the checkpoint)."""
    values = {}
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            for tag, key in (VAL if "val_loss" in record else TRAIN).items():
                if key in record:
                    values[(tag, record["step"])] = record[key]
    return values


def event_files(tb_dir):
    return sorted(os.path.join(tb_dir, n) for n in os.listdir(tb_dir) if n.startswith("events.out.tfevents."))


def check_resume(tb_dir, resumed_at):
    newest = event_files(tb_dir)[-1]
    # The raw records, as written (EventFileLoader would rewrite some kinds).
    events = [event_pb2.Event.FromString(raw) for raw in RawEventFileLoader(newest).Load()]
    starts = [e.step for e in events if e.HasField("session_log") and e.session_log.status == event_pb2.SessionLog.START]
    first_scalar = next((e.step for e in events if e.HasField("summary")), None)
    opening = ", ".join(f"{e.WhichOneof('what')} at step {e.step}" for e in events[:3])
    print(f"{newest}: opens with {opening}; SessionLog START at steps {starts}, first scalar at step {first_scalar}")
    check(len(starts) == 1, f"{newest}: {len(starts)} SessionLog START events, want 1 (it opens with {opening})")
    # TensorBoard purges every earlier event at a step >= the START's step.
    check(resumed_at < starts[0] and (first_scalar is None or starts[0] <= first_scalar),
          f"{newest}: SessionLog START at step {starts[0]}: TensorBoard then "
          f"{'drops steps the checkpoint holds' if starts[0] <= resumed_at else 'keeps orphaned steps'} "
          f"(resumed after step {resumed_at}, first scalar at {first_scalar})")


def main(argv):
    if len(argv) not in (2, 3):
        fail(__doc__)
    tb_dir, run_dir = argv[0], argv[1]
    if len(argv) == 3:
        check_resume(tb_dir, int(argv[2]))  # first: it says why steps would be missing
    accumulator = EventAccumulator(tb_dir, size_guidance={"scalars": 0})  # 0: keep every event
    accumulator.Reload()
    check(accumulator.file_version == 2.0, f"{tb_dir}: file_version {accumulator.file_version!r}")
    shown = {}
    for tag in accumulator.Tags()["scalars"]:
        for e in accumulator.Scalars(tag):
            check(e.wall_time > 1.7e9, f"{tb_dir}: {tag} at step {e.step} has wall time {e.wall_time}")
            shown[(tag, e.step)] = e.value
    print(f"{tb_dir}: {len(event_files(tb_dir))} event files; TensorBoard shows {len(shown)} scalars of tags "
          f"{sorted(accumulator.Tags()['scalars'])} at steps {sorted({s for _, s in shown})}")

    expected = read_metrics(run_dir)
    for key, value in sorted(shown.items()):
        check(key in expected, f"TensorBoard shows {key[0]} at step {key[1]}, which metrics.jsonl does not have")
        # Scalars are stored as float32.
        check(np.float32(value) == np.float32(expected[key]),
              f"{key[0]} at step {key[1]}: TensorBoard {value!r}, metrics.jsonl {expected[key]!r}")
    missing = sorted(k for k in set(expected) - set(shown) if k[0] != ONLY_WITH_PIPELINE)
    check(not missing, f"metrics.jsonl has {missing}, which TensorBoard does not show")
    print(f"{run_dir}/metrics.jsonl: all {len(shown)} values equal at their steps")


if __name__ == "__main__":
    main(sys.argv[1:])
