"""Is the kernel saturated? The weakness of the method that users must see, made a number.

With σ too small the Gram matrix is ≈ I: every token looks unrelated to every other and the entropy is
≈ log_b n — it then measures the token count, not structure. With σ too large it is ≈ all-ones and the entropy
is ≈ 0. The median rule keeps the typical pair at K = e^{-1} ≈ 0.37, but a fixed σ, or a median rule on
strongly clustered states, can still saturate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from entroprobe.entropy import _checks
from entroprobe.entropy.kernel import gaussian_kernel, median_sigma, squared_distances
from entroprobe.entropy.renyi import DEFAULT_MEMORY_BUDGET, SATURATION_THRESHOLD, _engine

__all__ = ["KernelDiagnostics", "kernel_diagnostics", "gaussian_gram"]


@dataclass(frozen=True)
class KernelDiagnostics:
    """Diagnostics of the Gaussian kernel of each sequence; tensors have the input's leading shape.

    Attributes:
        sigma: the bandwidth used.
        offdiag_mean: mean of the off-diagonal kernel entries, in [0, 1].
        saturation: ``1 − 2·offdiag_mean`` in [−1, 1]: +1 when K ≈ I, −1 when K ≈ all-ones.
        normalized_entropy: ``S_2 / log_b n`` in [0, 1] (order 2, no eigendecomposition).
        saturated: ``|saturation| ≥ threshold``.
        threshold: the warning threshold used.
    """

    sigma: torch.Tensor
    offdiag_mean: torch.Tensor
    saturation: torch.Tensor
    normalized_entropy: torch.Tensor
    saturated: torch.Tensor
    threshold: float

    @property
    def states(self) -> list[str]:
        """Per sequence (flattened): ``"identity"`` (σ too small), ``"ones"`` (σ too large), ``"identical"``
        (all tokens coincide: no σ, entropy 0) or ``"ok"``."""
        out = []
        flat = zip(self.saturation.reshape(-1).tolist(), self.saturated.reshape(-1).tolist(),
                   self.sigma.reshape(-1).tolist())  # fmt: skip
        for sat, flagged, sigma in flat:
            if sigma != sigma:  # NaN σ: every token is the same point
                out.append("identical")
            else:
                out.append("ok" if not flagged else ("identity" if sat > 0 else "ones"))
        return out

    def warnings(self) -> list[str]:
        """One plain sentence per saturated sequence (flattened index), empty when none is."""
        messages = []
        for i, state in enumerate(self.states):
            if state == "identity":
                messages.append(
                    f"index {i}: kernel ≈ identity (σ = {self.sigma.reshape(-1)[i]:.4g} too small): "
                    "entropy ≈ log n measures the token count, not structure"
                )
            elif state == "identical":
                messages.append(f"index {i}: every token is the same point (K = all-ones, no σ defined): entropy 0")
            elif state == "ones":
                messages.append(
                    f"index {i}: kernel ≈ all-ones (σ = {self.sigma.reshape(-1)[i]:.4g} too large): entropy ≈ 0"
                )
        return messages


def kernel_diagnostics(
    x: Any,
    sigma: str | float | torch.Tensor = "median",
    *,
    threshold: float = SATURATION_THRESHOLD,
    base: float = 2,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> KernelDiagnostics:
    """Tell whether the Gaussian kernel of ``x`` (``(..., n, d)``) is saturated at ``sigma``.

    Example:
        >>> x = torch.eye(5) * 100
        >>> d = kernel_diagnostics(x, sigma=0.1)
        >>> d.states, round(d.saturation.item(), 3)
        (['identity'], 1.0)
    """
    x = _checks.as_points(x, "x")
    sigma = _checks.check_sigma(sigma, x.shape[:-2])
    base = _checks.check_base(base)
    if not 0 < threshold <= 1:
        raise _checks.InputError(f"threshold must be in (0, 1]; got {threshold!r}")
    result = _engine(
        x, None, [("x", "x")], alpha=2.0, sigma=sigma, base=base, memory_budget=_checks.check_budget(memory_budget)
    )[("x", "x")]
    n = x.shape[-2]
    normalized = result.value / math.log(n, base) if n > 1 else torch.zeros_like(result.value)
    return KernelDiagnostics(
        sigma=result.sigma,
        offdiag_mean=(1 - result.saturation) / 2,
        saturation=result.saturation,
        normalized_entropy=normalized,
        saturated=result.saturation.abs() >= threshold,
        threshold=threshold,
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
    dist = squared_distances(x.reshape(-1, n, d))  # (B, n, n)
    sig = median_sigma(dist) if isinstance(sigma, str) else sigma.reshape(-1).to(dist.device)  # (B,)
    kernel = gaussian_kernel(dist, sig)  # (B, n, n)
    if normalize:
        kernel = kernel / kernel.diagonal(dim1=-2, dim2=-1).sum(dim=-1)[:, None, None]
    return kernel.reshape(*leading, n, n), sig.reshape(leading)
