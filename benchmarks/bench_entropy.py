"""Benchmark of the estimators: batched entropies vs a naive per-layer loop vs the bare Gram + eigvalsh floor.

    python benchmarks/bench_entropy.py                # the full grid, twice (≈ 10 minutes on 2 cores), Markdown
    python benchmarks/bench_entropy.py --quick        # n ∈ {128, 512} only, three rounds (≈ 3 minutes)
    python benchmarks/bench_entropy.py --rounds 5     # more rounds: steadier ratios on a noisy machine
    python benchmarks/bench_entropy.py --device cuda --sizes 2048 --rounds 1   # the α = 2 goal on a GPU
    python benchmarks/bench_entropy.py --control      # the cost of subsample= and sigma_scale= (n = 512)

Every case runs in its own fresh process, so each process uses one LAPACK backend (numpy's and torch's
eigensolvers in one process were measured to slow both several-fold) and its peak memory is its own. The
cases of one invocation run back to back, in rounds: each round runs every case once, and a case's time is
its best over the rounds. Ratios are thus measured side by side, and a slow spell of the machine (the same
case varied by ±30 % from one process to the next on a shared 2-core machine) hits every case of a round
instead of one case alone.

Cases, for 33 layers × n tokens × d = 2048 (random states, seed 0):
- ``batched``: ``entroprobe.renyi_entropy`` on the whole ``(33, n, d)`` tensor (median σ per layer);
- ``floor``: the batched Gram ``x xᵀ`` and the eigenvalues alone, the two operations no method avoids, with
  the estimators' own eigensolver strategy (one LAPACK thread per matrix, matrices over threads);
- ``floor-default``: the same with ``torch.linalg.eigvalsh`` at torch's default threading, for reference;
- ``naive``: a per-layer loop in numpy float64: distances, median σ, ``exp``, ``eigvalsh``, entropy.
With ``--control``: ``subsample`` (the 33 layers at k = 64 tokens, 8 draws), ``k-kernels`` (8 × 33 sequences of
64 tokens: what subsample should cost) and ``scales`` (every value at σ × 0.5, 1, 2).
Peak extra memory is the process's peak resident size during the call minus its size before it
(``/proc/self/clear_refs`` resets the peak), on CPU; on CUDA, ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

LAYERS, DIM = 33, 2048
SUBSAMPLE_K, DRAWS, SCALES = 64, 8, (0.5, 1.0, 2.0)  # the token-count control cases (--control)


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:  # pragma: no cover - not Linux
        pass


def run_case(method: str, n: int, dtype: str, alpha: float, device: str, repeats: int) -> dict:
    """Time one case in this process; returns seconds (best of ``repeats``) and peak extra memory (MiB)."""
    if method == "naive":
        import numpy as np

        rng = np.random.default_rng(0)
        x = rng.standard_normal((LAYERS, n, DIM))

        def call():
            out = []
            for layer in x:
                sq = (layer**2).sum(1)
                d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * layer @ layer.T, 0)
                np.fill_diagonal(d2, 0)
                sigma2 = np.median(d2[np.triu_indices(n, 1)]) / 2
                lam = np.clip(np.linalg.eigvalsh(np.exp(-d2 / (2 * sigma2)) / n), 0, None)
                lam = lam[lam > n * np.finfo(float).eps * lam.max()]
                lam /= lam.sum()
                out.append(np.log2((lam**alpha).sum()) / (1 - alpha))
            return out

    else:
        import torch

        torch_dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
        x = torch.randn(LAYERS, n, DIM, generator=torch.Generator().manual_seed(0), dtype=torch_dtype).to(device)
        if method == "batched":
            from entroprobe import renyi_entropy

            def call():
                return renyi_entropy(x, alpha=alpha)

        elif method == "subsample":  # n tokens measured at k by DRAWS subsets
            from entroprobe import renyi_entropy

            def call():
                return renyi_entropy(x, alpha=alpha, subsample=SUBSAMPLE_K, draws=DRAWS)

        elif method == "k-kernels":  # what subsample should cost: DRAWS × 33 sequences of k tokens
            from entroprobe import renyi_entropy

            short = torch.randn(LAYERS * DRAWS, SUBSAMPLE_K, DIM, generator=torch.Generator().manual_seed(1),
                                dtype=torch_dtype).to(device)  # fmt: skip

            def call():
                return renyi_entropy(short, alpha=alpha)

        elif method == "scales":  # every value at three σ scales, from one set of distances
            from entroprobe import renyi_entropy

            def call():
                return renyi_entropy(x, alpha=alpha, sigma_scale=SCALES)

        elif method == "floor":  # the same eigensolver strategy as the estimators (one thread per matrix)
            from entroprobe.entropy.spectrum import eigvalsh

            def call():
                return eigvalsh(x @ x.transpose(-1, -2))

        else:  # floor-default: torch's eigvalsh with its default threading, for reference

            def call():
                return torch.linalg.eigvalsh(x @ x.transpose(-1, -2))

    def sync():
        if device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()

    call()  # warm-up (allocator, kernels)
    sync()
    best, peak = float("inf"), 0.0
    for _ in range(repeats):
        if device.startswith("cuda"):
            import torch

            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        else:
            _reset_peak()
            before = _rss_kib("VmRSS:") * 1024
        start = time.perf_counter()
        call()
        sync()
        best = min(best, time.perf_counter() - start)
        if device.startswith("cuda"):
            peak = max(peak, (torch.cuda.max_memory_allocated() - before) / 2**20)
        else:
            peak = max(peak, (_rss_kib("VmHWM:") * 1024 - before) / 2**20)
    return {"method": method, "n": n, "dtype": dtype, "alpha": alpha, "seconds": best, "peak_extra_mib": peak,
            "device": device}  # fmt: skip


def grid(sizes: list[int]) -> list[dict]:
    cases = []
    for n in sizes:
        repeats = 3 if n <= 512 else 1
        for dtype in ("float32", "float64"):
            for alpha in (1.01, 2.0):
                cases.append(dict(method="batched", n=n, dtype=dtype, alpha=alpha, repeats=repeats))
            cases.append(dict(method="floor", n=n, dtype=dtype, alpha=0.0, repeats=repeats))
            cases.append(dict(method="floor-default", n=n, dtype=dtype, alpha=0.0, repeats=repeats))
        cases.append(dict(method="naive", n=n, dtype="float64", alpha=1.01, repeats=repeats))
    return cases


def control_grid(sizes: list[int]) -> list[dict]:
    """The cost of token-count control, float32, α = 1.01: subsample and σ scales against what they replace."""
    cases = []
    for n in sizes:
        repeats = 3 if n <= 512 else 1
        for method in ("batched", "subsample", "k-kernels", "scales"):
            cases.append(dict(method=method, n=n, dtype="float32", alpha=1.01, repeats=repeats))
    return cases


def control_markdown(results: list[dict]) -> str:
    by = {(r["method"], r["n"]): r for r in results}
    lines = [f"| method | n | seconds (33 layers, d = {DIM}) | peak extra MiB |", "|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['method']} | {r['n']} | {r['seconds']:.3f} | {r['peak_extra_mib']:.0f} |")
    lines += ["", "| ratio | value | goal |", "|---|---|---|"]
    for n in sorted({r["n"] for r in results}):
        sub, kk, one, three = (by.get((m, n)) for m in ("subsample", "k-kernels", "batched", "scales"))
        if sub and kk:
            lines.append(f"| n = {n}: subsample (k = {SUBSAMPLE_K}, {DRAWS} draws) / {DRAWS} × 33 kernels of "
                         f"{SUBSAMPLE_K} tokens | {sub['seconds'] / kk['seconds']:.2f}× | ≈ 1× |")
        if one and three:
            lines.append(f"| n = {n}: {len(SCALES)} σ scales / one | {three['seconds'] / one['seconds']:.2f}× | "
                         f"< {len(SCALES)}× |")
    return "\n".join(lines)


def markdown(results: list[dict]) -> str:
    def find(method, n, dtype, alpha=None):
        for r in results:
            if r["method"] == method and r["n"] == n and r["dtype"] == dtype and (alpha is None or r["alpha"] == alpha):
                return r
        return None

    lines = [
        f"| method | n | dtype | α | seconds (33 layers, d = {DIM}) | peak extra MiB |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        alpha = "–" if r["method"].startswith("floor") else r["alpha"]
        lines.append(f"| {r['method']} | {r['n']} | {r['dtype']} | {alpha} | {r['seconds']:.3f} | {r['peak_extra_mib']:.0f} |")
    lines += ["", "| ratio | value | goal |", "|---|---|---|"]
    for n in sorted({r["n"] for r in results}):
        slow, fast = find("batched", n, "float32", 1.01), find("batched", n, "float32", 2.0)
        naive, floor = find("naive", n, "float64"), find("floor", n, "float32")
        if slow and fast:
            goal = "≥ 20×" if n == 2048 else ""
            lines.append(f"| n = {n}: α = 1.01 time / α = 2 time (float32) | {slow['seconds'] / fast['seconds']:.1f}× | {goal} |")
        if slow and naive:
            goal = "≥ 2×" if n == 512 else ""
            lines.append(f"| n = {n}: naive loop / batched float32 | {naive['seconds'] / slow['seconds']:.1f}× | {goal} |")
        if slow and floor:
            goal = "≤ 1.3×" if n == 512 else ""
            lines.append(f"| n = {n}: batched float32 / floor float32 | {slow['seconds'] / floor['seconds']:.2f}× | {goal} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="n ∈ {128, 512} (unless --sizes), three rounds")
    parser.add_argument("--sizes", type=int, nargs="+", metavar="N", help="sequence lengths (default 128 512 2048)")
    parser.add_argument("--rounds", type=int, help="rounds over the grid (default: 3 with --quick, else 2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--control", action="store_true",
                        help="the cost of token-count control instead: subsample and σ scales (n = 512 by default)")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case, print JSON
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(**json.loads(args.case))))
        return
    rounds = args.rounds if args.rounds is not None else (3 if args.quick else 2)
    if rounds < 1:
        parser.error(f"--rounds must be at least 1; got {rounds}")
    sizes = args.sizes or ([512] if args.control else [128, 512] if args.quick else [128, 512, 2048])
    if min(sizes) < (SUBSAMPLE_K if args.control else 2):
        parser.error(f"--sizes must be at least {SUBSAMPLE_K if args.control else 2} tokens; got {sizes}")
    cases = control_grid(sizes) if args.control else \
        [c for c in grid(sizes) if c["method"] != "naive" or args.device == "cpu"]
    results: list[dict] = [{} for _ in cases]
    for round_ in range(rounds):
        for at, case in enumerate(cases):
            spec = json.dumps({**case, "device": args.device})
            out = subprocess.run([sys.executable, __file__, "--case", spec], capture_output=True, text=True, check=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"round {round_ + 1}/{rounds}: {json.dumps(result)}", file=sys.stderr, flush=True)
            prev = results[at]  # the best time so far, with the highest peak of any round
            best = result if not prev or result["seconds"] < prev["seconds"] else prev
            results[at] = {**best, "peak_extra_mib": max(result["peak_extra_mib"], prev.get("peak_extra_mib", 0.0))}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(control_markdown(results) if args.control else markdown(results))


if __name__ == "__main__":
    main()
