"""What structureless tokens give, and the kernel states that say when a value only counts tokens.

A value means something only next to what a sequence *without* structure of the same token count gives under
the same σ rule. Take n tokens all at one distance from each other, that distance the sequence's median
pairwise distance (i.i.d. high-dimensional noise is this, up to small fluctuations): every off-diagonal kernel
entry is ``c = exp(−median D / (2σ²))``, the kernel is ``(1 − c)·I + c·11ᵀ`` and ``A = K / n`` has the
eigenvalue ``(1 + (n − 1)c) / n`` once and ``(1 − c) / n`` n − 1 times, so its entropy has a closed form
(:func:`structureless_entropy`). Under the median rule ``c = e⁻¹`` whatever the tokens (×σ-scale s:
``c = e^{−1/s²}``): the reference grows like ``(1 − e⁻¹)·log_b n`` and only depends on n. Under a fixed σ,
``c → 0`` when the tokens are far apart (the reference is then ``log_b n``) and ``c → 1`` when σ dwarfs them.

States of a value (:func:`kernel_states`), in order of precedence:

- ``identical``: every token is the same point (median rule: no σ is defined); the value is 0.
- ``collapsed``: the value is at most ``COLLAPSED_FRACTION`` of ``log_b n``: the kernel sees every token alike.
- ``structureless``: the value is within ``STRUCTURELESS_MARGIN`` of the reference (value ≥ (1 − margin) ·
  reference): the tokens are as mutually distinct as noise, and the value counts tokens.
- ``ok``: neither.

The margin is stated for the value's own order α. Measured at α = 1.01 (d = 64, 0.1-spread clusters of unit
centres): i.i.d. Gaussian tokens give 0.86–1.00 of the reference for d ≥ 64 and n = 16–1024, and 2–20
separated clusters 0.14–0.75. At α ≥ 2 the kernel's constant part c·11ᵀ dominates every spectrum under the
median rule, values of all sequences sit closer to the reference, and 10–20 clusters fall within 20 % of it.
"""

from __future__ import annotations

import math

import torch

from entroprobe.entropy.spectrum import weighted_entropy

__all__ = ["structureless_entropy", "kernel_states", "STATES", "STRUCTURELESS_MARGIN", "COLLAPSED_FRACTION"]

STRUCTURELESS_MARGIN = 0.2  # a value at or above (1 − this) × the structureless reference counts tokens
COLLAPSED_FRACTION = 0.02  # a value at or below this × log_b n sees every token alike
STATES = ("ok", "structureless", "collapsed", "identical")  # the codes of kernel_states, in order


def structureless_entropy(n: int, c: float | torch.Tensor = math.exp(-1), *, alpha: float = 1.01,
                          base: float = 2) -> torch.Tensor:  # fmt: skip
    """Entropy of order α of n equidistant tokens whose off-diagonal kernel entries are all ``c``.

    The reference a value of n tokens is read against: with the default ``c = e⁻¹`` what the median rule
    gives for tokens without structure (i.i.d. high-dimensional noise).

    Args:
        n: the token count (≥ 1).
        c: the off-diagonal kernel entry in [0, 1], a number or a tensor (any shape).
        alpha: the order; base: the logarithm base.

    Returns:
        float64, the shape of ``c``.

    >>> round(structureless_entropy(4, 0.0, alpha=2).item(), 6)  # mutually far tokens: log2(4)
    2.0
    >>> round(structureless_entropy(1024).item(), 2)  # i.i.d. noise under the median rule, α = 1.01
    7.19
    """
    c = torch.as_tensor(c, dtype=torch.float64).clamp(0.0, 1.0)
    if n < 2:
        return torch.zeros_like(c)
    p = torch.stack([(1 + (n - 1) * c) / n, (1 - c) / n], dim=-1)  # (..., 2): the two eigenvalues of A
    count = torch.tensor([1.0, n - 1.0], dtype=torch.float64, device=c.device).expand_as(p)
    return weighted_entropy(p, count, alpha, base)


def kernel_states(value: torch.Tensor, reference: torch.Tensor, sigma: torch.Tensor, n: int, base: float,
                  margin: float = STRUCTURELESS_MARGIN) -> torch.Tensor:  # fmt: skip
    """The state code (index into :data:`STATES`) of each value: see the module's docstring.

    Args:
        value: the entropies; reference: their structureless references (same shape).
        sigma: the σ used (NaN where every token coincided).
        n: the rows of the kernel; base: the logarithm base; margin: the structureless margin.
    """
    ceiling = math.log(n, base) if n > 1 else 0.0
    state = torch.zeros(value.shape, dtype=torch.int64, device=value.device)
    state = torch.where(value >= (1 - margin) * reference, torch.ones_like(state), state)
    state = torch.where(value <= COLLAPSED_FRACTION * ceiling, torch.full_like(state, 2), state)
    return torch.where(torch.isnan(sigma.to(value.device)), torch.full_like(state, 3), state)
