#!/usr/bin/env python3
"""Draws the curves of one or more minipretrain runs into one PNG.

    python3 scripts/plot_metrics.py OUTPUT_DIR [OUTPUT_DIR ...] [-o curves.png]

Reads OUTPUT_DIR/metrics.jsonl of each run (the directory's name labels it)
and draws, side by side: training and validation loss against steps, the
same against tokens seen, the learning rate, and throughput in tokens/s.
Needs matplotlib, which scripts/install_deps.sh installs into the project's
.venv: run by a Python without it, the script runs itself again with
.venv/bin/python (or $MINIPRETRAIN_VENV/bin/python, as install_deps.sh).
"""
import argparse
import json
import os
import sys


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fail(message):
    print(f"plot_metrics: error: {message}", file=sys.stderr)
    sys.exit(2)


def read_run(directory):
    path = os.path.join(directory, "metrics.jsonl")
    if not os.path.isfile(path):
        fail(f"{directory} has no metrics.jsonl (is it a minipretrain --output-dir?)")
    train, valid = [], []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                fail(f"{path}:{number}: not JSON ({e.msg})")
            if "val_loss" in record:
                valid.append(record)
            elif "loss" in record:
                train.append(record)
    if not train:
        fail(f"{path} has no training steps yet")
    return train, valid


def main():
    parser = argparse.ArgumentParser(description="Plot minipretrain metrics.jsonl files.")
    parser.add_argument("runs", nargs="+", metavar="OUTPUT_DIR")
    parser.add_argument("-o", "--output", default="curves.png", help="PNG to write (default: curves.png)")
    args = parser.parse_args()
    runs = [(os.path.basename(os.path.normpath(d)) or d, *read_run(d)) for d in args.runs]
    try:
        import matplotlib
    except ImportError:
        # The project's venv has it; unless this already is that venv, hand over.
        venv = os.path.join(ROOT, os.environ.get("MINIPRETRAIN_VENV", ".venv"))
        python = os.path.join(venv, "bin", "python")
        if os.path.isfile(python) and not os.path.samefile(sys.prefix, venv):
            os.execv(python, [python, os.path.abspath(__file__)] + sys.argv[1:])
        fail(f"matplotlib is missing (not in {sys.executable}, nor in {venv}): run scripts/install_deps.sh")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(12, 8))
    (loss_steps, loss_tokens), (lr_axis, speed_axis) = axes
    for label, train, valid in runs:
        steps = [r["step"] for r in train]
        # tokens per step, from a record that has it (older runs lack it)
        scale = train[0]["tokens_seen"] / train[0]["step"] if "tokens_seen" in train[0] else None
        losses = [r["loss"] if r["loss"] is not None else float("nan") for r in train]
        line, = loss_steps.plot(steps, losses, label=f"{label} train")
        if valid:
            loss_steps.plot([r["step"] for r in valid], [r["val_loss"] for r in valid], "o--",
                            color=line.get_color(), label=f"{label} valid")
        if scale:
            loss_tokens.plot([s * scale for s in steps], losses, color=line.get_color(), label=f"{label} train")
            if valid:
                loss_tokens.plot([r["step"] * scale for r in valid], [r["val_loss"] for r in valid], "o--",
                                 color=line.get_color(), label=f"{label} valid")
        lr_axis.plot(steps, [r["lr"] for r in train], color=line.get_color(), label=label)
        speed_axis.plot(steps, [r["tokens_per_s"] for r in train], color=line.get_color(), label=label)
    for axis, x, y in ((loss_steps, "step", "loss (nats)"), (loss_tokens, "tokens seen", "loss (nats)"),
                       (lr_axis, "step", "learning rate"), (speed_axis, "step", "tokens/s")):
        axis.set_xlabel(x)
        axis.set_ylabel(y)
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    figure.suptitle(", ".join(label for label, *_ in runs))
    figure.tight_layout()
    figure.savefig(args.output, dpi=100)
    print(f"plot_metrics: wrote {args.output}")


if __name__ == "__main__":
    main()
