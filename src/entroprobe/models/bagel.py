"""BAGEL (BAGEL-7B-MoT, and BAGEL-RecA: the same architecture) from ByteDance Seed's own code: all four capabilities.

BAGEL is a Qwen2 decoder whose layers are Mixture-of-Transformers (``Qwen2MoTDecoderLayer``): each layer has an
understanding expert (``self_attn.{q,k,v,o}_proj``, ``mlp``, ``input_layernorm``…) for text and ViT tokens and a
generation expert (the ``*_moe_gen`` twins) for VAE-latent tokens; both kinds attend to each other in one shared
attention. Understanding reads an image through a NaViT SigLIP (``vit_model`` + ``connector`` + ``vit_pos_embed``);
generation is rectified flow on FLUX-VAE latents (``vae2llm`` in, ``llm2vae`` out). Sequences are packed, with
BAGEL's own KV cache (``NaiveCache``): every prompt segment is one call of ``language_model.forward_inference`` that
adds it to the cache (``forward_cache_update_text`` causal; ``forward_cache_update_vit`` non-causal over
``<|vision_start|>`` + ViT tokens + ``<|vision_end|>``), and generation runs on that cache.

Loading follows ``app.py`` / ``inference.ipynb`` (:mod:`.bagel_load`). The operations do what the checkout's own
``InterleaveInferencer`` does (``update_context_text``, ``update_context_image``, ``gen_text``, ``gen_image``), for
a batch of prompts packed side by side (:mod:`.bagel_batch`): with one prompt, the same calls on the same inputs.

States (layout in :mod:`entroprobe.models.base`) are the residual stream after each of ``language_model.model.layers``
(hooked; input ``packed_query_sequence``, output element 0), i.e. the sum of whichever expert each token went
through: text and ViT tokens' states come from the understanding experts, VAE tokens' from the generation experts.
The last entry goes through the final norm of that expert (``norm``; ``norm_moe_gen`` for VAE tokens), as
``Qwen2Model.forward_inference`` applies it (``final_norm`` True). Positions are indices in the packed sequence the
cache holds (the key/value index of each token). Per operation:

- ``encode_text``: the call of ``update_context_text(text)`` on an empty context — every token it packs,
  ``<|im_start|>`` + the text's tokens + ``<|im_end|>`` (``Bagel.prepare_prompts``);
- ``encode_image``: the call of ``update_context_image(image, vae=False)`` (understanding: ``InterleaveInferencer``
  with ``understanding_output=True`` puts no VAE tokens in the context) on an empty context, after the
  inferencer's ``vae_transform.resize_transform``: the ViT token positions only (``1 … n``; the
  ``<|vision_start|>`` / ``<|vision_end|>`` around them are not returned). The block is non-causal and the
  instruction comes after it in the inferencer's order, so the instruction cannot change these states and is not run;
- ``respond_text``: the understanding context as the inferencer builds it (image first, then text), answered by
  ``gen_text`` (``generate_text``: greedy by default, starting from ``<|im_start|>``); then one teacher-forced call
  over ``<|im_start|>`` + the answer on a copy of the prompt's cache. ``response`` holds the generated tokens
  (``<|im_end|>`` included when the model produced it: ``generate_text`` stops on it without returning it),
  ``prompt`` the image's ViT tokens and the question's own tokens from the context calls (the cache the answer saw)
  — with ``prompt_tokens=template``, every token of those calls (``<|vision_start|>`` … ``<|im_end|>``) and the
  answer's ``<|im_start|>``;
- ``respond_image``: text-to-image as ``interleave_inference`` does it (``gen_context`` and ``cfg_img_context`` hold
  the prompt, ``cfg_text_context`` is empty) and ``gen_image``: Euler steps of ``generate_image`` over the shifted
  time grid, each step one ``_forward_flow``: the conditional call first, then the text-CFG and image-CFG calls
  when their scale is above 1 inside ``cfg_interval``. ``response``: the VAE-token positions of the **last** step's
  conditional call (it sees the prompt through the cache and every image token); ``prompt``: the question's tokens
  from the ``update_context_text`` call that built that cache (``prompt_tokens=template``: with its
  ``<|im_start|>`` and ``<|im_end|>``).

Generation defaults (:data:`TEXT_DEFAULTS`, :data:`IMAGE_DEFAULTS`) carry their sources and go to ``manifest.json``;
``max_new_tokens`` counts the answer's tokens (``generate_text``'s ``max_length`` is one more: its start token).
Model arguments: ``repo``, ``dtype``, ``device``, ``weights``, ``ae_params`` (:mod:`.bagel_load`), ``prompt_tokens``
and the generation settings. Not run here: the inferencer's ``think`` mode (a system prompt and a written plan before
the answer or image) and editing (an image prompt to image generation); TaylorSeer stays off, as the authors' default.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import torch

from entroprobe.errors import InputError
from entroprobe.models.bagel_load import (
    BUILD,
    DTYPE,
    VAE_TRANSFORM,
    VIT_TRANSFORM,
    WEIGHTS,
    load_parts,
)
from entroprobe.models.base import (
    LayerStates,
    Response,
    resolve_device,
    resolve_dtype,
    weights_fingerprint,
)
from entroprobe.models.defaults import Default, prompt_tokens_choice, record
from entroprobe.models.hf import prompt_item, require_text, room_to_generate
from entroprobe.models.hf_loading import check_length, context_limit
from entroprobe.models.hooks import capture_layers, to_layer_states
from entroprobe.models.upstream import Upstream, UpstreamAdapter

__all__ = ["IMAGE_DEFAULTS", "TEXT_DEFAULTS", "BagelAdapter"]

TEXT_DEFAULTS = {
    "do_sample": Default(False, "inferencer.py:215 interleave_inference(do_sample=False); app.py:201 "
                                "image_understanding(do_sample=False); inference.ipynb (Understanding): do_sample=False"),
    "text_temperature": Default(0.3, "inferencer.py:216 interleave_inference(text_temperature=0.3); app.py:201 "
                                     "image_understanding(text_temperature=0.3) (used only when sampling)"),
}  # fmt: skip
_T2I = "inference.ipynb (Image Generation): inference_hyper"
IMAGE_DEFAULTS = {
    "cfg_text_scale": Default(4.0, f"{_T2I} cfg_text_scale=4.0; app.py:161 text_to_image(cfg_text_scale=4.0); "
                                   "inferencer.py:103 gen_image(cfg_text_scale=4.0)"),
    "cfg_img_scale": Default(1.0, f"{_T2I} cfg_img_scale=1.0 (app.py's text_to_image passes none, so "
                                  "interleave_inference's 1.5 applies there, inferencer.py:218)"),
    "cfg_interval": Default((0.4, 1.0), f"{_T2I} cfg_interval=[0.4, 1.0]; app.py:161,186 cfg_interval=0.4 -> "
                                        "[cfg_interval, 1.0]; inferencer.py:108,219"),
    "timestep_shift": Default(3.0, f"{_T2I} timestep_shift=3.0; app.py:162; inferencer.py:113,220"),
    "num_timesteps": Default(50, f"{_T2I} num_timesteps=50; app.py:162; inferencer.py:112,221"),
    "cfg_renorm_min": Default(0.0, f"{_T2I} cfg_renorm_min=0.0; app.py:163; inferencer.py:109,222"),
    "cfg_renorm_type": Default("global", f"{_T2I} cfg_renorm_type='global'; app.py:163; inferencer.py:110,223"),
    "image_size": Default((1024, 1024), "inferencer.py:224 interleave_inference(image_shapes=(1024, 1024)); app.py:170 "
                                        "image_ratio '1:1' -> (1024, 1024); (height, width) in pixels"),
}  # fmt: skip
LOAD_KEYS = ("dtype", "device", "weights", "ae_params", "prompt_tokens")
PROMPT_TOKENS = Default("question", "entroprobe: the question's tokens (and an image prompt's ViT tokens); "
                                    "template: every token of the prompt's context calls")
_RENORM = ("global", "channel", "text_channel")  # _forward_flow's cfg_renorm_type branches


class BagelAdapter(UpstreamAdapter):
    """Layer states of BAGEL prompts and responses; built by :meth:`load`.

    Attributes:
        model: the ``Bagel`` in eval mode; ``llm`` its ``language_model.model`` (the hooked decoder).
        inferencer: the checkout's ``InterleaveInferencer`` over the model (through :class:`~.compat.bagel.OnDevice`).
        tokenizer, new_token_ids: the Qwen2 tokenizer after ``add_special_tokens`` and the ids it returned.
        text, image: the generation settings in force (defaults with the user's overrides).
    """

    family = "bagel"
    capabilities = frozenset(
        {("encode", "text"), ("encode", "image"), ("text-gen", "text"), ("text-gen", "image"), ("image-gen", "text")}
    )
    upstream = Upstream(
        name="Bagel", github="ByteDance-Seed/Bagel", marker="modeling/bagel/bagel.py",
        packages=("modeling", "data", "inferencer"),
        tested=(("056b5fd51a88c1eb4547318609e25d40080fcf87", "2025-10-27"),), transformers="5.23",
        licence="code: Apache-2.0 (LICENSE), except modeling/bagel/modeling_utils.py (from DiT): CC BY-NC 4.0, "
                "non-commercial; the checkout's own files govern its use. Weights: see the model card",
    )  # fmt: skip

    def __init__(self, parts: Any, *, text: dict[str, Any], image: dict[str, Any], dtype: torch.dtype,
                 prompt_tokens: str = PROMPT_TOKENS.value, **common: Any):  # fmt: skip
        super().__init__(**common)
        self.prompt_tokens = prompt_tokens_choice(prompt_tokens)
        self.parts, self.model, self.inferencer = parts, parts.model, parts.inferencer
        self.llm = parts.model.language_model.model
        self.tokenizer, self.new_token_ids = parts.tokenizer, parts.new_token_ids
        self.text, self.image, self.dtype = text, image, dtype
        self.context = context_limit(parts.model.config.llm_config)
        self.gen_norm = getattr(self.llm, "norm_moe_gen", self.llm.norm)

    # -- loading ---------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | None = None, **kwargs: Any) -> BagelAdapter:
        """Load a BAGEL checkpoint directory (:data:`~.bagel_load.LAYOUT`) with the checkout's code.

        Args:
            path: the checkpoint directory.
            **kwargs: ``repo`` (the Bagel checkout), ``dtype`` (bfloat16 as the authors), ``device``, ``weights``
                (default ``ema.safetensors``), ``ae_params`` (a JSON of ``AutoEncoderParams`` for a VAE other than
                ``load_ae``'s) and generation settings over :data:`TEXT_DEFAULTS` / :data:`IMAGE_DEFAULTS`.

        Raises:
            InputError: no path, an unknown keyword, or a setting that does not parse or is out of range.
            LoadError: no checkout, a missing file, or weights / tokenizer / VAE that do not load.
        """
        if not path:
            raise InputError(f"Family '{cls.family}' needs a checkpoint directory: '{cls.family}:DIR'")
        text, text_given, image, image_given = cls.generation_settings(kwargs, TEXT_DEFAULTS, IMAGE_DEFAULTS)
        _check_image_settings(image)
        prompt_tokens = prompt_tokens_choice(kwargs.get("prompt_tokens", PROMPT_TOKENS.value))
        root, rest = cls.split(kwargs, (*LOAD_KEYS, *TEXT_DEFAULTS, *IMAGE_DEFAULTS))
        dtype = resolve_dtype(rest.get("dtype", DTYPE.value)) or resolve_dtype(DTYPE.value)
        device = resolve_device(rest.get("device"))
        directory = Path(path).expanduser()
        parts = load_parts(root, cls.upstream, directory, weights=rest.get("weights"), ae_params=rest.get("ae_params"),
                           dtype=dtype, device=device)  # fmt: skip
        config = parts.model.config.llm_config
        return cls(parts, text=text, image=image, dtype=dtype, prompt_tokens=prompt_tokens, path=str(directory),
                   root=root, device=device, num_layers=int(config.num_hidden_layers), d_model=int(config.hidden_size),
                   final_norm=True,
                   tables={"text-gen": (TEXT_DEFAULTS, text_given), "image-gen": (IMAGE_DEFAULTS, image_given)})  # fmt: skip

    # -- calls and captures ----------------------------------------------------------------------------------
    def _capture(self, **options: Any) -> Any:
        return capture_layers(self.llm, "layers", input_name="packed_query_sequence", **options)

    def _text_ids(self, text: str, item: str) -> list[int]:
        """The ids ``Bagel.prepare_prompts`` packs for ``text``: ``<|im_start|>`` + its tokens + ``<|im_end|>``."""
        require_text(text, item)
        ids = [self.new_token_ids["bos_token_id"], *self.tokenizer.encode(text), self.new_token_ids["eos_token_id"]]
        check_length(len(ids), self.context, item)
        return ids

    def _states(self, states: torch.Tensor, index: torch.Tensor, offset: int, ids: Any = None,
                norm: Any = None) -> LayerStates:  # fmt: skip
        """Tokens ``index`` of one call's ``(L + 1, T, d)`` states, at sequence positions ``offset + index``."""
        picked = to_layer_states(states, index, token_ids=None if ids is None else torch.as_tensor(ids)[index],
                                 final_norm=self.llm.norm if norm is None else norm)  # fmt: skip
        return dataclasses.replace(picked, positions=picked.positions + offset)

    def _keep(self, first: int, n: int, around: int, own: bool = False) -> torch.Tensor:
        """Positions in a call of ``n`` own tokens from ``first``, with the ``around`` tokens each side of them
        under ``prompt_tokens=template`` (unless ``own``)."""
        if self.prompt_tokens == "template" and not own:
            return torch.arange(first - around, first + n + around)
        return torch.arange(first, first + n)

    def _understanding(self, prompts: list[tuple[str | None, Any, str]], own: bool = False
                       ) -> tuple[dict[str, Any], list[list[LayerStates]]]:  # fmt: skip
        """The understanding contexts of ``(text, picture or None, item)`` prompts of one kind (all with a picture or
        none, all with a question or none), image first, then text, as ``interleave_inference`` builds them, packed
        in one call per part (:mod:`.bagel_batch`) → ``(context, per prompt [ViT tokens' states, question tokens'
        states] of what it has, see :meth:`_keep`)``."""
        from entroprobe.models.bagel_batch import add_images, add_texts, empty

        context, pieces = empty(self, len(prompts)), [[] for _ in prompts]
        if prompts[0][1] is not None:
            resized = [self.parts.vae_transform.resize_transform(picture) for _, picture, _ in prompts]  # inferencer.py:249
            context, states = add_images(self, context, resized)
            for piece, state in zip(pieces, states):
                piece.append(self._states(state, self._keep(1, state.shape[1] - 2, 1, own), 0))
        if _asks(prompts[0][0]):
            ids = [self._text_ids(text, item) for text, _, item in prompts]
            starts = list(context["kv_lens"])
            for start, row, (_, _, item) in zip(starts, ids, prompts):
                check_length(start + len(row), self.context, item)
            context, states = add_texts(self, context, [text for text, _, _ in prompts])
            for piece, state, start, row in zip(pieces, states, starts, ids):
                piece.append(self._states(state, self._keep(1, len(row) - 2, 1, own), start, row))
        return context, pieces

    # -- the four operations -----------------------------------------------------------------------------------
    def encode_text(self, text: str) -> LayerStates:
        """Layer states of every token ``update_context_text`` packs for ``text`` (``<|im_start|>`` … ``<|im_end|>``).

        Raises:
            ItemError: an empty prompt or one longer than the model's context.
        """
        return self.encode_text_batch([text])[0]

    def encode_text_batch(self, texts: list[str]) -> list[LayerStates]:
        """:meth:`encode_text` of several texts, packed in one call."""
        from entroprobe.models.bagel_batch import add_texts, empty

        self.require("encode", "text")
        ids = [self._text_ids(text, prompt_item(text)) for text in texts]
        _, states = add_texts(self, empty(self, len(texts)), texts)
        return [self._states(state, torch.arange(len(row)), 0, row) for state, row in zip(states, ids)]

    def encode_image(self, image: Any, instruction: str | None = None) -> LayerStates:
        """Layer states of an image's ViT tokens in the understanding context (``instruction``: see the module).

        Raises:
            ItemError: the image cannot be read.
        """
        return self.encode_image_batch([image], [instruction])[0]

    def encode_image_batch(self, images: list[Any], instructions: list[str | None] | None = None,
                           ) -> list[LayerStates]:  # fmt: skip
        """:meth:`encode_image` of several images, packed in one call."""
        prompts = [(None, picture, item) for picture, _, item in self._image_prompts(images, instructions)]
        return [pieces[0] for pieces in self._understanding(prompts, own=True)[1]]

    def respond_text(self, text: str | None = None, image: Any = None, *, max_new_tokens: int = 64,
                     seed: int = 0) -> Response:  # fmt: skip
        """Answer as ``InterleaveInferencer(understanding_output=True)`` does, then one teacher-forced call over the
        answer on the prompt's cache.

        Raises:
            InputError: neither text nor image, or ``max_new_tokens`` < 1.
            ItemError: an unreadable image, or a prompt that leaves no room in the context.
        """
        return self.respond_text_batch([(text, image)], max_new_tokens=max_new_tokens, seeds=[seed])[0]

    def respond_text_batch(self, prompts: list[tuple[str | None, Any]], *, max_new_tokens: int = 64,
                           seeds: list[int]) -> list[Response]:  # fmt: skip
        """:meth:`respond_text` of several prompts: those of one kind (with or without an image, with or without a
        question) packed together in each call, a sampled answer drawn from its own seed (:mod:`.bagel_batch`);
        each answer and its states are its prompt's alone."""
        if len(seeds) != len(prompts):
            raise InputError(f"{len(prompts)} prompts need as many seeds; got {len(seeds)}")
        checked = self._replies(prompts)
        kinds: dict[tuple[bool, bool], list[int]] = {}
        for i, (text, picture, _) in enumerate(checked):
            kinds.setdefault((picture is not None, _asks(text)), []).append(i)
        out: list[Response | None] = [None] * len(prompts)
        for members in kinds.values():
            group = [checked[i] for i in members]
            for i, response in zip(members, self._answer(group, max_new_tokens, [seeds[i] for i in members])):
                out[i] = response
        return out  # type: ignore[return-value]

    def _answer(self, prompts: list[tuple[str | None, Any, str]], max_new_tokens: int, seeds: list[int]
                ) -> list[Response]:  # fmt: skip
        """:meth:`respond_text_batch` of prompts of one kind."""
        from entroprobe.models.bagel_batch import answers, forced

        context, pieces = self._understanding(prompts)
        starts = [int(n) for n in context["kv_lens"]]
        budgets = [room_to_generate(start + 1, max_new_tokens, self.context, item)
                   for start, (_, _, item) in zip(starts, prompts)]  # fmt: skip
        # generate_text stops at max_length tokens, its start token included
        made = answers(self, context, [b + 1 for b in budgets], seeds, do_sample=bool(self.text["do_sample"]),
                       temperature=float(self.text["text_temperature"]))  # fmt: skip
        end = self.new_token_ids["eos_token_id"]
        news = [row[1:] + ([end] if len(row) < budget + 1 else []) for row, budget in zip(made, budgets)]
        rows = [[row[0], *new] for row, new in zip(made, news)]
        out = []
        for (text, _, _), piece, start, row, new, sequence, states in zip(prompts, pieces, starts, rows, news, made,
                                                                          forced(self, context, rows)):  # fmt: skip
            if self.prompt_tokens == "template":  # the answer's <|im_start|>, which generate_text starts from
                piece = [*piece, self._states(states, torch.arange(1), start, row)]
            said = self.tokenizer.decode(sequence).split("<|im_end|>")[0].split("<|im_start|>")[1]  # as gen_text
            out.append(Response(
                prompt=_join(piece),
                response=self._states(states, torch.arange(1, len(row)), start, row),
                output=said, output_ids=torch.tensor(new, dtype=torch.long),
                extra={"prompt": text or "", "prompt_tokens": self.prompt_tokens},
            ))  # fmt: skip
        return out

    def respond_image(self, text: str, *, seed: int = 0, **generation: Any) -> Response:
        """Generate an image as ``interleave_inference`` does for a text prompt, under ``seed``.

        Args:
            **generation: over the load-time settings (:data:`IMAGE_DEFAULTS`).

        Raises:
            InputError: an unknown or invalid setting.
            ItemError: an empty prompt, or prompt + image tokens longer than the model's context.
        """
        return self.respond_image_batch([text], seeds=[seed], **generation)[0]

    def respond_image_batch(self, texts: list[str], *, seeds: list[int], **generation: Any) -> list[Response]:
        """:meth:`respond_image` of several prompts, packed together in each call, each image drawn from its own
        seed and guided on its own tokens (:mod:`.bagel_batch`); each image and its states are its prompt's alone."""
        from entroprobe.models.bagel_batch import images

        self.require("image-gen", "text")
        if len(seeds) != len(texts):
            raise InputError(f"{len(texts)} prompts need as many seeds; got {len(seeds)}")
        options = self.for_call(IMAGE_DEFAULTS, self.image, generation)
        _check_image_settings(options)
        height, width = (int(v) for v in options["image_size"])
        self._check_size(height, width)
        n_image = (height // self.model.latent_downsample) * (width // self.model.latent_downsample)
        ids = []
        for text in texts:
            item = prompt_item(text)
            ids.append(self._text_ids(text, item))
            check_length(len(ids[-1]) + n_image + 2, self.context, item)
        pictures, prompts, calls, starts = images(self, texts, (height, width), options, seeds)
        last = int(options["num_timesteps"]) - 2  # generate_image runs num_timesteps - 1 Euler steps
        return [Response(
            prompt=self._states(prompt, self._keep(1, len(row) - 2, 1), 0, row),
            response=self._states(call, torch.arange(1, n_image + 1), start, norm=self.gen_norm),
            output=picture, output_ids=None,
            extra={"prompt": text, "prompt_tokens": self.prompt_tokens, "step": last,
                   **{k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}},
        ) for text, row, picture, prompt, call, start in zip(texts, ids, pictures, prompts, calls, starts)]  # fmt: skip

    def _check_size(self, height: int, width: int) -> None:
        down, most = int(self.model.latent_downsample), int(self.model.max_latent_size)
        for name, value in (("height", height), ("width", width)):
            if value < down or value % down or value > down * most:
                raise InputError(f"image_size {name} {value} must be a multiple of {down} between {down} and "
                                 f"{down * most} (the latent grid is at most max_latent_size={most} per side)")  # fmt: skip

    # -- provenance ---------------------------------------------------------------------------------------------
    def fingerprint(self) -> str:
        """The checkpoint's weight files, with the weights file when it lies outside the checkpoint."""
        own = weights_fingerprint(self.path)
        weights = self.parts.weights
        if Path(self.path).resolve() in weights.resolve().parents:
            return own
        return hashlib.sha256(f"{own}+{weights_fingerprint(weights)}".encode()).hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "dtype": str(self.dtype).removeprefix("torch."), "dtype_source": DTYPE.source,
                "weights": str(self.parts.weights), "weights_source": WEIGHTS.source,
                "ae_params": self.parts.ae_params or "load_ae (app.py:48)",
                "build": {"value": BUILD.value, "source": BUILD.source},
                "vae_transform": {"value": list(VAE_TRANSFORM.value), "source": VAE_TRANSFORM.source},
                "vit_transform": {"value": list(VIT_TRANSFORM.value), "source": VIT_TRANSFORM.source},
                "new_token_ids": self.new_token_ids,
                "prompt_tokens": record({"prompt_tokens": PROMPT_TOKENS}, {} if self.prompt_tokens == PROMPT_TOKENS.value
                                        else {"prompt_tokens": self.prompt_tokens})["prompt_tokens"],
                "states": "language_model.model.layers outputs; text/ViT tokens via the understanding experts "
                          "(final norm `norm`), VAE tokens via the generation experts (final norm `norm_moe_gen`)"}  # fmt: skip


def _asks(text: str | None) -> bool:
    """Whether a prompt has a question: text that is not blank."""
    return isinstance(text, str) and bool(text.strip())


def _join(pieces: list[LayerStates]) -> LayerStates:
    """Several calls' states, one after the other along the tokens (token ids only when all have them)."""
    if len(pieces) == 1:
        return pieces[0]
    ids = None if any(p.token_ids is None for p in pieces) else torch.cat([p.token_ids for p in pieces])
    devices = {p.states.device for p in pieces}  # a large piece may have gone to the CPU (models.placement)
    target = torch.device("cpu") if len(devices) > 1 else devices.pop()
    return LayerStates(states=torch.cat([p.states.to(target) for p in pieces], dim=1),
                       positions=torch.cat([p.positions for p in pieces]), token_ids=ids, final_norm=True)  # fmt: skip


def _check_image_settings(image: dict[str, Any]) -> None:
    """Raise :class:`InputError` for settings ``generate_image`` cannot run."""
    if int(image["num_timesteps"]) < 2:
        raise InputError(f"num_timesteps must be at least 2 (generate_image runs num_timesteps - 1 steps); "
                         f"got {image['num_timesteps']}")  # fmt: skip
    if len(tuple(image["cfg_interval"])) != 2:
        raise InputError(f"cfg_interval must be two numbers (start, end); got {image['cfg_interval']!r}")
    if len(tuple(image["image_size"])) != 2:
        raise InputError(f"image_size must be HEIGHTxWIDTH; got {image['image_size']!r}")
    if image["cfg_renorm_type"] not in _RENORM:
        raise InputError(f"cfg_renorm_type must be one of {', '.join(_RENORM)}; got {image['cfg_renorm_type']!r}")
