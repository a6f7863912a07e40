"""Where a pass's layer states live: on the model's device, or on the CPU when they are large.

An Emu3 image is about 8,200 tokens: its states, 33 layers × 8,200 × 4,096 in float32, are 4.4 GB, beside the
model. :func:`stack_layers` is how every adapter turns per-layer outputs into ``(layers + 1, …, d)`` float32: on
the first layer's device (where the model's passes put them) while that stays under the budget set by
:func:`state_budget`, and otherwise on the CPU, filled one layer at a time, so that the float32 copy of every
layer never exists on the GPU. The estimators then measure them on the model's device chunk by chunk
(``renyi_entropy(..., device=...)``): only a chunk is there at once.

The budget is checked per stacking (one pass: a batch's states together) and is the process's (the probe sets it
for a run, calibration included: ``--state-memory``); without one, states stay on the model's device. The model's
own per-layer outputs, in its dtype, are on its device during the pass whatever the budget.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch

__all__ = ["state_budget", "current_budget", "stack_layers"]

_BUDGET: list[int | None] = [None]  # bytes of float32 states a unit may keep on the model's device; None: no limit


def current_budget() -> int | None:
    return _BUDGET[0]


@contextlib.contextmanager
def state_budget(nbytes: int | None) -> Iterator[None]:
    """Inside the block, states larger than ``nbytes`` (float32) are stacked on the CPU (None: never); the
    previous budget is restored after it."""
    previous = _BUDGET[0]
    _BUDGET[0] = None if nbytes is None else int(nbytes)
    try:
        yield
    finally:
        _BUDGET[0] = previous


def stack_layers(layers: Sequence[torch.Tensor], index: Any = None, device: str | torch.device | None = None
                 ) -> torch.Tensor:  # fmt: skip
    """``layers`` (each ``layer[index]`` when ``index`` is given) stacked → ``(len(layers), …)`` float32.

    On ``device`` (default: the first layer's device, where layers spread over several GPUs are gathered) unless
    the result is larger than the budget of :func:`state_budget`; then on the CPU, moved there layer by layer.
    """
    picked = [layer if index is None else layer[index] for layer in layers]
    target = torch.device(device) if device is not None else picked[0].device
    budget = _BUDGET[0]
    size = len(picked) * picked[0].numel() * 4
    if budget is not None and target.type != "cpu" and size > budget:
        out = torch.empty((len(picked), *picked[0].shape), dtype=torch.float32)  # on the CPU
        for i, layer in enumerate(picked):
            out[i].copy_(layer.detach())  # one layer crosses at a time, in its own dtype, upcast on the CPU
        return out
    return torch.stack([layer.to(target) for layer in picked]).float()
