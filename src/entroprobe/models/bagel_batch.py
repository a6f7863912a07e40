"""BAGEL over a batch of prompts: several sequences packed side by side in each call of the checkout's model.

BAGEL has no batch axis. It packs sequences, and each of its ``prepare_*`` methods takes a list of prompts and
packs them one after the other: ``prepare_prompts``, ``prepare_vit_images``, ``prepare_start_tokens``,
``prepare_vae_latent``, ``prepare_vae_latent_cfg``. Its attention runs over each sequence apart (flash-attn's
``cu_seqlens``). Its ``NaiveCache`` holds the keys and values of every sequence of a batch, packed in the same
order.

The ``InterleaveInferencer`` passes lists of one prompt. Here the same ``prepare_*`` methods get B prompts, so each
context update is one call for the whole batch. The inferencer's generation loops are written out here for a
batch, because two things in them hold only for one prompt:

- ``generate_text`` stops when the *first* sequence produces ``<|im_end|>`` ("only support batch=1"), and it samples
  from torch's global generator. :func:`answers` runs until every sequence has stopped where it would stop alone.
  Each sequence draws from its own generator, seeded as ``torch.manual_seed(seed)`` seeds the global one alone.
- ``generate_image`` (through ``_forward_flow``) renormalises the guided velocity by its norm over all packed
  tokens ("currently only supports batch_size = 1"). :func:`images` calls ``_forward_flow`` itself for the
  conditional, text-CFG and image-CFG velocities, in the order ``_forward_flow`` computes them. Each is one call
  with guidance off, on that branch's cache. :func:`images` then guides and renormalises each image's tokens
  apart. Each image starts from its own noise: ``prepare_vae_latent``'s ``torch.randn`` on the CPU, drawn from
  the image's seed.

With one prompt, every function here computes what the inferencer computes: the same calls on the same inputs.
The tests hold the adapter to ``InterleaveInferencer.__call__``'s image and answer.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["empty", "add_texts", "add_images", "answers", "forced", "images", "guided"]


@contextlib.contextmanager
def running(device: torch.device) -> Iterator[None]:
    """The model's calls as the adapter runs the inferencer: no grad, under ``inferencer.py``'s bfloat16 autocast."""
    from entroprobe.models.compat.bagel import autocast

    with warnings.catch_warnings(), torch.no_grad(), autocast(device):
        warnings.simplefilter("ignore", UserWarning)
        yield


def _on(device: torch.device, inputs: dict[str, Any]) -> dict[str, Any]:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in inputs.items()}


def empty(adapter: Any, count: int) -> dict[str, Any]:
    """An empty context for ``count`` sequences, as ``init_gen_context`` makes one for a single sequence."""
    context = adapter.inferencer.init_gen_context()
    return {**context, "kv_lens": [0] * count, "ropes": [0] * count}


def add_texts(adapter: Any, context: dict[str, Any], texts: list[str]) -> tuple[dict[str, Any], list[torch.Tensor]]:
    """``update_context_text`` for every sequence at once. Returns the new context and each text's raw states
    ``(L + 1, n_i, d)``: ``<|im_start|>``, the text's tokens, ``<|im_end|>``."""
    model = adapter.parts.proxy
    inputs, kv_lens, ropes = model.prepare_prompts(curr_kvlens=context["kv_lens"], curr_rope=context["ropes"],
                                                   prompts=texts, tokenizer=adapter.tokenizer,
                                                   new_token_ids=adapter.new_token_ids)  # fmt: skip
    with adapter._capture() as capture, running(adapter.device):
        cache = model.forward_cache_update_text(context["past_key_values"], **inputs)
    states = capture.calls[0].stacked().split(inputs["text_token_lens"].tolist(), dim=1)
    return {"kv_lens": kv_lens, "ropes": ropes, "past_key_values": cache}, list(states)


def add_images(adapter: Any, context: dict[str, Any], pictures: list[Any]) -> tuple[dict[str, Any], list[torch.Tensor]]:
    """``update_context_image(vae=False)`` for every sequence at once, each picture already resized. Returns the new
    context and each picture's raw states ``(L + 1, n_i + 2, d)``: ``<|vision_start|>``, its ViT tokens,
    ``<|vision_end|>``."""
    model = adapter.parts.proxy
    inputs, kv_lens, ropes = model.prepare_vit_images(curr_kvlens=context["kv_lens"], curr_rope=context["ropes"],
                                                      images=pictures, transforms=adapter.parts.vit_transform,
                                                      new_token_ids=adapter.new_token_ids)  # fmt: skip
    with adapter._capture() as capture, running(adapter.device):
        cache = model.forward_cache_update_vit(context["past_key_values"], **inputs)
    sizes = (inputs["vit_token_seqlens"] + 2).tolist()
    states = capture.calls[0].stacked().split(sizes, dim=1)
    return {"kv_lens": kv_lens, "ropes": ropes, "past_key_values": cache}, list(states)


def answers(adapter: Any, context: dict[str, Any], lengths: list[int], seeds: list[int], *, do_sample: bool,
            temperature: float) -> list[list[int]]:  # fmt: skip
    """``gen_text`` for every sequence of ``context``, sequence i with ``max_length = lengths[i]``. Each list is what
    ``generate_text`` returns for that sequence alone: ``<|im_start|>``, then each token it picked, until it picks
    ``<|im_end|>`` (not included) or holds ``lengths[i]`` tokens.

    Every step is one ``forward_inference`` call over the whole batch, on a copy of the context's cache (as
    ``gen_text`` copies it). A sequence that has stopped keeps a place in each step: its own cache grows, no other
    sequence attends to it, and nothing it computes is kept.
    """
    model, device, count = adapter.model, adapter.device, len(lengths)
    end = adapter.new_token_ids["eos_token_id"]
    start = model.prepare_start_tokens(context["kv_lens"], context["ropes"], adapter.new_token_ids)
    cache = copy.deepcopy(context["past_key_values"])
    kv_lens = start["key_values_lens"].to(device)
    positions = start["packed_query_position_ids"].to(device)
    tokens = start["packed_start_tokens"].to(device)
    made = [[int(t)] for t in tokens]
    active = [True] * count
    generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
    extra = {"mode": "und"} if model.use_moe else {}
    offsets = torch.arange(count, device=device, dtype=kv_lens.dtype)
    while any(active):
        # sequence i's block in the packed call: its cached keys and values, then its new token
        first = torch.cumsum(kv_lens, dim=0) - kv_lens + offsets
        within = torch.arange(int(kv_lens.sum()), device=device) - torch.repeat_interleave(first - offsets, kv_lens)
        cached = torch.repeat_interleave(first, kv_lens) + within  # each sequence's cached positions, in order
        with running(device):
            output = model.language_model.forward_inference(
                packed_query_sequence=model.language_model.model.embed_tokens(tokens),
                query_lens=torch.ones_like(tokens), packed_query_position_ids=positions,
                packed_query_indexes=first + kv_lens, past_key_values=cache, key_values_lens=kv_lens,
                packed_key_value_indexes=cached, update_past_key_values=True, is_causal=True, **extra)  # fmt: skip
            logits = model.language_model.lm_head(output.packed_query_sequence)  # (B, V)
            if do_sample:  # under the autocast, as generate_text: CUDA's softmax then runs in float32
                probs = torch.nn.functional.softmax(logits / temperature, dim=-1)
                choices = torch.cat([torch.multinomial(probs[i : i + 1], num_samples=1, generator=generators[i])[0]
                                     if active[i] else tokens[i : i + 1] for i in range(count)])  # fmt: skip
            else:
                choices = torch.argmax(logits, dim=-1)
        cache = output.past_key_values
        picked = tokens.clone()
        for i, choice in enumerate(choices.tolist()):  # one copy to the host per step
            if not active[i]:
                continue
            if choice == end or len(made[i]) == lengths[i]:
                active[i] = False
            else:
                made[i].append(choice)
                picked[i] = choice
        tokens, kv_lens, positions = picked, kv_lens + 1, positions + 1
    return made


def forced(adapter: Any, context: dict[str, Any], rows: list[list[int]]) -> list[torch.Tensor]:
    """One causal ``forward_cache_update_text`` call over each sequence's ``rows[i]`` after its cached context (on a
    copy), packed as ``prepare_prompts`` packs prompts; each row's raw states ``(L + 1, len(rows[i]), d)``."""
    ids, positions, indexes, cached = [], [], [], []
    at = 0
    for row, kv_len, rope in zip(rows, context["kv_lens"], context["ropes"]):
        cached.extend(range(at, at + kv_len))
        at += kv_len
        ids.extend(row)
        positions.extend(range(rope, rope + len(row)))
        indexes.extend(range(at, at + len(row)))
        at += len(row)
    long = lambda v: torch.tensor(v, dtype=torch.long)  # noqa: E731
    inputs = {"packed_text_ids": long(ids), "text_token_lens": torch.tensor([len(r) for r in rows], dtype=torch.int),
              "packed_text_position_ids": long(positions), "packed_text_indexes": long(indexes),
              "packed_key_value_indexes": long(cached),
              "key_values_lens": torch.tensor(context["kv_lens"], dtype=torch.int)}  # fmt: skip
    with adapter._capture() as capture, running(adapter.device):
        adapter.parts.proxy.forward_cache_update_text(copy.deepcopy(context["past_key_values"]), **inputs)
    return list(capture.calls[0].stacked().split([len(r) for r in rows], dim=1))


def guided(v: torch.Tensor, text: torch.Tensor | None, image: torch.Tensor | None, sizes: list[int], *,
           text_scale: float, image_scale: float, renorm_min: float, renorm_type: str) -> torch.Tensor:  # fmt: skip
    """``_forward_flow``'s guidance of the conditional velocity ``v`` by the text-CFG and image-CFG velocities,
    applied to each image's ``sizes[i]`` tokens apart (a ``global`` norm is each image's own)."""
    if not text_scale > 1.0:
        return v
    out = []
    images = image.split(sizes) if image_scale > 1.0 else [None] * len(sizes)
    for c, t, g in zip(v.split(sizes), text.split(sizes), images):
        mixed = t + text_scale * (c - t)
        if renorm_type == "text_channel":
            scale = (torch.norm(c, dim=-1, keepdim=True) / (torch.norm(mixed, dim=-1, keepdim=True) + 1e-8))
            mixed = mixed * scale.clamp(min=renorm_min, max=1.0)
            out.append(g + image_scale * (mixed - g) if g is not None else mixed)
            continue
        full = g + image_scale * (mixed - g) if g is not None else mixed
        if renorm_type == "global":
            norm, norm_full = torch.norm(c), torch.norm(full)
        else:  # channel
            norm, norm_full = torch.norm(c, dim=-1, keepdim=True), torch.norm(full, dim=-1, keepdim=True)
        out.append(full * (norm / (norm_full + 1e-8)).clamp(min=renorm_min, max=1.0))
    return torch.cat(out)


def images(adapter: Any, texts: list[str], shape: tuple[int, int], options: dict[str, Any], seeds: list[int]
           ) -> tuple[list[Any], list[torch.Tensor], list[torch.Tensor], list[int]]:  # fmt: skip
    """``interleave_inference``'s text-to-image for each text, all in one batch: ``gen_context`` and
    ``cfg_img_context`` hold the text, ``cfg_text_context`` is empty, then ``generate_image``'s Euler steps.

    Returns ``(pictures, each text's raw states of its update_context_text call, each image's raw states of the
    last step's conditional call (L + 1, n + 2, d), each text's context length)``.
    """
    model, device, count = adapter.model, adapter.device, len(texts)
    context, prompts = add_texts(adapter, empty(adapter, count), texts)
    cfg_text = empty(adapter, count)  # inferencer.py: the context before the text
    cfg_image = copy.deepcopy(context)  # the text alone, as a second update_context_text builds it
    with torch.random.fork_rng(devices=[]):
        inputs = model.prepare_vae_latent(context["kv_lens"], context["ropes"], [shape] * count, adapter.new_token_ids)
    width = inputs["packed_init_noises"].shape[1]
    sizes = (inputs["packed_seqlens"] - 2).tolist()
    inputs["packed_init_noises"] = torch.cat([torch.randn(n, width, generator=torch.Generator().manual_seed(s))
                                              for n, s in zip(sizes, seeds)])  # fmt: skip
    inputs = _on(device, inputs)
    branches = []
    for cfg_context in (cfg_text, cfg_image):
        cfg = _on(device, model.prepare_vae_latent_cfg(cfg_context["kv_lens"], cfg_context["ropes"], [shape] * count))
        branches.append({"past_key_values": cfg_context["past_key_values"], "packed_position_ids":
                         cfg["cfg_packed_position_ids"], "packed_indexes": cfg["cfg_packed_query_indexes"],
                         "key_values_lens": cfg["cfg_key_values_lens"],
                         "packed_key_value_indexes": cfg["cfg_packed_key_value_indexes"]})  # fmt: skip
    own = {k: inputs[k] for k in ("packed_position_ids", "packed_indexes", "key_values_lens", "packed_key_value_indexes")}
    shared = {k: inputs[k] for k in ("packed_vae_token_indexes", "packed_vae_position_ids", "packed_text_ids",
                                     "packed_text_indexes", "packed_seqlens")}  # fmt: skip
    steps, shift = int(options["num_timesteps"]), float(options["timestep_shift"])
    low, high = (float(v) for v in options["cfg_interval"])
    x_t = inputs["packed_init_noises"]
    timesteps = torch.linspace(1, 0, steps, device=x_t.device)  # generate_image's shifted grid
    timesteps = shift * timesteps / (1 + (shift - 1) * timesteps)
    dts, timesteps = timesteps[:-1] - timesteps[1:], timesteps[:-1]
    model.language_model.model.enable_taylorseer = False
    last_states = None
    for i, t in enumerate(timesteps):
        inside = low < t <= high
        text_scale = float(options["cfg_text_scale"]) if inside else 1.0
        image_scale = float(options["cfg_img_scale"]) if inside else 1.0
        flow = lambda branch: model._forward_flow(x_t=x_t, timestep=t.repeat(x_t.shape[0]), **shared, **branch,  # noqa: E731
                                                  cfg_text_scale=1.0, cfg_img_scale=1.0)  # fmt: skip
        with running(device):
            with adapter._capture() if i == len(timesteps) - 1 else contextlib.nullcontext() as capture:
                v = flow({**own, "past_key_values": context["past_key_values"]})
            if capture is not None:
                last_states = capture.calls[0].stacked()
            text = flow(branches[0]) if text_scale > 1.0 else None
            image = flow(branches[1]) if image_scale > 1.0 else None
            v = guided(v, text, image, sizes, text_scale=text_scale, image_scale=image_scale,
                       renorm_min=float(options["cfg_renorm_min"]), renorm_type=str(options["cfg_renorm_type"]))
        x_t = x_t - v.to(x_t.device) * dts[i]  # velocity pointing from data to noise
    with running(device):
        pictures = [adapter.inferencer.decode_image(latent, shape) for latent in x_t.split(sizes)]
    calls = list(last_states.split([n + 2 for n in sizes], dim=1))
    return pictures, prompts, calls, [int(n) for n in context["kv_lens"]]
