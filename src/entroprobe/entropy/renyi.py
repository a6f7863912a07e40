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

Every value grows with its token count. Each result therefore carries the structureless reference (what
tokens without structure give at the same count and σ, see :mod:`.reference`) and a kernel state that says
when the value is near it; ``subsample=`` measures every sequence at one token count (see :mod:`.subsample`).

One engine (:mod:`.engine`) computes every measure; the public functions are thin faces over it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from entroprobe.entropy import _checks
from entroprobe.entropy.engine import Measured, Request, engine
from entroprobe.entropy.reference import STATES
from entroprobe.entropy.subsample import plan_draws

__all__ = [
    "EntropyResult",
    "DEFAULT_MEMORY_BUDGET",
    "renyi_entropy",
    "joint_entropy",
    "conditional_entropy",
    "mutual_information",
    "prompt_response_entropies",
    "check_parameters",
]

DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes of extra working memory the batched computation may use
DEFAULT_DRAWS = 8  # subsets averaged by subsample=


@dataclass(frozen=True)
class EntropyResult:
    """A measure with what it was computed from; every tensor has the input's leading shape (and a last
    dimension of σ scales when ``sigma_scale`` was a sequence).

    Attributes:
        value: the entropy (or proxy), in units of log base ``base``; with ``subsample``, the mean over draws.
        sigma: the kernel bandwidth used (NaN where every row coincided: then the kernel is all ones).
        saturation: ``1 − 2·mean_{i≠j} K_ij`` of the kernel the value came from: +1 when K ≈ I, −1 when K ≈
            all-ones.
        reference: what tokens without structure give at the same token count and σ (for a proxy, the same
            combination of references: independent structureless prompt and response).
        state: the kernel state's code per value, an index into :data:`STATES` (``ok``, ``structureless``,
            ``collapsed``, ``identical``); for a proxy, the joint kernel's.
        n: the number of rows the kernel saw (k under ``subsample``); ``log_b n`` is the ceiling of an entropy.
        draws: the subsets averaged (1 without ``subsample``).
    """

    value: torch.Tensor
    sigma: torch.Tensor
    saturation: torch.Tensor
    reference: torch.Tensor
    state: torch.Tensor
    n: int
    draws: int = 1

    @property
    def saturated(self) -> torch.Tensor:
        """Where the value only counts tokens (``structureless``) or sees nothing (``collapsed``, ``identical``)."""
        return self.state != 0

    @property
    def relative(self) -> torch.Tensor:
        """``value / reference``: 1 for tokens as mutually distinct as noise; NaN where the reference is 0."""
        return self.value / self.reference.where(self.reference > 0, torch.full_like(self.reference, math.nan))

    @property
    def states(self) -> list[str]:
        """The state's name per value, flattened."""
        return [STATES[code] for code in self.state.reshape(-1).tolist()]


@dataclass(frozen=True)
class _Call:
    """The validated settings of one call."""

    alpha: float
    sigma: str | torch.Tensor
    base: float
    budget: int
    scales: tuple[float, ...]
    several_scales: bool
    device: torch.device | None = None


def _prepare(x: Any, y: Any, alpha: Any, sigma: Any, base: Any, memory_budget: Any, sigma_scale: Any,
             device: Any = None) -> tuple:  # fmt: skip
    x = _checks.as_points(x, "x")
    if y is not None:
        y = _checks.as_points(y, "y")
        _checks.check_pair(x, y)
        if y.device != x.device and device is None:  # with a device, each chunk of each goes there by itself
            y = y.to(x.device)
    scales, several = _checks.check_scales(sigma_scale)
    call = _Call(alpha=_checks.check_alpha(alpha), sigma=_checks.check_sigma(sigma, x.shape[:-2]),
                 base=_checks.check_base(base), budget=_checks.check_budget(memory_budget), scales=scales,
                 several_scales=several, device=_checks.check_device(device))  # fmt: skip
    return x, y, call


def _run(x, y, requests: list[Request], call: _Call, draws) -> dict[Request, EntropyResult]:
    measured = engine(x, y, requests, alpha=call.alpha, sigma=call.sigma, base=call.base,
                      memory_budget=call.budget, draws=draws, scales=call.scales, device=call.device)  # fmt: skip
    count = 1 if draws is None else draws.count
    return {request: _result(parts, call.several_scales, count) for request, parts in measured.items()}


def _result(parts: list[Measured], several: bool, draws: int) -> EntropyResult:
    """One result from the per-scale parts: a trailing scale dimension when several scales were asked for."""
    def field(name: str) -> torch.Tensor:
        return torch.stack([getattr(p, name) for p in parts], dim=-1) if several else getattr(parts[0], name)

    return EntropyResult(value=field("value"), sigma=field("sigma"), saturation=field("saturation"),
                         reference=field("reference"), state=field("state"), n=parts[0].n, draws=draws)  # fmt: skip


def _combine(value: torch.Tensor, reference: torch.Tensor, kernel: EntropyResult) -> EntropyResult:
    """A proxy's result: its value and reference, the σ, saturation and state of the joint ``kernel``."""
    return EntropyResult(value=value, sigma=kernel.sigma, saturation=kernel.saturation, reference=reference,
                         state=kernel.state, n=kernel.n, draws=kernel.draws)  # fmt: skip


def _finish(result: EntropyResult, base: float, normalize: bool, return_details: bool) -> torch.Tensor | EntropyResult:
    if normalize:
        ceiling = math.log(result.n, base) if result.n > 1 else math.inf
        result = EntropyResult(value=result.value / ceiling, sigma=result.sigma, saturation=result.saturation,
                               reference=result.reference / ceiling, state=result.state, n=result.n,
                               draws=result.draws)  # fmt: skip
    return result if return_details else result.value


def check_parameters(*, alpha: Any = 1.01, sigma: Any = "median", base: Any = 2, sigma_scale: Any = 1.0) -> None:
    """Raise :class:`InputError` now if ``alpha``, ``sigma``, ``base`` or ``sigma_scale`` would be refused.

    For callers that set up long runs: a bad setting fails before any model is loaded.

    >>> check_parameters(alpha=0)
    Traceback (most recent call last):
    ...
    entroprobe.errors.InputError: alpha must be > 0 (or inf); got 0
    """
    _checks.check_alpha(alpha)
    _checks.check_sigma(sigma, torch.Size([]))
    _checks.check_base(base)
    _checks.check_scales(sigma_scale)


# -- public faces -----------------------------------------------------------------------------------------------

Scale = float | Sequence[float]
Subsample = int | tuple[int | None, int | None] | None


def renyi_entropy(
    x: Any,
    *,
    alpha: float = 1.01,
    sigma: str | float | torch.Tensor = "median",
    base: float = 2,
    normalize: bool = False,
    return_details: bool = False,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    device: str | torch.device | None = None,
    subsample: int | None = None,
    draws: int = DEFAULT_DRAWS,
    seed: int = 0,
    sigma_scale: Scale = 1.0,
) -> torch.Tensor | EntropyResult:
    """Matrix-based Rényi entropy of order ``alpha`` of each sequence of token embeddings.

    Args:
        x: ``(n, d)`` or batched ``(..., n, d)`` (e.g. ``(layers, n, d)``); fp16/bf16 are upcast to float32,
            float64 is kept. Any finite magnitude works (distances are computed on rescaled rows).
        alpha: order > 0; ``1`` is the Shannon (von Neumann) limit, ``math.inf`` gives ``−log_b λ_max``; the
            value is continuous across 1. ``alpha=2`` needs no eigendecomposition.
        sigma: ``"median"`` (σ = sqrt(median_{i<j} ‖x_i − x_j‖² / 2), per leading index; the median pairwise
            distance / √2), a positive number, or a tensor of positive values of the leading shape (e.g. one σ
            per layer from :func:`pooled_sigma`).
        base: logarithm base (2: bits).
        normalize: divide by ``log_b n`` (the maximum), giving a value in [0, 1]. This does not remove the
            token-count effect (the reference also grows with n); ``EntropyResult.relative`` is value /
            reference, and ``subsample`` measures every sequence at one count.
        return_details: return an :class:`EntropyResult` with the σ, saturation, reference and kernel state.
        memory_budget: bytes of extra working memory; the batch is chunked to stay under it.
        device: where to compute, chunk by chunk (``x`` may live elsewhere: states kept on the CPU are measured
            on the GPU one chunk at a time); None: ``x``'s device. Results are on this device.
        subsample: measure at k tokens: the mean over ``draws`` random subsets of k of the n tokens (without
            replacement, the same subsets for every leading index), each with its own σ under the median rule.
            An unbiased estimate of the entropy this sequence would have at k tokens (see :mod:`.subsample`).
        draws: subsets averaged (cost: about ``draws`` kernels of k tokens).
        seed: seeds the subsets (the same seed, the same subsets).
        sigma_scale: multiply the σ the rule gives by this factor; a sequence of factors adds a last
            dimension, one value per factor, from one set of distances.

    Returns:
        A 0-d tensor for ``(n, d)`` input, else one value per leading index (float64 on ``x``'s device).

    Raises:
        InputError: (a ValueError) for NaN/Inf (naming the first bad leading index), an empty sequence, a 1-D
            tensor, alpha <= 0, sigma <= 0 or non-finite, an unknown sigma rule, ``subsample`` above n.

    Example:
        >>> x = torch.eye(4) * 10  # four mutually far tokens: at a small σ the kernel is ≈ I
        >>> round(renyi_entropy(x, sigma=1.0).item(), 4)  # log2(4)
        2.0
        >>> round(renyi_entropy(torch.ones(6, 3)).item(), 4)  # identical tokens
        0.0
        >>> renyi_entropy(torch.randn(3, 40, 8), subsample=16, draws=4).shape  # three layers at 16 tokens
        torch.Size([3])
    """
    x, _, call = _prepare(x, None, alpha, sigma, base, memory_budget, sigma_scale, device)
    sampled = plan_draws(subsample, draws, seed, x.shape[-2], None)
    result = _run(x, None, [("x", "x")], call, sampled)[("x", "x")]
    return _finish(result, call.base, normalize, return_details)


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
    device: str | torch.device | None = None,
    subsample: Subsample = None,
    draws: int = DEFAULT_DRAWS,
    seed: int = 0,
    sigma_scale: Scale = 1.0,
) -> torch.Tensor | EntropyResult:
    """Entropy of the block joint kernel ``[[K_xx, K_xy], [K_yx, K_yy]]``: the kernel over the rows of ``[x; y]``.

    Args:
        x: ``(..., n, d)``; y: ``(..., m, d)`` with the same leading shape and d. The median σ is taken over
            the union of their rows.
        subsample: m (subsets of m of y's tokens, x whole) or ``(k, m)`` (both sides; either may be None).
            Other arguments as in :func:`renyi_entropy`.

    Example:
        >>> x = torch.eye(3) * 10
        >>> round(joint_entropy(x, x, sigma=1.0).item(), 4)  # every token twice: still three distinct points
        1.585
    """
    x, y, call = _prepare(x, y, alpha, sigma, base, memory_budget, sigma_scale, device)
    sampled = plan_draws(subsample, draws, seed, x.shape[-2], y.shape[-2])
    result = _run(x, y, [("xy", "xy")], call, sampled)[("xy", "xy")]
    return _finish(result, call.base, normalize, return_details)


def conditional_entropy(
    x: Any,
    y: Any,
    *,
    alpha: float = 1.01,
    sigma: str | float | torch.Tensor = "median",
    base: float = 2,
    return_details: bool = False,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    device: str | torch.device | None = None,
    subsample: Subsample = None,
    draws: int = DEFAULT_DRAWS,
    seed: int = 0,
    sigma_scale: Scale = 1.0,
) -> torch.Tensor | EntropyResult:
    """The paper's conditional-entropy proxy ``S(x, y) − S(x)`` of a response ``y`` given a prompt ``x``.

    Both terms use one σ (the median rule over the union of the rows of x and y). Near 0 when y repeats x,
    larger as y depends less on x — and larger as y has more tokens: independent responses of 4 and 256 tokens
    differ by more than a bit. Compare responses of different lengths with ``subsample`` (m, or (k, m)) or by
    ``relative`` (value / the reference of an independent structureless response). It can be negative: a
    response that repeats one prompt token many times lowers the joint kernel's entropy below the prompt's.
    ``return_details`` gives the σ, the reference and the joint kernel's saturation and state.

    Example:
        >>> x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
        >>> abs(conditional_entropy(x, x).item()) < 1e-6
        True
    """
    x, y, call = _prepare(x, y, alpha, sigma, base, memory_budget, sigma_scale, device)
    sampled = plan_draws(subsample, draws, seed, x.shape[-2], y.shape[-2])
    result = _run(x, y, [("xy", "xy"), ("x", "xy")], call, sampled)
    joint, prompt = result[("xy", "xy")], result[("x", "xy")]
    combined = _combine(joint.value - prompt.value, joint.reference - prompt.reference, joint)
    return combined if return_details else combined.value


def mutual_information(
    x: Any,
    y: Any,
    *,
    alpha: float = 1.01,
    sigma: str | float | torch.Tensor = "median",
    base: float = 2,
    return_details: bool = False,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    device: str | torch.device | None = None,
    subsample: Subsample = None,
    draws: int = DEFAULT_DRAWS,
    seed: int = 0,
    sigma_scale: Scale = 1.0,
) -> torch.Tensor | EntropyResult:
    """The mutual-information proxy ``S(x) + S(y) − S(x, y)``, every term with one σ (median over the union).

    Example:
        >>> x = torch.eye(4) * 10
        >>> round(mutual_information(x, x, sigma=1.0).item(), 4)  # S(x) = S(x, x) = 2 bits
        2.0
    """
    x, y, call = _prepare(x, y, alpha, sigma, base, memory_budget, sigma_scale, device)
    sampled = plan_draws(subsample, draws, seed, x.shape[-2], y.shape[-2])
    result = _run(x, y, [("x", "xy"), ("y", "xy"), ("xy", "xy")], call, sampled)
    px, py, joint = result[("x", "xy")], result[("y", "xy")], result[("xy", "xy")]
    combined = _combine(px.value + py.value - joint.value, px.reference + py.reference - joint.reference, joint)
    return combined if return_details else combined.value


def prompt_response_entropies(
    x: Any,
    y: Any,
    *,
    alpha: float = 1.01,
    sigma: str | float | torch.Tensor = "median",
    base: float = 2,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    device: str | torch.device | None = None,
    subsample: Subsample = None,
    draws: int = DEFAULT_DRAWS,
    seed: int = 0,
    sigma_scale: Scale = 1.0,
) -> dict[str, EntropyResult]:
    """Every measure of a prompt ``x`` and its response ``y`` from one distance matrix per chunk.

    Returns a dict with ``"prompt_entropy"`` (S(x), σ from x), ``"response_entropy"`` (S(y), σ from y),
    ``"joint_entropy"`` (S(x, y), σ from the union) and ``"conditional_entropy"`` (S(x, y) − S(x), both with
    the union's σ), each an :class:`EntropyResult` — what :func:`renyi_entropy`, :func:`joint_entropy` and
    :func:`conditional_entropy` give one by one (with the same ``subsample`` and ``seed``, the same subsets:
    ``renyi_entropy(x, subsample=k, seed=s)`` equals the prompt entropy of ``subsample=(k, m), seed=s``).
    """
    x, y, call = _prepare(x, y, alpha, sigma, base, memory_budget, sigma_scale, device)
    sampled = plan_draws(subsample, draws, seed, x.shape[-2], y.shape[-2])
    result = _run(x, y, [("x", "x"), ("y", "y"), ("xy", "xy"), ("x", "xy")], call, sampled)
    joint, prompt_at_union = result[("xy", "xy")], result[("x", "xy")]
    return {
        "prompt_entropy": result[("x", "x")],
        "response_entropy": result[("y", "y")],
        "joint_entropy": joint,
        "conditional_entropy": _combine(joint.value - prompt_at_union.value,
                                        joint.reference - prompt_at_union.reference, joint),
    }
