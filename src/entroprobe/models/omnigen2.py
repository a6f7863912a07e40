"""OmniGen2 from its authors' code (``VectorSpaceLab/OmniGen2``, package ``omnigen2``): all five capabilities.

OmniGen2 is **two models**: an MLLM (Qwen2.5-VL, ``pipe.mllm``) that reads prompts and answers in text, and a
separate diffusion transformer (``pipe.transformer``, ``OmniGen2Transformer2DModel``) that makes images conditioned on
the MLLM's last hidden states. The released pipeline folder loads as ``inference.py`` / ``inference_chat.py`` load it
(:mod:`entroprobe.models.omnigen2_load`; bfloat16 as their ``--dtype bf16``).

Which model's states each operation returns (layout in :mod:`entroprobe.models.base`):

- ``encode_text``, ``encode_image``, ``respond_text`` — **the MLLM's decoder layers** (``mllm.model.language_model
  .layers``, last entry through its final RMSNorm, ``final_norm`` True): ``encode_text`` every token of the text, no
  template; ``encode_image`` the ``<|image_pad|>`` positions of ``inference_chat.py``'s prompt (``<img1>:
  <|vision_start|><|image_pad|><|vision_end|>`` + instruction inside the chat pipeline's template), which the
  processor expands to one token per merged patch; ``respond_text`` generates as ``OmniGen2ChatPipeline.generate_text``
  does (``mllm.generate`` with its stop strings and the mllm folder's generation config), then one teacher-forced pass
  over prompt + answer: ``prompt`` the question's tokens (and an image prompt's image tokens), ``response`` the answer.
- ``respond_image`` — **the diffusion transformer's joint blocks** (``transformer.layers``; its refiners
  ``noise_refiner``, ``context_refiner``, ``ref_image_refiner`` run before them and are not measured). The image is
  made by ``OmniGen2Pipeline.__call__`` with ``inference.py``'s settings; each block sees ``[instruction tokens (cap_len
  = the templated prompt's tokens), generated-image patches]`` (no reference images in text-to-image). Both sides come
  from the **last** denoising step's conditional call (docs/upstream.md, OmniGen2): ``prompt`` the question's tokens
  within ``[0, cap_len)``, ``response`` the ``(H/16)·(W/16)`` patches after them. The last entry is the last joint
  block's output, before ``norm_out`` (a timestep-modulated norm and projection): ``final_norm`` False.

``num_layers`` / ``d_model`` are the MLLM's; the transformer's are in :meth:`OmniGen2Adapter.describe`. Generation
defaults (:data:`TEXT_DEFAULTS`, :data:`IMAGE_DEFAULTS`) carry their sources and go to ``manifest.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from entroprobe.errors import EntroprobeError, InputError, ItemError
from entroprobe.models.base import (
    LayerStates,
    Response,
    resolve_device,
    resolve_dtype,
    seeded,
)
from entroprobe.models.defaults import Default
from entroprobe.models.hf import (
    require_text,
    prompt_item,
    room_to_generate,
)
from entroprobe.models.hf_loading import check_length, context_limit
from entroprobe.models.hooks import capture_layers, to_layer_states
from entroprobe.models.prompt_tokens import prompt_selection
from entroprobe.models.upstream import Upstream, UpstreamAdapter

__all__ = ["IMAGE_DEFAULTS", "TEXT_DEFAULTS", "OmniGen2Adapter"]

TEXT_DEFAULTS = {
    "stop_strings": Default(("<|im_end|>", "<|img|>", "<|endoftext|>"),
                            "omnigen2/pipelines/omnigen2/pipeline_omnigen2_chat.py (inference_chat.py): generate_text "
                            "calls mllm.generate(..., stop_strings=[...]) and no sampling arguments: the mllm folder's "
                            "generation_config.json decides greedy or sampling"),
}  # fmt: skip
NEGATIVE = ("(((deformed))), blurry, over saturation, bad anatomy, disfigured, poorly drawn face, mutation, mutated, "
            "(extra_limb), (ugly), (poorly drawn hands), fused fingers, messy drawing, broken legs censor, censored, "
            "censor_bar")  # fmt: skip
IMAGE_DEFAULTS = {
    "num_inference_steps": Default(50, "inference.py: --num_inference_step default=50; example_t2i.sh: 50"),
    "text_guidance_scale": Default(4.0, "example_t2i.sh: --text_guidance_scale 4.0 (inference.py's own default, 5.0, "
                                        "is what its editing examples use)"),
    "image_guidance_scale": Default(2.0, "inference.py: --image_guidance_scale default=2.0 (the pipeline sets it to 1 "
                                         "without input images, as in text-to-image)"),
    "cfg_range_start": Default(0.0, "inference.py: --cfg_range_start default=0.0"),
    "cfg_range_end": Default(1.0, "inference.py: --cfg_range_end default=1.0"),
    "height": Default(1024, "inference.py: --height default=1024; example_t2i.sh: 1024"),
    "width": Default(1024, "inference.py: --width default=1024; example_t2i.sh: 1024"),
    "scheduler": Default("euler", "inference.py: --scheduler default='euler' (choices euler, dpmsolver++)"),
    "negative_prompt": Default(NEGATIVE, "inference.py: --negative_prompt default"),
    "max_sequence_length": Default(1024, "inference.py run(): pipeline(..., max_sequence_length=1024)"),
}  # fmt: skip
SCHEDULERS = ("euler", "dpmsolver++")
DTYPE = Default("bfloat16", "inference.py / inference_chat.py: --dtype default='bf16'")
LOAD_KEYS = ("dtype", "device")


class OmniGen2Adapter(UpstreamAdapter):
    """Layer states of OmniGen2: the MLLM's for prompts and text answers, the diffusion transformer's for images.

    Attributes:
        pipe: the ``OmniGen2Pipeline`` (text-to-image); ``chat`` the ``OmniGen2ChatPipeline`` over the same modules.
        mllm: the Qwen2.5-VL model; ``decoder`` its ``model.language_model``; ``transformer`` the diffusion transformer.
        text, image: the generation settings in force (defaults with the user's overrides).
    """

    family = "omnigen2"
    capabilities = frozenset(
        {("encode", "text"), ("encode", "image"), ("text-gen", "text"), ("text-gen", "image"), ("image-gen", "text")}
    )
    upstream = Upstream(
        name="OmniGen2", github="VectorSpaceLab/OmniGen2", marker="omnigen2/pipelines/omnigen2/pipeline_omnigen2.py",
        packages=("omnigen2",), tested=(("0f72fa92564d9f8ba76f53fcc3c05aca2372458f", "2025-07-05"),),
        transformers="5.23", licence="code: Apache-2.0 (LICENSE); weights: see the OmniGen2 model card",
    )  # fmt: skip

    def __init__(self, parts: dict[str, Any], *, text: dict[str, Any], image: dict[str, Any], dtype: torch.dtype,
                 **common: Any):  # fmt: skip
        super().__init__(**common)
        self.pipe, self.chat, self._dpm = parts["pipeline"], parts["chat"], parts["dpmsolver"]
        self.mllm, self.transformer, self.processor = self.pipe.mllm, self.pipe.transformer, self.pipe.processor
        self.decoder = self.mllm.model.language_model
        self.tokenizer = self.processor.tokenizer
        self.euler = self.pipe.scheduler
        self.text, self.image, self.dtype = text, image, dtype
        self.context = context_limit(self.mllm.config.text_config)
        self.image_token_id = int(self.mllm.config.image_token_id)

    # -- loading ---------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | None = None, **kwargs: Any) -> OmniGen2Adapter:
        """Load OmniGen2's pipeline folder (:data:`~entroprobe.models.omnigen2_load.LAYOUT`).

        Args:
            path: the pipeline folder.
            **kwargs: ``repo`` (the OmniGen2 checkout), ``dtype`` (bfloat16 as the scripts), ``device``, and
                generation settings over :data:`TEXT_DEFAULTS` / :data:`IMAGE_DEFAULTS`.

        Raises:
            InputError: no path, an unknown keyword, or a setting that does not parse or is out of range.
            LoadError: no checkout, a missing file, or a component that does not load.
        """
        from entroprobe.models.omnigen2_load import check_layout, load_components

        if not path:
            raise InputError(f"Family '{cls.family}' needs a pipeline folder: '{cls.family}:DIR'")
        text, text_given, image, image_given = cls.generation_settings(kwargs, TEXT_DEFAULTS, IMAGE_DEFAULTS)
        _check_image_settings(image)
        root, rest = cls.split(kwargs, (*LOAD_KEYS, *TEXT_DEFAULTS, *IMAGE_DEFAULTS))
        dtype = resolve_dtype(rest.get("dtype", DTYPE.value)) or resolve_dtype(DTYPE.value)
        device = resolve_device(rest.get("device"))
        directory = Path(path).expanduser()
        index = check_layout(directory)
        parts = load_components(root, cls.upstream, directory, dtype, index)
        parts["pipeline"].to(device)
        for module in (parts["pipeline"].mllm, parts["pipeline"].transformer, parts["pipeline"].vae):
            module.eval()
        config = parts["pipeline"].mllm.config.text_config
        return cls(parts, text=text, image=image, dtype=dtype, path=str(directory), root=root, device=device,
                   num_layers=int(config.num_hidden_layers), d_model=int(config.hidden_size), final_norm=None,
                   tables={"text-gen": (TEXT_DEFAULTS, text_given), "image-gen": (IMAGE_DEFAULTS, image_given)})  # fmt: skip

    # -- the MLLM ----------------------------------------------------------------------------------------------
    def _understanding(self, text: str | None, image: Any) -> tuple[str, Any]:
        """``inference_chat.py``'s prompt for ``text`` (and ``image``) and the processor's batch of it."""
        images = None if image is None else [image]
        templated = self.chat._apply_chat_template(text or "", images)
        with torch.no_grad():
            inputs = self.chat.prepare_inputs_for_text_generation(templated, images, self.device)
        return templated, inputs

    def _mllm_passes(self, rows: list[torch.Tensor], images: dict[str, torch.Tensor] | None = None,
                     ) -> list[torch.Tensor]:  # fmt: skip
        """ONE pass of the MLLM over the ids ``(T_i,)``, right-padded, with the batch's images (``pixel_values`` and
        ``image_grid_thw`` of every image, in the rows' order) → each row's raw states ``(L + 1, T_i, d)``."""
        from entroprobe.models.hf_batch import pad_right

        ids, mask = pad_right([row.cpu() for row in rows], 0)
        with capture_layers(self.decoder, "layers") as capture, torch.no_grad():
            self.mllm.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), use_cache=False,
                            **(images or {}))  # fmt: skip
        states = capture.calls[0].stacked()  # (L + 1, B, T, d)
        return [states[:, i, : row.shape[0]] for i, row in enumerate(rows)]

    def _mllm_states(self, states: torch.Tensor, positions: torch.Tensor, ids: torch.Tensor) -> LayerStates:
        return to_layer_states(states, positions, token_ids=ids.cpu()[positions], final_norm=self.decoder.norm)

    def encode_text(self, text: str) -> LayerStates:
        """The MLLM's states of every token of ``text`` (no template; Qwen's tokenizer adds no BOS).

        Raises:
            ItemError: an empty prompt or one longer than the MLLM's context.
        """
        return self.encode_text_batch([text])[0]

    def encode_text_batch(self, texts: list[str]) -> list[LayerStates]:
        """:meth:`encode_text` of several texts in one pass, right-padded."""
        rows = self._text_rows(texts)
        return [self._mllm_states(states, torch.arange(ids.shape[0]), ids)
                for ids, states in zip(rows, self._mllm_passes(rows))]  # fmt: skip

    def encode_image(self, image: Any, instruction: str | None = None) -> LayerStates:
        """The MLLM's states of the ``<|image_pad|>`` positions of ``inference_chat.py``'s prompt.

        Raises:
            ItemError: the image cannot be read, or the prompt is longer than the MLLM's context.
        """
        return self.encode_image_batch([image], [instruction])[0]

    def encode_image_batch(self, images: list[Any], instructions: list[str | None] | None = None,
                           ) -> list[LayerStates]:  # fmt: skip
        """:meth:`encode_image` of several image prompts in one pass, right-padded: each prompt as the processor
        gives it alone, their images' patches one after the other."""
        rows, pixels, grids = [], [], []
        for picture, instruction, item in self._image_prompts(images, instructions):
            _, inputs = self._understanding(instruction, picture)
            rows.append(inputs["input_ids"][0].cpu())
            check_length(rows[-1].shape[0], self.context, item)
            pixels.append(inputs["pixel_values"])
            grids.append(inputs["image_grid_thw"])
        images_of = {"pixel_values": torch.cat(pixels), "image_grid_thw": torch.cat(grids)}
        return [self._mllm_states(states, torch.nonzero(ids == self.image_token_id).squeeze(1), ids)
                for ids, states in zip(rows, self._mllm_passes(rows, images_of))]  # fmt: skip

    def respond_text(self, text: str | None = None, image: Any = None, *, max_new_tokens: int = 64,
                     seed: int = 0) -> Response:  # fmt: skip
        """Answer as ``OmniGen2ChatPipeline.generate_text`` does, then one teacher-forced MLLM pass over prompt + answer.

        Raises:
            InputError: neither text nor image, or ``max_new_tokens`` < 1.
            ItemError: an unreadable image, a prompt that leaves no room in the context, or an answer holding an
                image placeholder token (which a pass over it would read as a second image).
        """
        return self.respond_text_batch([(text, image)], max_new_tokens=max_new_tokens, seeds=[seed])[0]

    def respond_text_batch(self, prompts: list[tuple[str | None, Any]], *, max_new_tokens: int = 64,
                           seeds: list[int]) -> list[Response]:  # fmt: skip
        """:meth:`respond_text` of several prompts, as ``generate_text`` takes a list: the processor's left-padded batch
        in one ``generate`` with its stop strings (each answer cut where its stop string ends it; a sampled answer
        draws from its own seed, see :mod:`entroprobe.models.hf_generate`), then one teacher-forced pass,
        right-padded; each answer and its states are those of its prompt alone."""
        from entroprobe.models.hf_generate import generate_rows

        asked = []
        for text, picture, item in self._replies(prompts):
            asked.append((text, picture, item, self.chat._apply_chat_template(text or "", None if picture is None
                                                                              else [picture])))  # fmt: skip
        pictures = [picture for _, picture, _, _ in asked if picture is not None]
        with torch.no_grad():
            inputs = self.chat.prepare_inputs_for_text_generation([t for *_, t in asked], pictures or None, self.device)
        rows = [ids[mask.bool()].cpu() for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"])]
        budgets = [room_to_generate(ids.shape[0], max_new_tokens, self.context, item) for ids, (_, _, item, _) in
                   zip(rows, asked)]  # fmt: skip
        images = {k: inputs[k] for k in ("pixel_values", "image_grid_thw") if k in inputs}
        stops = list(self.text["stop_strings"])
        answers = generate_rows(self.mllm, rows, seeds=seeds, max_new_tokens=max(budgets), device=self.device,
                                tokenizer=self.tokenizer, stop_strings=stops, **images)  # generate_text's call
        placeholders = {self.image_token_id, int(self.mllm.config.video_token_id)}
        out = []
        for (text, picture, item, templated), ids, budget, new in zip(asked, rows, budgets, answers):
            new = _through_stop(self.tokenizer, ids, new[:budget], stops)  # a finished row's padding goes
            if any(int(t) in placeholders for t in new):
                raise ItemError(item, "the answer holds an image/video placeholder token; it cannot be read back")
            out.append((new, torch.cat([ids, new])))
        states, responses = self._mllm_passes([every for _, every in out], images), []
        for (text, picture, item, templated), ids, (new, every), mine in zip(asked, rows, out, states):
            n_prompt = ids.shape[0]
            image_at = torch.nonzero(ids == self.image_token_id).squeeze(1)
            render = lambda q, picture=picture: self.chat._apply_chat_template(q, None if picture is None else [picture])
            question = self._question(templated, text, ids, item, render)
            keep = prompt_selection("question", n_prompt, question if question.numel() else None,
                                    image_at if image_at.numel() else None)  # fmt: skip
            answer = self.processor.batch_decode([new], skip_special_tokens=False, clean_up_tokenization_spaces=False)[0]
            responses.append(Response(
                prompt=self._mllm_states(mine, keep, every),
                response=self._mllm_states(mine, torch.arange(n_prompt, n_prompt + new.shape[0]), every),
                output=answer.replace("<|im_end|>", ""), output_ids=new,
                extra={"prompt": templated, "model": "mllm", "prompt_tokens": "question"},
            ))  # fmt: skip
        return responses

    # -- the diffusion transformer -------------------------------------------------------------------------------
    def layers_for(self, task: str) -> int:
        """The MLLM's layer count, and for ``image-gen`` the diffusion transformer's joint blocks'."""
        return int(self.transformer.config.num_layers) if task == "image-gen" else self.num_layers

    def _size(self, options: dict[str, Any]) -> tuple[int, int, int]:
        """``(height, width, image tokens)`` as ``OmniGen2Pipeline.__call__`` sizes a text-to-image latent."""
        height, width, most = int(options["height"]), int(options["width"]), 1024 * 1024  # __call__: max_pixels
        ratio = min((most / (height * width)) ** 0.5, 1.0)
        height, width = int(height * ratio) // 16 * 16, int(width * ratio) // 16 * 16
        scale, patch = self.pipe.vae_scale_factor, int(self.transformer.config.patch_size)
        return height, width, (height // scale // patch) * (width // scale // patch)

    def respond_image(self, text: str, *, seed: int = 0, **generation: Any) -> Response:
        """Generate an image with ``OmniGen2Pipeline`` as ``inference.py`` calls it; the transformer's joint-block states
        of the last step's conditional call.

        Args:
            **generation: over the load-time settings (:data:`IMAGE_DEFAULTS`' keys).

        Raises:
            InputError: an unknown or invalid setting.
            ItemError: an empty prompt, or one longer than ``max_sequence_length`` tokens.
        """
        return self.respond_image_batch([text], seeds=[seed], **generation)[0]

    def respond_image_batch(self, texts: list[str], *, seeds: list[int], **generation: Any) -> list[Response]:
        """:meth:`respond_image` of several prompts in one pipeline call, as its list-of-prompts form does: every
        prompt's noise from its own generator (the pipeline's per-image ``generator`` list), the prompts' tokens
        padded on the right (where the transformer reads them); each image and its states are its prompt's alone."""
        self.require("image-gen", "text")
        options = self.for_call(IMAGE_DEFAULTS, self.image, generation)
        _check_image_settings(options)
        asked = []
        for text in texts:
            item = prompt_item(text)
            require_text(text, item)
            templated = self.pipe._apply_chat_template(text)
            ids = self.tokenizer(templated, return_tensors="pt")["input_ids"][0]  # what _get_qwen2_prompt_embeds reads
            if ids.shape[0] > options["max_sequence_length"]:
                raise ItemError(item, f"{ids.shape[0]} prompt tokens is longer than max_sequence_length="
                                      f"{options['max_sequence_length']} (the pipeline would truncate it)")  # fmt: skip
            check_length(ids.shape[0], self.context, item)
            asked.append((text, item, templated, ids))
        height, width, n_image = self._size(options)
        steps = int(options["num_inference_steps"])
        from entroprobe.models.omnigen2_load import make_scheduler

        self.pipe.scheduler = make_scheduler(options["scheduler"], self.euler, self._dpm)
        last = steps - 1
        tokenizer, generators = self.pipe.processor.tokenizer, [torch.Generator(device=self.device).manual_seed(int(s))
                                                                  for s in seeds]  # fmt: skip
        side, tokenizer.padding_side = tokenizer.padding_side, "right"  # the transformer reads row i's first tokens
        try:
            # the noise comes from the generators; the global RNG is only held steady (the schedulers offered,
            # Euler and DPM-Solver++, draw nothing from it)
            with seeded(int(seeds[0]), self.device), torch.no_grad(), \
                    capture_layers(self.transformer, "layers", keep=lambda s, c: s == last and c == 0) as capture:  # fmt: skip
                result = self.pipe(
                    prompt=[text for text, *_ in asked], negative_prompt=options["negative_prompt"], height=height,
                    width=width, num_inference_steps=steps, max_sequence_length=int(options["max_sequence_length"]),
                    text_guidance_scale=float(options["text_guidance_scale"]),
                    cfg_range=(float(options["cfg_range_start"]), float(options["cfg_range_end"])),
                    generator=generators, output_type="pil", step_func=lambda i, n: capture.next_step(),
                    **_no_reference_images(len(asked), float(options["image_guidance_scale"])))  # fmt: skip
        finally:
            tokenizer.padding_side = side
        calls = capture.select(step=last, call_in_step=0)
        if len(calls) != 1:
            raise EntroprobeError(f"expected one conditional transformer call in step {last}; captured {len(calls)}")
        stacked = calls[0].stacked()  # (L + 1, B, longest cap_len + n_image, d)
        widest = max(ids.shape[0] for *_, ids in asked) + n_image
        if stacked.shape[1:3] != (len(asked), widest):
            raise EntroprobeError(f"the joint sequences are {tuple(stacked.shape[1:3])} (rows, tokens); expected "
                                  f"{len(asked)} rows of at most cap_len + {n_image} image patches = {widest}")  # fmt: skip
        out = []
        for row, ((text, item, templated, ids), image) in enumerate(zip(asked, result.images)):
            cap_len = ids.shape[0]
            states = stacked[:, row, : cap_len + n_image]  # the row's instruction tokens, then its image patches
            question = self._question(templated, text, ids, item, self.pipe._apply_chat_template)
            keep = question if question.numel() else torch.arange(cap_len)
            out.append(Response(
                prompt=to_layer_states(states, keep, token_ids=ids[keep]),
                response=to_layer_states(states, torch.arange(cap_len, cap_len + n_image)),
                output=image, output_ids=None,
                extra={"prompt": templated, "model": "transformer", "step": last, "cap_len": cap_len, **options},
            ))  # fmt: skip
        return out

    # -- provenance ---------------------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        config = self.transformer.config
        generation = self.mllm.generation_config
        return {**super().describe(), "dtype": str(self.dtype).removeprefix("torch."), "dtype_source": DTYPE.source,
                "states": {"encode": "mllm.model.language_model.layers (Qwen2.5-VL), final norm applied",
                           "text-gen": "mllm.model.language_model.layers (Qwen2.5-VL), final norm applied",
                           "image-gen": "transformer.layers (joint blocks), last step's conditional call, "
                                        "before norm_out"},
                "final_norm_by_task": {"encode": True, "text-gen": True, "image-gen": False},
                "transformer": {"num_layers": int(config.num_layers), "d_model": int(config.hidden_size),
                                "patch_size": int(config.patch_size)},
                "mllm_sampling": {"do_sample": bool(getattr(generation, "do_sample", False)),
                                  "source": "mllm/generation_config.json"},
                "image_token_id": self.image_token_id}  # fmt: skip


def _through_stop(tokenizer: Any, prompt: torch.Tensor, ids: torch.Tensor, stops: list[str]) -> torch.Tensor:
    """``ids`` through the first token at which ``generate``'s own stop-string test (``StopStringCriteria``, over
    the prompt and the answer so far) ends the row, or all of them: in a batch a finished row is padded to the
    others' length, and alone it stops there."""
    from transformers.generation.stopping_criteria import StopStringCriteria

    test = StopStringCriteria(tokenizer, stops)
    for k in range(1, ids.shape[0] + 1):
        if bool(test(torch.cat([prompt, ids[:k]])[None], None)[0]):
            return ids[:k]
    return ids


def _no_reference_images(count: int, image_guidance_scale: float) -> dict[str, Any]:
    """The pipeline's keywords for ``count`` text-to-image prompts. Alone: no ``input_images``, and the pipeline then
    turns image guidance off (``_image_guidance_scale = 1``). Several: ``prepare_image`` iterates ``input_images``
    whenever ``batch_size > 1``, so each prompt gets ``None``, and image guidance is turned off here, as alone."""
    if count == 1:
        return {"image_guidance_scale": image_guidance_scale}
    return {"input_images": [None] * count, "image_guidance_scale": 1.0}


def _check_image_settings(image: dict[str, Any]) -> None:
    """Raise :class:`InputError` for a step count or size below 1, a size not a multiple of 16, or an unknown scheduler."""
    for key in ("num_inference_steps", "height", "width", "max_sequence_length"):
        if image[key] < 1:
            raise InputError(f"{key} must be a positive integer; got {image[key]}")
    for key in ("height", "width"):
        if image[key] < 16:
            raise InputError(f"{key} must be at least 16 (the pipeline rounds sizes down to multiples of 16); "
                             f"got {image[key]}")  # fmt: skip
    if image["scheduler"] not in SCHEDULERS:
        raise InputError(f"scheduler must be one of {', '.join(SCHEDULERS)}; got {image['scheduler']!r}")
