"""CPU time of ``entroprobe demo`` alone and beside busy processes (a shared machine, the normal case on a cluster).

    python benchmarks/bench_contention.py [--busy N] [--threads 1 2 ...] [--env K=V,K=V ...] [--limit N]

Each case runs the demo (``entroprobe demo``) in a fresh process, first on an idle machine, then beside ``--busy``
processes that spin on the CPU (default: one per core). Reported: wall time, the demo's own CPU time (user +
system, from ``wait4``), and the ratio of its CPU time beside the busy processes to its CPU time alone (goal ≤ 1.5:
threads that spin while they wait burn what the neighbours need). A case is a thread count for the demo's models
(``entroprobe.demo.THREADS``; 1 is what the demo uses) or environment settings on top of it
(``GOMP_SPINCOUNT=10000``…), each measured idle and busy, side by side in one run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time


_DEMO = "import sys, entroprobe.demo as d; d.THREADS = int(sys.argv[1]); from entroprobe.cli import main; main(sys.argv[2:])"


def demo_cpu(threads: int, env: dict[str, str], busy: int, limit: int | None) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one demo run on ``threads`` threads beside ``busy`` spinning processes."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    try:
        with tempfile.TemporaryDirectory() as out:
            command = [sys.executable, "-c", _DEMO, str(threads), "demo", "--out", out]
            command += ["--limit", str(limit)] if limit else []
            start = time.perf_counter()
            child = subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)  # fmt: skip
            _, status, usage = os.wait4(child.pid, 0)
            if status:
                raise SystemExit(f"entroprobe demo failed (status {status}) with {env or 'the defaults'}")
            return time.perf_counter() - start, usage.ru_utime + usage.ru_stime
    finally:
        for hog in hogs:
            hog.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busy", type=int, default=os.cpu_count(), help="busy processes beside the demo")
    parser.add_argument("--threads", type=int, nargs="*", default=[1, os.cpu_count()], help="thread counts")
    parser.add_argument("--env", nargs="*", default=[], help="extra cases at the demo's threads: K=V,K=V")
    parser.add_argument("--limit", type=int, default=None, help="prompts per source (default: the whole demo)")
    args = parser.parse_args()
    from entroprobe.demo import THREADS

    cases = [(f"{n} thread{'s' * (n > 1)}" + (" (the demo's)" if n == THREADS else ""), n, {}) for n in args.threads]
    cases += [(text, THREADS, dict(kv.split("=", 1) for kv in text.split(","))) for text in args.env]
    print(f"| case | idle wall | idle CPU | wall beside {args.busy} busy | CPU beside {args.busy} busy | "
          "CPU ratio (goal ≤ 1.5) |\n|---|---|---|---|---|---|")
    for name, threads, env in cases:
        idle_wall, idle_cpu = demo_cpu(threads, env, 0, args.limit)
        busy_wall, busy_cpu = demo_cpu(threads, env, args.busy, args.limit)
        print(f"| {name} | {idle_wall:.1f} s | {idle_cpu:.1f} s | {busy_wall:.1f} s | {busy_cpu:.1f} s | "
              f"{busy_cpu / idle_cpu:.2f}× |", flush=True)


if __name__ == "__main__":
    main()
