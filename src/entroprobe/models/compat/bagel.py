"""What BAGEL's code (``ByteDance-Seed/Bagel``), written against flash-attn 2 / CUDA / transformers 4.49, needs here.

The flash-attn stand-in, the RoPE entry and ``pad_token_id`` check first and change nothing when the installed
libraries already give what the code expects; :class:`OnDevice` and :func:`autocast` always apply (entroprobe runs
the model on one device without accelerate's dispatch hooks).

- :func:`flash_attn_varlen_func` / :func:`provide_flash_attn` — ``modeling/bagel/qwen2_navit.py`` and
  ``modeling/bagel/siglip_navit.py`` run ``from flash_attn import flash_attn_varlen_func`` unconditionally, and
  every attention of the packed decoder and of the NaViT SigLIP goes through it. Without flash-attn (a CPU
  machine, or a GPU without the wheel) the checkout does not import. :func:`flash_attn_varlen_func` gives the same
  call on ``torch.nn.functional.scaled_dot_product_attention``: packed ``q (total_q, H, D)``, ``k``/``v``
  ``(total_k, H_kv, D)`` split by ``cu_seqlens_q`` / ``cu_seqlens_k``, grouped-query heads repeated, ``causal``
  aligned to the bottom right as flash-attn >= 2.1 does (query ``i`` of ``L_q`` sees key ``j`` iff
  ``j <= i + L_k - L_q``; BAGEL's cached decoding relies on it), a row that sees no key gives zeros (as
  flash-attn), output in ``q``'s dtype. :func:`provide_flash_attn` puts a stand-in ``flash_attn`` module with that
  function in ``sys.modules`` only while the checkout is imported and only when flash-attn is not installed, then
  takes it out again (the imported modules keep their reference; transformers' own ``is_flash_attn_2_available``
  and other families never see it).
- :func:`ensure_default_rope` (from :mod:`.transformers5`) — the vendored ``modeling/qwen2/modeling_qwen2.py``'s
  ``Qwen2RotaryEmbedding`` looks ``ROPE_INIT_FUNCTIONS["default"]`` up, which transformers 5 removed.
- :class:`OnDevice` — the authors' ``prepare_*`` methods build their index tensors and the initial noise on the CPU
  (``torch.tensor(...)``, ``torch.randn(...)``) and ``InterleaveInferencer`` hands them to the model as they are; in
  ``app.py`` / ``inference.ipynb`` accelerate's dispatch hooks (``load_checkpoint_and_dispatch(..., force_hooks=True)``)
  move them to the GPU. entroprobe loads the model on one device without hooks and gives the inferencer this
  stand-in for the model instead: every attribute is the model's own, and the methods that run the network
  (``forward_cache_update_*``, ``generate_image``, ``generate_text``) first move their tensor arguments to the
  model's device, as ``Bagel.chat`` does (``generation_input[k] = v.to(device)``).
- ``pad_token_id`` (:func:`legacy_llm_config`) — transformers 5's ``PretrainedConfig`` no longer sets
  ``pad_token_id = None`` on every config; BAGEL's ``Qwen2Model.__init__`` reads ``config.pad_token_id`` and the
  released ``llm_config.json`` (a Qwen2.5 config) need not set one. Set to None (4.x's default) only when missing.
- :func:`autocast` — ``inferencer.py`` runs everything under ``torch.autocast(device_type="cuda", dtype=bfloat16)``
  and the packed attention casts ``q``/``k``/``v`` to bfloat16 itself; the same autocast on the adapter's device
  type (``"cpu"`` included) lets those bfloat16 activations meet float32 weights where a user loads float32.

BAGEL's own ``NaiveCache`` is its KV cache: none of transformers' cache classes are on the paths entroprobe runs, and
no ``.cuda()`` call is either (sampling follows ``x_t.device``).
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F

from entroprobe.models.compat.transformers5 import ensure_default_rope

__all__ = [
    "OnDevice",
    "autocast",
    "ensure_default_rope",
    "flash_attn_varlen_func",
    "legacy_llm_config",
    "provide_flash_attn",
]


def flash_attn_varlen_func(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
                           cu_seqlens_k: torch.Tensor, max_seqlen_q: int | None = None,
                           max_seqlen_k: int | None = None, dropout_p: float = 0.0, softmax_scale: float | None = None,
                           causal: bool = False, **unused: Any) -> torch.Tensor:  # fmt: skip
    """flash-attn 2's ``flash_attn_varlen_func`` (no dropout, no window) on scaled-dot-product attention.

    Args:
        q: ``(total_q, H, D)``; k, v: ``(total_k, H_kv, D)`` with ``H % H_kv == 0``.
        cu_seqlens_q, cu_seqlens_k: ``(N + 1,)`` int offsets of the ``N`` sequences in ``q`` and ``k``/``v``.
        causal: bottom-right aligned causal mask within each sequence.

    Returns:
        ``(total_q, H, D)`` in ``q``'s dtype.
    """
    if dropout_p:
        raise NotImplementedError("the flash_attn_varlen_func stand-in runs inference only (dropout_p must be 0)")
    heads, kv_heads = q.shape[1], k.shape[1]
    starts_q, starts_k = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    out = q.new_zeros(q.shape)
    for i in range(len(starts_q) - 1):
        q0, q1, k0, k1 = starts_q[i], starts_q[i + 1], starts_k[i], starts_k[i + 1]
        if q1 == q0:
            continue
        qi = q[q0:q1].transpose(0, 1)  # (H, Lq, D)
        ki, vi = k[k0:k1].transpose(0, 1), v[k0:k1].transpose(0, 1)  # (H_kv, Lk, D)
        if kv_heads != heads:
            ki, vi = ki.repeat_interleave(heads // kv_heads, 0), vi.repeat_interleave(heads // kv_heads, 0)
        if k1 == k0:
            continue  # no key: zeros, as flash-attn
        mask = None
        if causal:
            lq, lk = q1 - q0, k1 - k0
            rows = torch.arange(lq, device=q.device)[:, None]
            mask = torch.arange(lk, device=q.device)[None, :] <= rows + (lk - lq)  # (Lq, Lk)
        vi = vi.to(qi.dtype)
        attended = F.scaled_dot_product_attention(qi, ki.to(qi.dtype), vi, attn_mask=mask, scale=softmax_scale)
        if mask is not None:
            attended = attended.masked_fill(~mask.any(-1)[None, :, None], 0.0)  # rows that see no key
        out[q0:q1] = attended.transpose(0, 1).to(q.dtype)
    return out


def _flash_attn_installed() -> bool:
    try:
        return importlib.util.find_spec("flash_attn") is not None
    except (ImportError, ValueError):
        return "flash_attn" in sys.modules


@contextlib.contextmanager
def provide_flash_attn() -> Iterator[bool]:
    """While the block runs, ``import flash_attn`` finds the stand-in (when flash-attn is not installed); yields
    whether the stand-in was put there. The stand-in leaves ``sys.modules`` when the block ends."""
    if _flash_attn_installed():
        yield False
        return
    fake = ModuleType("flash_attn")
    fake.__spec__ = importlib.machinery.ModuleSpec("flash_attn", None)  # find_spec() must not fail on it
    fake.__doc__ = "entroprobe's stand-in for flash-attn (entroprobe.models.compat.bagel)"
    fake.flash_attn_varlen_func = flash_attn_varlen_func  # type: ignore[attr-defined]
    fake.__entroprobe_shim__ = True  # type: ignore[attr-defined]
    sys.modules["flash_attn"] = fake
    try:
        yield True
    finally:
        if sys.modules.get("flash_attn") is fake:
            del sys.modules["flash_attn"]


class OnDevice:
    """The model as ``InterleaveInferencer`` sees it, moving inputs to ``device`` (see the module docstring)."""

    RUNS = ("forward_cache_update_text", "forward_cache_update_vit", "forward_cache_update_vae", "generate_image",
            "generate_text")  # fmt: skip

    def __init__(self, model: Any, device: torch.device):
        self._model, self._device = model, device

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._model, name)
        if name not in self.RUNS:
            return value

        def run(*args: Any, **kwargs: Any) -> Any:
            move = lambda v: v.to(self._device) if torch.is_tensor(v) else v
            return value(*[move(a) for a in args], **{k: move(v) for k, v in kwargs.items()})

        return run


def legacy_llm_config(config: Any) -> Any:
    """``config.pad_token_id = None`` when transformers 5 left it unset (see the module docstring)."""
    try:
        config.pad_token_id  # noqa: B018 - the attribute's presence is the question
    except AttributeError:
        config.pad_token_id = None
    return config


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager[Any]:
    """``inferencer.py``'s bfloat16 autocast, on ``device``'s type (see the module docstring)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)
