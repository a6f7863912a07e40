"""Gaussian kernels over token embeddings: squared distances, the median bandwidth rule, Gram matrices.

Everything here works on a flat batch ``(B, n, d)``; the public functions in :mod:`.renyi` handle any leading
shape, validation and memory-bounded chunking, and call these.
"""

from __future__ import annotations

import torch

__all__ = ["squared_distances", "median_sigma", "gaussian_kernel"]

# Squared distances below this many machine epsilons (relative to the rows' squared norms after centring,
# times sqrt(d)) are at the rounding floor of the Gram-matrix formula and are set to exactly zero, so that
# identical rows are identical to the kernel whatever the precision.
_ROUNDING_FACTOR = 8.0


def squared_distances(x: torch.Tensor) -> torch.Tensor:
    """Pairwise squared Euclidean distances ``D_ij = ‖x_i − x_j‖²`` of each sequence in a batch.

    Computed as ``‖c_i‖² + ‖c_j‖² − 2 c_i·c_j`` on the mean-centred rows ``c`` (translation-invariant and far
    more accurate than on raw transformer states, whose rows share a large common offset); no ``(n, n, d)``
    tensor is formed. Distances at the rounding floor are set to 0 and the diagonal is exactly 0.

    Args:
        x: ``(B, n, d)`` float32 or float64.

    Returns:
        ``(B, n, n)`` in ``x``'s dtype, symmetric up to rounding, non-negative.
    """
    c = x - x.mean(dim=-2, keepdim=True)  # (B, n, d)
    gram = c @ c.transpose(-1, -2)  # (B, n, n)
    sq = gram.diagonal(dim1=-2, dim2=-1).clone()  # (B, n)
    pair_norms = sq[:, :, None] + sq[:, None, :]  # (B, n, n)
    dist = gram.mul_(-2).add_(pair_norms)  # (B, n, n), reuses gram's memory
    eps = torch.finfo(x.dtype).eps
    floor = pair_norms.mul_(_ROUNDING_FACTOR * eps * x.shape[-1] ** 0.5)  # (B, n, n), reuses pair_norms
    dist.masked_fill_(dist <= floor, 0.0)
    dist.diagonal(dim1=-2, dim2=-1).zero_()
    return dist


def _median_lastdim(values: torch.Tensor) -> torch.Tensor:
    """The median along the last dimension, the mean of the two middle values when their count is even."""
    m = values.shape[-1]
    k = (m + 1) // 2
    low = torch.kthvalue(values, k, dim=-1, keepdim=True).values  # (..., 1)
    if m % 2 == 1:
        return low.squeeze(-1)
    # the next order statistic: low again if it occurs more than k times, else the smallest value above it
    above = values.masked_fill(values <= low, float("inf")).amin(dim=-1, keepdim=True)  # (..., 1)
    repeated = (values <= low).sum(dim=-1, keepdim=True) > k
    high = torch.where(repeated, low, above)
    return ((low + high) / 2).squeeze(-1)


def median_sigma(dist: torch.Tensor) -> torch.Tensor:
    """The median bandwidth rule: ``σ = sqrt(median_{i<j} D_ij / 2)`` for each sequence of a batch.

    When the median is 0 (more than half of the pairs coincide) the median of the non-zero distances is used;
    when every distance is 0 (or n = 1) σ is NaN: no bandwidth is defined, and the kernel is all ones
    whatever σ, so the entropy is 0.

    Args:
        dist: ``(B, n, n)`` squared distances from :func:`squared_distances`.

    Returns:
        ``(B,)`` float64.
    """
    batch, n, _ = dist.shape
    if n < 2:
        return torch.full((batch,), float("nan"), dtype=torch.float64, device=dist.device)
    rows, cols = torch.triu_indices(n, n, offset=1, device=dist.device)
    pairs = dist[:, rows, cols]  # (B, n(n-1)/2)
    median = _median_lastdim(pairs).double()  # (B,)
    for b in torch.nonzero(median == 0).flatten().tolist():
        nonzero = pairs[b][pairs[b] > 0]
        median[b] = _median_lastdim(nonzero).double() if nonzero.numel() else float("nan")
    return torch.sqrt(median / 2)


def gaussian_kernel(dist: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``K_ij = exp(−D_ij / (2σ²))`` with one σ per sequence; a NaN σ (all rows identical) gives all ones.

    Args:
        dist: ``(B, n, n)`` squared distances.
        sigma: ``(B,)`` bandwidths (float64), NaN where undefined.

    Returns:
        ``(B, n, n)`` in ``dist``'s dtype, unit diagonal.
    """
    scale = torch.where(torch.isnan(sigma), torch.zeros_like(sigma), -0.5 / sigma.square())  # (B,)
    # a tiny σ must not overflow to −inf (0 · −inf = NaN on the diagonal): the most negative finite scale
    scale = scale.clamp_min(-torch.finfo(dist.dtype).max).to(dist.dtype)
    return torch.exp(dist * scale[:, None, None])  # (B, n, n)
