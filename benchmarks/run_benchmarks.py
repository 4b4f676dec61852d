#!/usr/bin/env python3
"""Speed and memory figures of the built binary on this machine.

Prints one line per measurement; nothing here passes or fails. The README's
performance section is copied from its output. Takes ~15 minutes on 2 cores;
run it on an idle machine (never during a build).

Usage: benchmarks/run_benchmarks.py [--build BUILD_DIR] [--only NAME ...]
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--hidden-size", "768", "--intermediate-size", "3072", "--num-layers", "12", "--num-attention-heads", "12",
         "--vocab-size", "32000", "--max-seq-length", "512", "--num-train-samples", "256"]
port = [29700]


def ranks(binary, n, out, args, threads):
    """Starts n ranks with torchrun's variables; returns their logs."""
    port[0] += 1
    procs = []
    for r in range(n):
        env = dict(os.environ, RANK=str(r), WORLD_SIZE=str(n), LOCAL_RANK=str(r), LOCAL_WORLD_SIZE=str(n),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port[0]))
        cmd = [binary, "--output-dir", out, "--log-interval", "1", "--save-interval", "100000",
               "--num-threads", str(threads)] + args
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = [p.communicate()[0] for p in procs]
    for r, (p, log) in enumerate(zip(procs, logs)):
        if p.returncode != 0:
            sys.exit(f"rank {r} failed:\n{log}")
    return logs


def steps(out, skip):
    records = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    return [r for r in records if "loss" in r][skip:]


def median(records, key):
    return statistics.median(r[key] for r in records)


def peak_rss_gb(log):
    m = re.findall(r"Peak resident memory of rank \d+: ([0-9.]+) MB", log)
    return float(m[-1]) / 1e3


def startup(log):
    return float(re.search(r"Start-up took ([0-9.]+) s", log).group(1))


def flops_per_token(hidden=768, layers=12, vocab=32000, inter=3072, seq=512):
    """6 N (N without the embedding lookup) + 12 L s h for attention, as in PaLM's MFU."""
    n = layers * (4 * hidden * hidden + 3 * hidden * inter) + vocab * hidden
    return 6 * n + 12 * layers * seq * hidden


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--build", default=os.path.join(ROOT, "build"))
    parser.add_argument("--only", nargs="*", help="gemm small recompute pipeline dp startup")
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"],
                        help="of the recompute and dp runs (the pipeline runs are fp32); fp32 where the CPU emulates bf16")
    a = parser.parse_args()
    binary = os.path.join(a.build, "minipretrain")
    wanted = lambda name: not a.only or name in a.only
    work = tempfile.mkdtemp()

    subprocess.run(["cmake", "--build", a.build, "--target", "minipretrain-gemm-ceiling"], check=True,
                   stdout=subprocess.DEVNULL)
    ceiling = {}
    gemm = subprocess.run([os.path.join(a.build, "minipretrain-gemm-ceiling"), "2048", "2"], check=True,
                          capture_output=True, text=True).stdout
    for line in gemm.splitlines():
        m = re.match(r"gemm (\w+) .*: ([0-9.]+) GFLOP/s", line)
        ceiling[m.group(1)] = float(m.group(2))
    if wanted("gemm"):
        print(f"GEMM ceiling, n=2048, 2 threads: fp32 {ceiling['fp32']:.0f} GFLOP/s, bf16 {ceiling['bf16']:.0f} GFLOP/s")

    if wanted("small"):
        for precision in ("fp32", "bf16"):
            out = os.path.join(work, "small_" + precision)
            log = ranks(binary, 1, out, SMALL + ["--micro-batch-size", "4", "--global-batch-size", "4",
                                                 "--max-steps", "5", "--precision", precision], 2)[0]
            s = steps(out, 1)
            tps = median(s, "tokens_per_s")
            mfu = tps * flops_per_token() / 1e9 / ceiling[precision]
            print(f"Small seq 512 micro-batch 4, 1 process x 2 threads, {precision}: {tps:.0f} tokens/s, "
                  f"{median(s, 'ms_per_step'):.0f} ms/step = forward {median(s, 'forward_ms'):.0f} + backward "
                  f"{median(s, 'backward_ms'):.0f} + optimizer {median(s, 'optimizer_ms'):.0f} (+ rest); "
                  f"MFU {100 * mfu:.0f}% of the {precision} GEMM ceiling; peak RSS {peak_rss_gb(log):.2f} GB; "
                  f"start-up {startup(log):.2f} s")

    if wanted("recompute"):
        rss = {}
        for recompute in ("none", "full"):
            out = os.path.join(work, "recompute_" + recompute)
            log = ranks(binary, 1, out, SMALL + ["--micro-batch-size", "8", "--global-batch-size", "8",
                                                 "--max-steps", "2", "--precision", a.precision, "--recompute",
                                                 recompute], 2)[0]
            rss[recompute] = peak_rss_gb(log)
            rss[recompute + "_ms"] = median(steps(out, 1), "ms_per_step")
        print(f"Small micro-batch 8 {a.precision}: peak RSS {rss['none']:.2f} GB without recompute, {rss['full']:.2f} GB with "
              f"--recompute full ({100 * rss['full'] / rss['none']:.0f}%); "
              f"{rss['none_ms']:.0f} vs {rss['full_ms']:.0f} ms/step")

    if wanted("pipeline"):
        # Every schedule on Small, M = 8, fp32 (so the figures do not depend on
        # native bf16), 1 thread per process: PP 4 puts 4 processes on a
        # 2-core machine, so its figures are oversubscribed there.
        cores = os.cpu_count()
        schedules = (("1f1b", []), ("zb-h1", []), ("interleaved-1f1b", ["--virtual-pipeline-stages", "2"]))
        for pp in (2, 4):
            for schedule, extra in schedules:
                out = os.path.join(work, f"pp{pp}_{schedule}")
                args = SMALL + ["--micro-batch-size", "1", "--global-batch-size", "8", "--max-steps", "3",
                                "--pipeline-parallel-size", str(pp), "--pipeline-schedule", schedule,
                                "--precision", "fp32"] + extra
                logs = ranks(binary, pp, out, args, 1)
                used = re.search(r"Layers per (?:virtual )?stage: ([0-9,]+)", logs[0]).group(1)
                s = steps(out, 1)
                note = f" (oversubscribed: {pp} processes on {cores} cores)" if pp > cores else ""
                print(f"Small PP={pp} M=8 {schedule}{' V=2' if extra else ''} fp32, 1 thread per process{note}, "
                      f"layers {used}: bubble {median(s, 'bubble'):.2f} (theory {median(s, 'bubble_theory'):.2f}), "
                      f"{median(s, 'tokens_per_s'):.0f} tokens/s, {median(s, 'ms_per_step'):.0f} ms/step, peak RSS "
                      f"per rank {', '.join(f'{peak_rss_gb(log):.2f}' for log in logs)} GB")
        # What splitting the backward into B and W costs: one process, the
        # same microbatches, the backward time whole and as B + W.
        backward = {}
        for schedule in ("1f1b", "zb-h1"):
            out = os.path.join(work, "split_" + schedule)
            ranks(binary, 1, out, SMALL + ["--micro-batch-size", "1", "--global-batch-size", "2", "--max-steps", "3",
                                           "--pipeline-schedule", schedule, "--precision", "fp32"], 1)
            backward[schedule] = median(steps(out, 1), "backward_ms")
        print(f"Small M=2 fp32, 1 process x 1 thread: backward {backward['1f1b']:.0f} ms whole vs "
              f"{backward['zb-h1']:.0f} ms as B + W ({100 * backward['zb-h1'] / backward['1f1b']:.0f}%)")

    if wanted("startup"):
        # A rank's start-up against the whole model's: XL at its config's
        # TP 4 x PP 4, each rank's share built alone in this one process
        # (16 ranks at once would not fit 24 GB, nor would XL's whole state).
        subprocess.run(["cmake", "--build", a.build, "--target", "minipretrain-startup"], check=True,
                       stdout=subprocess.DEVNULL)
        lines = subprocess.run([os.path.join(a.build, "minipretrain-startup"), os.path.join(ROOT, "configs", "xl.json"),
                                "2"], check=True, capture_output=True, text=True).stdout.splitlines()
        draws = [float(re.search(r"drawn in ([0-9.]+) s", line).group(1)) for line in lines[:-2]]
        states = [float(re.search(r"AdamW state in ([0-9.]+) s", line).group(1)) for line in lines[:-2]]
        print(f"XL TP 4 x PP 4, 2 threads: a rank builds and draws its share in {min(draws):.2f}-{max(draws):.2f} s "
              f"(median {statistics.median(draws):.2f}), its gradient buffer and AdamW state in "
              f"{min(states):.2f}-{max(states):.2f} s; {lines[-2]}; {lines[-1]}")

    if wanted("dp"):
        # One bucket of everything cannot start before backward ends: the
        # same binary without overlap, for comparison.
        result, exposed = {}, {}
        for name, dp, threads, bucket_mb in (("dp1", 1, 2, 25), ("dp2", 2, 1, 25), ("dp2_one_bucket", 2, 1, 100000)):
            out = os.path.join(work, name)
            ranks(binary, dp, out, SMALL + ["--micro-batch-size", "4", "--global-batch-size", "8", "--max-steps", "3",
                                            "--precision", a.precision, "--ddp-bucket-mb", str(bucket_mb)], threads)
            result[name] = median(steps(out, 1), "tokens_per_s")
            exposed[name] = median(steps(out, 1), "dp_ms")
        print(f"Small {a.precision} global batch 8: DP=2 x 1 thread {result['dp2']:.0f} tokens/s (all-reduce "
              f"exposed {exposed['dp2']:.0f} ms/step) vs DP=1 x 2 threads {result['dp1']:.0f} tokens/s "
              f"({result['dp2'] / result['dp1']:.2f}x); without overlap (one bucket) {result['dp2_one_bucket']:.0f} "
              f"tokens/s ({result['dp2_one_bucket'] / result['dp1']:.2f}x, {exposed['dp2_one_bucket']:.0f} ms exposed)")


if __name__ == "__main__":
    main()
