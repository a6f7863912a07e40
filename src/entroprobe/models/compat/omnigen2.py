"""What OmniGen2's code (``VectorSpaceLab/OmniGen2``, ``omnigen2/``), written against torch 2.6 on CUDA, needs
on a machine without a GPU.

- :func:`torch_rmsnorm_without_cuda` — ``omnigen2/models/transformers/block_lumina2.py`` and
  ``transformer_omnigen2.py`` import ``omnigen2.ops.triton.layer_norm.RMSNorm`` whenever the ``triton`` package
  is installed (``omnigen2.utils.import_utils.is_triton_available()``). torch's CUDA wheels bundle triton, so it
  is installed on CPU machines too, and that module asks ``torch.cuda.current_device()`` at import time: importing
  the pipeline fails with "Found no NVIDIA driver". When CUDA is not available, this sets the checkout's own flag
  ``_triton_available`` to False before the transformer is imported, so the code takes its own fallback,
  ``torch.nn.RMSNorm`` (the same ``weight`` parameter, the same normalisation written without a fused kernel).
  With CUDA the flag is left alone and the fused kernel runs, as upstream.

The checkout's other optional speed-ups need no shim: without ``flash_attn`` it uses its own
``OmniGen2AttnProcessor`` (``scaled_dot_product_attention``) and its own SwiGLU.
"""

from __future__ import annotations

from types import ModuleType

import torch

__all__ = ["torch_rmsnorm_without_cuda"]


def torch_rmsnorm_without_cuda(import_utils: ModuleType, cuda_available: bool | None = None) -> bool:
    """Switch ``import_utils`` (the checkout's ``omnigen2.utils.import_utils``) to torch's RMSNorm when CUDA is
    not available; returns whether it patched. Idempotent; must run before the transformer module is imported.

    Args:
        import_utils: a module with a ``_triton_available`` flag read by ``is_triton_available()``.
        cuda_available: override for tests; None asks torch.
    """
    cuda = torch.cuda.is_available() if cuda_available is None else cuda_available
    if cuda or not getattr(import_utils, "_triton_available", False):
        return False
    import_utils._triton_available = False
    return True
