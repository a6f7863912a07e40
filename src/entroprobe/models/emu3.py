"""Emu3 (transformers ``Emu3ForConditionalGeneration``): text and image prompts, text and image responses.

An image is a grid of VQ codes; Emu3 writes it as ``height`` rows of ``width`` visual tokens, each row closed
by an end-of-line token, so an image prompt has ``height * (width + 1)`` image positions — and so has a
generated image's response: the grid tokens, end-of-line markers included. Images are generated with
Emu3's visual-token constraint (only visual tokens inside a row, then end-of-line; end-of-file, end-of-image
and end-of-sequence after the last row) and, when ``guidance_scale > 1``, transformers' classifier-free
guidance, which runs the unconditional prompt in separate calls: the response states come from the
conditional sequence only, through one teacher-forced pass over prompt + generated tokens.

Generation follows BAAI's own scripts (:data:`TEXT_DEFAULTS`, :data:`IMAGE_DEFAULTS`, each value with its source,
recorded in ``manifest.json``, each overridable with ``--model-args``): replies greedy, after the system line
"You are a helpful assistant."; images sampled with top-k 2048 and classifier-free guidance 3 against BAAI's
negative prompt, the prompt followed by their quality suffix.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from entroprobe.errors import EntroprobeError, InputError, ItemError
from entroprobe.models.base import Response
from entroprobe.models.defaults import Default, prompt_tokens_choice, record, settle
from entroprobe.models.prompt_tokens import locate, prompt_selection, question_positions
from entroprobe.models.hf_loading import load_pretrained
from entroprobe.models.hf import (
    require_text,
    detect_final_norm,
    GENERATION_KEYS,
    ImageTokenAdapter,
    chat_prompt,
    load_image,
    parse_generation,
    prompt_item,
    split_kwargs,
)
from entroprobe.models.hf_generate import generate_rows, teacher_forced_rows
from entroprobe.models.hf_loading import as_bool, context_limit, load_processor

__all__ = ["Emu3Adapter", "visual_constraint"]

# image generation options, per call to respond_image or as load-time defaults (`--model-args image_area=…`)
IMAGE_OPTIONS: dict[str, Callable[[Any], Any]] = {
    "guidance_scale": float,
    "negative_prompt": str,
    "positive_prompt": str,
    "ratio": str,
    "image_area": int,
}
IMAGE_KEYS = (*IMAGE_OPTIONS, *GENERATION_KEYS)

# How BAAI runs Emu3 (github.com/baaivision/Emu3): multimodal_understanding.py, image_generation.py, and the
# chat template of their processor (emu3/mllm/processing_emu3.py).
_AUTHORS_TEMPLATE = "You are a helpful assistant. USER: {image}{text}. ASSISTANT:"
TEXT_DEFAULTS = {
    "system_prompt": Default("You are a helpful assistant.", "emu3/mllm/processing_emu3.py: chat_template 'You are "
                             "a helpful assistant. USER: {image_prompt}{text_prompt}. ASSISTANT:'"),
    "do_sample": Default(False, "multimodal_understanding.py: GenerationConfig without sampling (greedy)"),
}
IMAGE_DEFAULTS = {
    "guidance_scale": Default(3.0, "image_generation.py: classifier_free_guidance = 3.0"),
    "negative_prompt": Default(
        "lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, fewer digits, cropped, worst "
        "quality, low quality, normal quality, jpeg artifacts, signature, watermark, username, blurry.",
        "image_generation.py: NEGATIVE_PROMPT"),
    "positive_prompt": Default(" masterpiece, film grained, best quality.",
                               "image_generation.py: prompt += POSITIVE_PROMPT"),
    "do_sample": Default(True, "image_generation.py: GenerationConfig(do_sample=True, top_k=2048)"),
    "top_k": Default(2048, "image_generation.py: GenerationConfig(do_sample=True, top_k=2048)"),
    "ratio": Default("1:1", "image_generation.py: processor(ratio='1:1')"),
}
PROMPT_TOKENS = Default("question", "entroprobe: the question's tokens, as encode measures them (see prompt_tokens)")


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

    ``final_norm`` is detected at load (True in transformers: ``Emu3TextModel.forward`` applies ``self.norm`` before
    returning ``last_hidden_state``, which ``capture_outputs`` puts in ``hidden_states[-1]``).

    Prompts: the processor prepends ``<bos>``; text is encoded as is; replies and image prompts (``<image>``, then
    the instruction) are put in the reply template (see below). Image prompts are fed as their VQ token ids
    (computed once from the pixels), so all passes see the same input.

    Loading keywords: ``LOAD_KEYS``, ``chat_template``, ``system_prompt`` (empty: none), ``GENERATION_KEYS``
    (over the authors' defaults, for every response) and the image options ``guidance_scale``,
    ``negative_prompt``, ``positive_prompt`` (appended to the prompt), ``ratio`` and ``image_area`` (pixels):
    defaults for :meth:`respond_image` (``image_defaults``), so a command-line run (``--model-args
    guidance_scale=3,image_area=262144``) sets how images are generated. :meth:`respond_image` takes the same
    options per call, over these; unset ones are :data:`IMAGE_DEFAULTS`, and the processor's ``image_area``.

    Replies use the processor's chat template with the system message when it has one, else BAAI's template
    string; ``chat_template=false`` sends the text as is.
    """

    family = "emu3"
    capabilities = frozenset(
        {("encode", "text"), ("encode", "image"), ("text-gen", "text"), ("text-gen", "image"), ("image-gen", "text")}
    )

    def __init__(self, model: Any, processor: Any, *, image_defaults: dict[str, Any] | None = None,
                 system_prompt: str | None = None, prompt_tokens: str = PROMPT_TOKENS.value, **common: Any):  # fmt: skip
        super().__init__(model, processor, **common)
        self.prompt_tokens = prompt_tokens_choice(prompt_tokens)
        self.image_defaults = image_options(dict(image_defaults or {}))
        self.system_given = {} if system_prompt is None else {"system_prompt": system_prompt}
        self.system_prompt = self.system_given.get("system_prompt", TEXT_DEFAULTS["system_prompt"].value)

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
        load_kwargs, extra = split_kwargs(kwargs, ("chat_template", "system_prompt", "prompt_tokens", *IMAGE_KEYS))
        generation, image_defaults = parse_generation(extra), image_options(extra)  # checked before loading
        prompt_tokens = prompt_tokens_choice(extra.get("prompt_tokens", PROMPT_TOKENS.value))
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
            final_norm=detect_final_norm(model, text.num_hidden_layers, device, use_cache=False),
            context=context_limit(text),
            generation=generation,
            image_defaults=image_defaults,
            system_prompt=None if "system_prompt" not in extra else str(extra["system_prompt"]),
            prompt_tokens=prompt_tokens,
        )

    def describe(self) -> dict[str, Any]:
        given = {k: v for k, v in self.generation.items() if k in GENERATION_KEYS}
        return {
            **super().describe(),
            "image_defaults": dict(self.image_defaults),
            "defaults": {
                "text-gen": record(TEXT_DEFAULTS, {**given, **self.system_given}),
                "image-gen": record(IMAGE_DEFAULTS, {**given, **self.image_defaults}),
                "template": self._template_in_use(),
                "prompt_tokens": record({"prompt_tokens": PROMPT_TOKENS}, {} if self.prompt_tokens == PROMPT_TOKENS.value
                                        else {"prompt_tokens": self.prompt_tokens})["prompt_tokens"],
            },
        }

    def _measured_reply(self, text: str | None, with_image: bool, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The question's tokens and the image's (``prompt_tokens=question``), or every prompt token."""
        def render(q: str) -> str:
            return self._reply_prompt(q, with_image) or (f"{self.processor.image_token}{q}" if with_image else q)

        start = locate(render, text) if text and text.strip() else None
        return self._measured(render(text or ""), text, ids, mask.nonzero().squeeze(1) if with_image else None, start)

    def _measured(self, templated: str, question: str | None, ids: torch.Tensor, image: torch.Tensor | None,
                  start: int | None):  # fmt: skip
        asked = None
        if self.prompt_tokens == "question" and question and question.strip():
            asked = question_positions(self.processor.tokenizer, templated, question, ids, item=prompt_item(question),
                                       start=start)  # fmt: skip
        return prompt_selection(self.prompt_tokens, ids.shape[0], asked, image)

    def _text_generation(self) -> dict[str, Any]:
        defaults = {k: v for k, v in TEXT_DEFAULTS.items() if k != "system_prompt"}
        return settle(defaults, self.generation)[0]

    def _template_in_use(self) -> str:
        if not self.chat_template:
            return "none: the text as is (chat_template=false)"
        if getattr(self.processor, "chat_template", None):
            return "the processor's chat template, with the system message"
        return f"BAAI's template string: {_AUTHORS_TEMPLATE}"

    def _reply_prompt(self, text: str, image: bool) -> str | None:
        """A reply's prompt: the chat template with the system message, else BAAI's template; None when off."""
        if not self.chat_template:
            return None
        try:
            templated = chat_prompt(self.processor, text, structured=True, image=image, system=self.system_prompt)
        except Exception as exc:  # jinja's TemplateError, or what a template raises itself
            if not self.system_prompt:
                raise
            raise InputError(f"the processor's chat template rejects the system message ({exc}); pass "
                             "--model-args system_prompt= to send none") from None  # fmt: skip
        if templated is not None:
            return templated
        head = f"{self.system_prompt} " if self.system_prompt else ""
        body = _AUTHORS_TEMPLATE.replace("You are a helpful assistant. ", head)
        return body.format(image=self.processor.image_token if image else "", text=text)

    # -- prompts -------------------------------------------------------------------------------------------
    def _text_ids(self, text: str, *, respond: bool) -> torch.Tensor:
        item = prompt_item(text)
        require_text(text, item)
        templated = self._reply_prompt(text, image=False) if respond else None
        ids = self.processor(text=[templated or text], return_tensors="pt")["input_ids"]  # (1, T)
        return self._checked(ids, item)

    def _image_ids(self, image: Any, instruction: str | None) -> tuple[torch.Tensor, torch.Tensor]:
        item = prompt_item(instruction, image)
        picture = load_image(image, item)
        token = self.processor.image_token
        prompt = self._reply_prompt(instruction or "", image=True) or f"{token}{instruction or ''}"
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
        given = {**self.generation, **parse_generation(generation), **self.image_defaults, **image_options(generation)}
        options, _ = settle(IMAGE_DEFAULTS, given)  # per call over the load-time settings over the authors'
        options.pop("min_new_tokens", None)  # the grid fixes an image's length
        options["guidance_scale"] = _parsed(options["guidance_scale"], float, "guidance_scale")
        options["image_area"] = _parsed(options.get("image_area", self.processor.image_area), int, "image_area")
        options["ratio"] = str(options["ratio"])
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
        return self.respond_image_batch([text], seeds=[seed], **generation)[0]

    def respond_image_batch(self, texts: list[str], *, seeds: list[int], **generation: Any) -> list[Response]:
        """:meth:`respond_image` of several prompts: one left-padded ``generate`` (each row its own seed, the
        negative prompt repeated for every row's unconditional branch) and one right-padded teacher-forced pass.
        The images of one call share their size, so every row generates the same number of tokens."""
        self.require("image-gen", "text")
        options = self._image_options(generation)
        sizing = {"ratio": options.pop("ratio"), "image_area": options.pop("image_area")}
        positive = options.pop("positive_prompt")
        rows, grid = [], None
        for text in texts:
            item = prompt_item(text)
            require_text(text, item)
            try:
                inputs = self.processor(text=[text + positive], return_for_image_generation=True, return_tensors="pt",
                                        **sizing)  # fmt: skip
            except (ValueError, ZeroDivisionError) as exc:
                ratio, area = sizing["ratio"], sizing["image_area"]
                raise InputError(f"Image size ratio={ratio!r}, image_area={area}: {exc}") from None
            grid = tuple(int(v) for v in inputs["image_sizes"][0])  # the same for every prompt of the call
            n_new = grid[0] * (grid[1] + 1) + 3
            prompt_ids = self._checked(inputs["input_ids"], item)  # (1, P)
            if self.context is not None and prompt_ids.shape[1] + n_new > self.context:
                raise ItemError(item, f"{prompt_ids.shape[1]} prompt tokens + {n_new} image tokens ({grid[0]}x{grid[1]} "
                                      f"grid) exceed the model's context of {self.context} tokens")  # fmt: skip
            rows.append(prompt_ids[0])
        height, width = grid
        extra: dict[str, Any] = {"prefix_allowed_tokens_fn": self._constraint(height, width)}
        scale, negative = options.pop("guidance_scale"), options.pop("negative_prompt")
        if scale is not None and scale > 1:
            neg = self.processor(text=[negative], return_for_image_generation=True, return_tensors="pt", **sizing)
            extra.update(guidance_scale=scale, negative_prompt_ids=neg["input_ids"].expand(len(rows), -1).to(self.device))
        news = generate_rows(self.model, rows, seeds=seeds, max_new_tokens=n_new, device=self.device,
                             generation=options, **extra)  # fmt: skip
        for text, new in zip(texts, news):
            if new.numel() != n_new:
                raise EntroprobeError(f"{prompt_item(text)}: generated {new.numel()} tokens; a {height}x{width} image "
                                      f"needs {n_new}")  # fmt: skip
        pairs = teacher_forced_rows(self.model, rows, news, num_layers=self.num_layers, final_norm=self.final_norm,
                                    device=self.device)  # fmt: skip
        p = self.processor  # the string the processor tokenized, after its <bos>: the question is in it
        out = []
        for text, row, new, (prompt, generated) in zip(texts, rows, news, pairs):
            built = f"{text}{positive}{p.image_start_token}{height}*{width}{p.fake_token_around_image}"
            start = len(text) - len(text.lstrip())  # the question opens the string (then the suffix, the size)
            prompt = prompt.select(self._measured(built, text, row.cpu(), None, start))
            with torch.no_grad():
                pixels = self.model.decode_image_tokens(image_tokens=new[None].to(self.device), height=height,
                                                        width=width)  # fmt: skip
            picture = p.postprocess(list(pixels.float()), return_tensors="PIL.Image.Image")["pixel_values"][0]
            out.append(Response(prompt=prompt, response=generated.select(slice(0, height * (width + 1))),
                                output=picture, output_ids=new.cpu(),
                                extra={"grid": (height, width), "guidance_scale": scale, "positive_prompt": positive,
                                       "negative_prompt": negative}))  # fmt: skip
        return out

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
