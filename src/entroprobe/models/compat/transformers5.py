"""What transformers 5 removed that the authors' repositories, written against transformers 4, still call.

- :func:`ensure_default_rope` — transformers 5 dropped the ``"default"`` entry of
  ``transformers.modeling_rope_utils.ROPE_INIT_FUNCTIONS`` (plain RoPE is now computed inside each model's own
  rotary class). BAGEL's, Harmon's, Show-o's and Show-o2's vendored rotary embeddings look ``"default"`` up in
  that table at construction. This puts back an initialiser with the 4.x signature,
  ``(config, device, seq_len=None, **rope_kwargs) -> (inv_freq, attention_factor)``, computing
  ``inv_freq = 1 / base ** (arange(0, dim, 2) / dim)`` with ``attention_factor = 1``. It adds the entry only
  when the table lacks it, and leaves every other entry alone.
- :func:`plain_resizing` — since transformers 4.46, ``resize_token_embeddings`` fills new rows from the old rows'
  mean and covariance (``mean_resizing=True``), which cannot run on a weightless (meta) skeleton. Show-o's and
  Show-o2's constructors grow their LLM's vocabulary before the checkpoint overwrites every row; inside the block,
  the class's ``resize_token_embeddings`` passes ``mean_resizing=False`` (what 4.41, the authors' pin, did) when
  the installed release takes that argument. Restored on exit.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["ensure_default_rope", "default_rope_parameters", "plain_resizing"]


def _rope_base_and_dim(config: Any, rope_kwargs: dict[str, Any]) -> tuple[float, int]:
    """``(base, rotary dim)`` from 4.x ``rope_kwargs`` (``base``, ``dim``) or a config (``rope_theta`` or 5.x
    ``rope_parameters["rope_theta"]``; ``head_dim`` or ``hidden_size / num_attention_heads``, times
    ``partial_rotary_factor``)."""
    if "base" in rope_kwargs and "dim" in rope_kwargs:
        return float(rope_kwargs["base"]), int(rope_kwargs["dim"])
    base = getattr(config, "rope_theta", None)
    parameters = getattr(config, "rope_parameters", None) or {}
    if base is None and isinstance(parameters, dict):
        base = parameters.get("rope_theta")
    if base is None:
        base = 10000.0
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    factor = getattr(config, "partial_rotary_factor", None)
    if factor is None and isinstance(parameters, dict):
        factor = parameters.get("partial_rotary_factor")
    return float(base), int(head_dim * (factor if factor is not None else 1.0))


def default_rope_parameters(config: Any = None, device: Any = None, seq_len: int | None = None,
                            **rope_kwargs: Any) -> tuple[torch.Tensor, float]:  # fmt: skip
    """Plain RoPE's inverse frequencies ``(dim / 2,)`` float32 and attention factor 1.0 (see the module)."""
    base, dim = _rope_base_and_dim(config, rope_kwargs)
    exponents = torch.arange(0, dim, 2, dtype=torch.int64).to(device=device, dtype=torch.float) / dim
    return 1.0 / (base**exponents), 1.0


def ensure_default_rope() -> bool:
    """Add the ``"default"`` RoPE initialiser when transformers lacks it; True when it was added now."""
    from transformers import modeling_rope_utils

    table = modeling_rope_utils.ROPE_INIT_FUNCTIONS
    if "default" in table:
        return False
    table["default"] = default_rope_parameters
    return True


@contextlib.contextmanager
def plain_resizing(llm: type | None) -> Iterator[None]:
    """Inside the block, ``llm.resize_token_embeddings`` resizes with ``mean_resizing=False`` (see the module);
    nothing happens for ``llm`` None."""
    if llm is None:
        yield
        return
    own = vars(llm).get("resize_token_embeddings")
    inherited = llm.resize_token_embeddings

    def resize_plainly(self: Any, *args: Any, **kwargs: Any) -> Any:
        if "mean_resizing" in inspect.signature(inherited).parameters:
            kwargs.setdefault("mean_resizing", False)
        return inherited(self, *args, **kwargs)

    llm.resize_token_embeddings = resize_plainly
    try:
        yield
    finally:
        if own is None:
            del llm.resize_token_embeddings
        else:
            llm.resize_token_embeddings = own
