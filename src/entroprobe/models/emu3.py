"""Emu3 (transformers ``Emu3ForConditionalGeneration``): text and image prompts, text and image responses.

An image is a grid of VQ codes; Emu3 writes it as ``height`` rows of ``width`` visual tokens, each row closed
by an end-of-line token, so an image prompt has ``height * (width + 1)`` image positions — and so has a
generated image's response: the grid tokens, end-of-line markers included. Images are generated with
Emu3's visual-token constraint (only visual tokens inside a row, then end-of-line; end-of-file, end-of-image
and end-of-sequence after the last row) and, when ``guidance_scale > 1``, transformers' classifier-free
guidance, which runs the unconditional prompt in separate calls: the response states come from the
conditional sequence only, through one teacher-forced pass over prompt + generated tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from entroprobe.errors import EntroprobeError, InputError, ItemError
from entroprobe.models.base import Response
from entroprobe.models.hf_loading import load_pretrained
from entroprobe.models.hf import (
    GENERATION_KEYS,
    ImageTokenAdapter,
    chat_prompt,
    generate_seeded,
    load_image,
    parse_generation,
    prompt_item,
    split_kwargs,
    teacher_forced,
)
from entroprobe.models.hf_loading import as_bool, context_limit, load_processor

__all__ = ["Emu3Adapter", "visual_constraint"]

# image generation options, per call to respond_image or as load-time defaults (`--model-args image_area=…`)
IMAGE_OPTIONS: dict[str, Callable[[Any], Any]] = {
    "guidance_scale": float,
    "negative_prompt": str,
    "ratio": str,
    "image_area": int,
}
IMAGE_KEYS = (*IMAGE_OPTIONS, *GENERATION_KEYS)


def visual_constraint(
    height: int, width: int, *, start_id: int, visual_ids: list[int], eol_id: int, end_ids: tuple[int, int, int],
    pad_id: int,
) -> Callable[[int, torch.Tensor], list[int]]:  # fmt: skip
    """``prefix_allowed_tokens_fn`` for an Emu3 image of ``height`` × ``width`` codes.

    Counting from the image-start marker ``start_id`` (the last prompt token, ``<|image token|>``): offsets
    that close a row allow only ``eol_id``, the others only visual tokens; after the grid come the three
    ``end_ids`` (end-of-file, end-of-image, end-of-sequence), then padding.
    """
    grid = height * (width + 1)
    endings = {grid + 1: [end_ids[0]], grid + 2: [end_ids[1]], grid + 3: [end_ids[2]]}

    def allowed(batch_id: int, input_ids: torch.Tensor) -> list[int]:
        start = int((input_ids == start_id).nonzero()[-1, 0])
        offset = input_ids.shape[0] - start  # the offset of the token about to be generated
        if offset > grid:
            return endings.get(offset, [pad_id])
        return [eol_id] if offset % (width + 1) == 0 else visual_ids

    return allowed


def _parsed(value: Any, cast: Callable[[Any], Any], key: str) -> Any:
    try:
        return cast(value)
    except (TypeError, ValueError):
        kind = {"float": "a float", "int": "an integer"}.get(cast.__name__, f"a {cast.__name__}")
        raise InputError(f"Image generation argument {key}={value!r} is not {kind}") from None


def image_options(values: dict[str, Any]) -> dict[str, Any]:
    """The ``IMAGE_OPTIONS`` among ``values`` (strings from the command line, or typed) → typed values.

    Raises:
        InputError: naming the key and the value that does not parse.
    """
    return {key: _parsed(value, IMAGE_OPTIONS[key], key) for key, value in values.items() if key in IMAGE_OPTIONS}


class Emu3Adapter(ImageTokenAdapter):
    """Emu3 (``Emu3ForConditionalGeneration``, e.g. Emu3-Chat-hf / Emu3-Gen-hf): all four operations.

    ``final_norm`` is True: ``Emu3TextModel.forward`` applies ``self.norm`` before returning
    ``last_hidden_state``, and transformers' ``capture_outputs`` puts that normed state in ``hidden_states[-1]``.

    Prompts: the processor prepends ``<bos>``; text replies use the processor's chat template when it has one
    (else the text as is); image prompts are ``<image>`` followed by the instruction. Image prompts are fed as
    their VQ token ids (computed once from the pixels), so all passes see the same input.

    Loading keywords: ``LOAD_KEYS``, ``chat_template``, ``GENERATION_KEYS`` (defaults for every response) and
    the image options ``guidance_scale``, ``negative_prompt``, ``ratio`` (``"1:1"``) and ``image_area`` (pixels):
    defaults for :meth:`respond_image` (``image_defaults``), so a command-line run (``--model-args
    guidance_scale=3,image_area=262144``) sets how images are generated. :meth:`respond_image` takes the same
    options per call, over these defaults; unset ones fall back to the checkpoint's generation config
    (``guidance_scale``) and processor (``ratio``, ``image_area``), and to an empty negative prompt.
    """

    family = "emu3"
    capabilities = frozenset(
        {("encode", "text"), ("encode", "image"), ("text-gen", "text"), ("text-gen", "image"), ("image-gen", "text")}
    )

    def __init__(self, model: Any, processor: Any, *, image_defaults: dict[str, Any] | None = None, **common: Any):
        super().__init__(model, processor, **common)
        self.image_defaults = image_options(dict(image_defaults or {}))

    @classmethod
    def load(cls, path: str | None = None, **kwargs: Any) -> Emu3Adapter:
        """Load an Emu3 checkpoint directory (or hub id) with its ``Emu3Processor``.

        Raises:
            InputError: without a path, for an unknown keyword (listing the accepted ones), or an image option
                or generation default that does not parse.
            LoadError: naming the path when the weights or processor are missing or unreadable.
        """
        if not path:
            raise InputError(f"Family '{cls.family}' needs a path or hub id: '{cls.family}:PATH'")
        load_kwargs, extra = split_kwargs(kwargs, ("chat_template", *IMAGE_KEYS))
        generation, image_defaults = parse_generation(extra), image_options(extra)  # checked before loading
        from transformers import AutoProcessor, Emu3ForConditionalGeneration

        model, device = load_pretrained(Emu3ForConditionalGeneration, path, what="Emu3 model", **load_kwargs)
        processor = load_processor(AutoProcessor, path, what="Emu3 processor", **load_kwargs)
        text = model.config.text_config
        chat = extra.get("chat_template", "auto")
        return cls(
            model,
            processor,
            chat_template=chat if str(chat).lower() == "auto" else as_bool(chat, "chat_template"),
            path=path,
            revision=load_kwargs.get("revision"),
            device=device,
            num_layers=text.num_hidden_layers,
            d_model=text.hidden_size,
            final_norm=True,
            context=context_limit(text),
            generation=generation,
            image_defaults=image_defaults,
        )

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "image_defaults": dict(self.image_defaults)}

    # -- prompts -------------------------------------------------------------------------------------------
    def _text_ids(self, text: str, *, respond: bool) -> torch.Tensor:
        item = prompt_item(text)
        if not isinstance(text, str) or not text.strip():
            raise ItemError(item, f"the prompt text is empty; got {text!r}")
        templated = chat_prompt(self.processor, text, structured=True) if respond and self.chat_template else None
        ids = self.processor(text=[templated or text], return_tensors="pt")["input_ids"]  # (1, T)
        return self._checked(ids, item)

    def _image_ids(self, image: Any, instruction: str | None) -> tuple[torch.Tensor, torch.Tensor]:
        item = prompt_item(instruction, image)
        picture = load_image(image, item)
        token = self.processor.image_token
        prompt = (chat_prompt(self.processor, instruction or "", image=True) if self.chat_template else None) or (
            f"{token}{instruction or ''}"
        )
        try:
            inputs = self.processor(images=[picture], text=[prompt], return_tensors="pt")
        except (ValueError, OSError) as exc:
            raise ItemError(item, f"the processor rejected the image: {exc}") from None
        ids = self._checked(inputs["input_ids"], item)  # (1, T) with <image> placeholders
        mask = ids[0] == self.model.vocabulary_mapping.image_token_id  # (T,)
        with torch.no_grad():
            pixels = inputs["pixel_values"].to(self.device)
            codes = self.model.model.get_image_tokens(pixels, inputs["image_sizes"].to(self.device))  # (n,)
        if codes.numel() != int(mask.sum()):
            raise EntroprobeError(f"{item}: {codes.numel()} image tokens for {int(mask.sum())} image positions")
        ids = ids.clone()
        ids[0, mask] = codes.to(ids.device, ids.dtype)
        return ids, mask

    # -- image generation ----------------------------------------------------------------------------------
    def _image_options(self, generation: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(generation) - set(IMAGE_KEYS))
        if unknown:
            raise InputError(
                f"Unknown image generation argument(s) {', '.join(unknown)}; accepted: {', '.join(IMAGE_KEYS)}"
            )
        options = {**self.generation, **parse_generation(generation)}
        options.pop("min_new_tokens", None)  # the grid fixes an image's length
        image = {**self.image_defaults, **image_options(generation)}  # per call over the load-time defaults
        scale = image.get("guidance_scale", getattr(self.model.generation_config, "guidance_scale", None))
        options["guidance_scale"] = None if scale is None else _parsed(scale, float, "guidance_scale")
        options["image_area"] = _parsed(image.get("image_area", self.processor.image_area), int, "image_area")
        options["ratio"] = str(image.get("ratio", self.processor.ratio))
        options["negative_prompt"] = image.get("negative_prompt", "")
        return options

    def respond_image(self, text: str, *, seed: int = 0, **generation: Any) -> Response:
        """Generate an image for ``text`` (seeded); ``response`` holds the ``height * (width + 1)`` grid tokens'
        states from one teacher-forced pass over the (conditional) prompt + all generated tokens.

        Args:
            text: the prompt.
            seed: the sampling seed.
            **generation: ``IMAGE_KEYS`` for this call, over the load-time ``image_defaults`` and generation
                defaults.

        Raises:
            InputError: for an unknown generation argument, or an image option that does not parse.
            ItemError: for an empty prompt, or a prompt + image longer than the model's context.
        """
        self.require("image-gen", "text")
        item = prompt_item(text)
        if not isinstance(text, str) or not text.strip():
            raise ItemError(item, f"the prompt text is empty; got {text!r}")
        options = self._image_options(generation)
        sizing = {"ratio": options.pop("ratio"), "image_area": options.pop("image_area")}
        try:
            inputs = self.processor(text=[text], return_for_image_generation=True, return_tensors="pt", **sizing)
        except (ValueError, ZeroDivisionError) as exc:
            ratio, area = sizing["ratio"], sizing["image_area"]
            raise InputError(f"Image size ratio={ratio!r}, image_area={area}: {exc}") from None
        height, width = (int(v) for v in inputs["image_sizes"][0])
        n_new = height * (width + 1) + 3
        prompt_ids = self._checked(inputs["input_ids"], item)  # (1, P)
        if self.context is not None and prompt_ids.shape[1] + n_new > self.context:
            raise ItemError(
                item,
                f"{prompt_ids.shape[1]} prompt tokens + {n_new} image tokens ({height}x{width} grid) exceed the "
                f"model's context of {self.context} tokens",
            )
        extra: dict[str, Any] = {"prefix_allowed_tokens_fn": self._constraint(height, width)}
        scale, negative = options.pop("guidance_scale"), options.pop("negative_prompt")
        if scale is not None and scale > 1:
            neg = self.processor(text=[negative], return_for_image_generation=True, return_tensors="pt", **sizing)
            extra.update(guidance_scale=scale, negative_prompt_ids=neg["input_ids"].to(self.device))
        new_ids = generate_seeded(self.model, prompt_ids, seed=seed, max_new_tokens=n_new, generation=options, **extra)
        if new_ids.numel() != n_new:
            raise EntroprobeError(f"{item}: generated {new_ids.numel()} tokens; a {height}x{width} image needs {n_new}")
        prompt, generated = teacher_forced(
            self.model, prompt_ids, new_ids, num_layers=self.num_layers, final_norm=self.final_norm
        )
        with torch.no_grad():
            pixels = self.model.decode_image_tokens(image_tokens=new_ids[None], height=height, width=width)
        picture = self.processor.postprocess(list(pixels.float()), return_tensors="PIL.Image.Image")["pixel_values"][0]
        return Response(
            prompt=prompt,
            response=generated.select(slice(0, height * (width + 1))),
            output=picture,
            output_ids=new_ids.cpu(),
            extra={"grid": (height, width), "guidance_scale": scale},
        )

    def _constraint(self, height: int, width: int) -> Callable[[int, torch.Tensor], list[int]]:
        tokenizer = self.processor.tokenizer
        ids = tokenizer.convert_tokens_to_ids
        mapping = self.model.vocabulary_mapping
        eos = tokenizer.eos_token_id
        return visual_constraint(
            height,
            width,
            start_id=ids(self.processor.fake_token_around_image),
            visual_ids=list(mapping.image_tokens),
            eol_id=mapping.eol_token_id,
            end_ids=(ids(self.processor.eof_token), ids(self.processor.image_end_token), eos),
            pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos,
        )
