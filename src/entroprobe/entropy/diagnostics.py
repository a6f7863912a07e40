"""Is the kernel saturated? The weakness of the method that users must see, in words.

Every entropy grows with its token count. A value means something only next to what tokens without structure
give at the same count and σ (:func:`~entroprobe.entropy.reference.structureless_entropy`): near that
reference the tokens are as mutually distinct as noise and the value counts tokens; near 0 the kernel sees every
token alike. A fixed σ that is too small (K ≈ I) is the extreme of the first, one too large (K ≈ all-ones) of
the second; the median rule avoids both extremes but not the first state, which i.i.d. noise is in under it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from entroprobe.entropy import _checks
from entroprobe.entropy.engine import engine
from entroprobe.entropy.kernel import gaussian_kernel, median_sigma, squared_distances
from entroprobe.entropy.reference import STATES, STRUCTURELESS_MARGIN, kernel_states
from entroprobe.entropy.renyi import DEFAULT_MEMORY_BUDGET

__all__ = ["KernelDiagnostics", "kernel_diagnostics", "gaussian_gram"]

_EXTREME = 0.9  # |saturation| at or above this: the kernel is ≈ I or ≈ all-ones, named in the warning


@dataclass(frozen=True)
class KernelDiagnostics:
    """Diagnostics of the Gaussian kernel of each sequence; tensors have the input's leading shape.

    Attributes:
        sigma: the bandwidth used.
        entropy: the entropy of order ``alpha``.
        reference: what tokens without structure give at the same token count and σ.
        relative: ``entropy / reference`` (NaN where the reference is 0).
        offdiag_mean: mean of the off-diagonal kernel entries, in [0, 1].
        saturation: ``1 − 2·offdiag_mean`` in [−1, 1]: +1 when K ≈ I, −1 when K ≈ all-ones.
        state: codes into :data:`~entroprobe.entropy.reference.STATES`.
        saturated: ``state != ok``.
        n: tokens per sequence; alpha: the order; margin: the structureless margin used.
    """

    sigma: torch.Tensor
    entropy: torch.Tensor
    reference: torch.Tensor
    relative: torch.Tensor
    offdiag_mean: torch.Tensor
    saturation: torch.Tensor
    state: torch.Tensor
    saturated: torch.Tensor
    n: int
    alpha: float
    margin: float

    @property
    def states(self) -> list[str]:
        """Per sequence (flattened): ``ok``, ``structureless``, ``collapsed`` or ``identical``."""
        return [STATES[code] for code in self.state.reshape(-1).tolist()]

    def warnings(self) -> list[str]:
        """One plain sentence per saturated sequence (flattened index), empty when none is."""
        messages = []
        flat = zip(self.states, self.sigma.reshape(-1).tolist(), self.entropy.reshape(-1).tolist(),
                   self.reference.reshape(-1).tolist(), self.saturation.reshape(-1).tolist())  # fmt: skip
        for i, (state, sigma, value, reference, saturation) in enumerate(flat):
            if state == "structureless":
                why = f" (kernel ≈ identity: σ = {sigma:.4g} is too small)" if saturation >= _EXTREME else ""
                messages.append(
                    f"index {i}: entropy {value:.3f} is within {self.margin:.0%} of what {self.n} tokens without "
                    f"structure give ({reference:.3f}) at σ = {sigma:.4g}{why}: it counts tokens, not structure"
                )
            elif state == "collapsed":
                why = f" (kernel ≈ all-ones: σ = {sigma:.4g} is too large)" if saturation <= -_EXTREME else ""
                messages.append(f"index {i}: entropy {value:.3g} ≈ 0: the kernel sees every token alike{why}")
            elif state == "identical":
                messages.append(f"index {i}: every token is the same point (K = all-ones, no σ defined): entropy 0")
        return messages


def kernel_diagnostics(
    x: Any,
    sigma: str | float | torch.Tensor = "median",
    *,
    alpha: float = 1.01,
    margin: float = STRUCTURELESS_MARGIN,
    base: float = 2,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> KernelDiagnostics:
    """Tell whether the entropy of ``x`` (``(..., n, d)``) at ``sigma`` and order ``alpha`` measures structure.

    Args:
        margin: a value at or above ``(1 − margin) ×`` the structureless reference is flagged ``structureless``.

    Example:
        >>> x = torch.eye(5) * 100
        >>> d = kernel_diagnostics(x, sigma=0.1)
        >>> d.states, round(d.saturation.item(), 3)
        (['structureless'], 1.0)
        >>> kernel_diagnostics(torch.randn(256, 512)).states  # i.i.d. noise under the median rule
        ['structureless']
    """
    x = _checks.as_points(x, "x")
    sigma = _checks.check_sigma(sigma, x.shape[:-2])
    alpha, base = _checks.check_alpha(alpha), _checks.check_base(base)
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 < margin < 1:
        raise _checks.InputError(f"margin must be a number in (0, 1); got {margin!r}")
    result = engine(x, None, [("x", "x")], alpha=alpha, sigma=sigma, base=base,
                    memory_budget=_checks.check_budget(memory_budget))[("x", "x")][0]  # fmt: skip
    state = kernel_states(result.value, result.reference, result.sigma, result.n, base, margin)
    reference = result.reference
    return KernelDiagnostics(
        sigma=result.sigma,
        entropy=result.value,
        reference=reference,
        relative=result.value / reference.where(reference > 0, torch.full_like(reference, math.nan)),
        offdiag_mean=(1 - result.saturation) / 2,
        saturation=result.saturation,
        state=state,
        saturated=state != 0,
        n=result.n,
        alpha=alpha,
        margin=float(margin),
    )


def gaussian_gram(
    x: Any, sigma: str | float | torch.Tensor = "median", *, normalize: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """The Gaussian Gram matrix of ``x`` (``(..., n, d)``) and the σ used.

    Returns ``(A, sigma)`` with ``A = K / tr K`` of shape ``(..., n, n)`` when ``normalize`` (else ``K``), and
    ``sigma`` of the leading shape. Materialises the full matrices: for entropies use :func:`renyi_entropy`.

    Example:
        >>> a, s = gaussian_gram(torch.zeros(3, 2))
        >>> a
        tensor([[0.3333, 0.3333, 0.3333],
                [0.3333, 0.3333, 0.3333],
                [0.3333, 0.3333, 0.3333]])
    """
    x = _checks.as_points(x, "x")
    leading, (n, d) = x.shape[:-2], x.shape[-2:]
    sigma = _checks.check_sigma(sigma, leading)
    rows = x.reshape(-1, n, d)
    rows = rows if rows.dtype in (torch.float32, torch.float64) else rows.float()  # half precision: upcast
    dist, scale = squared_distances(rows, return_scale=True)  # (B, n, n) scaled, (B,)
    if isinstance(sigma, str):
        sig = median_sigma(dist) / scale  # (B,) in x's units
    else:
        sig = sigma.reshape(-1).to(dist.device)
    kernel = gaussian_kernel(dist, sig * scale)  # (B, n, n)
    if normalize:
        kernel = kernel / kernel.diagonal(dim1=-2, dim2=-1).sum(dim=-1)[:, None, None]
    return kernel.reshape(*leading, n, n), sig.reshape(leading)
