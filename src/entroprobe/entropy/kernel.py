"""Gaussian kernels over token embeddings: squared distances, the median bandwidth rule, Gram matrices.

Everything here works on a flat batch ``(B, n, d)``; the public functions in :mod:`.renyi` handle any leading
shape, validation and memory-bounded chunking, and call these.

Distances are computed on each sequence rescaled by a power of two (exact in floating point) so that its
largest centred coordinate lies in [0.5, 1): states of any finite magnitude, 1e-30 or 1e30, give the same
distances up to that factor, without underflow or overflow. The median rule is scale-invariant, so its values
do not depend on the input's scale at all; a fixed σ is rescaled by the same factor.
"""

from __future__ import annotations

import functools

import torch

__all__ = ["squared_distances", "median_distance", "median_sigma", "gaussian_kernel"]

# The Gram formula ‖c_i‖² + ‖c_j‖² − 2 c_i·c_j errs by about eps·sqrt(d)·(‖c_i‖² + ‖c_j‖²): near pairs lose
# their digits to cancellation. Pairs where that error would exceed this share of their distance are recomputed
# from their difference, which is exact to rounding. float32 keeps pairs with up to about 1e-3 relative error
# (a tighter bound recomputes the within-cluster pairs of clustered states, at a cost); float64 about 1e-9.
_NEAR_RELATIVE_ERROR = {torch.float32: 2.0**-10, torch.float64: 2.0**-30}

# Distances are computed in at most this many block rows, of at least this many rows each but the last (n = 512:
# 4 block rows; n = 2048: 8). Smaller blocks made the Gram products too thin to run at full speed.
_GRAM_BLOCK_ROWS = 8
_GRAM_MIN_BLOCK = 128
_CPU_GROUP_BYTES = 4 << 20  # on the CPU, sequences are worked in groups of at most this many bytes of rows
_DIRECT_CHUNK = 1 << 22  # elements of pair differences recomputed at once
# Squared norms of the centred rows inside this range need no rescaling: every distance and pair sum is then far
# from overflow and underflow in float32 (2^±128) as in float64. Outside it the rows are rescaled by powers of two.
_SAFE_NORMS = (2.0**-100, 2.0**100)


def _power_of_two_scale(values: torch.Tensor) -> torch.Tensor:
    """Per sequence of ``values`` (b, n, d): ``2^-e`` with ``max|values| · 2^-e`` in [0.5, 1); 1 for all zeros."""
    # max |v| from the two extremes: values.abs() would be a copy of the whole batch (measured: 0.36 s of 1.2)
    top = torch.maximum(values.amax(dim=(-2, -1)), -values.amin(dim=(-2, -1))).double()  # (b,)
    exponent = torch.frexp(top).exponent  # top = mantissa · 2^exponent, mantissa in [0.5, 1)
    return torch.where(top > 0, torch.ldexp(torch.ones_like(top), -exponent), torch.ones_like(top))


def squared_distances(x: torch.Tensor, *, return_scale: bool = False):
    """Pairwise squared Euclidean distances ``D_ij = ‖x_i − x_j‖²`` of each sequence in a batch.

    Computed as ``‖c_i‖² + ‖c_j‖² − 2 c_i·c_j`` on the mean-centred rows ``c``, rescaled by a power of two per
    sequence; no ``(n, n, d)`` tensor is formed. Pairs that formula cannot resolve (near pairs, where it
    cancels to a few digits) are recomputed from ``x_i − x_j``: identical rows give exactly 0, near-duplicates
    their exact distance, whatever the precision. The diagonal is exactly 0.

    D is symmetric, so only its lower block triangle is computed, one block row at a time (the Gram product
    for those rows, then the distances), and mirrored: 62.5 % of the products at n = 512, 56 % at n = 2048.
    On the CPU a few sequences are worked at a time (``_CPU_GROUP_BYTES`` of rows, or one sequence), into the
    output, so their temporaries are reused by the allocator.

    Args:
        x: ``(B, n, d)`` float32 or float64.
        return_scale: return ``(D · s², s)`` with ``s`` (B,) float64 the power of two each sequence was scaled
            by (its distances then lie in [0, 4d], never underflowing or overflowing); by default ``D`` itself,
            which can overflow or underflow for states beyond about 1e±19 in float32.

    Returns:
        ``(B, n, n)`` in ``x``'s dtype, non-negative, symmetric (exactly, outside the diagonal blocks).
    """
    batch, n, d = x.shape
    if x.dtype not in _NEAR_RELATIVE_ERROR:
        raise TypeError(f"squared_distances takes float32 or float64 rows; got {x.dtype} (upcast half precision)")
    dist = torch.empty(batch, n, n, dtype=x.dtype, device=x.device)
    scales = torch.empty(batch, dtype=torch.float64, device=x.device)
    near_factor = min(0.5, torch.finfo(x.dtype).eps * d**0.5 / _NEAR_RELATIVE_ERROR[x.dtype])
    block = max(_GRAM_MIN_BLOCK, -(-n // _GRAM_BLOCK_ROWS))
    step = max(1, _CPU_GROUP_BYTES // (n * d * x.element_size())) if x.device.type == "cpu" else batch
    for first in range(0, batch, step):
        rows = x[first : first + step]  # (b, n, d)
        out = dist[first : first + step]  # (b, n, n), a view being filled
        # the common case at no extra pass over the rows: centred as they are, unless their squared norms
        # (the Gram diagonal, read after the fact) leave the safe range of the precision; then rescaled
        ones = torch.ones(rows.shape[0], dtype=torch.float64, device=x.device)
        norms = _fill(out, rows, rows - rows.mean(dim=-2, keepdim=True), ones, ones, block, near_factor)
        top_norm = norms.amax(dim=-1)  # (b,)
        if not bool(((top_norm >= _SAFE_NORMS[0]) & (top_norm <= _SAFE_NORMS[1])).all()):
            outer = _power_of_two_scale(rows)  # (b,): max |rows| to [0.5, 1), exact
            c = rows * outer.to(x.dtype)[:, None, None]
            c -= c.mean(dim=-2, keepdim=True)  # (b, n, d), centred
            inner = _power_of_two_scale(c)  # (b,): max |c| to [0.5, 1), exact
            c *= inner.to(x.dtype)[:, None, None]
            _fill(out, rows, c, outer, inner, block, near_factor)
            scales[first : first + step] = outer * inner
        else:
            scales[first : first + step] = 1.0
    if return_scale:
        return dist, scales
    return dist.div_(scales.square().to(x.dtype)[:, None, None])


def _fill(out: torch.Tensor, rows: torch.Tensor, c: torch.Tensor, outer: torch.Tensor, inner: torch.Tensor,
          block: int, near_factor: float) -> torch.Tensor:
    """Fill ``out`` (b, n, n) with the distances of the centred, scaled rows ``c``; returns their squared norms."""
    n = c.shape[1]
    norms = torch.empty(c.shape[:2], dtype=c.dtype, device=c.device)  # (b, n): ‖c_i‖², the Gram diagonal
    for top in range(0, n, block):
        bottom = min(top + block, n)
        band = out[:, top:bottom, :bottom]  # (b, rows, bottom): this block row of the lower triangle
        torch.matmul(c[:, top:bottom], c[:, :bottom].transpose(-1, -2), out=band)
        norms[:, top:bottom] = band[:, :, top:bottom].diagonal(dim1=-2, dim2=-1)
        pair_norms = norms[:, top:bottom, None] + norms[:, None, :bottom]  # (b, rows, bottom)
        band.mul_(-2).add_(pair_norms).clamp_(min=0.0)
        near = band <= pair_norms.mul_(near_factor)  # (b, rows, bottom)
        near[:, :, top:bottom].diagonal(dim1=-2, dim2=-1).fill_(False)  # a token and itself: 0 below
        # both (i, j) and (j, i) of the diagonal block are recomputed, to the same value: it stays symmetric
        _recompute_near_pairs(band, near, rows, outer, inner, top)
        band[:, :, top:bottom].diagonal(dim1=-2, dim2=-1).zero_()
        out[:, :top, top:bottom].copy_(band[:, :, :top].transpose(-1, -2))
    return norms


def _recompute_near_pairs(band: torch.Tensor, near: torch.Tensor, rows: torch.Tensor, outer: torch.Tensor,
                          inner: torch.Tensor, top: int) -> None:
    """Overwrite ``band[b, i, j]`` where ``near`` with ``‖(x_i − x_j) · outer · inner‖²`` from the rows."""
    where = near.nonzero()  # (P, 3): sequence, row within the band, column
    if where.numel() == 0:
        return
    d = rows.shape[-1]
    per_chunk = max(1, _DIRECT_CHUNK // d)
    for start in range(0, where.shape[0], per_chunk):
        b, i, j = where[start : start + per_chunk].unbind(dim=1)
        diff = rows[b, top + i] - rows[b, j]  # (p, d): one rounding each, never cancels
        diff *= outer.to(rows.dtype)[b, None]
        diff *= inner.to(rows.dtype)[b, None]
        band[b, i, j] = diff.square().sum(dim=-1).to(band.dtype)


def _median_lastdim(values: torch.Tensor) -> torch.Tensor:
    """The median along the last dimension, the mean of the two middle values when their count is even."""
    m = values.shape[-1]
    k = (m + 1) // 2
    if m == 1:
        return values[..., 0]
    # the k + 1 smallest values (unsorted), then their two largest: the (k+1)-th and the k-th order statistics;
    # one selection pass, where kthvalue and a search for the next value took about twice as long
    smallest = torch.topk(values, k + 1, dim=-1, largest=False, sorted=False).values  # (..., k + 1)
    two = torch.topk(smallest, 2, dim=-1).values  # (..., 2), descending
    return two[..., 1] if m % 2 == 1 else (two[..., 0] + two[..., 1]) / 2


@functools.lru_cache(maxsize=64)
def _upper_pairs(n: int, device: torch.device) -> torch.Tensor:
    """Flat indices ``i·n + j`` of the pairs i < j of an n × n matrix."""
    rows, cols = torch.triu_indices(n, n, offset=1, device=device)
    return rows * n + cols


def median_distance(dist: torch.Tensor) -> torch.Tensor:
    """The median rule's squared distance ``median_{i<j} D_ij`` for each sequence of a batch.

    When the median is 0 (more than half of the pairs coincide exactly) the median of the non-zero distances is
    used; when every distance is 0 (or n = 1) the result is NaN: no bandwidth is defined, and the kernel is all
    ones whatever σ, so the entropy is 0. The rule is continuous in the input except at exact ties: a tie of
    more than half of the pairs switches to the non-zero median, where a tiny jitter would not.

    Args:
        dist: ``(B, n, n)`` squared distances from :func:`squared_distances`.

    Returns:
        ``(B,)`` float64.
    """
    batch, n, _ = dist.shape
    if n < 2:
        return torch.full((batch,), float("nan"), dtype=torch.float64, device=dist.device)
    pairs = dist.reshape(batch, n * n).index_select(1, _upper_pairs(n, dist.device))  # (B, n(n-1)/2), i < j
    median = _median_lastdim(pairs).double()  # (B,)
    if bool(torch.isnan(median).any()):  # never passes for "all identical": that is a median of 0
        first = int(torch.nonzero(torch.isnan(median))[0])
        raise FloatingPointError(f"NaN squared distances in sequence {first} of the batch (an input that is not finite?)")
    for b in torch.nonzero(median == 0).flatten().tolist():
        nonzero = pairs[b][pairs[b] > 0]
        median[b] = _median_lastdim(nonzero).double() if nonzero.numel() else float("nan")
    return median


def median_sigma(dist: torch.Tensor) -> torch.Tensor:
    """The median bandwidth rule: ``σ = sqrt(median_{i<j} D_ij / 2)`` (see :func:`median_distance`), (B,) float64.

    For an odd number of pairs this is the median pairwise distance divided by √2.
    """
    return torch.sqrt(median_distance(dist) / 2)


def gaussian_kernel(dist: torch.Tensor, sigma: torch.Tensor, *, inplace: bool = False) -> torch.Tensor:
    """``K_ij = exp(−D_ij / (2σ²))`` with one σ per sequence; a NaN σ (all rows identical) gives all ones.

    Args:
        dist: ``(B, n, n)`` squared distances.
        sigma: ``(B,)`` bandwidths (float64), NaN where undefined.
        inplace: write the kernel over ``dist`` (no new ``(B, n, n)`` buffer) when the caller is done with it.

    Returns:
        ``(B, n, n)`` in ``dist``'s dtype, unit diagonal.
    """
    scale = torch.where(torch.isnan(sigma), torch.zeros_like(sigma), -0.5 / sigma.square())  # (B,)
    # a tiny σ must not overflow to −inf (0 · −inf = NaN on the diagonal): the most negative finite scale
    scale = scale.clamp_min(-torch.finfo(dist.dtype).max).to(dist.dtype)
    if inplace:
        return dist.mul_(scale[:, None, None]).exp_()  # (B, n, n)
    return torch.mul(dist, scale[:, None, None]).exp_()  # (B, n, n), one new buffer
