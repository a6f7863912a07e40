"""Janus-Pro (1B/7B) in Hugging Face format: transformers' ``JanusForConditionalGeneration``, all four capabilities.

Janus is a Llama decoder with two image paths: a SigLIP encoder + aligner that fills the ``<image_placeholder>``
positions of an image prompt (576 per image in the real models), and a VQ tokenizer whose codes the decoder
generates one by one (with classifier-free guidance) and whose decoder turns them back into pixels.

What each operation returns (layout in :mod:`entroprobe.models.base`). ``final_norm`` is detected at load and is
True for Janus: its decoder is transformers' ``LlamaModel``, whose ``hidden_states[-1]`` is the final RMSNorm's
output.

- ``encode_text``: every token of the text (the tokenizer's BOS included), no chat template — as ``causal-lm``;
- ``encode_image``: the image-token positions (``input_ids == config.image_token_id``) of the chat-formatted
  prompt "image, then the optional instruction";
- ``respond_text``: one teacher-forced pass over chat prompt + generated text; ``prompt`` holds every prompt
  position (image tokens included), ``response`` every generated token, the last one too;
- ``respond_image``: the chat prompt ending in the begin-of-image token, then the generated VQ codes. Their states
  come from one pass of the decoder over the prompt's token embeddings followed by
  ``prepare_embeddings_for_image_generation(codes)`` — what generation fed the conditional row
  (``generate(generation_mode="image")`` gives no per-step states). ``response.token_ids`` are VQ codebook
  indices, not vocabulary ids.

Generation follows DeepSeek's own scripts (:data:`TEXT_DEFAULTS`, :data:`IMAGE_DEFAULTS`, each value with its
source, recorded in ``manifest.json``): greedy text answers; images sampled from the full softmax at temperature
1 with classifier-free guidance 5 (transformers would otherwise keep only the top 50 codes). The response level
measures the question's tokens (``prompt_tokens=question``, see :mod:`.prompt_tokens`); the system prompt the
processor adds stays in the model's context.

Loading keywords: ``LOAD_KEYS``, the ``GENERATION_KEYS`` and ``guidance_scale`` (over the authors' defaults, for
every response) and ``prompt_tokens``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from entroprobe.errors import InputError, LoadError
from entroprobe.models.base import LayerStates, Response, seeded
from entroprobe.models.defaults import Default, prompt_tokens_choice, record, settle
from entroprobe.models.prompt_tokens import locate, prompt_selection, question_positions
from entroprobe.models.hf_batch import encode_rows, encode_text_batch
from entroprobe.models.compat import janus_text_generate
from entroprobe.models.hf_generate import generate_rows, teacher_forced_rows
from entroprobe.models.hf_loading import load_pretrained
from entroprobe.models.hf import (
    GENERATION_KEYS,
    HFAdapter,
    detect_final_norm,
    forward_states,
    load_image,
    parse_generation,
    prompt_item,
    room_to_generate,
    split_kwargs,
    tokenize_checked,
)
from entroprobe.models.hf_loading import check_length, context_limit, load_processor

__all__ = ["JanusAdapter"]

_EXTRA_KEYS = (*GENERATION_KEYS, "guidance_scale", "prompt_tokens")

# How DeepSeek runs Janus-Pro (github.com/deepseek-ai/Janus): README "Multimodal Understanding" and
# generation_inference.py; the same in demo/app_januspro.py (generate_image: guidance 5, temperature 1).
TEXT_DEFAULTS = {
    "do_sample": Default(False, "Janus README, multimodal understanding: language_model.generate(do_sample=False)"),
}
IMAGE_DEFAULTS = {
    "do_sample": Default(True, "generation_inference.py: torch.multinomial(probs) at every image token"),
    "temperature": Default(1.0, "generation_inference.py: generate(temperature=1), softmax(logits / temperature)"),
    "top_k": Default(0, "generation_inference.py samples the full softmax (transformers' default would keep 50)"),
    "top_p": Default(1.0, "generation_inference.py samples the full softmax: no nucleus"),
    "guidance_scale": Default(5.0, "generation_inference.py: cfg_weight=5"),
}
PROMPT_TOKENS = Default("question", "entroprobe: the question's tokens, as encode measures them (see prompt_tokens)")


class JanusAdapter(HFAdapter):
    """Layer states of Janus-Pro prompts and responses; built by :meth:`load`.

    Attributes:
        model: the ``JanusForConditionalGeneration`` in eval mode.
        processor: its ``JanusProcessor`` (tokenizer + image processor), from the same directory.
        boi_token_id: the begin-of-image token that opens image generation.
        image_token_id: the placeholder token of image-prompt positions.
        num_image_tokens: image tokens per image (576 in Janus-Pro), prompt or generated.
    """

    family = "janus"
    capabilities = frozenset(
        {("encode", "text"), ("encode", "image"), ("text-gen", "text"), ("text-gen", "image"), ("image-gen", "text")}
    )

    def __init__(self, model: Any, processor: Any, *, prompt_tokens: str = PROMPT_TOKENS.value, **common: Any):
        super().__init__(model, **common)
        self.processor = processor
        self.prompt_tokens = prompt_tokens_choice(prompt_tokens)
        self.num_image_tokens = int(model.config.vision_config.num_image_tokens)
        self.image_token_id = int(model.config.image_token_id)
        self.boi_token_id = self._find_boi_token_id()

    # -- loading ---------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | None = None, **kwargs: Any) -> JanusAdapter:
        """Load a Janus checkpoint (directory or hub id) and its processor from the same place.

        Args:
            path: a directory written by ``save_pretrained`` (weights, config, processor) or a hub id.
            **kwargs: loading keywords (``dtype``, ``device``, ``device_map``, ``revision``, …), generation
                settings over the authors' defaults (``do_sample``, ``temperature``, ``top_p``, ``top_k``,
                ``repetition_penalty``; ``guidance_scale`` for image generation) and ``prompt_tokens``
                (``question`` or ``template``).

        Raises:
            InputError: no path, an unknown keyword, or a generation default that does not parse.
            LoadError: the weights or the processor are missing or unreadable, or no begin-of-image token is found.
        """
        if not path:
            raise InputError(f"Family '{cls.family}' needs a path or hub id: '{cls.family}:PATH'")
        load_kwargs, extra = split_kwargs(kwargs, _EXTRA_KEYS)
        generation = parse_generation(extra)
        prompt_tokens = prompt_tokens_choice(extra.get("prompt_tokens", PROMPT_TOKENS.value))
        if "guidance_scale" in extra:
            try:
                generation["guidance_scale"] = float(extra["guidance_scale"])
            except (TypeError, ValueError):
                raise InputError(f"guidance_scale must be a number; got {extra['guidance_scale']!r}") from None
        from transformers import AutoProcessor, JanusForConditionalGeneration

        model, device = load_pretrained(JanusForConditionalGeneration, path, what="Janus model", **load_kwargs)
        processor = load_processor(AutoProcessor, path, what="Janus processor", **load_kwargs)
        text_config = model.config.text_config
        language_model = model.model.language_model
        return cls(
            model,
            processor,
            path=str(path),
            revision=load_kwargs.get("revision"),
            device=device,
            num_layers=int(text_config.num_hidden_layers),
            d_model=int(text_config.hidden_size),
            final_norm=detect_final_norm(language_model, text_config.num_hidden_layers, device, use_cache=False),
            context=context_limit(text_config),
            generation=generation,
            prompt_tokens=prompt_tokens,
        )

    def _find_boi_token_id(self) -> int:
        """The begin-of-image id: from the generation config, else from the processor's tokenizer.

        A transformers 5.x Janus generation config built from the model config (and so one saved and reloaded)
        lacks ``generation_kwargs["boi_token_id"]``, without which image generation cannot mask its
        unconditional rows.

        Raises:
            LoadError: when neither names it.
        """
        stored = (getattr(self.model.generation_config, "generation_kwargs", None) or {}).get("boi_token_id")
        if stored is not None:
            return int(stored)
        tokenizer = self.processor.tokenizer
        for token in (getattr(self.processor, "image_start_token", None), "<begin_of_image>"):
            found = tokenizer.convert_tokens_to_ids(token) if token else None
            if found is not None and found != tokenizer.unk_token_id:
                return int(found)
        raise LoadError(
            f"Cannot find the begin-of-image token of '{self.path}': neither generation_config.generation_kwargs "
            "nor the processor's tokenizer (boi_token, '<begin_of_image>') names it"
        )

    # -- prompts ---------------------------------------------------------------------------------------------
    def _chat(self, text: str | None, with_image: bool) -> str:
        """The prompt string of one user turn (image first, then text) with the assistant's turn opened."""
        if getattr(self.processor, "chat_template", None):
            content = [{"type": "image"}] if with_image else []
            if text:
                content.append({"type": "text", "text": text})
            prompt = self.processor.apply_chat_template(
                [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
            )
            return prompt[0] if isinstance(prompt, list) else prompt
        parts = [self.processor.image_token] if with_image else []
        return "\n".join(parts + ([text] if text else []))

    def _inputs(self, prompt: str, image: Any = None, mode: str = "text") -> dict[str, torch.Tensor]:
        """Processor output on the model's device, pixel values in the model's dtype."""
        batch = self.processor(text=prompt, images=image, generation_mode=mode, return_tensors="pt")
        inputs = {key: value.to(self.device) for key, value in batch.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        return inputs

    def _generation_config(self, overrides: dict[str, Any]) -> Any:
        """A copy of the checkpoint's generation config with ``overrides`` and the ids Janus needs.

        Raises:
            InputError: an unknown or invalid generation argument, or beams / several sequences.
        """
        config = copy.deepcopy(self.model.generation_config)
        tokenizer = self.processor.tokenizer
        if config.pad_token_id is None:
            config.pad_token_id = tokenizer.pad_token_id
        if config.bos_token_id is None:
            config.bos_token_id = tokenizer.bos_token_id
        stored = getattr(config, "generation_kwargs", None) or {}
        config.generation_kwargs = {**stored, "boi_token_id": self.boi_token_id}
        try:
            unused = config.update(**overrides)
        except ValueError as exc:
            raise InputError(f"Invalid generation argument(s) {overrides}: {exc}") from None
        if unused:
            raise InputError(
                f"Unknown generation argument(s) {', '.join(sorted(unused))} for Janus; expected GenerationConfig "
                "fields such as temperature, top_k, top_p, do_sample, guidance_scale"
            )
        if (config.num_beams or 1) != 1 or (config.num_return_sequences or 1) != 1:
            raise InputError(
                "A Janus response is one sampled sequence: num_beams and num_return_sequences must be 1; got "
                f"{config.num_beams} and {config.num_return_sequences}"
            )
        return config

    def _generate(
        self, inputs: dict[str, torch.Tensor], config: Any, seed: int, asked: dict[str, Any], **mode: Any
    ) -> torch.Tensor:
        """``model.generate`` under :func:`seeded` (same seed, same output).

        Raises:
            InputError: when generation rejects the arguments ``asked`` (e.g. a temperature <= 0).
        """
        try:
            with seeded(seed, self.device), torch.no_grad():
                return self.model.generate(**inputs, generation_config=config, **mode)
        except ValueError as exc:
            raise InputError(f"Janus generation rejected the arguments {asked}: {exc}") from None

    # -- the four operations ---------------------------------------------------------------------------------
    def encode_text(self, text: str) -> LayerStates:
        """Layer states of every token of ``text`` (BOS included; no chat template), from one forward pass.

        Raises:
            ItemError: for an empty prompt or one longer than the model's context.
        """
        self.require("encode", "text")
        tokenizer = self.processor.tokenizer
        ids = tokenize_checked(tokenizer, text, limit=self.context, item=prompt_item(text)).to(self.device)
        states = forward_states(self.model.model, self.num_layers, input_ids=ids, use_cache=False)  # (L + 1, T, d)
        return LayerStates(states, torch.arange(ids.shape[1]), ids[0].cpu(), self.final_norm)

    def encode_text_batch(self, texts: list[str]) -> list[LayerStates]:
        """:meth:`encode_text` of each text from one right-padded pass of the decoder (see :mod:`.hf_batch`)."""
        self.require("encode", "text")
        tokenizer = self.processor.tokenizer
        tokenize = lambda text: tokenize_checked(tokenizer, text, limit=self.context, item=prompt_item(text))  # noqa: E731
        return encode_text_batch(self.model.model, self.num_layers, texts, tokenize, tokenizer.pad_token_id,
                                 self.device, self.final_norm, use_cache=False)  # fmt: skip

    def encode_image(self, image: Any, instruction: str | None = None) -> LayerStates:
        """Layer states of an image prompt's image-token positions (``num_image_tokens`` of them).

        Args:
            image: a PIL image, an image file's path or its bytes.
            instruction: optional text after the image in the user turn; context only, its states not returned.

        Raises:
            ItemError: the image cannot be read, or the prompt is longer than the model's context.
        """
        return self.encode_image_batch([image], [instruction])[0]

    def encode_image_batch(self, images: list[Any], instructions: list[str | None] | None = None,
                           ) -> list[LayerStates]:  # fmt: skip
        """:meth:`encode_image` of each image from one right-padded pass, the images' pixels stacked in order (the
        model fills each row's image positions from its own image)."""
        self.require("encode", "image")
        rows, pixels = [], []
        for image, instruction in zip(images, instructions or [None] * len(images)):
            item = prompt_item(instruction, image)
            inputs = self._inputs(self._chat(instruction, with_image=True), load_image(image, item))
            check_length(inputs["input_ids"].shape[1], self.context, item)
            rows.append(inputs["input_ids"][0])
            pixels.append(inputs["pixel_values"])
        full = encode_rows(self.model.model, self.num_layers, rows, self.processor.tokenizer.pad_token_id, self.device,
                           self.final_norm, use_cache=False, pixel_values=torch.cat(pixels))  # fmt: skip
        return [states.select(torch.nonzero(row.cpu() == self.image_token_id).squeeze(1))  # (num_image_tokens,)
                for states, row in zip(full, rows)]  # fmt: skip

    def respond_text(
        self, text: str | None = None, image: Any = None, *, max_new_tokens: int = 64, seed: int = 0
    ) -> Response:
        """Generate a text answer under ``seed`` (the load-time generation defaults apply), then read prompt and
        answer from one teacher-forced pass. ``max_new_tokens`` is capped so prompt + answer fit the context.

        Args:
            text: the question or instruction (optional when an image is given).
            image: an optional PIL image, path or bytes, placed before the text in the user turn.

        Raises:
            InputError: neither text nor image, or ``max_new_tokens`` < 1.
            ItemError: the image cannot be read, or the prompt leaves no room in the model's context.
        """
        return self.respond_text_batch([(text, image)], max_new_tokens=max_new_tokens, seeds=[seed])[0]

    def respond_text_batch(self, prompts: list[tuple[str | None, Any]], *, max_new_tokens: int = 64,
                           seeds: list[int]) -> list[Response]:  # fmt: skip
        """:meth:`respond_text` of several prompts: one left-padded ``generate`` (each prompt drawing from its own
        seed, see :mod:`.hf_generate`), one right-padded teacher-forced pass."""
        built = []
        for text, image in prompts:
            self.require("text-gen", "image" if image is not None else "text")
            if not text and image is None:
                raise InputError("respond_text needs a text prompt, an image, or both; got neither")
            item = prompt_item(text, image)
            picture = None if image is None else load_image(image, item)
            prompt = self._chat(text, with_image=picture is not None)
            inputs = self._inputs(prompt, picture)
            budget = room_to_generate(inputs["input_ids"].shape[1], max_new_tokens, self.context, item)
            built.append((text, item, prompt, inputs, budget))
        if len({b[4] for b in built}) > 1:
            raise InputError("the prompts of this batch leave different room to respond: each is generated alone")
        settings, _ = settle(TEXT_DEFAULTS, self._given("text"))
        config = self._generation_config(settings)
        rows = [inputs["input_ids"][0] for _, _, _, inputs, _ in built]
        pixels = [inputs["pixel_values"] for _, _, _, inputs, _ in built if "pixel_values" in inputs]
        extra = {"pixel_values": torch.cat(pixels)} if pixels else {}
        try:
            news = generate_rows(self.model, rows, seeds=seeds, max_new_tokens=built[0][4], device=self.device,
                                 generate=janus_text_generate(self.model), generation_config=config,
                                 **extra)  # fmt: skip
        except ValueError as exc:
            raise InputError(f"Janus generation rejected the arguments {settings}: {exc}") from None
        lengths = torch.tensor([row.shape[0] for row in rows], device=self.device)
        pairs = teacher_forced_rows(self.model.model.language_model, rows, news, num_layers=self.num_layers,
                                    final_norm=self.final_norm, device=self.device,
                                    embed=lambda ids: self._forced_embeds(ids, extra.get("pixel_values"), lengths))  # fmt: skip
        out = []
        for (text, item, prompt, _, _), row, new, (prompt_states, response_states) in zip(built, rows, news, pairs):
            out.append(Response(
                prompt=prompt_states.select(self._measured(prompt, text, row, item,
                                                           with_image=bool(extra) and (row == self.image_token_id).any().item())),
                response=response_states,
                output=self.processor.tokenizer.decode(new, skip_special_tokens=True),
                output_ids=new,
                extra={"prompt": prompt, "prompt_tokens": self.prompt_tokens},
            ))  # fmt: skip
        return out

    def respond_image(self, text: str, *, seed: int = 0, **generation: Any) -> Response:
        """Generate an image for ``text`` (VQ codes, classifier-free guidance, sampled under ``seed``).

        Args:
            text: the image description.
            seed: seeds sampling; the same seed gives the same image.
            **generation: GenerationConfig fields over the load-time settings and :data:`IMAGE_DEFAULTS`:
                ``guidance_scale`` (5), ``temperature`` (1), ``top_k`` (0: none), ``top_p`` (1), ``do_sample``.

        Raises:
            InputError: an unknown or invalid generation argument.
            ItemError: an empty prompt, or prompt + ``num_image_tokens`` longer than the model's context.
        """
        return self.respond_image_batch([text], seeds=[seed], **generation)[0]

    def respond_image_batch(self, texts: list[str], *, seeds: list[int], **generation: Any) -> list[Response]:
        """:meth:`respond_image` of several prompts: one left-padded image ``generate`` (each prompt drawing from
        its own seed, see :mod:`.hf_generate`), one right-padded teacher-forced pass (:mod:`.janus_images`)."""
        from entroprobe.models.janus_images import generate_images

        self.require("image-gen", "text")
        return generate_images(self, texts, seeds, generation)


    def _forced_embeds(self, ids: torch.Tensor, pixels: torch.Tensor | None, n_prompt: torch.Tensor) -> torch.Tensor:
        """The teacher-forced pass's input embeddings ``(B, T, d)``: the tokens', with the image features at the
        prompt's image positions only — as generation saw them (a generated placeholder token is a token)."""
        embeds = self.model.get_input_embeddings()(ids)  # (B, T, d)
        if pixels is None:
            return embeds
        features = self.model.model.get_image_features(pixels, return_dict=True).pooler_output  # (B, N, d)
        where = (ids == self.image_token_id) & (torch.arange(ids.shape[1], device=ids.device)[None] < n_prompt[:, None])
        return embeds.masked_scatter(where.unsqueeze(-1), features.reshape(-1, embeds.shape[-1]).to(embeds.dtype))

    def _given(self, task: str) -> dict[str, Any]:
        """The user's load-time generation settings that apply to ``task`` (guidance only to images)."""
        return {k: v for k, v in self.generation.items() if task == "image" or k != "guidance_scale"}

    def _measured(self, templated: str, question: str | None, ids: torch.Tensor, item: str, tail: int = 0,
                  with_image: bool = False):  # fmt: skip
        """The prompt positions a response measures (see :mod:`.prompt_tokens`): image tokens and the question's."""
        ids = ids.cpu()
        image = torch.nonzero(ids == self.image_token_id).squeeze(1)
        asked = None
        if self.prompt_tokens == "question" and question and question.strip():
            start = locate(lambda q: self._chat(q, with_image=with_image), question)
            asked = question_positions(self.processor.tokenizer, templated, question, ids, item=item, tail=tail,
                                       start=start)  # fmt: skip
        return prompt_selection(self.prompt_tokens, ids.shape[0], asked, image if image.numel() else None)

    def describe(self) -> dict[str, Any]:
        """The common description plus the image-token facts."""
        return {
            **super().describe(),
            "num_image_tokens": self.num_image_tokens,
            "image_token_id": self.image_token_id,
            "boi_token_id": self.boi_token_id,
            "defaults": {
                "text-gen": record(TEXT_DEFAULTS, self._given("text")),
                "image-gen": record(IMAGE_DEFAULTS, self._given("image")),
                "prompt_tokens": record({"prompt_tokens": PROMPT_TOKENS},
                                        {} if self.prompt_tokens == PROMPT_TOKENS.value else
                                        {"prompt_tokens": self.prompt_tokens})["prompt_tokens"],
            },
        }
