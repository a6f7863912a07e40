"""Chameleon (transformers ``ChameleonForConditionalGeneration``): text and image prompts, text responses.

The model was trained to generate images too, but the transformers class has no image generation (it masks
image tokens out of the logits), so this family declares none: ``respond_image`` raises CapabilityError.
An image becomes ``image_seq_length`` VQ tokens (1024 for chameleon-7b) between ``<racm3:break>`` and
``<eoss>``; those positions are an image prompt's image positions.
"""

from __future__ import annotations

from typing import Any

import torch

from entroprobe.errors import EntroprobeError, InputError, ItemError
from entroprobe.models.hf_loading import load_pretrained
from entroprobe.models.hf import (
    require_text,
    detect_final_norm,
    GENERATION_KEYS,
    ImageTokenAdapter,
    load_image,
    parse_generation,
    prompt_item,
    split_kwargs,
)
from entroprobe.models.hf_loading import context_limit, load_processor

__all__ = ["ChameleonAdapter"]


class ChameleonAdapter(ImageTokenAdapter):
    """Chameleon (``ChameleonForConditionalGeneration``, e.g. facebook/chameleon-7b): encode text and images,
    reply in text. No image generation (the transformers class has none).

    ``final_norm`` is detected at load (True in transformers: ``ChameleonModel.forward`` applies ``self.norm`` before
    returning ``last_hidden_state``, which ``capture_outputs`` puts in ``hidden_states[-1]``).

    Prompts follow the processor: text as is for encoding, with the separator token appended for a reply
    (Chameleon's chat mode); an image prompt is the instruction followed by ``<image>`` (as in the transformers
    examples), so the instruction is context for the image tokens. Image prompts are fed as their VQ token ids.

    Loading keywords: ``LOAD_KEYS`` and ``GENERATION_KEYS``.
    """

    family = "chameleon"
    capabilities = frozenset({("encode", "text"), ("encode", "image"), ("text-gen", "text"), ("text-gen", "image")})

    @classmethod
    def load(cls, path: str | None = None, **kwargs: Any) -> ChameleonAdapter:
        """Load a Chameleon checkpoint directory (or hub id) with its ``ChameleonProcessor``.

        Raises:
            InputError: without a path, or for an unknown keyword.
            LoadError: naming the path when the weights or processor are missing or unreadable.
        """
        if not path:
            raise InputError(f"Family '{cls.family}' needs a path or hub id: '{cls.family}:PATH'")
        load_kwargs, extra = split_kwargs(kwargs, tuple(GENERATION_KEYS))
        from transformers import AutoProcessor, ChameleonForConditionalGeneration

        model, device = load_pretrained(ChameleonForConditionalGeneration, path, what="Chameleon model", **load_kwargs)
        processor = load_processor(AutoProcessor, path, what="Chameleon processor", **load_kwargs)
        config = model.config
        return cls(
            model,
            processor,
            chat_template=False,
            path=path,
            revision=load_kwargs.get("revision"),
            device=device,
            num_layers=config.num_hidden_layers,
            d_model=config.hidden_size,
            final_norm=detect_final_norm(model, config.num_hidden_layers, device, use_cache=False),
            context=context_limit(config),
            generation=parse_generation(extra),
        )

    def _text_ids(self, text: str, *, respond: bool) -> torch.Tensor:
        item = prompt_item(text)
        require_text(text, item)
        inputs = self.processor(text=[text], return_for_text_completion=not respond, return_tensors="pt")
        return self._checked(inputs["input_ids"], item)  # (1, T)

    def _image_ids(self, image: Any, instruction: str | None) -> tuple[torch.Tensor, torch.Tensor]:
        item = prompt_item(instruction, image)
        picture = load_image(image, item)
        prompt = f"{instruction or ''}{self.processor.image_token}"
        try:
            inputs = self.processor(images=[picture], text=[prompt], return_tensors="pt")
        except (ValueError, OSError) as exc:
            raise ItemError(item, f"the processor rejected the image: {exc}") from None
        ids = self._checked(inputs["input_ids"], item)  # (1, T) with <image> placeholders
        mask = ids[0] == self.model.model.vocabulary_mapping.image_token_id  # (T,)
        dtype = next(self.model.parameters()).dtype
        with torch.no_grad():
            codes = self.model.model.get_image_tokens(inputs["pixel_values"].to(self.device, dtype))  # (1, n)
        if codes.numel() != int(mask.sum()):
            raise EntroprobeError(f"{item}: {codes.numel()} image tokens for {int(mask.sum())} image positions")
        ids = ids.clone()
        ids[0, mask] = codes.flatten().to(ids.dtype)
        return ids, mask
