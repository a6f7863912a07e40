"""The paper's sensitivity checks of the estimators (Sec. 3.4-3.5, Fig. 3 right), on synthetic sequences.

(a) Entropy of sequences drawn from 1 (all identical), 5, 20 and 100 Gaussian clusters: it must rise with the
number of clusters, from 0 for the identical sequence.
(b) The conditional-entropy proxy for Y = X, Y = X + mild Gaussian noise and Y independent of X: ≈ 0, then
larger, then largest.

``run_validation(out, seed=0)`` writes ``out/validation.json`` and one PNG per experiment.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from entroprobe.entropy import conditional_entropy, renyi_entropy

__all__ = ["ValidationConfig", "cluster_sequence", "alignment_pair", "run_validation"]

CLUSTER_COUNTS = (1, 5, 20, 100)
ALIGNMENT_CASES = ("identical", "perturbed", "independent")


@dataclass(frozen=True)
class ValidationConfig:
    n_tokens: int = 400  # tokens per synthetic sequence (at least the largest cluster count)
    dim: int = 64  # embedding size
    cluster_spread: float = 0.05  # std of tokens around their cluster centre (centres have std 1)
    noise: float = 0.3  # std of the mild perturbation of Y = X + noise (X has std 1)
    alpha: float = 1.01
    base: float = 2.0


def cluster_sequence(k: int, config: ValidationConfig, generator: torch.Generator) -> torch.Tensor:
    """``(n_tokens, dim)`` tokens from ``k`` Gaussian clusters, round-robin; k = 1 gives identical tokens."""
    centres = torch.randn(k, config.dim, generator=generator, dtype=torch.float64)  # (k, dim)
    labels = torch.arange(config.n_tokens) % k  # (n,)
    tokens = centres[labels]  # (n, dim)
    if k > 1:
        tokens = tokens + config.cluster_spread * torch.randn(tokens.shape, generator=generator, dtype=torch.float64)
    return tokens


def alignment_pair(case: str, config: ValidationConfig, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A prompt X and a response Y that is X itself, X plus mild noise, or independent of X."""
    n = config.n_tokens // 4
    x = torch.randn(n, config.dim, generator=generator, dtype=torch.float64)  # (n, dim)
    if case == "identical":
        return x, x.clone()
    if case == "perturbed":
        return x, x + config.noise * torch.randn(x.shape, generator=generator, dtype=torch.float64)
    if case == "independent":
        return x, torch.randn(x.shape, generator=generator, dtype=torch.float64)
    raise ValueError(f"Unknown alignment case '{case}'; expected one of {', '.join(ALIGNMENT_CASES)}")


def _projection(points: torch.Tensor) -> torch.Tensor:
    """First two principal components of ``points`` (n, d) → (n, 2)."""
    if bool((points == points[0]).all()):  # one point: nothing to project
        return torch.zeros(points.shape[0], 2, dtype=points.dtype)
    centred = points - points.mean(dim=0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)  # v: (min(n, d), d)
    return centred @ v[:2].T  # (n, 2)


def _plot_clusters(sequences: dict[int, torch.Tensor], entropies: dict[int, float], config: ValidationConfig, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(sequences) + 1, figsize=(4 * (len(sequences) + 1), 4))
    ks = list(entropies)
    axes[0].plot(range(len(ks)), [entropies[k] for k in ks], marker="o", color="#0072B2")
    axes[0].set_xticks(range(len(ks)), [str(k) for k in ks])
    axes[0].set_xlabel("number of Gaussian clusters")
    axes[0].set_ylabel(f"Rényi entropy (α = {config.alpha}, bits)")
    axes[0].set_title("Entropy rises with the clusters")
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


def _plot_alignment(values: dict[str, float], config: ValidationConfig, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    cases = list(values)
    bars = ax.bar(cases, [values[c] for c in cases], color=["#009E73", "#E69F00", "#D55E00"])
    ax.bar_label(bars, fmt="%.3f")
    ax.set_ylabel("conditional entropy proxy S(X,Y) − S(X) (bits)")
    ax.set_xlabel(f"response Y (perturbed: X + N(0, {config.noise}²))")
    ax.set_title("The proxy grows as Y depends less on X")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_validation(out: str | Path, seed: int = 0, config: ValidationConfig | None = None) -> dict:
    """Run both experiments with ``seed``; write ``out/validation.json``, ``out/clusters.png``, ``out/alignment.png``.

    Returns the JSON content: ``{"clusters": [{"k", "entropy", "sigma"}…], "alignment": [{"case",
    "conditional_entropy", "sigma"}…], "seed", "config"}``.
    """
    config = config or ValidationConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)

    sequences = {k: cluster_sequence(k, config, generator) for k in CLUSTER_COUNTS}
    stacked = torch.stack(list(sequences.values()))  # (4, n, dim): one batched call
    cluster_results = renyi_entropy(stacked, alpha=config.alpha, base=config.base, return_details=True)
    entropies = dict(zip(CLUSTER_COUNTS, cluster_results.value.tolist()))

    pairs = [alignment_pair(case, config, generator) for case in ALIGNMENT_CASES]
    xs = torch.stack([x for x, _ in pairs])  # (3, n/4, dim)
    ys = torch.stack([y for _, y in pairs])
    alignment = conditional_entropy(xs, ys, alpha=config.alpha, base=config.base, return_details=True)
    conditional = dict(zip(ALIGNMENT_CASES, alignment.value.tolist()))

    result = {
        "clusters": [
            {"k": k, "entropy": entropies[k], "sigma": s}
            for k, s in zip(CLUSTER_COUNTS, cluster_results.sigma.tolist())
        ],
        "alignment": [
            {"case": case, "conditional_entropy": conditional[case], "sigma": s}
            for case, s in zip(ALIGNMENT_CASES, alignment.sigma.tolist())
        ],
        "seed": seed,
        "config": {**config.__dict__, "sigma": "median"},
    }
    (out / "validation.json").write_text(json.dumps(result, indent=2, allow_nan=True) + "\n")
    _plot_clusters(sequences, entropies, config, out / "clusters.png")
    _plot_alignment(conditional, config, out / "alignment.png")
    return result
