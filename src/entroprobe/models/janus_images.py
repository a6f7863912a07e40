"""Janus-Pro image generation (:meth:`~entroprobe.models.janus.JanusAdapter.respond_image_batch`): one left-padded
image ``generate`` for a batch of prompts, each drawing from its own seed (:mod:`.hf_generate`), at DeepSeek's
settings (:data:`~entroprobe.models.janus.IMAGE_DEFAULTS`), then one right-padded teacher-forced pass over each
prompt and its codes, fed as generation fed them.
"""

from __future__ import annotations

from typing import Any

import torch

from entroprobe.errors import InputError
from entroprobe.models.base import Response
from entroprobe.models.defaults import settle
from entroprobe.models.hf import prompt_item, require_text
from entroprobe.models.hf_generate import left_pad, sampling_processors, teacher_forced_rows
from entroprobe.models.hf_loading import check_length

__all__ = ["generate_images", "image_embeds", "to_pil"]


def generate_images(adapter: Any, texts: list[str], seeds: list[int], generation: dict[str, Any]) -> list[Response]:
    """One image per text from ``adapter`` (a :class:`~entroprobe.models.janus.JanusAdapter`), each under its seed.

    Raises:
        InputError: an unknown or invalid generation argument.
        ItemError: an empty prompt, or prompt + ``num_image_tokens`` longer than the model's context.
    """
    from entroprobe.models.janus import IMAGE_DEFAULTS

    built = []
    for text in texts:
        item = prompt_item(text)
        require_text(text, item)
        prompt = adapter._chat(text, with_image=False)
        ids = adapter._inputs(prompt, mode="image")["input_ids"][0]  # the processor appends the begin-of-image token
        check_length(ids.shape[0] + adapter.num_image_tokens, adapter.context, item)
        built.append((text, item, prompt, ids))
    overrides, _ = settle(IMAGE_DEFAULTS, {**adapter._given("image"), **generation})
    config = adapter._generation_config(overrides)
    guidance = config.guidance_scale  # generate() resets it on the config it is given
    generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
    sampling = {k: getattr(config, k) for k in ("do_sample", "temperature", "top_k", "top_p")}
    rows = [ids for _, _, _, ids in built]
    padded, mask = left_pad(rows, int(config.pad_token_id))
    try:
        # the processors guide at our scale; transformers' Janus then applies its own guidance, which must be
        # > 1 (at 1 it keeps both halves and fails, below 1 it adds a text-only guidance that fails) and then
        # changes nothing (see GuidedRowNoise)
        _, processors = sampling_processors(adapter.model, sampling, generators,
                                            guidance=1.0 if guidance is None else float(guidance))
        config.update(do_sample=False, temperature=None, top_k=None, top_p=None)
        config.guidance_scale = 2.0
        with torch.no_grad():
            codes = adapter.model.generate(input_ids=padded.to(adapter.device),
                                           attention_mask=mask.to(adapter.device), generation_config=config,
                                           logits_processor=processors, generation_mode="image")  # (B, N)
    except ValueError as exc:
        raise InputError(f"Janus generation rejected the arguments {overrides}: {exc}") from None
    lengths = torch.tensor([row.shape[0] for row in rows], device=adapter.device)
    pairs = teacher_forced_rows(adapter.model.model.language_model, rows, list(codes.cpu()),
                                num_layers=adapter.num_layers, final_norm=adapter.final_norm, device=adapter.device,
                                embed=lambda ids: image_embeds(adapter.model, ids, lengths))  # fmt: skip
    with torch.no_grad():
        pixels = adapter.model.decode_image_tokens(codes)  # (B, H, W, 3)
    out = []
    for (text, item, prompt, ids), row, picture, (prompt_states, response_states) in zip(built, codes, pixels, pairs):
        keep = adapter._measured(prompt, text, ids, item, tail=1)  # the begin-of-image token follows
        out.append(Response(
            prompt=prompt_states.select(keep), response=response_states, output=to_pil(adapter.processor, picture),
            output_ids=row.cpu(), extra={"prompt": prompt, "guidance_scale": guidance,
                                         "prompt_tokens": adapter.prompt_tokens},
        ))  # fmt: skip
    return out


def image_embeds(model: Any, ids: torch.Tensor, n_prompt: torch.Tensor) -> torch.Tensor:
    """The inputs generation fed the conditional row, for a right-padded batch ``(B, T)`` of prompt ids then
    codes: the prompt's token embeddings, then each code through ``prepare_embeddings_for_image_generation``."""
    is_code = torch.arange(ids.shape[1], device=ids.device)[None] >= n_prompt[:, None]  # (B, T)
    text = model.get_input_embeddings()(torch.where(is_code, 0, ids))  # (B, T, d)
    image = model.prepare_embeddings_for_image_generation(torch.where(is_code, ids, 0))  # (B, T, d)
    return torch.where(is_code.unsqueeze(-1), image.to(text.device, text.dtype), text)


def to_pil(processor: Any, pixels: torch.Tensor) -> Any:
    """Decoded pixels (H, W, 3), normalised as the image processor normalises inputs → an RGB PIL image.

    The processor's own rescale + normalise inverted, written out: its ``postprocess`` differs between the
    PIL and torchvision backends and guesses the channel axis, which fails on small images.
    """
    from PIL import Image

    settings = processor.image_processor
    image = pixels.detach().float().cpu()  # (H, W, 3)
    if getattr(settings, "do_normalize", True):
        image = image * torch.tensor(settings.image_std) + torch.tensor(settings.image_mean)
    if getattr(settings, "do_rescale", True):
        image = image / settings.rescale_factor
    return Image.fromarray(image.clamp(0, 255).to(torch.uint8).numpy(), mode="RGB")
