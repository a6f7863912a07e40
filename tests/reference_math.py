"""An independent, obvious reference for the estimators: numpy float64, broadcast differences, full eigenvalues.

Written apart from ``entroprobe.entropy``: no rescaling, no block rows, no tolerance shared with the code.
"""

from __future__ import annotations

import math

import numpy as np


def reference_sigma(points: np.ndarray) -> float:
    n = len(points)
    d2 = ((points[:, None, :] - points[None, :, :]) ** 2).sum(-1)
    upper = d2[np.triu_indices(n, 1)]
    median = np.median(upper) if upper.size else 0.0
    if median == 0:
        nonzero = upper[upper > 0]
        if nonzero.size == 0:
            return math.nan
        median = np.median(nonzero)
    return math.sqrt(median / 2)


def reference_entropy(points, alpha: float, sigma: float | None = None, base: float = 2.0) -> float:
    points = np.asarray(points, dtype=np.float64)
    n = len(points)
    if sigma is None:
        sigma = reference_sigma(points)
    if math.isnan(sigma):
        return 0.0
    d2 = ((points[:, None, :] - points[None, :, :]) ** 2).sum(-1)
    kernel = np.exp(-d2 / (2 * sigma**2))
    lam = np.linalg.eigvalsh(kernel / np.trace(kernel))
    lam = np.clip(lam, 0, None)
    lam[lam <= n * np.finfo(np.float64).eps * lam.max()] = 0
    lam = lam / lam.sum()
    return _entropy_of(lam[lam > 0], alpha, base)


def _entropy_of(p: np.ndarray, alpha: float, base: float) -> float:
    """Rényi entropy of order α of the probabilities p (all positive)."""
    if alpha == 1:
        h = -(p * np.log(p)).sum()
    elif math.isinf(alpha):
        h = -math.log(p.max())
    else:
        h = math.log((p**alpha).sum()) / (1 - alpha)
    return max(h, 0.0) / math.log(base)


def reference_equidistant(n: int, c: float, alpha: float, base: float = 2.0) -> float:
    """Entropy of the n × n kernel with unit diagonal and every other entry c, from its eigenvalues."""
    kernel = np.full((n, n), c, dtype=np.float64)
    np.fill_diagonal(kernel, 1.0)
    lam = np.clip(np.linalg.eigvalsh(kernel / n), 0, None)
    p = lam[lam > n * np.finfo(np.float64).eps * lam.max()]  # eigensolver noise is not a probability
    return _entropy_of(p / p.sum(), alpha, base)


def reference_subsampled(points: np.ndarray, subsets: np.ndarray, alpha: float, sigma: float | None = None) -> float:
    """The mean of :func:`reference_entropy` over the given subsets of the rows (one row of indices each)."""
    return float(np.mean([reference_entropy(points[list(rows)], alpha, sigma) for rows in subsets]))
