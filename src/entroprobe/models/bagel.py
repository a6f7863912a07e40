"""BAGEL (BAGEL-7B-MoT, and BAGEL-RecA: the same architecture) from ByteDance Seed's own code: all four capabilities.

BAGEL is a Qwen2 decoder whose layers are Mixture-of-Transformers (``Qwen2MoTDecoderLayer``): each layer has an
understanding expert (``self_attn.{q,k,v,o}_proj``, ``mlp``, ``input_layernorm``…) for text and ViT tokens and a
generation expert (the ``*_moe_gen`` twins) for VAE-latent tokens; both kinds attend to each other in one shared
attention. Understanding reads an image through a NaViT SigLIP (``vit_model`` + ``connector`` + ``vit_pos_embed``);
generation is rectified flow on FLUX-VAE latents (``vae2llm`` in, ``llm2vae`` out). Sequences are packed, with
BAGEL's own KV cache (``NaiveCache``): every prompt segment is one call of ``language_model.forward_inference`` that
adds it to the cache (``forward_cache_update_text`` causal; ``forward_cache_update_vit`` non-causal over
``<|vision_start|>`` + ViT tokens + ``<|vision_end|>``), and generation runs on that cache.

Loading follows ``app.py`` / ``inference.ipynb`` (:mod:`.bagel_load`); the operations call the checkout's own
``InterleaveInferencer`` (``update_context_text``, ``update_context_image``, ``gen_text``, ``gen_image``) over the model.

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

import copy
import dataclasses
import hashlib
import warnings
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
    seeded,
    weights_fingerprint,
)
from entroprobe.models.defaults import Default, prompt_tokens_choice, record
from entroprobe.models.hf import load_image, prompt_item, require_prompt, require_text, room_to_generate
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

    def _run(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """An ``InterleaveInferencer`` method under ``inferencer.py``'s bfloat16 autocast, on the adapter's device."""
        from entroprobe.models.compat.bagel import autocast

        with warnings.catch_warnings(), torch.no_grad(), autocast(self.device):
            warnings.simplefilter("ignore", UserWarning)
            return getattr(self.inferencer, method)(*args, **kwargs)

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

    def _understanding(self, text: str | None, picture: Any, item: str, own: bool = False
                       ) -> tuple[dict[str, Any], list[LayerStates], Any]:  # fmt: skip
        """The understanding context (image, then text, as ``interleave_inference``) → ``(context, [ViT tokens'
        states, question tokens' states] of what was given (see :meth:`_keep`), the resized image or None)``."""
        context, pieces, resized = self.inferencer.init_gen_context(), [], None
        ids = self._text_ids(text, item) if isinstance(text, str) and text.strip() else None
        with self._capture() as capture:
            if picture is not None:
                resized = self.parts.vae_transform.resize_transform(picture)  # inferencer.py:249
                context = self._run("update_context_image", resized, context, vae=False)
                n = int(context["kv_lens"][0]) - 2
                pieces.append(self._states(capture.calls[-1].stacked(), self._keep(1, n, 1, own), 0))
            if ids is not None:
                start = int(context["kv_lens"][0])
                check_length(start + len(ids), self.context, item)
                context = self._run("update_context_text", text, context)
                pieces.append(self._states(capture.calls[-1].stacked(), self._keep(1, len(ids) - 2, 1, own), start, ids))
        return context, pieces, resized

    # -- the four operations -----------------------------------------------------------------------------------
    def encode_text(self, text: str) -> LayerStates:
        """Layer states of every token ``update_context_text`` packs for ``text`` (``<|im_start|>`` … ``<|im_end|>``).

        Raises:
            ItemError: an empty prompt or one longer than the model's context.
        """
        self.require("encode", "text")
        ids = self._text_ids(text, prompt_item(text))
        with self._capture() as capture:
            self._run("update_context_text", text, self.inferencer.init_gen_context())
        return self._states(capture.calls[0].stacked(), torch.arange(len(ids)), 0, ids)

    def encode_image(self, image: Any, instruction: str | None = None) -> LayerStates:
        """Layer states of an image's ViT tokens in the understanding context (``instruction``: see the module).

        Raises:
            ItemError: the image cannot be read.
        """
        self.require("encode", "image")
        item = prompt_item(instruction, image)
        _, pieces, _ = self._understanding(None, load_image(image, item), item, own=True)
        return pieces[0]

    def respond_text(self, text: str | None = None, image: Any = None, *, max_new_tokens: int = 64,
                     seed: int = 0) -> Response:  # fmt: skip
        """Answer as ``InterleaveInferencer(understanding_output=True)`` does, then one teacher-forced call over the
        answer on the prompt's cache.

        Raises:
            InputError: neither text nor image, or ``max_new_tokens`` < 1.
            ItemError: an unreadable image, or a prompt that leaves no room in the context.
        """
        self.require("text-gen", "image" if image is not None else "text")
        require_prompt(text, image)
        item = prompt_item(text, image)
        picture = None if image is None else load_image(image, item)
        context, pieces, _ = self._understanding(text, picture, item)
        start = int(context["kv_lens"][0])
        budget = room_to_generate(start + 1, max_new_tokens, self.context, item)
        with seeded(seed, self.device):  # generate_text stops at max_length tokens, its start token included
            output = self._run("gen_text", context, max_length=budget + 1, do_sample=bool(self.text["do_sample"]),
                               temperature=float(self.text["text_temperature"]))  # fmt: skip
        made = self.parts.proxy.last_text[:, 0].cpu()  # (steps,): <|im_start|>, then the answer
        new = made[1:].tolist() + ([self.new_token_ids["eos_token_id"]] if made.shape[0] < budget + 1 else [])
        forced = [int(made[0]), *new]
        states = self._forced(context, forced)
        if self.prompt_tokens == "template":  # the answer's <|im_start|>, which generate_text starts from
            pieces.append(self._states(states, torch.arange(1), start, forced))
        return Response(
            prompt=_join(pieces),
            response=self._states(states, torch.arange(1, len(forced)), start, forced),
            output=output, output_ids=torch.tensor(new, dtype=torch.long),
            extra={"prompt": text or "", "prompt_tokens": self.prompt_tokens},
        )  # fmt: skip

    def _forced(self, context: dict[str, Any], ids: list[int]) -> torch.Tensor:
        """One causal call over ``ids`` after the cached context (a copy), as ``forward_cache_update_text`` packs a
        prompt; its raw states ``(L + 1, len(ids), d)``."""
        start, rope = int(context["kv_lens"][0]), int(context["ropes"][0])
        n = len(ids)
        inputs = {"packed_text_ids": torch.tensor(ids, dtype=torch.long), "text_token_lens": torch.tensor([n], dtype=torch.int),
                  "packed_text_position_ids": torch.arange(rope, rope + n, dtype=torch.long),
                  "packed_text_indexes": torch.arange(start, start + n, dtype=torch.long),
                  "packed_key_value_indexes": torch.arange(0, start, dtype=torch.long),
                  "key_values_lens": torch.tensor([start], dtype=torch.int)}  # fmt: skip
        from entroprobe.models.compat.bagel import autocast

        with self._capture() as capture, torch.no_grad(), autocast(self.device):
            self.parts.proxy.forward_cache_update_text(copy.deepcopy(context["past_key_values"]), **inputs)
        return capture.calls[0].stacked()

    def respond_image(self, text: str, *, seed: int = 0, **generation: Any) -> Response:
        """Generate an image as ``interleave_inference`` does for a text prompt, under ``seed``.

        Args:
            **generation: over the load-time settings (:data:`IMAGE_DEFAULTS`).

        Raises:
            InputError: an unknown or invalid setting.
            ItemError: an empty prompt, or prompt + image tokens longer than the model's context.
        """
        self.require("image-gen", "text")
        item = prompt_item(text)
        options = self.for_call(IMAGE_DEFAULTS, self.image, generation)
        _check_image_settings(options)
        ids = self._text_ids(text, item)
        height, width = (int(v) for v in options["image_size"])
        self._check_size(height, width)
        n_image = (height // self.model.latent_downsample) * (width // self.model.latent_downsample)
        check_length(len(ids) + n_image + 2, self.context, item)
        last = int(options["num_timesteps"]) - 2  # generate_image runs num_timesteps - 1 Euler steps
        keep = lambda step, call: call == 0 and step in (-1, last)
        with self._capture(step_method=(self.model, "_forward_flow"), keep=keep) as capture:
            gen_context = self.inferencer.init_gen_context()
            cfg_text_context = copy.deepcopy(gen_context)  # inferencer.py:230,244: the context before the text
            gen_context = self._run("update_context_text", text, gen_context)
            cfg_img_context = self._run("update_context_text", text, self.inferencer.init_gen_context())
            with seeded(seed, self.device):  # prepare_vae_latent draws the noise with torch.randn on the CPU
                picture = self._run("gen_image", (height, width), gen_context, cfg_text_precontext=cfg_text_context,
                                    cfg_img_precontext=cfg_img_context, cfg_text_scale=float(options["cfg_text_scale"]),
                                    cfg_img_scale=float(options["cfg_img_scale"]),
                                    cfg_interval=[float(v) for v in options["cfg_interval"]],
                                    timestep_shift=float(options["timestep_shift"]),
                                    num_timesteps=int(options["num_timesteps"]),
                                    cfg_renorm_min=float(options["cfg_renorm_min"]),
                                    cfg_renorm_type=str(options["cfg_renorm_type"]))  # fmt: skip
        prompt_call, image_call = capture.select(step=-1)[0], capture.select(step=last)[0]
        start = len(ids)
        return Response(
            prompt=self._states(prompt_call.stacked(), self._keep(1, len(ids) - 2, 1), 0, ids),
            response=self._states(image_call.stacked(), torch.arange(1, n_image + 1), start, norm=self.gen_norm),
            output=picture, output_ids=None,
            extra={"prompt": text, "prompt_tokens": self.prompt_tokens, "step": last,
                   **{k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}},
        )  # fmt: skip

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
