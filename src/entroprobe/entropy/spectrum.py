"""From a batch of kernels to entropies: eigenvalues, the entropy of a spectrum, and the CPU threading of both.

For ``A = K / tr K`` with eigenvalues ``λ`` the entropy of order α is

.. math::

    S_\\alpha(A) = \\frac{1}{1 - \\alpha} \\log_b \\sum_i \\lambda_i^\\alpha,
    \\qquad S_1 = -\\sum_i \\lambda_i \\log_b \\lambda_i,
    \\qquad S_\\infty = -\\log_b \\lambda_{\\max}.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TypeVar

import torch

from entroprobe.entropy import _checks

__all__ = ["entropy_from_eigenvalues"]

_ALPHA_ONE_TOL = 1e-6  # |α − 1| below this uses the expansion around the Shannon limit (continuous at α = 1)
_NOISE_EPS = 4.0  # eigenvalues ≤ this many machine epsilons of the largest are treated as zero
# Below this many rows per kernel, work is not spread over threads: starting threads and switching torch's thread
# count cost more than the eigenvalues themselves (2 ms against 0.05 ms for 7 matrices of n = 10; 7 ms against
# 4 ms at n = 100; break-even measured at n ≈ 160–256 on an idle 2-core machine).
_SPREAD_MIN_N = 192
T = TypeVar("T")


def entropy_from_eigenvalues(eigenvalues: torch.Tensor, alpha: float = 1.01, base: float = 2) -> torch.Tensor:
    """Rényi entropy of order ``alpha`` of distributions given as the last dimension of ``eigenvalues``.

    Negative values are clamped to 0; values at the eigensolver's rounding noise (twice the magnitude of the
    most negative value, and at least ``4 · eps · λ_max`` of the input's precision) are dropped as numerically
    zero; the rest are renormalised to sum 1 before any logarithm (0 · log 0 = 0). Computed in float64.

    >>> entropy_from_eigenvalues(torch.tensor([0.25, 0.25, 0.25, 0.25]), alpha=1.0).item()
    2.0
    >>> entropy_from_eigenvalues(torch.tensor([1.0, 0.0, -1e-9]), alpha=2.0).item()
    0.0
    """
    alpha = _checks.check_alpha(alpha)
    base = _checks.check_base(base)
    return entropy(eigenvalues, alpha, base, torch.finfo(eigenvalues.dtype).eps)


def entropy(lam: torch.Tensor, alpha: float, base: float, eps: float) -> torch.Tensor:
    """:func:`entropy_from_eigenvalues` for trusted arguments, dropping values below the noise of precision ``eps``."""
    lam = lam.double()  # (..., n)
    # numerically zero: at or below the rounding noise of the eigensolver, read off the most negative
    # eigenvalue (noise is symmetric about 0), and never above a few epsilons of the largest
    noise = lam.amin(dim=-1, keepdim=True).clamp_max(0.0).abs()  # (..., 1)
    tol = torch.maximum(2 * noise, _NOISE_EPS * eps * lam.amax(dim=-1, keepdim=True))  # (..., 1)
    lam = lam.clamp_min(0.0)
    lam = torch.where(lam > tol, lam, torch.zeros_like(lam))
    lam = lam / lam.sum(dim=-1, keepdim=True)
    return weighted_entropy(lam, torch.ones_like(lam), alpha, base)


def weighted_entropy(p: torch.Tensor, count: torch.Tensor, alpha: float, base: float) -> torch.Tensor:
    """Entropy of order α of a distribution holding ``count[i]`` copies of probability ``p[i]`` (last dimension).

    ``Σ count · p`` must be 1; zero probabilities contribute nothing (0 · log 0 = 0).
    """
    log_p = torch.where(p > 0, p.log(), torch.full_like(p, -math.inf))  # (..., n)
    if math.isinf(alpha):
        h = -torch.where(count > 0, p, torch.zeros_like(p)).amax(dim=-1).log()
    elif abs(alpha - 1.0) < _ALPHA_ONE_TOL:
        # S_α = H − (α − 1)/2 · Var_λ(log λ) + O((α − 1)²): the Shannon limit and its first-order correction
        finite_log = torch.where(p > 0, log_p, torch.zeros_like(p))
        shannon = -(count * p * finite_log).sum(dim=-1)
        variance = (count * p * finite_log.square()).sum(dim=-1) - shannon.square()
        h = shannon - (alpha - 1.0) / 2 * variance
    else:
        log_count = torch.where(count > 0, count.log(), torch.full_like(count, -math.inf))
        h = torch.logsumexp(alpha * log_p + log_count, dim=-1) / (1.0 - alpha)
    return h.clamp_min(0.0) / math.log(base) + 0.0  # + 0.0 turns −0.0 into 0.0


def spectrum_entropy(kernel: torch.Tensor, alpha: float, base: float) -> torch.Tensor:
    """Entropy of ``A = K / tr K`` for a batch of kernels ``(B, n, n)``; α = 2 needs no eigendecomposition."""
    trace = kernel.diagonal(dim1=-2, dim2=-1).sum(dim=-1)  # (B,)
    if alpha == 2.0:
        # S_2 = −log_b ‖A‖_F², exact for the trace-normalised A (Σ K² / n² would assume a unit diagonal)
        frobenius = kernel.square().sum(dim=(-2, -1)).double() / trace.double().square()  # (B,)
        return (-frobenius.log()).clamp_min(0.0) / math.log(base) + 0.0
    eigenvalues = eigvalsh(kernel) / trace[:, None]  # (B, n)
    return entropy(eigenvalues, alpha, base, torch.finfo(kernel.dtype).eps)


def saturation(kernel: torch.Tensor) -> torch.Tensor:
    """``1 − 2·mean_{i≠j} K_ij`` per kernel: +1 for K = I, −1 for K = all ones, 0 when n = 1."""
    n = kernel.shape[-1]
    if n < 2:
        return torch.zeros(kernel.shape[0], dtype=torch.float64, device=kernel.device)
    total = kernel.sum(dim=(-2, -1)).double() - kernel.diagonal(dim1=-2, dim2=-1).sum(dim=-1).double()
    return 1.0 - 2.0 * total / (n * (n - 1))


_pool: tuple[int, int, ThreadPoolExecutor] | None = None  # (process id, threads, the pool), made on first use


def _threads(count: int) -> ThreadPoolExecutor:
    """A pool of ``count`` threads or more, kept for the process's later calls: starting threads for every call cost
    about 3.5 ms, as much as the eigenvalues of a few hundred tokens. A forked child gets a pool of its own."""
    global _pool
    if _pool is None or _pool[0] != os.getpid() or _pool[1] < count:
        if _pool is not None and _pool[0] == os.getpid():
            _pool[2].shutdown(wait=False)
        _pool = (os.getpid(), count, ThreadPoolExecutor(count, thread_name_prefix="entroprobe-spread"))
    return _pool[2]


def spread(work: Callable[[int], T], items: int) -> list[T]:
    """``[work(i) for i in range(items)]`` on torch's number of CPU threads, each running torch single-threaded.

    On a 2-core machine MKL's multithreaded symmetric eigensolver was measured 2–3× slower than its
    single-threaded one at n = 512, and 2–20× slower at n = 512–2048 while other processes load the machine
    (OpenMP threads spinning against them); independent matrices solved one per thread, several at once, avoid
    that. A failure (or Ctrl-C) cancels the items not yet started, and waits for those running.

    torch's thread count is process-wide state: while this runs, a thread that starts using torch elsewhere in
    the process starts with one thread, and the caller's count is written back at the end.
    """
    threads = torch.get_num_threads()

    def alone(i: int) -> T:
        torch.set_num_threads(1)
        return work(i)

    futures = [_threads(threads).submit(alone, i) for i in range(items)]
    try:
        return [future.result() for future in futures]
    finally:
        for future in futures:
            future.cancel()
        wait(futures)
        torch.set_num_threads(threads)


def eigvalsh(kernels: torch.Tensor) -> torch.Tensor:
    """``torch.linalg.eigvalsh`` of a batch; on CPU, matrices of n ≥ ``_SPREAD_MIN_N`` are spread over threads.

    Each thread solves its share of the batch with one LAPACK thread (see :func:`spread`); a single large
    matrix then gets one thread (see BENCHMARKS.md for n = 2048). Smaller matrices are solved as torch solves them.
    """
    threads = torch.get_num_threads()
    if kernels.device.type != "cpu" or threads == 1 or kernels.shape[-1] < _SPREAD_MIN_N:
        return torch.linalg.eigvalsh(kernels)
    shares = kernels.chunk(threads)
    return torch.cat(spread(lambda i: torch.linalg.eigvalsh(shares[i]), len(shares)))
