"""Token-count control: the same measure over random subsets of k tokens, averaged over draws.

A random k-subset (without replacement) of exchangeable tokens is distributed like a sequence of k tokens
drawn from the same source, so the mean over subsets estimates, without bias, "the entropy this sequence
would have at k tokens": sequences of different lengths are compared at one token count. Its limits: tokens
are exchangeable only approximately — a subset loses the positions it skips (neighbouring tokens are often
more alike than distant ones, so subsets of a long sequence look more spread than a short sequence of the
same count), and each token's state still carries the causal context of the whole sequence it came from.

The subsets are drawn once per call and shared by every leading index of a batch, so a layer trajectory
compares the same tokens at every layer. ``x``'s subsets come from ``seed``, ``y``'s from ``seed + 1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from entroprobe.errors import InputError

__all__ = ["Draws", "subsample_indices", "plan_draws"]


def subsample_indices(n: int, k: int, draws: int, seed: int) -> torch.Tensor:
    """``(draws, k)`` sorted indices of k of n tokens, without replacement, the same for the same seed.

    >>> subsample_indices(5, 3, 2, seed=0).shape
    torch.Size([2, 3])
    """
    generator = torch.Generator().manual_seed(seed)
    picks = [torch.randperm(n, generator=generator)[:k].sort().values for _ in range(draws)]
    return torch.stack(picks)  # (draws, k)


@dataclass(frozen=True)
class Draws:
    """The subsets of one call: ``x`` and ``y`` are ``(count, k)`` index tensors, or None for every token."""

    x: torch.Tensor | None
    y: torch.Tensor | None
    count: int


def _check_count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be a positive integer; got {value!r}")
    return value


def plan_draws(subsample: Any, draws: Any, seed: Any, n: int, m: int | None) -> Draws | None:
    """Check ``subsample``/``draws``/``seed`` against ``n`` (x's tokens) and ``m`` (y's, or None) and draw.

    ``subsample``: None (every token), k for a single sequence; for a pair m (y only) or (k, m), either of
    which may be None (that side whole).
    """
    if subsample is None:
        return None
    draws = _check_count(draws, "draws")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputError(f"seed must be an integer; got {seed!r}")
    if m is None:
        sizes = (subsample, None)
    elif isinstance(subsample, (tuple, list)):
        if len(subsample) != 2:
            raise InputError(f"subsample for a prompt and a response is m or (k, m); got {subsample!r}")
        sizes = tuple(subsample)
    else:
        sizes = (None, subsample)
    picks = []
    for size, total, side, offset in ((sizes[0], n, "x", 0), (sizes[1], m, "y", 1)):
        if size is None:
            picks.append(None)
            continue
        _check_count(size, f"subsample ({side})")
        if size > total:
            raise InputError(f"subsample {side} = {size} tokens is more than the {total} tokens {side} has")
        picks.append(subsample_indices(total, size, draws, seed + offset))
    if picks[0] is None and picks[1] is None:
        return None
    return Draws(x=picks[0], y=picks[1], count=draws)
