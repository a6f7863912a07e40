"""Checks of the estimators on synthetic sequences, each with its expected outcome and a verdict.

(a) The paper's entropy sensitivity (Sec. 3.4, Fig. 3 right): sequences drawn from 1 (all identical), 5, 20 and
    100 Gaussian clusters. Expected: the entropy is 0 for the identical sequence and rises with the clusters.
(b) The paper's proxy sensitivity (Sec. 3.5): Y = X, Y = X + mild noise, Y independent of X. Expected: the
    conditional proxy is ≈ 0, then larger, then largest.
(c) The length confound: two groups of sequences drawn from one distribution, short (32 tokens) and long (256).
    Expected: their raw entropies differ (every entropy grows with its token count) and agree when the long ones
    are measured at 32 tokens (``subsample``): the matched difference's interval lies within a tenth of the raw
    difference of 0. The estimators can tell length from content.

``run_validation(out, seed=0)`` writes ``out/validation.json`` (strict JSON: no NaN), one PNG per experiment,
and returns the JSON content; ``passed`` is true when every experiment met its expectation.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from entroprobe.entropy import conditional_entropy, renyi_entropy

__all__ = ["ValidationConfig", "cluster_sequence", "alignment_pair", "length_groups", "run_validation"]

CLUSTER_COUNTS = (1, 5, 20, 100)
ALIGNMENT_CASES = ("identical", "perturbed", "independent")
EQUIVALENCE = 0.1  # (c): matched groups are alike when their difference is within this share of the raw one


@dataclass(frozen=True)
class ValidationConfig:
    n_tokens: int = 400  # tokens per synthetic sequence (at least the largest cluster count)
    dim: int = 64  # embedding size
    cluster_spread: float = 0.05  # std of tokens around their cluster centre (centres have std 1)
    noise: float = 0.3  # std of the mild perturbation of Y = X + noise (X has std 1)
    short_tokens: int = 32  # (c): the short group's length, and the matched count
    long_tokens: int = 256  # (c): the long group's length
    sequences: int = 30  # (c): sequences per group
    draws: int = 8  # (c): subsets averaged per long sequence
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


def length_groups(config: ValidationConfig, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Short ``(sequences, short_tokens, dim)`` and long ``(sequences, long_tokens, dim)`` sequences whose tokens
    are drawn alike: each a random one of 8 fixed cluster centres plus noise of std 0.5."""
    centres = torch.randn(8, config.dim, generator=generator, dtype=torch.float64)

    def draw(n: int) -> torch.Tensor:
        labels = torch.randint(0, 8, (config.sequences, n), generator=generator)
        noise = torch.randn(config.sequences, n, config.dim, generator=generator, dtype=torch.float64)
        return centres[labels] + 0.5 * noise

    return draw(config.short_tokens), draw(config.long_tokens)


def _finite(value: Any) -> Any:
    """NaN and ±inf become None, recursively: the JSON stays strict."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _clusters(config: ValidationConfig, generator: torch.Generator) -> tuple[dict, dict]:
    sequences = {k: cluster_sequence(k, config, generator) for k in CLUSTER_COUNTS}
    result = renyi_entropy(torch.stack(list(sequences.values())), alpha=config.alpha, base=config.base,
                           return_details=True)  # fmt: skip
    values = result.value.tolist()
    passed = values[0] == 0.0 and all(a < b for a, b in zip(values, values[1:]))
    return sequences, {
        "expected": "0 for identical tokens, then rising with the number of clusters",
        "passed": passed,
        "rows": [{"k": k, "entropy": v, "sigma": s} for k, v, s in zip(CLUSTER_COUNTS, values, result.sigma.tolist())],
    }


def _alignment(config: ValidationConfig, generator: torch.Generator) -> dict:
    pairs = [alignment_pair(case, config, generator) for case in ALIGNMENT_CASES]
    result = conditional_entropy(torch.stack([x for x, _ in pairs]), torch.stack([y for _, y in pairs]),
                                 alpha=config.alpha, base=config.base, return_details=True)  # fmt: skip
    values = result.value.tolist()
    passed = abs(values[0]) < 1e-6 and values[0] < values[1] < values[2]
    return {
        "expected": "≈ 0 for Y = X, larger for Y = X + noise, largest for Y independent of X",
        "passed": passed,
        "rows": [{"case": c, "conditional_entropy": v, "sigma": s}
                 for c, v, s in zip(ALIGNMENT_CASES, values, result.sigma.tolist())],  # fmt: skip
    }


def _length(config: ValidationConfig, generator: torch.Generator, seed: int) -> dict:
    from entroprobe.report.stats import bootstrap_difference

    short, long = length_groups(config, generator)
    kwargs = {"alpha": config.alpha, "base": config.base}
    short_values = renyi_entropy(short, **kwargs).numpy()
    raw_long = renyi_entropy(long, **kwargs).numpy()
    matched_long = renyi_entropy(long, subsample=config.short_tokens, draws=config.draws, seed=seed, **kwargs).numpy()
    rows = {}
    for name, values in (("raw", raw_long), ("matched", matched_long)):
        diff, low, high, _, _ = bootstrap_difference(values, short_values, seed=seed, key=f"validate|{name}")
        rows[name] = {"difference": float(diff), "low": float(low), "high": float(high)}
    raw_differs = rows["raw"]["low"] > 0 or rows["raw"]["high"] < 0
    # equivalence, not a second test of difference (that would fail for 1 seed in 20 by design): the matched
    # difference's whole interval lies within a tenth of the raw difference of 0
    margin = EQUIVALENCE * abs(rows["raw"]["difference"])
    matched_equal = -margin < rows["matched"]["low"] and rows["matched"]["high"] < margin
    return {
        "expected": f"long − short differs from 0 raw (95 % interval), and at {config.short_tokens} tokens each "
                    f"its 95 % interval lies within ±{EQUIVALENCE:g} × the raw difference",
        "passed": raw_differs and matched_equal,
        "short_tokens": config.short_tokens,
        "long_tokens": config.long_tokens,
        "sequences": config.sequences,
        "long_minus_short": rows,
        "values": {"short": short_values.tolist(), "long": raw_long.tolist(), "long_matched": matched_long.tolist()},
    }


def run_validation(out: str | Path, seed: int = 0, config: ValidationConfig | None = None) -> dict:
    """Run the three experiments with ``seed``; write ``out/validation.json`` and ``clusters.png``,
    ``alignment.png``, ``length.png``. Returns the JSON content (``passed``: every experiment met its expectation)."""
    from entroprobe import validate_plots

    config = config or ValidationConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    sequences, clusters = _clusters(config, generator)
    alignment = _alignment(config, generator)
    length = _length(config, generator, seed)
    result = _finite({
        "passed": clusters["passed"] and alignment["passed"] and length["passed"],
        "clusters": clusters,
        "alignment": alignment,
        "length": length,
        "seed": seed,
        "config": {**asdict(config), "sigma": "median"},
    })
    (out / "validation.json").write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    validate_plots.clusters(sequences, result["clusters"], config, out / "clusters.png")
    validate_plots.alignment(result["alignment"], config, out / "alignment.png")
    validate_plots.length(result["length"], config, out / "length.png")
    return result
