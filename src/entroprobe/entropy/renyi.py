"""Matrix-based Rényi entropy of token embeddings, and the joint / conditional / mutual-information proxies.

For rows ``z_1 … z_n`` (token embeddings) the Gaussian Gram matrix ``K_ij = exp(−‖z_i − z_j‖² / (2σ²))`` is
trace-normalised, ``A = K / tr K``, and the entropy of order α is computed from its eigenvalues ``λ``:

.. math::

    S_\\alpha(A) = \\frac{1}{1 - \\alpha} \\log_b \\sum_i \\lambda_i^\\alpha,
    \\qquad S_1 = -\\sum_i \\lambda_i \\log_b \\lambda_i,
    \\qquad S_\\infty = -\\log_b \\lambda_{\\max}.

It lies in ``[0, log_b n]``: 0 when all rows coincide, ``log_b n`` when they are mutually far apart.
The joint entropy of ``x`` (n rows) and ``y`` (m rows) is the entropy of the block kernel over the rows of
``[x; y]``; the conditional-entropy proxy is ``S(x, y) − S(x)`` and the mutual-information proxy
``S(x) + S(y) − S(x, y)``, every term with one shared σ.

One engine computes every measure; the public functions are thin faces over it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from entroprobe.entropy import _checks
from entroprobe.entropy.kernel import gaussian_kernel, median_sigma, squared_distances

__all__ = [
    "EntropyResult",
    "DEFAULT_MEMORY_BUDGET",
    "SATURATION_THRESHOLD",
    "renyi_entropy",
    "joint_entropy",
    "conditional_entropy",
    "mutual_information",
    "prompt_response_entropies",
    "entropy_from_eigenvalues",
    "check_parameters",
]

DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes of extra working memory the batched computation may use
SATURATION_THRESHOLD = 0.9  # |saturation| at or above this flags a saturated kernel (see kernel_diagnostics)
_ALPHA_ONE_TOL = 1e-6  # |α − 1| below this uses the expansion around the Shannon limit (continuous at α = 1)
_NOISE_EPS = 4.0  # eigenvalues ≤ this many machine epsilons of the largest are treated as zero
T = TypeVar("T")


@dataclass(frozen=True)
class EntropyResult:
    """A measure with what it was computed from; every field has the input's leading shape.

    Attributes:
        value: the entropy (or proxy), in units of log base ``base``.
        sigma: the kernel bandwidth used (NaN where every row coincided: then the kernel is all ones).
        saturation: ``1 − 2·mean_{i≠j} K_ij`` of the kernel the value came from: +1 when K ≈ I (σ too small,
            the value then counts tokens: ≈ log_b n), −1 when K ≈ all-ones (σ too large: ≈ 0).
        n: the number of rows the kernel saw; ``log_b n`` is the ceiling of an entropy.
    """

    value: torch.Tensor
    sigma: torch.Tensor
    saturation: torch.Tensor
    n: int

    @property
    def saturated(self) -> torch.Tensor:
        """Where ``|saturation| ≥ SATURATION_THRESHOLD``."""
        return self.saturation.abs() >= SATURATION_THRESHOLD


# -- eigenvalues → entropy ----------------------------------------------------------------------------------


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
    return _entropy(eigenvalues, alpha, base, torch.finfo(eigenvalues.dtype).eps)


def _entropy(lam: torch.Tensor, alpha: float, base: float, eps: float) -> torch.Tensor:
    lam = lam.double()  # (..., n)
    # numerically zero: at or below the rounding noise of the eigensolver, read off the most negative
    # eigenvalue (noise is symmetric about 0), and never above a few epsilons of the largest
    noise = lam.amin(dim=-1, keepdim=True).clamp_max(0.0).abs()  # (..., 1)
    tol = torch.maximum(2 * noise, _NOISE_EPS * eps * lam.amax(dim=-1, keepdim=True))  # (..., 1)
    lam = lam.clamp_min(0.0)
    lam = torch.where(lam > tol, lam, torch.zeros_like(lam))
    lam = lam / lam.sum(dim=-1, keepdim=True)
    log_lam = torch.where(lam > 0, lam.log(), torch.full_like(lam, -math.inf))  # (..., n)
    if math.isinf(alpha):
        h = -lam.amax(dim=-1).log()
    elif abs(alpha - 1.0) < _ALPHA_ONE_TOL:
        # S_α = H − (α − 1)/2 · Var_λ(log λ) + O((α − 1)²): the Shannon limit and its first-order correction
        finite_log = torch.where(lam > 0, log_lam, torch.zeros_like(lam))
        shannon = -(lam * finite_log).sum(dim=-1)
        variance = (lam * finite_log.square()).sum(dim=-1) - shannon.square()
        h = shannon - (alpha - 1.0) / 2 * variance
    else:
        h = torch.logsumexp(alpha * log_lam, dim=-1) / (1.0 - alpha)
    return h.clamp_min(0.0) / math.log(base) + 0.0  # + 0.0 turns −0.0 into 0.0


def _spectrum_entropy(kernel: torch.Tensor, alpha: float, base: float) -> torch.Tensor:
    """Entropy of ``A = K / tr K`` for a batch of kernels ``(B, n, n)``; α = 2 needs no eigendecomposition."""
    trace = kernel.diagonal(dim1=-2, dim2=-1).sum(dim=-1)  # (B,)
    if alpha == 2.0:
        # S_2 = −log_b ‖A‖_F², exact for the trace-normalised A (Σ K² / n² would assume a unit diagonal)
        frobenius = kernel.square().sum(dim=(-2, -1)).double() / trace.double().square()  # (B,)
        return (-frobenius.log()).clamp_min(0.0) / math.log(base) + 0.0
    eigenvalues = _eigvalsh(kernel) / trace[:, None]  # (B, n)
    return _entropy(eigenvalues, alpha, base, torch.finfo(kernel.dtype).eps)


# Below this many rows per kernel, work is not spread over threads: starting threads and switching torch's thread
# count cost more than the eigenvalues themselves (2 ms against 0.05 ms for 7 matrices of n = 10; 7 ms against
# 4 ms at n = 100; break-even measured at n ≈ 160–256 on an idle 2-core machine).
_SPREAD_MIN_N = 192
# Sequences are worked one per thread (see _engine) from this much work each, N²·(N + d) for N rows of d features.
# Against batched calls on 2 threads, best of 10–15 interleaved rounds: 0.93× at N = 512, d = 2048 (6.7e8, 33
# layers), 0.95× at N = 1024, d = 2048; 0.99× at N = 384, d = 1024 (2.1e8); 1.07× at N = 300, d = 384 and
# 1.18× at N = 200, d = 384, where the per-call costs outweigh what the cache saves.
_SPREAD_MIN_WORK = 1 << 28


def _spread(work: Callable[[int], T], items: int) -> list[T]:
    """``[work(i) for i in range(items)]`` on torch's number of CPU threads, each running torch single-threaded.

    On a 2-core machine MKL's multithreaded symmetric eigensolver was measured 2–3× slower than its
    single-threaded one at n = 512, and 2–20× slower at n = 512–2048 while other processes load the machine
    (OpenMP threads spinning against them); independent matrices solved one per thread, several at once, avoid
    that. A failure (or Ctrl-C) cancels the items not yet started.

    torch's thread count is process-wide state: while this runs, a thread that starts using torch elsewhere in
    the process starts with one thread, and the caller's count is written back at the end.
    """
    threads = torch.get_num_threads()
    pool = ThreadPoolExecutor(min(threads, items), initializer=torch.set_num_threads, initargs=(1,))
    try:
        return list(pool.map(work, range(items)))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(threads)


def _eigvalsh(kernels: torch.Tensor) -> torch.Tensor:
    """``torch.linalg.eigvalsh`` of a batch; on CPU, matrices of n ≥ ``_SPREAD_MIN_N`` are spread over threads.

    Each thread solves its share of the batch with one LAPACK thread (see :func:`_spread`); a single large
    matrix then gets one thread (see BENCHMARKS.md for n = 2048). Smaller matrices are solved as torch solves them.
    """
    threads = torch.get_num_threads()
    if kernels.device.type != "cpu" or threads == 1 or kernels.shape[-1] < _SPREAD_MIN_N:
        return torch.linalg.eigvalsh(kernels)
    shares = kernels.chunk(threads)
    return torch.cat(_spread(lambda i: torch.linalg.eigvalsh(shares[i]), len(shares)))


def _saturation(kernel: torch.Tensor) -> torch.Tensor:
    """``1 − 2·mean_{i≠j} K_ij`` per kernel: +1 for K = I, −1 for K = all ones, 0 when n = 1."""
    n = kernel.shape[-1]
    if n < 2:
        return torch.zeros(kernel.shape[0], dtype=torch.float64, device=kernel.device)
    total = kernel.sum(dim=(-2, -1)).double() - kernel.diagonal(dim1=-2, dim2=-1).sum(dim=-1).double()
    return 1.0 - 2.0 * total / (n * (n - 1))


# -- the engine ------------------------------------------------------------------------------------------------

# A request is (rows the kernel is built over, rows whose distances set the median σ): each "x", "y" or "xy".
Request = tuple[str, str]
Row = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # a request's (value, σ, saturation) over a batch


def _engine(
    x: torch.Tensor,
    y: torch.Tensor | None,
    requests: list[Request],
    *,
    alpha: float,
    sigma: str | torch.Tensor,
    base: float,
    memory_budget: int,
) -> dict[Request, EntropyResult]:
    """Compute each requested entropy for validated ``x`` (…, n, d) and optional ``y`` (…, m, d).

    Works on the flattened batch in chunks whose working memory stays under ``memory_budget`` (half-precision
    input is upcast chunk by chunk). A request over the rows whose own distances set σ (``("x", "x")``,
    ``("y", "y")``) gets the distances of those rows alone, exactly as :func:`renyi_entropy` would; requests of
    a pair measure share one distance matrix over the rows of ``[x; y]`` (blocks of it for x or y).

    On the CPU, when each sequence is large (``N²·(N + d) ≥ _SPREAD_MIN_WORK`` for the N rows of ``[x; y]``) and
    there are at least as many sequences as torch has threads (more than one), every request is worked one
    sequence per call, the sequences spread over the threads with one BLAS thread each: a sequence's distances
    then stay in cache from the Gram product to the eigensolver. With fewer sequences than threads, batched
    calls keep every core busy.
    """
    leading = x.shape[:-2]
    n, d = x.shape[-2:]
    m = 0 if y is None else y.shape[-2]
    dtype = torch.float64 if (x.dtype == torch.float64 or (y is not None and y.dtype == torch.float64)) else torch.float32
    xs = x.reshape(-1, n, d)  # (B, n, d), a view when x is contiguous
    ys = None if y is None else y.reshape(-1, m, d)  # (B, m, d)
    fixed_sigma = None if isinstance(sigma, str) else sigma.reshape(-1).to(x.device)  # (B,)
    blocks = {"x": slice(0, n), "y": slice(n, n + m), "xy": slice(0, n + m)}

    total = n + m
    itemsize = torch.finfo(dtype).bits // 8
    # per item: the upcast rows and their centred copy (2·N·d), distances, norms/floor, a kernel and eigvalsh's
    # copy (≈ 4·N²), σ pairs (N²/2), and the own-rows distances of x and y when asked for (≤ N²)
    per_item = itemsize * (2 * total * d + 5.5 * total * total)
    chunk = max(1, int(memory_budget // per_item))

    # which distance matrix each step reads (σ first, when it is still to be found; then the kernel), so that a
    # kernel can be built in its distance matrix's memory when no later step reads that matrix
    reads: list[str] = []
    kernel_read: list[int] = []  # per request, its place in reads
    for rows, sigma_rows in requests:
        if fixed_sigma is None and sigma_rows not in reads:
            reads.append(sigma_rows)  # a σ request's rows are its own: the key is the rows themselves
        kernel_read.append(len(reads))
        reads.append(rows if rows == sigma_rows else "xy")
    last_use = [reads[at] == rows and reads[at] not in reads[at + 1 :] for at, (rows, _) in zip(kernel_read, requests)]

    def measure(x_part: torch.Tensor, y_part: torch.Tensor | None, sigma_part: torch.Tensor | None) -> dict:
        """Every request (a ``Row`` each) over a batch of sequences, in a few batched calls."""
        rows_of = {"x": lambda: x_part.to(dtype), "y": lambda: y_part.to(dtype)}
        rows_of["xy"] = lambda: rows_of["x"]() if y_part is None else torch.cat([rows_of["x"](), rows_of["y"]()], -2)
        distances: dict[str, torch.Tensor] = {}  # "x", "y": own rows; "xy": the union

        def dist_for(rows: str, sigma_rows: str) -> torch.Tensor:
            key = rows if rows == sigma_rows else "xy"
            if key not in distances:
                distances[key] = squared_distances(rows_of[key]())  # (b, k, k)
            return distances[key] if key == rows else distances[key][:, blocks[rows], blocks[rows]]

        sigmas: dict[str, torch.Tensor] = {}
        measured: dict[Request, Row] = {}
        for index, (rows, sigma_rows) in enumerate(requests):
            if sigma_rows not in sigmas:
                if sigma_part is not None:
                    sigmas[sigma_rows] = sigma_part
                else:
                    sigmas[sigma_rows] = median_sigma(dist_for(sigma_rows, sigma_rows))
            kernel = gaussian_kernel(dist_for(rows, sigma_rows), sigmas[sigma_rows], inplace=last_use[index])
            value = _spectrum_entropy(kernel, alpha, base)  # (b,)
            if sigma_part is None:  # all rows coincide (NaN σ): K is exactly all-ones, S = 0 exactly
                value = value.masked_fill(torch.isnan(sigmas[sigma_rows]), 0.0)
            measured[(rows, sigma_rows)] = (value, sigmas[sigma_rows], _saturation(kernel))
            del kernel
        return measured

    parts: dict[Request, list[Row]] = {r: [] for r in requests}
    for start in range(0, xs.shape[0], chunk):
        part = slice(start, start + chunk)
        args = (xs[part], None if ys is None else ys[part], None if fixed_sigma is None else fixed_sigma[part])
        items = args[0].shape[0]
        threads = torch.get_num_threads()
        if x.device.type == "cpu" and total * total * (total + d) >= _SPREAD_MIN_WORK and 1 < threads <= items:
            # one sequence per call, sequences over threads: each one's distances stay in cache from the Gram
            # product to the eigensolver, and BLAS/LAPACK run single-threaded, where they are most efficient
            batches = _spread(lambda i: measure(*(None if a is None else a[i : i + 1] for a in args)), items)
        else:
            batches = [measure(*args)]
        for measured in batches:
            for request in requests:
                parts[request].append(measured[request])

    sizes = {"x": n, "y": m, "xy": n + m}
    out = {}
    for request, chunks in parts.items():
        value, sig, sat = (torch.cat(column).reshape(leading) for column in zip(*chunks))
        out[request] = EntropyResult(value=value, sigma=sig, saturation=sat, n=sizes[request[0]])
    return out


def _prepare(x: Any, y: Any, alpha: Any, sigma: Any, base: Any, memory_budget: Any) -> tuple:
    x = _checks.as_points(x, "x")
    if y is not None:
        y = _checks.as_points(y, "y")
        _checks.check_pair(x, y)
        if y.device != x.device:
            y = y.to(x.device)
    return (
        x,
        y,
        _checks.check_alpha(alpha),
        _checks.check_sigma(sigma, x.shape[:-2]),
        _checks.check_base(base),
        _checks.check_budget(memory_budget),
    )


def _finish(result: EntropyResult, base: float, normalize: bool, return_details: bool) -> torch.Tensor | EntropyResult:
    value = result.value
    if normalize:
        value = value / math.log(result.n, base) if result.n > 1 else torch.zeros_like(value)
        result = EntropyResult(value=value, sigma=result.sigma, saturation=result.saturation, n=result.n)
    return result if return_details else value


def check_parameters(*, alpha: Any = 1.01, sigma: Any = "median", base: Any = 2) -> None:
    """Raise :class:`InputError` now if ``alpha``, ``sigma`` or ``base`` would be refused by the estimators.

    For callers that set up long runs: a bad setting fails before any model is loaded.

    >>> check_parameters(alpha=0)
    Traceback (most recent call last):
    ...
    entroprobe.errors.InputError: alpha must be > 0 (or inf); got 0
    """
    _checks.check_alpha(alpha)
    _checks.check_sigma(sigma, torch.Size([]))
    _checks.check_base(base)


# -- public faces -----------------------------------------------------------------------------------------------


def renyi_entropy(
    x: Any,
    *,
    alpha: float = 1.01,
    sigma: str | float | torch.Tensor = "median",
    base: float = 2,
    normalize: bool = False,
    return_details: bool = False,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> torch.Tensor | EntropyResult:
    """Matrix-based Rényi entropy of order ``alpha`` of each sequence of token embeddings.

    Args:
        x: ``(n, d)`` or batched ``(..., n, d)`` (e.g. ``(layers, n, d)``); fp16/bf16 are upcast to float32,
            float64 is kept.
        alpha: order > 0; ``1`` is the Shannon (von Neumann) limit, ``math.inf`` gives ``−log_b λ_max``; the
            value is continuous across 1. ``alpha=2`` needs no eigendecomposition.
        sigma: ``"median"`` (σ = sqrt(median_{i<j} ‖x_i − x_j‖² / 2), per leading index), a positive number,
            or a tensor of positive values of the leading shape.
        base: logarithm base (2: bits).
        normalize: divide by ``log_b n`` (the maximum), giving a value in [0, 1].
        return_details: return an :class:`EntropyResult` with the σ used and the kernel saturation.
        memory_budget: bytes of extra working memory; the batch is chunked to stay under it.

    Returns:
        A 0-d tensor for ``(n, d)`` input, else one value per leading index (float64 on ``x``'s device).

    Raises:
        InputError: (a ValueError) for NaN/Inf (naming the first bad leading index), an empty sequence, a 1-D
            tensor, alpha <= 0, sigma <= 0 or non-finite, an unknown sigma rule.

    Example:
        >>> x = torch.eye(4) * 10  # four mutually far tokens: at a small σ the kernel is ≈ I
        >>> round(renyi_entropy(x, sigma=1.0).item(), 4)  # log2(4)
        2.0
        >>> round(renyi_entropy(torch.ones(6, 3)).item(), 4)  # identical tokens
        0.0
    """
    x, _, alpha, sigma, base, budget = _prepare(x, None, alpha, sigma, base, memory_budget)
    result = _engine(x, None, [("x", "x")], alpha=alpha, sigma=sigma, base=base, memory_budget=budget)
    return _finish(result[("x", "x")], base, normalize, return_details)


def joint_entropy(
    x: Any,
    y: Any,
    *,
    alpha: float = 1.01,
    sigma: str | float | torch.Tensor = "median",
    base: float = 2,
    normalize: bool = False,
    return_details: bool = False,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> torch.Tensor | EntropyResult:
    """Entropy of the block joint kernel ``[[K_xx, K_xy], [K_yx, K_yy]]``: the kernel over the rows of ``[x; y]``.

    Args:
        x: ``(..., n, d)``; y: ``(..., m, d)`` with the same leading shape and d. The median σ is taken over
            the union of their rows. Other arguments as in :func:`renyi_entropy`.

    Example:
        >>> x = torch.eye(3) * 10
        >>> round(joint_entropy(x, x, sigma=1.0).item(), 4)  # every token twice: still three distinct points
        1.585
    """
    x, y, alpha, sigma, base, budget = _prepare(x, y, alpha, sigma, base, memory_budget)
    result = _engine(x, y, [("xy", "xy")], alpha=alpha, sigma=sigma, base=base, memory_budget=budget)
    return _finish(result[("xy", "xy")], base, normalize, return_details)


def conditional_entropy(
    x: Any,
    y: Any,
    *,
    alpha: float = 1.01,
    sigma: str | float | torch.Tensor = "median",
    base: float = 2,
    return_details: bool = False,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> torch.Tensor | EntropyResult:
    """The paper's conditional-entropy proxy ``S(x, y) − S(x)`` of a response ``y`` given a prompt ``x``.

    Both terms use one σ (the median rule over the union of the rows of x and y). Near 0 when y repeats x,
    larger as y depends less on x. ``return_details`` gives the σ and the joint kernel's saturation.

    Example:
        >>> x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
        >>> abs(conditional_entropy(x, x).item()) < 1e-6
        True
    """
    x, y, alpha, sigma, base, budget = _prepare(x, y, alpha, sigma, base, memory_budget)
    result = _engine(x, y, [("xy", "xy"), ("x", "xy")], alpha=alpha, sigma=sigma, base=base, memory_budget=budget)
    joint, prompt = result[("xy", "xy")], result[("x", "xy")]
    value = joint.value - prompt.value
    return EntropyResult(value, joint.sigma, joint.saturation, joint.n) if return_details else value


def mutual_information(
    x: Any,
    y: Any,
    *,
    alpha: float = 1.01,
    sigma: str | float | torch.Tensor = "median",
    base: float = 2,
    return_details: bool = False,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> torch.Tensor | EntropyResult:
    """The mutual-information proxy ``S(x) + S(y) − S(x, y)``, every term with one σ (median over the union).

    Example:
        >>> x = torch.eye(4) * 10
        >>> round(mutual_information(x, x, sigma=1.0).item(), 4)  # S(x) = S(x, x) = 2 bits
        2.0
    """
    x, y, alpha, sigma, base, budget = _prepare(x, y, alpha, sigma, base, memory_budget)
    requests = [("x", "xy"), ("y", "xy"), ("xy", "xy")]
    result = _engine(x, y, requests, alpha=alpha, sigma=sigma, base=base, memory_budget=budget)
    joint = result[("xy", "xy")]
    value = result[("x", "xy")].value + result[("y", "xy")].value - joint.value
    return EntropyResult(value, joint.sigma, joint.saturation, joint.n) if return_details else value


def prompt_response_entropies(
    x: Any,
    y: Any,
    *,
    alpha: float = 1.01,
    sigma: str | float | torch.Tensor = "median",
    base: float = 2,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> dict[str, EntropyResult]:
    """Every measure of a prompt ``x`` and its response ``y`` from one distance matrix per chunk.

    Returns a dict with ``"prompt_entropy"`` (S(x), σ from x), ``"response_entropy"`` (S(y), σ from y),
    ``"joint_entropy"`` (S(x, y), σ from the union) and ``"conditional_entropy"`` (S(x, y) − S(x), both with
    the union's σ), each an :class:`EntropyResult` — what :func:`renyi_entropy`, :func:`joint_entropy` and
    :func:`conditional_entropy` give one by one.
    """
    x, y, alpha, sigma, base, budget = _prepare(x, y, alpha, sigma, base, memory_budget)
    requests = [("x", "x"), ("y", "y"), ("xy", "xy"), ("x", "xy")]
    result = _engine(x, y, requests, alpha=alpha, sigma=sigma, base=base, memory_budget=budget)
    joint = result[("xy", "xy")]
    conditional = EntropyResult(joint.value - result[("x", "xy")].value, joint.sigma, joint.saturation, joint.n)
    return {
        "prompt_entropy": result[("x", "x")],
        "response_entropy": result[("y", "y")],
        "joint_entropy": joint,
        "conditional_entropy": conditional,
    }
