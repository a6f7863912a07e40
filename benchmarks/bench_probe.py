"""Benchmark of the probe run end to end: prompts/s, the share of time in the estimators, peak memory.

    python benchmarks/bench_probe.py [--t2i ../shared/data/t2i-corebench] [--limit N]
    python benchmarks/bench_probe.py --demo        # wall time of `entroprobe demo` as a user runs it (goal ≤ 5 min)

Each case is a fresh process running ``entroprobe.probe.run_probe`` into a temporary run directory:
``minilm`` over ``samples`` and over the T2I-CoReBench copy (skipped when absent), and the micro unified models
over ``micro-world`` (the prompts they read) with every task. Reported: units (prompt × task) per second over
the whole run (model loading excluded), the estimators' share of model + estimator time (goal ≤ 25 % on CPU at α = 1.01), and the process's
peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_T2I = Path(__file__).resolve().parents[2] / "shared" / "data" / "t2i-corebench"


def run_case(model: str, text: str | None, image: str | None, tasks: list[str], limit: int | None) -> dict:
    import resource

    from entroprobe.models import load_model
    from entroprobe.probe import ProbeConfig, run_probe

    adapter = load_model(model)
    with tempfile.TemporaryDirectory() as tmp:
        config = ProbeConfig(model=model, out=Path(tmp) / "run", text_prompts=text, image_prompts=image,
                             tasks=tuple(tasks), limit=limit, progress=False, max_new_tokens=16)  # fmt: skip
        start = time.perf_counter()
        summary = run_probe(config, adapter=adapter)
        seconds = time.perf_counter() - start
    return {
        "model": model, "prompts": text if image is None else f"{text} + {image}", "tasks": ",".join(tasks),
        "units": summary.succeeded, "failed": summary.failed, "seconds": seconds,
        "units_per_s": summary.succeeded / seconds, "entropy_share": summary.entropy_share,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }  # fmt: skip


def time_demo() -> None:
    """``python -m entroprobe demo`` in a fresh process and a new folder: wall seconds, the process's peak RSS."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "entroprobe", "demo", "--out", tmp], capture_output=True, text=True)
        seconds = time.perf_counter() - start
    import resource

    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if out.returncode:
        sys.exit(f"entroprobe demo failed:\n{out.stderr[-2000:]}")
    print(out.stdout)
    print(f"| entroprobe demo | {seconds:.0f} s | peak RSS {peak:.0f} MiB | goal ≤ 300 s: {'met' if seconds <= 300 else 'missed'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--t2i", type=Path, default=DEFAULT_T2I, help="T2I-CoReBench data folder")
    parser.add_argument("--limit", type=int, default=None, help="prompts per source and modality")
    parser.add_argument("--demo", action="store_true", help="time `entroprobe demo` end to end instead")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.demo:
        time_demo()
        return
    if args.case:
        print(json.dumps(run_case(**json.loads(args.case))))
        return
    all_tasks = ["encode", "text-gen", "image-gen"]
    cases = [dict(model="minilm", text="samples", image=None, tasks=["encode"], limit=args.limit)]
    if args.t2i.is_dir():
        cases.append(dict(model="minilm", text=f"t2i-corebench:{args.t2i}", image=None, tasks=["encode"], limit=args.limit))
    for model in ("micro-ar", "micro-mask"):
        cases.append(dict(model=model, text="micro-world", image="micro-world", tasks=all_tasks, limit=args.limit))
    rows = []
    for case in cases:
        out = subprocess.run([sys.executable, __file__, "--case", json.dumps(case)], capture_output=True, text=True)
        if out.returncode:
            print(out.stderr[-2000:], file=sys.stderr)
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print("| model | prompts | tasks | units | units/s | entropy share | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['prompts']} | {r['tasks']} | {r['units']} | {r['units_per_s']:.1f} | "
              f"{100 * r['entropy_share']:.0f} % | {r['peak_rss_mib']:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
