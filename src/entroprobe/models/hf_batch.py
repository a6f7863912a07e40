"""Batched encoding for transformers models: several prompts per forward pass, padded on the right.

Right padding with an attention mask leaves every real token's states as they are alone: a causal decoder's
tokens never see what follows them, and an encoder's attention mask hides the padding; positions count from 0 in
every row either way. :func:`encode_rows` runs one pass over prompts already turned into ids (each checked on its
own by the caller) and cuts each row back to its own tokens; :func:`encode_text_batch` tokenizes texts first.
Image prompts batch the same way: their image tokens are ids (Emu3, Chameleon) or image-placeholder ids that the
model fills from ``pixel_values`` stacked in the prompts' order (Janus).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from entroprobe.errors import EntroprobeError
from entroprobe.models.base import LayerStates

__all__ = ["pad_right", "pad_embeds_right", "embedded_passes", "padded_states", "encode_rows", "encode_text_batch"]


def pad_right(rows: list[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids (B, T), attention_mask (B, T))`` from 1-D id tensors of different lengths."""
    width = max(int(r.shape[0]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : row.shape[0]], mask[i, : row.shape[0]] = row.cpu(), 1
    return ids, mask


def pad_embeds_right(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs_embeds (B, T, d), attention_mask (B, T))`` from embeddings ``(T_i, d)`` of different lengths, on
    their device: each row first, zeros after it (the mask hides them)."""
    width = max(int(r.shape[0]) for r in rows)
    padded = rows[0].new_zeros((len(rows), width, rows[0].shape[-1]))
    mask = torch.zeros((len(rows), width), dtype=torch.long, device=rows[0].device)
    for i, row in enumerate(rows):
        padded[i, : row.shape[0]], mask[i, : row.shape[0]] = row, 1
    return padded, mask


def embedded_passes(decoder: Any, rows: list[torch.Tensor]) -> list[torch.Tensor]:
    """ONE pass of ``decoder`` (a transformers decoder with ``layers``; a family's own language model) over input
    embeddings ``(T_i, d)``, right-padded → each row's raw layer states ``(L + 1, T_i, d)``, captured by hooks (the
    last entry before the final norm)."""
    from entroprobe.models.hooks import capture_layers

    embeds, mask = pad_embeds_right(rows)
    with capture_layers(decoder, "layers") as capture, torch.no_grad():
        decoder(inputs_embeds=embeds, attention_mask=mask, use_cache=False)
    states = capture.calls[0].stacked()  # (L + 1, B, T, d)
    return [states[:, i, : row.shape[0]] for i, row in enumerate(rows)]


def encode_text_batch(model: Any, num_layers: int, texts: list[str], tokenize: Callable[[str], torch.Tensor],
                      pad_id: int | None, device: torch.device, final_norm: bool, **extra: Any) -> list[LayerStates]:  # fmt: skip
    """Layer states of every token of each text, from one forward pass over the padded batch.

    Args:
        tokenize: one text → ``(1, T)`` ids, checked (raises ItemError naming the prompt).
        pad_id: the padding id (any id works: the attention mask hides it; None: 0).
        extra: further forward keywords (``use_cache=False``).
    """
    return encode_rows(model, num_layers, [tokenize(text)[0] for text in texts], pad_id, device, final_norm, **extra)


def padded_states(model: Any, num_layers: int, ids: torch.Tensor, mask: torch.Tensor, device: torch.device,
                  embed: Callable[[torch.Tensor], torch.Tensor] | None = None, **extra: Any) -> torch.Tensor:  # fmt: skip
    """One pass over padded ids ``(B, T)`` with their attention mask → ``(L + 1, B, T, d)`` float32 (on the CPU
    when large, see :mod:`.placement`), asking for no logits beyond the last position.

    ``embed`` turns the ids into the input embeddings ``model`` is given instead (a family that fills prompt
    positions with image features itself).

    Raises:
        EntroprobeError: when the model does not return ``num_layers + 1`` hidden states.
    """
    from entroprobe.models.hf import _takes
    from entroprobe.models.placement import stack_layers

    inputs = {"attention_mask": mask.to(device), **extra}
    if embed is None:
        inputs["input_ids"] = ids.to(device)
    else:
        inputs["inputs_embeds"] = embed(ids.to(device))
    if _takes(model, "logits_to_keep"):
        inputs.setdefault("logits_to_keep", 1)  # the states need no B × T × vocab logits
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True, return_dict=True)
    hidden = getattr(out, "hidden_states", None)
    if hidden is None or len(hidden) != num_layers + 1:
        raise EntroprobeError(f"{type(model).__name__} returned {0 if hidden is None else len(hidden)} hidden states; "
                              f"expected {num_layers + 1} (layers + embedding)")  # fmt: skip
    return stack_layers(hidden)


def encode_rows(model: Any, num_layers: int, rows: list[torch.Tensor], pad_id: int | None, device: torch.device,
                final_norm: bool, **extra: Any) -> list[LayerStates]:  # fmt: skip
    """Layer states of every token of each row of ids ``(T_i,)``, from one forward pass over them padded.

    Args:
        pad_id: the padding id (any id works: the attention mask hides it; None: 0).
        extra: further forward keywords (``use_cache=False``, ``pixel_values`` of the rows' images).
    """
    ids, mask = pad_right(rows, 0 if pad_id is None else int(pad_id))
    states = padded_states(model, num_layers, ids, mask, device, **extra)  # (L + 1, B, T, d)
    return [LayerStates(states[:, i, : row.shape[0]], torch.arange(row.shape[0]), row.cpu(), final_norm)
            for i, row in enumerate(rows)]  # fmt: skip
