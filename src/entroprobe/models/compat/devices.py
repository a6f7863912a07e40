"""Device calls in authors' sampling code: ``.cuda()`` on a model that is not on a GPU.

Sampling code written for one GPU moves fresh tensors with ``tensor.cuda()`` (Harmon's ``DiffLoss.sample`` and
``GaussianDiffusion.p_sample_loop``, for instance). On a model placed elsewhere (the CPU, or a tensor that must
follow the model's device) that call fails with "Found no NVIDIA driver" or puts the tensor on the wrong device.

- :func:`cuda_calls_to` — inside the block, ``torch.Tensor.cuda()`` moves a tensor to the model's device instead
  (``.to(device)``, keeping ``non_blocking``). It applies only when that device is not the current CUDA device
  (the CPU, or ``cuda:1`` while ``cuda:0`` is current): there ``.cuda()`` already goes where the model is and is
  left alone. ``torch.Tensor.cuda`` is restored on exit, also after an error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["cuda_calls_to"]


def _current_gpu(device: torch.device) -> bool:
    """Whether a bare ``.cuda()`` already lands on ``device``."""
    if device.type != "cuda":
        return False
    return device.index is None or not torch.cuda.is_available() or device.index == torch.cuda.current_device()


@contextlib.contextmanager
def cuda_calls_to(device: torch.device | str) -> Iterator[bool]:
    """Inside the block ``tensor.cuda()`` means ``tensor.to(device)`` when ``device`` is not the current CUDA
    device; yields whether the call was redirected."""
    device = torch.device(device)
    if _current_gpu(device):
        yield False
        return
    original = torch.Tensor.cuda

    def to_device(self: torch.Tensor, device_index: object = None, non_blocking: bool = False, **_: object):
        return self.to(device, non_blocking=non_blocking)

    torch.Tensor.cuda = to_device  # type: ignore[method-assign]
    try:
        yield True
    finally:
        torch.Tensor.cuda = original  # type: ignore[method-assign]
