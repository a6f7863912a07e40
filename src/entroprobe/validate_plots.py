"""The figures of ``entroprobe validate``: one per experiment, its verdict in the title."""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["clusters", "alignment", "length"]


def _verdict(experiment: dict) -> str:
    return "PASS" if experiment["passed"] else "FAIL"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _projection(points: torch.Tensor) -> torch.Tensor:
    """First two principal components of ``points`` (n, d) → (n, 2)."""
    if bool((points == points[0]).all()):  # one point: nothing to project
        return torch.zeros(points.shape[0], 2, dtype=points.dtype)
    centred = points - points.mean(dim=0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)  # v: (min(n, d), d)
    return centred @ v[:2].T  # (n, 2)


def clusters(sequences: dict[int, torch.Tensor], experiment: dict, config, path: Path) -> None:
    plt = _pyplot()
    entropies = {row["k"]: row["entropy"] for row in experiment["rows"]}
    fig, axes = plt.subplots(1, len(sequences) + 1, figsize=(4 * (len(sequences) + 1), 4))
    ks = list(entropies)
    axes[0].plot(range(len(ks)), [entropies[k] for k in ks], marker="o", color="#0072B2")
    axes[0].set_xticks(range(len(ks)), [str(k) for k in ks])
    axes[0].set_xlabel("number of Gaussian clusters")
    axes[0].set_ylabel(f"Rényi entropy (α = {config.alpha}, bits)")
    axes[0].set_title(f"{_verdict(experiment)}: entropy rises with the clusters")
    axes[0].grid(alpha=0.3)
    for ax, (k, points) in zip(axes[1:], sequences.items()):
        xy = _projection(points)
        labels = torch.arange(points.shape[0]) % k
        ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="viridis", s=8)
        ax.set_title(f"{k} cluster{'s' if k > 1 else ''}: S = {entropies[k]:.2f} bits")
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        if k == 1:
            ax.set_xlim(-1, 1)
            ax.set_ylim(-1, 1)
    fig.suptitle(f"Entropy sensitivity: {config.n_tokens} tokens of dimension {config.dim} (2-D PCA projections)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def alignment(experiment: dict, config, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    cases = [row["case"] for row in experiment["rows"]]
    bars = ax.bar(cases, [row["conditional_entropy"] for row in experiment["rows"]],
                  color=["#009E73", "#E69F00", "#D55E00"])  # fmt: skip
    ax.bar_label(bars, fmt="%.3f")
    ax.set_ylabel("conditional entropy proxy S(X,Y) − S(X) (bits)")
    ax.set_xlabel(f"response Y (perturbed: X + N(0, {config.noise}²))")
    ax.set_title(f"{_verdict(experiment)}: the proxy grows as Y depends less on X")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def length(experiment: dict, config, path: Path) -> None:
    plt = _pyplot()
    values = experiment["values"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), width_ratios=[1.3, 1])
    groups = [("short", f"short ({config.short_tokens} tokens)", "#0072B2"),
              ("long", f"long ({config.long_tokens} tokens)", "#D55E00"),
              ("long_matched", f"long, at {config.short_tokens} tokens", "#009E73")]  # fmt: skip
    left.boxplot([values[key] for key, _, _ in groups], tick_labels=[name for _, name, _ in groups])
    for i, (key, _, colour) in enumerate(groups, start=1):
        left.scatter([i] * len(values[key]), values[key], s=10, color=colour, alpha=0.6)
    left.set_ylabel(f"Rényi entropy (α = {config.alpha}, bits)")
    left.set_title("Sequences from one distribution, two lengths")
    left.grid(axis="y", alpha=0.3)
    rows = experiment["long_minus_short"]
    for i, name in enumerate(("raw", "matched")):
        row = rows[name]
        right.errorbar([i], [row["difference"]], yerr=[[row["difference"] - row["low"]], [row["high"] - row["difference"]]],
                       fmt="o", color="#333333", capsize=6)  # fmt: skip
    right.axhline(0, color="0.4", linewidth=0.8, linestyle=":")
    right.set_xticks([0, 1], ["every token", f"at {config.short_tokens} tokens each"])
    right.set_xlim(-0.6, 1.6)
    right.set_ylabel("long − short (bits), 95 % interval")
    right.set_title(f"{_verdict(experiment)}: raw differs, matched does not")
    right.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
