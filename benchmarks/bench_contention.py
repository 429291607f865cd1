"""Contention: how much slower a run gets when one other CPU-bound process shares the machine.

Each workload (the default digits run; a reduced Fashion-MNIST run) is timed as a fresh `replearn run`
process quiet and beside one competitor, under replearn's thread policy and under the library defaults
it replaced (`REPLEARN_THREADS=library`: spinning OpenMP waits, every pool on every core), all in one
invocation, interleaved so that drift of the machine hits both alike. The result is the slowdown
ratio busy / quiet of each policy.

Competitors: `loop` (default) is a plain-Python busy loop pinned to core 0; `same` is the same replearn
command under the same policy, restarted until the measured run ends (several runs side by side).

    python benchmarks/bench_contention.py [--skip-fashion] [--competitor loop|same] [--repeats N]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import ROOT, fashion_mnist_or_none, machine, matmul_peak_gflops, report

POLICIES = {"new": "auto", "library": "library"}
BUSY_LOOP = "import os\ntry:\n    os.sched_setaffinity(0, {0})\nexcept OSError:\n    pass\nwhile True:\n    pass\n"


def replearn_command(args: list[str], out: Path) -> list[str]:
    return [sys.executable, "-m", "replearn.cli", "run", *args, "--out", str(out), "--quiet"]


def timed_run(args: list[str], policy: str, competitor: str | None, tmp: Path) -> float:
    """Wall seconds of one `replearn run`, optionally beside a competitor started just before it."""
    env = {**os.environ, "REPLEARN_THREADS": policy}
    env.pop("OMP_WAIT_POLICY", None)
    stop = threading.Event()
    rival: list[subprocess.Popen] = []

    def keep_rival_running() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            proc = subprocess.Popen(replearn_command(args, tmp / f"rival-{time.time_ns()}-{n}"), cwd=ROOT, env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            rival[:] = [proc]
            while proc.poll() is None and not stop.is_set():
                time.sleep(0.2)

    thread = None
    if competitor == "loop":
        rival.append(subprocess.Popen([sys.executable, "-c", BUSY_LOOP]))
        time.sleep(0.5)
    elif competitor == "same":
        thread = threading.Thread(target=keep_rival_running, daemon=True)
        thread.start()
        time.sleep(3.0)  # the rival is past its imports and computing
    out = tmp / f"run-{time.time_ns()}"
    started = time.perf_counter()
    try:
        subprocess.run(replearn_command(args, out), check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    finally:
        wall = time.perf_counter() - started
        stop.set()
        for proc in rival:
            proc.kill()
            proc.wait()
        if thread is not None:
            thread.join()
    return wall


def measure(name: str, args: list[str], competitor: str, repeats: int, tmp: Path) -> dict:
    times: dict[str, dict[str, list[float]]] = {p: {"quiet": [], "busy": []} for p in POLICIES}
    for _ in range(repeats):
        for mode in ("quiet", "busy"):
            for label, policy in POLICIES.items():
                wall = timed_run(args, policy, competitor if mode == "busy" else None, tmp)
                times[label][mode].append(wall)
                print(f"  {name} {label} {mode}: {wall:.1f} s", file=sys.stderr, flush=True)
    result = {}
    for label in POLICIES:
        quiet = statistics.median(times[label]["quiet"])
        busy = statistics.median(times[label]["busy"])
        result[label] = {"quiet_s": quiet, "busy_s": busy, "slowdown": busy / quiet,
                         "runs": times[label]}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-fashion", action="store_true", help="measure only the digits run")
    parser.add_argument("--competitor", choices=("loop", "same"), default="loop",
                        help="loop: a busy loop pinned to core 0 (default); same: the same run side by side")
    parser.add_argument("--repeats", type=int, default=1, help="measurements per cell (the median is reported)")
    parser.add_argument("--fashion-subset", type=int, default=10000, help="training images of the reduced run")
    args = parser.parse_args()
    peak = matmul_peak_gflops(2048, 5)
    workloads = {"digits": []}
    if not args.skip_fashion and fashion_mnist_or_none(train_subset=100) is not None:
        workloads[f"fashion-mnist {args.fashion_subset // 1000}k"] = [
            str(ROOT / "experiments" / "fashion_mnist.yaml"), "--set", f"data.train_subset={args.fashion_subset}"]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, run_args in workloads.items():
            results[name] = measure(name, run_args, args.competitor, args.repeats, Path(tmp))
    parts = []
    for name, r in results.items():
        new, old = r["new"], r["library"]
        parts.append(f"{name}: slowdown {new['slowdown']:.2f}× ({new['quiet_s']:.0f}s quiet → {new['busy_s']:.0f}s busy), "
                     f"library defaults {old['slowdown']:.2f}× ({old['quiet_s']:.0f}s → {old['busy_s']:.0f}s)")
    competitor = "a busy loop pinned to core 0" if args.competitor == "loop" else "the same run side by side"
    report("contention", {"summary": f"beside {competitor}: " + "; ".join(parts) + f" [matmul {peak:.0f} GFLOP/s]",
                          "results": results, "competitor": args.competitor, "matmul_gflops": peak,
                          "machine": machine(), "target": "slowdown <= 2.5x for both workloads"})


if __name__ == "__main__":
    main()
