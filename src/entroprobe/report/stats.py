"""Bootstrap confidence intervals of means over prompts: vectorised, seeded, percentile 95 % intervals.

The prompt is the unit resampled: a curve's points (layers, bins) are all computed from the same resampled
prompts, so a prompt that is high at one layer stays in or out of a replicate at every layer.
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from entroprobe.errors import InputError

__all__ = ["bootstrap_mean", "bootstrap_difference", "curve", "spearman", "r_squared", "layer_ranges"]

LEVEL = 0.95


def _replicates(x: np.ndarray, n_boot: int, seed: int, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The means of ``x`` (P, L) (NaN: no value), their bootstrap replicates (B, L) and the counts (L,)."""
    present = ~np.isnan(x)  # (P, L)
    n = present.sum(axis=0)  # (L,)
    filled = np.where(present, x, 0.0)  # (P, L)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = filled.sum(axis=0) / n  # (L,)
    p = x.shape[0]
    if p == 0:
        return mean, np.full((n_boot, x.shape[1]), np.nan), n
    rng = np.random.default_rng([seed, zlib.crc32(key.encode("utf-8"))])
    picks = rng.integers(0, p, size=(n_boot, p))  # (B, P): prompt indices drawn with replacement
    offsets = np.arange(n_boot)[:, None] * p
    weights = np.bincount((picks + offsets).ravel(), minlength=n_boot * p).reshape(n_boot, p)  # (B, P)
    weights = weights.astype(np.float64)
    sums = weights @ filled  # (B, L)
    counts = weights @ present.astype(np.float64)  # (B, L)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts  # (B, L), NaN where a replicate drew no prompt with a value
    return mean, means, n


def _percentiles(means: np.ndarray, ok: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    low = np.full(means.shape[1], np.nan)
    high = np.full(means.shape[1], np.nan)
    if ok.any():
        tail = (1 - level) / 2 * 100
        with np.errstate(invalid="ignore"):
            low[ok], high[ok] = np.nanpercentile(means[:, ok], [tail, 100 - tail], axis=0)
    return low, high


def _as_matrix(values: np.ndarray) -> tuple[np.ndarray, bool]:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim > 2:
        raise InputError(f"values must be (prompts, points) or (prompts,); got shape {x.shape}")
    return x.reshape(x.shape[0], -1), x.ndim == 1


def bootstrap_mean(
    values: np.ndarray, *, n_boot: int = 1000, seed: int = 0, key: str = ""
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean over prompts and its percentile 95 % bootstrap interval, for each column.

    Args:
        values: ``(prompts, points)`` or ``(prompts,)``; NaN marks a prompt without a value at that point.
        n_boot: bootstrap replicates (≥ 1).
        seed: the seed; with ``key`` it fixes the replicates, so a curve's interval does not depend on what
            else the report computed before it.
        key: a name for this curve, mixed into the seed.

    Returns:
        ``mean, low, high, n`` each of shape ``(points,)`` (scalars' shape ``()`` for a 1-D input); NaN where
        no prompt has a value. One prompt gives a zero-width interval.

    Raises:
        InputError: ``n_boot`` below 1, or ``values`` with more than two dimensions.

    >>> mean, low, high, n = bootstrap_mean(np.array([1.0, 2.0, 3.0, 4.0]), n_boot=200)
    >>> float(mean), bool(low <= mean <= high), int(n)
    (2.5, True, 4)
    """
    if n_boot < 1:
        raise InputError(f"n_boot must be at least 1; got {n_boot}")
    x, squeeze = _as_matrix(values)
    mean, means, n = _replicates(x, n_boot, seed, key)
    low, high = _percentiles(means, n > 0)
    n = n.astype(np.int64)
    if squeeze:
        return mean[0], low[0], high[0], n[0]
    return mean, low, high, n


def bootstrap_difference(
    a: np.ndarray, b: np.ndarray, *, n_boot: int = 1000, seed: int = 0, key: str = "", level: float = LEVEL
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Difference of the means of two independent groups of prompts, ``mean(a) − mean(b)``, with its interval.

    Each group is resampled on its own (the prompts of ``a`` and ``b`` are different prompts).

    Args:
        a, b: ``(prompts, points)`` or ``(prompts,)`` each, the same number of points; NaN: no value.
        level: the interval's coverage (0.95; higher for one of several comparisons made at once).

    Returns:
        ``difference, low, high, n_a, n_b`` per point (scalars for 1-D input).

    >>> diff, low, high, n_a, n_b = bootstrap_difference(np.array([3.0, 4.0, 5.0]), np.array([1.0, 2.0]))
    >>> float(diff), bool(low <= diff <= high), int(n_a), int(n_b)
    (2.5, True, 3, 2)
    """
    if n_boot < 1:
        raise InputError(f"n_boot must be at least 1; got {n_boot}")
    if not 0 < level < 1:
        raise InputError(f"level must lie between 0 and 1; got {level}")
    (xa, squeeze), (xb, _) = _as_matrix(a), _as_matrix(b)
    if xa.shape[1] != xb.shape[1]:
        raise InputError(f"a and b must have the same points; got {xa.shape[1]} and {xb.shape[1]}")
    mean_a, means_a, n_a = _replicates(xa, n_boot, seed, key + "|a")
    mean_b, means_b, n_b = _replicates(xb, n_boot, seed, key + "|b")
    low, high = _percentiles(means_a - means_b, (n_a > 0) & (n_b > 0), level)
    out = (mean_a - mean_b, low, high, n_a.astype(np.int64), n_b.astype(np.int64))
    return tuple(v[0] for v in out) if squeeze else out


def curve(
    rows: pd.DataFrame, *, by: str, unit: list[str], value: str = "value", n_boot: int, seed: int, key: str
) -> pd.DataFrame:
    """A mean curve over ``by`` (e.g. layer) with a bootstrap band over the units (prompts).

    Args:
        rows: one row per (unit, ``by``) with a ``value`` column; several rows of one unit at one point are
            averaged first.
        by: the column along the curve.
        unit: the columns that identify a prompt.
        value: the column averaged.
        n_boot, seed, key: as in :func:`bootstrap_mean`.

    Returns:
        Columns ``by, mean, low, high, n``, sorted by ``by``; empty when ``rows`` is.
    """
    if rows.empty:
        return pd.DataFrame(columns=[by, "mean", "low", "high", "n"])
    matrix = rows.groupby([*unit, by], sort=False)[value].mean().unstack(by).sort_index(axis=1)  # (P, L)
    mean, low, high, n = bootstrap_mean(matrix.to_numpy(), n_boot=n_boot, seed=seed, key=key)
    return pd.DataFrame({by: matrix.columns.to_numpy(), "mean": mean, "low": low, "high": high, "n": n})


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN for fewer than 3 pairs or a constant input."""
    x, y = pd.Series(np.asarray(x, dtype=float)), pd.Series(np.asarray(y, dtype=float))
    if len(x) < 3 or x.nunique() < 2 or y.nunique() < 2:
        return float("nan")
    return float(np.corrcoef(x.rank().to_numpy(), y.rank().to_numpy())[0, 1])


def r_squared(x: np.ndarray, y: np.ndarray) -> float:
    """The share of the variance of ``y`` a straight line in ``x`` explains (Pearson r²); NaN when undefined."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1] ** 2)


def layer_ranges(layers: list[int] | np.ndarray) -> str:
    """Compress layer numbers into ranges.

    >>> layer_ranges([0, 1, 2, 5, 7, 8])
    '0–2, 5, 7–8'
    """
    layers = sorted(int(v) for v in layers)
    if not layers:
        return "none"
    parts, start, prev = [], layers[0], layers[0]
    for v in layers[1:] + [None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        parts.append(f"{start}" if start == prev else f"{start}–{prev}")
        if v is not None:
            start = prev = v
    return ", ".join(parts)
