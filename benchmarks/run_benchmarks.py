#!/usr/bin/env python3
"""Speed and memory figures of the built binary on this machine.

Prints one line per measurement; nothing here passes or fails. The tables
of docs/measured.md are copied from its output. Takes ~25 minutes on 2 cores;
run it on an idle machine (never during a build).

Usage: benchmarks/run_benchmarks.py [--build BUILD_DIR] [--only NAME ...]
       benchmarks/run_benchmarks.py --only eager [--python PYTHON]
       benchmarks/run_benchmarks.py --compare OTHER_BUILD_DIR [--runs 2]

--only eager runs Small (fp32, and bf16 where the CPU has AVX512-BF16) with
our binary and with benchmarks/eager_llama.py, eager and torch.compile'd, in
the project's .venv (~8 minutes per precision on 2 cores, most of it the
compilation). --compare measures Small fp32 with the other build and with
--build in turn, --runs times each, and prints a before/after table (~4.5
minutes on 2 cores); it runs nothing else.
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


def small(binary, out, precision):
    """One Small run, micro-batch 4, 1 process x 2 threads: medians of steps 2-5, peak RSS, start-up."""
    log = ranks(binary, 1, out, SMALL + ["--micro-batch-size", "4", "--global-batch-size", "4", "--max-steps", "5",
                                         "--precision", precision], 2)[0]
    s = steps(out, 1)
    result = {key: median(s, key) for key in ("tokens_per_s", "ms_per_step", "forward_ms", "backward_ms",
                                              "optimizer_ms")}
    return dict(result, rss_gb=peak_rss_gb(log), startup_s=startup(log))


def eager(python, precision, compiled):
    """benchmarks/eager_llama.py on the same shape, 2 threads, medians of steps 3-6."""
    cmd = [python, os.path.join(ROOT, "benchmarks", "eager_llama.py"), "--device", "cpu", "--threads", "2",
           "--precision", precision, "--micro-batch-size", "4", "--steps", "6", "--warmup", "2"]
    run = subprocess.run(cmd + (["--compile"] if compiled else []), capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"{' '.join(run.args)} failed:\n{run.stderr}")
    line = run.stdout.splitlines()[-1]
    m = re.search(r"PyTorch (\S+) .*: ([0-9.]+) tokens/s, .* first step ([0-9.]+) s, .* peak RSS ([0-9.]+) GB", line)
    return {"torch": m.group(1), "tokens_per_s": float(m.group(2)), "first_step_s": float(m.group(3)),
            "rss_gb": float(m.group(4))}


def libtorch_version(build):
    """The LibTorch a build directory was configured against, from its CMake cache ("?" if unknown)."""
    try:
        cache = open(os.path.join(build, "CMakeCache.txt")).read()
        torch_dir = re.search(r"^Torch_DIR:PATH=(.*)$", cache, re.M).group(1)
        config = open(os.path.join(torch_dir, "TorchConfigVersion.cmake")).read()
        return re.search(r'set\(PACKAGE_VERSION "([^"]+)"\)', config).group(1)
    except (OSError, AttributeError):
        return "?"


def compare(before, after, runs, work):
    """Small fp32 with each build in turn (before, after, before, ...), so drift hits both alike."""
    builds = {"before": before, "after": after}
    versions = {name: libtorch_version(build) for name, build in builds.items()}
    results = {name: [] for name in builds}
    for i in range(runs):
        for name, build in builds.items():
            out = os.path.join(work, f"compare_{name}_{i}")
            results[name].append(small(os.path.join(build, "minipretrain"), out, "fp32"))
    print(f"Small seq 512 micro-batch 4 fp32, 1 process x 2 threads, medians of steps 2-5; "
          f"{runs} runs per build, alternating")
    print("| build | LibTorch | tokens/s | ms/step | forward, backward, optimizer ms | start-up s | peak RSS GB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, build in builds.items():
        rs = results[name]
        cell = lambda key, fmt: ", ".join(format(r[key], fmt) for r in rs)
        phases = "; ".join(f"{r['forward_ms']:.0f}, {r['backward_ms']:.0f}, {r['optimizer_ms']:.0f}" for r in rs)
        print(f"| {name}: {build} | {versions[name]} | {cell('tokens_per_s', '.1f')} | "
              f"{cell('ms_per_step', '.0f')} | {phases} | {cell('startup_s', '.2f')} | {cell('rss_gb', '.2f')} |")
    ratio = lambda key: (statistics.median(r[key] for r in results["after"]) /
                         statistics.median(r[key] for r in results["before"]))
    print(f"after/before (medians of the runs): tokens/s {ratio('tokens_per_s'):.2f}x, "
          f"start-up {ratio('startup_s'):.2f}x, peak RSS {ratio('rss_gb'):.2f}x")


def flops_per_token(hidden=768, layers=12, vocab=32000, inter=3072, seq=512):
    """6 N (N without the embedding lookup) + 12 L s h for attention, as in PaLM's MFU."""
    n = layers * (4 * hidden * hidden + 3 * hidden * inter) + vocab * hidden
    return 6 * n + 12 * layers * seq * hidden


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--build", default=os.path.join(ROOT, "build"))
    parser.add_argument("--only", nargs="*", help="gemm small eager recompute pipeline dp startup zero")
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"],
                        help="of the recompute and dp runs (the pipeline runs are fp32); fp32 where the CPU emulates bf16")
    parser.add_argument("--python", default=os.path.join(ROOT, os.environ.get("MINIPRETRAIN_VENV", ".venv"), "bin",
                                                         "python"),
                        help="the Python whose torch runs eager_llama.py (default: the project's .venv)")
    parser.add_argument("--compare", metavar="OTHER_BUILD_DIR",
                        help="only compare Small fp32 of OTHER_BUILD_DIR (before) and --build (after), alternating")
    parser.add_argument("--runs", type=int, default=2, help="runs per build of --compare")
    a = parser.parse_args()
    binary = os.path.join(a.build, "minipretrain")
    wanted = lambda name: not a.only or name in a.only
    work = tempfile.mkdtemp()

    if a.compare:
        compare(a.compare, a.build, a.runs, work)
        return
    if wanted("eager") and not os.path.isfile(a.python):
        sys.exit(f"{a.python} is missing: scripts/install_deps.sh makes .venv, or give --python")

    ceiling = {}
    if wanted("gemm") or wanted("small"):
        subprocess.run(["cmake", "--build", a.build, "--target", "minipretrain-gemm-ceiling"], check=True,
                       stdout=subprocess.DEVNULL)
        gemm = subprocess.run([os.path.join(a.build, "minipretrain-gemm-ceiling"), "2048", "2"], check=True,
                              capture_output=True, text=True).stdout
        for line in gemm.splitlines():
            m = re.match(r"gemm (\w+) .*: ([0-9.]+) GFLOP/s", line)
            ceiling[m.group(1)] = float(m.group(2))
    if wanted("gemm"):
        print(f"GEMM ceiling, n=2048, 2 threads: fp32 {ceiling['fp32']:.0f} GFLOP/s, bf16 {ceiling['bf16']:.0f} GFLOP/s")

    if wanted("small"):
        for precision in ("fp32", "bf16"):
            r = small(binary, os.path.join(work, "small_" + precision), precision)
            mfu = r["tokens_per_s"] * flops_per_token() / 1e9 / ceiling[precision]
            print(f"Small seq 512 micro-batch 4, 1 process x 2 threads, {precision}: {r['tokens_per_s']:.0f} tokens/s, "
                  f"{r['ms_per_step']:.0f} ms/step = forward {r['forward_ms']:.0f} + backward {r['backward_ms']:.0f} + "
                  f"optimizer {r['optimizer_ms']:.0f} (+ rest); MFU {100 * mfu:.0f}% of the {precision} GEMM "
                  f"ceiling; peak RSS {r['rss_gb']:.2f} GB; start-up {r['startup_s']:.2f} s")

    if wanted("eager"):
        # The same model as a PyTorch user writes it, eager and torch.compile'd, in
        # the project's torch; bf16 only where the CPU computes it natively.
        native_bf16 = "avx512_bf16" in open("/proc/cpuinfo").read()
        for precision in ("fp32", "bf16") if native_bf16 else ("fp32",):
            ours = small(binary, os.path.join(work, "eager_ours_" + precision), precision)
            plain, compiled = eager(a.python, precision, False), eager(a.python, precision, True)
            print(f"Small seq 512 micro-batch 4, 2 threads, {precision}: minipretrain {ours['tokens_per_s']:.0f} "
                  f"tokens/s, eager PyTorch {plain['torch']} {plain['tokens_per_s']:.0f}, torch.compile "
                  f"{compiled['tokens_per_s']:.0f} (first step {compiled['first_step_s']:.0f} s); "
                  f"ours/eager {ours['tokens_per_s'] / plain['tokens_per_s']:.2f}x, "
                  f"ours/compiled {ours['tokens_per_s'] / compiled['tokens_per_s']:.2f}x; peak RSS "
                  f"{ours['rss_gb']:.2f}, {plain['rss_gb']:.2f}, {compiled['rss_gb']:.2f} GB")

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

    if wanted("zero"):
        # The distributed optimizer's memory: DP 4 on a 60M-parameter model,
        # rank 0's peak RSS with and without it against the saving it should
        # make (of this rank's 1/DP share: fp32 the two moments, 8 x 3/4 bytes a
        # parameter; bf16 the masters too, 12 x 3/4) and against plan's figure.
        model = ["--hidden-size", "512", "--intermediate-size", "1536", "--num-layers", "8", "--num-attention-heads",
                 "8", "--vocab-size", "32000", "--max-seq-length", "64", "--num-train-samples", "64",
                 "--micro-batch-size", "1", "--global-batch-size", "4", "--max-steps", "2"]
        for precision, saved_bytes in (("fp32", 6), ("bf16", 9)):
            rss, planned = {}, {}
            for zero in (False, True):
                args = model + ["--precision", precision] + (["--use-distributed-optimizer"] if zero else [])
                log = ranks(binary, 4, os.path.join(work, f"zero_{precision}_{zero}"), args, 1)[0]
                rss[zero] = peak_rss_gb(log)
                planned[zero] = float(re.search(r"Memory estimate: ([0-9.]+) GB", log).group(1))
                params = float(re.search(r"Model: ([0-9.]+)M parameters", log).group(1)) * 1e6
            predicted = saved_bytes * params / 1e9
            measured = rss[False] - rss[True]
            print(f"ZeRO-1 DP 4, {params / 1e6:.1f}M parameters, {precision}, 1 thread per rank: rank 0 peak RSS "
                  f"{rss[False]:.2f} GB without, {rss[True]:.2f} GB with --use-distributed-optimizer: saves "
                  f"{measured:.3f} GB, predicted {predicted:.3f} GB ({100 * (measured - predicted) / predicted:+.1f}%); "
                  f"plan {planned[True]:.2f} GB with it ({100 * (planned[True] - rss[True]) / rss[True]:+.1f}% of "
                  f"measured), {planned[False]:.2f} GB without")

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
