"""Input checks at the public boundary of the estimators; the internals trust what passes here."""

from __future__ import annotations

import math
from typing import Any

import torch

from entroprobe.errors import InputError

SIGMA_RULES = ("median",)


def as_points(x: Any, name: str = "x") -> torch.Tensor:
    """Check ``x`` is a finite ``(..., n, d)`` array of real numbers and return it as a float tensor.

    Integer input becomes float32; fp16/bf16 are left to be upcast to float32 chunk by chunk; float64 stays.
    The result is detached from autograd: the estimators are measurements, not differentiable functions (their
    products are written in place, and their worker threads would otherwise record gradients).
    """
    if isinstance(x, torch.Tensor):
        x = x.detach()
    else:
        try:
            x = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise InputError(f"{name} must be a tensor of shape (..., n, d); got {type(x).__name__}: {exc}") from None
    if x.is_complex():
        raise InputError(f"{name} must be real; got dtype {x.dtype}")
    if x.dim() < 2:
        raise InputError(
            f"{name} must have shape (..., n, d) with at least 2 dimensions (n tokens of d features); "
            f"got shape {tuple(x.shape)}"
        )
    n, d = x.shape[-2], x.shape[-1]
    if n == 0:
        raise InputError(f"{name} is an empty sequence (n = 0 tokens); got shape {tuple(x.shape)}")
    if d == 0:
        raise InputError(f"{name} has no features (d = 0); got shape {tuple(x.shape)}")
    if any(size == 0 for size in x.shape[:-2]):
        raise InputError(f"{name} has an empty leading dimension; got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        x = x.to(torch.float32)  # half precision stays as it is here: the engine upcasts chunk by chunk
    if bool(torch.isfinite(x.sum())):  # fast path: one pass, no mask (an overflowing sum falls through)
        return x
    finite = torch.isfinite(x).flatten(start_dim=-2).all(dim=-1)  # (...,)
    if not bool(finite.all()):
        where = ""
        if finite.dim() > 0:
            first = tuple(int(i) for i in torch.nonzero(~finite)[0].tolist())
            where = f" at leading index {first}"
        raise InputError(f"{name} contains NaN or Inf{where} (shape {tuple(x.shape)})")
    return x


def check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    """``x`` (…, n, d) and ``y`` (…, m, d) must share their leading shape and feature size."""
    if x.shape[-1] != y.shape[-1]:
        raise InputError(
            f"x and y must have the same feature size d; got x {tuple(x.shape)} (d = {x.shape[-1]}) "
            f"and y {tuple(y.shape)} (d = {y.shape[-1]})"
        )
    if x.shape[:-2] != y.shape[:-2]:
        raise InputError(
            f"x and y must have the same leading shape; got x {tuple(x.shape)} (leading {tuple(x.shape[:-2])}) "
            f"and y {tuple(y.shape)} (leading {tuple(y.shape[:-2])})"
        )


def check_alpha(alpha: Any) -> float:
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        raise InputError(f"alpha must be a number > 0 (or inf); got {alpha!r}") from None
    if math.isnan(value) or value <= 0:
        raise InputError(f"alpha must be > 0 (or inf); got {alpha!r}")
    return value


def check_base(base: Any) -> float:
    try:
        value = float(base)
    except (TypeError, ValueError):
        raise InputError(f"base must be a number > 0 and != 1; got {base!r}") from None
    if not math.isfinite(value) or value <= 0 or value == 1:
        raise InputError(f"base must be a finite number > 0 and != 1; got {base!r}")
    return value


def check_sigma(sigma: Any, leading: torch.Size) -> str | torch.Tensor:
    """A named rule (``"median"``), a positive finite number, or a tensor of positive values per leading index."""
    if isinstance(sigma, str):
        if sigma not in SIGMA_RULES:
            raise InputError(f"Unknown sigma rule '{sigma}'; use a positive number or one of: {', '.join(SIGMA_RULES)}")
        return sigma
    if isinstance(sigma, torch.Tensor) and sigma.dim() > 0:
        if sigma.shape != leading:
            raise InputError(
                f"sigma as a tensor must have the leading shape {tuple(leading)}; got {tuple(sigma.shape)}"
            )
        bad = ~(torch.isfinite(sigma) & (sigma > 0))
        if bool(bad.any()):
            first = tuple(int(i) for i in torch.nonzero(bad)[0].tolist())
            raise InputError(f"sigma must be positive and finite; got {float(sigma[first])} at leading index {first}")
        return sigma.double()
    try:
        value = float(sigma)
    except (TypeError, ValueError):
        raise InputError(f"sigma must be a positive number or one of {', '.join(SIGMA_RULES)}; got {sigma!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise InputError(f"sigma must be positive and finite; got {sigma!r}")
    return torch.full(leading, value, dtype=torch.float64)


def check_budget(memory_budget: Any) -> int:
    try:
        value = int(memory_budget)
    except (TypeError, ValueError):
        raise InputError(f"memory_budget must be a positive number of bytes; got {memory_budget!r}") from None
    if value <= 0:
        raise InputError(f"memory_budget must be a positive number of bytes; got {memory_budget!r}")
    return value


def check_device(device: Any) -> torch.device | None:
    """None, or a device torch knows (``"cuda:0"``, ``torch.device("cpu")``)."""
    if device is None:
        return None
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"device must be a torch device such as 'cpu' or 'cuda:0'; got {device!r}") from None


def check_scales(sigma_scale: Any) -> tuple[tuple[float, ...], bool]:
    """A positive finite factor, or a non-empty sequence of them; returns (factors, whether a sequence)."""
    several = isinstance(sigma_scale, (list, tuple)) or (isinstance(sigma_scale, torch.Tensor) and sigma_scale.dim() > 0)
    values = list(sigma_scale) if several else [sigma_scale]
    if several and not values:
        raise InputError("sigma_scale as a sequence needs at least one factor; got an empty one")
    out = []
    for value in values:
        try:
            factor = float(value)
        except (TypeError, ValueError):
            raise InputError(f"sigma_scale must be positive numbers; got {value!r}") from None
        if not math.isfinite(factor) or factor <= 0:
            raise InputError(f"sigma_scale must be positive and finite; got {value!r}")
        out.append(factor)
    return tuple(out), several
