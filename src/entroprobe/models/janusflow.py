"""JanusFlow-1.3B from DeepSeek's own code (``deepseek-ai/Janus``, ``janus.janusflow``): all four capabilities.

JanusFlow is a Llama decoder (``language_model.model``, 24 layers, d = 2048) with a SigLIP encoder filling the image
positions of an understanding prompt, and rectified-flow image generation: a ShallowUViT encoder turns an SDXL-VAE
latent and the flow time into one time token and a grid of image tokens, the decoder reads them after the prompt,
and a ShallowUViT decoder turns the image positions' last states into a velocity. The checkpoint loads as the
README loads it (``MultiModalityCausalLM`` and ``VLChatProcessor`` ``from_pretrained``, bfloat16), with the SDXL VAE
(``diffusers.AutoencoderKL``; ``vae=`` a path or hub id, else ``<checkpoint>/vae`` when present, else the README's
``stabilityai/sdxl-vae``).

States (layout in :mod:`entroprobe.models.base`) are captured with hooks on ``language_model.model.layers``, the
last entry passed through the decoder's final RMSNorm (``final_norm`` True), in every operation:

- ``encode_text``: every token of the text (BOS included), no chat template;
- ``encode_image``: the ``<image_placeholder>`` positions (``num_image_tokens`` of them) of the README's
  understanding prompt (system prompt, ``User: <image_placeholder>\\n[instruction]``, ``Assistant:``), whose
  ``<begin_of_image>`` carries the learned ``beg_of_und_embed`` and is not returned;
- ``respond_text``: the README's understanding path (``prepare_inputs_embeds``, ``language_model.generate``, greedy),
  then one teacher-forced pass over the prompt's embeddings + the generated tokens (a batch of prompts: one
  ``generate`` and one pass, padded); ``prompt`` holds the question's
  tokens (and an image prompt's image tokens), ``response`` every generated token;
- ``respond_image``: the rectified-flow loop of the README and ``demo/app_janusflow.py``, written here from their
  behaviour (:meth:`JanusFlowAdapter._flow`). The README's KV-cache trimming loops over an empty list, so every step
  is one full pass over ``prompt + time token + grid²`` image tokens, conditional row first, the unconditional row
  seeing only BOS, the time token and the image. ``prompt`` and ``response`` come from the **last** ODE step's
  conditional row (docs/upstream.md): the question's tokens within ``[0, P)`` and the last ``grid²`` positions.

Generation defaults (:data:`TEXT_DEFAULTS`, :data:`IMAGE_DEFAULTS`) carry their sources and go to ``manifest.json``.
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
from pathlib import Path
from typing import Any

import torch

from entroprobe.errors import InputError, LoadError
from entroprobe.models.base import (
    LayerStates,
    Response,
    resolve_device,
    resolve_dtype,
    weights_fingerprint,
)
from entroprobe.models.defaults import Default
from entroprobe.models.hf import (
    require_text,
    prompt_item,
    room_to_generate,
)
from entroprobe.models.hf_batch import embedded_passes
from entroprobe.models.hf_loading import check_length, context_limit
from entroprobe.models.hooks import capture_layers, to_layer_states
from entroprobe.models.prompt_tokens import prompt_selection
from entroprobe.models.upstream import Upstream, UpstreamAdapter, import_from

__all__ = ["IMAGE_DEFAULTS", "TEXT_DEFAULTS", "JanusFlowAdapter"]

TEXT_DEFAULTS = {
    "do_sample": Default(False, "README (JanusFlow, multimodal understanding): language_model.generate(do_sample=False)"),
}
IMAGE_DEFAULTS = {
    "cfg_weight": Default(2.0, "README (JanusFlow, text-to-image): generate(..., cfg_weight=2.0); "
                               "demo/app_janusflow.py: 'CFG Weight' slider value=2"),
    "num_inference_steps": Default(30, "README: generate(..., num_inference_steps=30); demo/app_janusflow.py: "
                                       "'Number of Inference Steps' slider value=30"),
    "latent_size": Default(48, "README and demo/app_janusflow.py: z = torch.randn((batchsize, 4, 48, 48)), the SDXL-VAE "
                               "latent of a 384x384 image; 24x24 = 576 image tokens after the encoder's stride 2"),
}  # fmt: skip
TIME_SCALE = 1000.0  # README: t = step / num_inference_steps * 1000. (the time embedding's scale)
DTYPE = Default("bfloat16", "README: vl_gpt.to(torch.bfloat16); vae.to(torch.bfloat16) ('this vae doesn't work with fp16')")
VAE_HUB = "stabilityai/sdxl-vae"  # README: AutoencoderKL.from_pretrained("stabilityai/sdxl-vae")
LOAD_KEYS = ("dtype", "device", "vae")
_FILES = ("config.json", "tokenizer_config.json", "processor_config.json", "preprocessor_config.json")
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
_LAYOUT = ("the released JanusFlow-1.3B layout: config.json, model.safetensors, tokenizer.json + tokenizer_config.json, "
           "processor_config.json, preprocessor_config.json")  # fmt: skip


class JanusFlowAdapter(UpstreamAdapter):
    """Layer states of JanusFlow prompts and responses; built by :meth:`load`.

    Attributes:
        model: the ``MultiModalityCausalLM`` in eval mode; ``decoder`` its ``language_model.model``.
        processor: its ``VLChatProcessor``; ``vae`` the SDXL ``AutoencoderKL``.
        text, image: the generation settings in force (defaults with the user's overrides).
    """

    family = "janusflow"
    capabilities = frozenset(
        {("encode", "text"), ("encode", "image"), ("text-gen", "text"), ("text-gen", "image"), ("image-gen", "text")}
    )
    upstream = Upstream(
        name="Janus", github="deepseek-ai/Janus", marker="janus/janusflow/models/modeling_vlm.py", packages=("janus",),
        package="janus", tested=(("1daa72fa409002d40931bd7b36a9280362469ead", "2025-02-01"),), transformers="5.23",
        licence="code: MIT (LICENSE-CODE); JanusFlow weights: DeepSeek Model License (LICENSE-MODEL)",
    )  # fmt: skip

    def __init__(self, model: Any, processor: Any, vae: Any, *, text: dict[str, Any], image: dict[str, Any],
                 vae_source: str, dtype: torch.dtype, **common: Any):  # fmt: skip
        super().__init__(**common)
        self.model, self.processor, self.vae = model, processor, vae
        self.decoder = model.language_model.model
        self.tokenizer = processor.tokenizer
        self.text, self.image = text, image
        self.vae_source, self.dtype = vae_source, dtype
        self.context = context_limit(model.config.language_config)
        self.image_token_id = int(processor.image_id)

    # -- loading ---------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | None = None, **kwargs: Any) -> JanusFlowAdapter:
        """Load a JanusFlow checkpoint directory, its processor and the SDXL VAE.

        Args:
            path: the checkpoint directory (:data:`_LAYOUT`).
            **kwargs: ``repo`` (the Janus checkout), ``dtype`` (bfloat16 as the README), ``device``, ``vae`` (path or
                hub id) and generation settings over :data:`TEXT_DEFAULTS` / :data:`IMAGE_DEFAULTS`.

        Raises:
            InputError: no path, an unknown keyword, or a setting that does not parse or is out of range.
            LoadError: no checkout, a missing file, or weights / processor / VAE that do not load.
        """
        if not path:
            raise InputError(f"Family '{cls.family}' needs a checkpoint directory: '{cls.family}:DIR'")
        text, text_given, image, image_given = cls.generation_settings(kwargs, TEXT_DEFAULTS, IMAGE_DEFAULTS)
        _check_image_settings(image)
        root, rest = cls.split(kwargs, (*LOAD_KEYS, *TEXT_DEFAULTS, *IMAGE_DEFAULTS))
        dtype = resolve_dtype(rest.get("dtype", DTYPE.value)) or resolve_dtype(DTYPE.value)
        device = resolve_device(rest.get("device"))
        directory = Path(path).expanduser()
        _check_layout(directory)
        from entroprobe.models.compat.janusflow import (
            dataclass_safe_configs,
            with_post_init,
        )

        with contextlib.redirect_stdout(sys.stderr), dataclass_safe_configs():  # janus/__init__.py prints
            models = import_from(root, "janus.janusflow.models", cls.upstream)
        try:
            model = with_post_init(models.MultiModalityCausalLM).from_pretrained(str(directory), dtype=dtype)
            with contextlib.redirect_stdout(sys.stderr):
                processor = models.VLChatProcessor.from_pretrained(str(directory))
        except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
            raise LoadError(f"cannot load JanusFlow from {directory} ({_LAYOUT}): {exc}") from exc
        model = model.to(device).eval()
        vae, vae_source = _load_vae(rest.get("vae"), directory, dtype, device)
        config = model.config.language_config
        return cls(model, processor, vae, text=text, image=image, vae_source=vae_source, dtype=dtype, path=str(directory),
                   root=root, device=device, num_layers=int(config.num_hidden_layers), d_model=int(config.hidden_size),
                   final_norm=True, tables={"text-gen": (TEXT_DEFAULTS, text_given),
                                            "image-gen": (IMAGE_DEFAULTS, image_given)})  # fmt: skip

    # -- prompts and passes ------------------------------------------------------------------------------------
    def _template(self, content: str, system: str) -> str:
        """The README's conversation ``User: content`` / ``Assistant:`` in the processor's sft format."""
        return self.processor.apply_sft_template_for_multi_turn_prompts(
            conversations=[{"role": "User", "content": content}, {"role": "Assistant", "content": ""}],
            sft_format=self.processor.sft_format, system_prompt=system)  # fmt: skip

    def _understanding(self, text: str | None, image: Any, item: str) -> tuple[torch.Tensor, torch.Tensor, str]:
        """The README's understanding inputs → ``(input_ids (P,), inputs_embeds (1, P, d), templated prompt)``."""
        content = (f"{self.processor.image_tag}\n" if image is not None else "") + (text or "")
        conversation = [{"role": "User", "content": content, "images": [image] if image is not None else []},
                        {"role": "Assistant", "content": ""}]  # fmt: skip
        with torch.no_grad():
            if image is None:  # no image positions to fill: the token embeddings are prepare_inputs_embeds' output
                templated = self._template(content, self.processor.system_prompt)
                ids = torch.tensor(self.tokenizer.encode(templated), device=self.device)
                embeds = self.decoder.get_input_embeddings()(ids[None])
            else:
                batch = self.processor(conversations=conversation, images=[image], force_batchify=True)
                batch = batch.to(self.device, dtype=self.dtype)
                templated, ids = batch.sft_format[0], batch.input_ids[0].clone()
                embeds = self.model.prepare_inputs_embeds(**{k: batch[k] for k in ("input_ids", "pixel_values",
                                                             "images_seq_mask", "images_emb_mask")})  # fmt: skip
        check_length(ids.shape[0], self.context, item)
        return ids, embeds, templated

    def _states(self, states: torch.Tensor, positions: torch.Tensor, ids: torch.Tensor | None = None) -> LayerStates:
        return to_layer_states(states, positions, token_ids=None if ids is None else ids[positions.to(ids.device)],
                               final_norm=self.decoder.norm)  # fmt: skip

    # -- the four operations -----------------------------------------------------------------------------------
    def encode_text(self, text: str) -> LayerStates:
        """Layer states of every token of ``text`` (BOS included, no template).

        Raises:
            ItemError: an empty prompt or one longer than the model's context.
        """
        return self.encode_text_batch([text])[0]

    def encode_text_batch(self, texts: list[str]) -> list[LayerStates]:
        """:meth:`encode_text` of several texts in one pass, right-padded."""
        rows = self._text_rows(texts)
        with torch.no_grad():
            embeds = [self.decoder.get_input_embeddings()(ids.to(self.device)) for ids in rows]
        return [self._states(states, torch.arange(ids.shape[0]), ids.cpu())
                for ids, states in zip(rows, embedded_passes(self.decoder, embeds))]  # fmt: skip

    def encode_image(self, image: Any, instruction: str | None = None) -> LayerStates:
        """Layer states of an image prompt's image-token positions (``instruction`` is context only).

        Raises:
            ItemError: the image cannot be read, or the prompt is longer than the model's context.
        """
        return self.encode_image_batch([image], [instruction])[0]

    def encode_image_batch(self, images: list[Any], instructions: list[str | None] | None = None,
                           ) -> list[LayerStates]:  # fmt: skip
        """:meth:`encode_image` of several image prompts in one pass, right-padded."""
        prompts = []
        for picture, instruction, item in self._image_prompts(images, instructions):
            ids, embeds, _ = self._understanding(instruction, picture, item)
            prompts.append((ids.cpu(), embeds[0]))
        out = []
        for (ids, _), states in zip(prompts, embedded_passes(self.decoder, [embeds for _, embeds in prompts])):
            where = torch.nonzero(ids == self.image_token_id).squeeze(1)  # (num_image_tokens,)
            out.append(self._states(states, where, ids))
        return out

    def respond_text(self, text: str | None = None, image: Any = None, *, max_new_tokens: int = 64,
                     seed: int = 0) -> Response:  # fmt: skip
        """Answer as the README does (greedy ``language_model.generate`` over ``prepare_inputs_embeds``), then one
        teacher-forced pass over the prompt's embeddings + the answer's tokens.

        Raises:
            InputError: neither text nor image, or ``max_new_tokens`` < 1.
            ItemError: an unreadable image, or a prompt that leaves no room in the context.
        """
        return self.respond_text_batch([(text, image)], max_new_tokens=max_new_tokens, seeds=[seed])[0]

    def respond_text_batch(self, prompts: list[tuple[str | None, Any]], *, max_new_tokens: int = 64,
                           seeds: list[int]) -> list[Response]:  # fmt: skip
        """:meth:`respond_text` of several prompts: one ``generate`` over their embeddings, left-padded (a sampled
        answer draws from its own seed, see :mod:`entroprobe.models.hf_generate`), then one teacher-forced pass,
        right-padded; each answer and its states are those of its prompt alone."""
        from entroprobe.models.hf_generate import Asked, answer_embedded, forced_states

        asked = []
        for text, picture, item in self._replies(prompts):
            ids, embeds, templated = self._understanding(text, picture, item)
            tag = f"{self.processor.image_tag}\n" if picture is not None else ""
            render = lambda q, tag=tag: self._template(tag + q, self.processor.system_prompt)  # noqa: E731
            asked.append(Asked(text, picture, item, templated, render, ids, embeds[0],
                               room_to_generate(ids.shape[0], max_new_tokens, self.context, item)))  # fmt: skip
        tok = self.tokenizer
        settings = {"do_sample": bool(self.text["do_sample"]), "pad_token_id": tok.eos_token_id,
                    "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}  # fmt: skip
        answers = answer_embedded(self.model.language_model, asked, seeds=seeds, device=self.device,
                                  generation=settings, use_cache=True)  # fmt: skip
        out = []
        for a, new, mine in zip(asked, answers, forced_states(self.decoder, asked, answers)):
            n_prompt = a.ids.shape[0]
            image_at = torch.nonzero(a.ids.cpu() == self.image_token_id).squeeze(1)
            question = self._question(a.templated, a.text, a.ids, a.item, a.render)
            keep = prompt_selection("question", n_prompt, question if question.numel() else None,
                                    image_at if a.image is not None else None)  # fmt: skip
            every = torch.cat([a.ids.cpu(), new])
            out.append(Response(
                prompt=self._states(mine, keep, every),
                response=self._states(mine, torch.arange(n_prompt, n_prompt + new.shape[0]), every),
                output=tok.decode(new.tolist(), skip_special_tokens=True), output_ids=new,
                extra={"prompt": a.templated, "prompt_tokens": "question"},
            ))  # fmt: skip
        return out

    def respond_image(self, text: str, *, seed: int = 0, **generation: Any) -> Response:
        """Generate an image as the README does (rectified flow, classifier-free guidance) under ``seed``.

        Args:
            **generation: over the load-time settings: ``cfg_weight``, ``num_inference_steps``, ``latent_size``.

        Raises:
            InputError: an unknown or invalid setting.
            ItemError: an empty prompt, or prompt + image tokens longer than the model's context.
        """
        return self.respond_image_batch([text], seeds=[seed], **generation)[0]

    def respond_image_batch(self, texts: list[str], *, seeds: list[int], **generation: Any) -> list[Response]:
        """:meth:`respond_image` of several prompts in one flow: the conditional rows of every prompt, then their
        unconditional rows (the README's layout), prompts left-padded with their positions kept as alone, and
        each prompt's noise from its own seed; each image is the one its prompt draws alone."""
        self.require("image-gen", "text")
        options = self.for_call(IMAGE_DEFAULTS, self.image, generation)
        _check_image_settings(options)
        rows = []
        for text in texts:
            item = prompt_item(text)
            require_text(text, item)
            templated = self._template(text, "")  # README: system_prompt="", then + image_gen_tag (the demo appends
            # image_start_tag instead: either way that last token is dropped, the time token takes its place)
            ids = torch.tensor(self.tokenizer.encode(templated + self.processor.image_gen_tag), device=self.device)
            rows.append((text, item, templated, ids))
        latents, states, n_image = self._flow([ids for *_, ids in rows], options, seeds, [item for _, item, *_ in rows])
        with torch.no_grad():
            pixels = self.vae.decode(latents.to(self.vae.dtype) / self.vae.config.scaling_factor).sample  # (B, 3, H, W)
        out = []
        for (text, item, templated, ids), state, picture in zip(rows, states, pixels):
            n_prompt = ids.shape[0] - 1  # the last token (the generation tag) gives way to the time token
            asked = self._question(templated, text, ids[:n_prompt], item, lambda q: self._template(q, ""))
            keep = asked if asked.numel() else torch.arange(n_prompt)
            total = state.shape[1]
            out.append(Response(
                prompt=self._states(state, keep, ids[:n_prompt].cpu()),
                response=self._states(state, torch.arange(total - n_image, total)),
                output=_to_pil(picture), output_ids=None,
                extra={"prompt": templated, "step": options["num_inference_steps"] - 1, **options},
            ))  # fmt: skip
        return out

    def _flow(self, rows: list[torch.Tensor], options: dict[str, Any], seeds: list[int], items: list[str]
              ) -> tuple[torch.Tensor, list[torch.Tensor], int]:  # fmt: skip
        """The rectified-flow ODE of the README / demo for ``rows`` (each prompt's ids, generation tag last): Euler
        steps from noise (t = 0) towards the image (t = 1), every prompt's two rows in one batch.

        Returns ``(final latents (B, C, S, S), per prompt the last step's conditional raw states (L + 1, P + 1 + n,
        d) as that prompt alone has them, n)``.
        """
        enc, steps, cfg = self.model.vision_gen_enc_model, int(options["num_inference_steps"]), float(options["cfg_weight"])
        size, channels = int(options["latent_size"]), int(enc.in_conv.in_channels)
        grid = (size + 2 * enc.in_conv.padding[0] - enc.in_conv.kernel_size[0]) // enc.in_conv.stride[0] + 1
        n_image, count = grid * grid, len(rows)
        for ids, item in zip(rows, items):
            check_length(ids.shape[0] + n_image, self.context, item)
        widest = max(int(ids.shape[0]) - 1 for ids in rows)  # prompt positions, the generation tag dropped
        length = widest + 1 + n_image
        tokens = torch.full((2 * count, widest), int(self.processor.pad_id), dtype=torch.long, device=self.device)
        mask = torch.ones((2 * count, length), dtype=torch.long, device=self.device)
        positions = torch.zeros((2 * count, length), dtype=torch.long, device=self.device)
        pads = []
        for i, ids in enumerate(rows):
            n_prompt, pad = int(ids.shape[0]) - 1, widest - (int(ids.shape[0]) - 1)
            pads.append(pad)
            tokens[i, pad:] = ids[:-1]  # conditional row: the prompt, left-padded
            tokens[count + i, pad] = ids[0]  # README: tokens[batchsize:, 1:] = pad_id (the row keeps BOS)
            for row in (i, count + i):
                mask[row, :pad] = 0
                positions[row, pad:] = torch.arange(length - pad, device=self.device)  # as the prompt alone has them
            mask[count + i, pad + 1 : pad + n_prompt] = 0  # the unconditional row sees BOS, the time token, the image
        with torch.no_grad():
            prompt = self.decoder.get_input_embeddings()(tokens)  # (2B, P, d)
        noise = [torch.randn((1, channels, size, size), generator=torch.Generator().manual_seed(int(seed)))
                 for seed in seeds]  # CPU generators: each prompt's noise, the same on any device  # fmt: skip
        z = torch.cat(noise).to(self.device, self.dtype)  # (B, C, S, S)
        dt = torch.full_like(z, 1.0 / steps)  # README: dt in the latent's dtype
        last = steps - 1
        with capture_layers(self.decoder, "layers", rows=list(range(count)), calls_per_step=1,
                            keep=lambda s, _: s == last) as capture, torch.no_grad():  # fmt: skip
            for step in range(steps):
                z_in = torch.cat([z, z])  # (2B, C, S, S)
                t = torch.full((2 * count,), step / steps * TIME_SCALE, dtype=z.dtype, device=self.device)
                z_emb, t_emb, hs = enc(z_in, t)  # (2B, 768, g, g), (2B, d), [skip]
                z_emb = self.model.vision_gen_enc_aligner(z_emb.flatten(2).transpose(1, 2))  # (2B, n, d)
                llm = torch.cat([prompt, t_emb[:, None].to(prompt.dtype), z_emb.to(prompt.dtype)], dim=1)
                hidden = self.decoder(inputs_embeds=llm, attention_mask=mask, position_ids=positions,
                                      use_cache=False).last_hidden_state  # fmt: skip
                h = self.model.vision_gen_dec_aligner(self.model.vision_gen_dec_aligner_norm(hidden[:, -n_image:]))
                h = h.reshape(2 * count, grid, grid, h.shape[-1]).permute(0, 3, 1, 2)  # (2B, 768, g, g)
                v_cond, v_uncond = self.model.vision_gen_dec_model(h, hs, t_emb).chunk(2)  # (B, C, S, S) each
                z = z + dt * (cfg * v_cond - (cfg - 1.0) * v_uncond)
        stacked = capture.calls[0].stacked()  # (L + 1, B, length, d): the conditional rows
        return z, [stacked[:, i, pad:] for i, pad in enumerate(pads)], n_image

    # -- provenance ---------------------------------------------------------------------------------------------
    def fingerprint(self) -> str:
        """The checkpoint's weights, with the VAE's (its weights, or its hub id) when it is not inside the checkpoint."""
        own = weights_fingerprint(self.path)
        vae = Path(self.vae_source)
        if vae.is_dir() and Path(self.path).resolve() in vae.resolve().parents:
            return own  # <checkpoint>/vae: already hashed with the checkpoint
        other = weights_fingerprint(vae) if vae.is_dir() else self.vae_source
        return hashlib.sha256(f"{own}+{other}".encode()).hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "dtype": str(self.dtype).removeprefix("torch."), "dtype_source": DTYPE.source,
                "vae": self.vae_source, "image_token_id": self.image_token_id,
                "num_image_tokens": int(self.processor.num_image_tokens)}  # fmt: skip


def _check_image_settings(image: dict[str, Any]) -> None:
    """Raise :class:`InputError` for a step count or latent size below 1."""
    for key in ("num_inference_steps", "latent_size"):
        if image[key] < 1:
            raise InputError(f"{key} must be a positive integer; got {image[key]}")


def _check_layout(directory: Path) -> None:
    """Raise :class:`LoadError` naming the first missing file of the released layout."""
    if not directory.is_dir():
        raise LoadError(f"no JanusFlow checkpoint directory at {directory}; expected {_LAYOUT}")
    for name in _FILES:
        if not (directory / name).is_file():
            raise LoadError(f"{directory} lacks {name}; expected {_LAYOUT}")
    if not any((directory / name).is_file() for name in _WEIGHTS):
        raise LoadError(f"{directory} has no weights ({', '.join(_WEIGHTS)}); expected {_LAYOUT}")


def _load_vae(spec: str | None, directory: Path, dtype: torch.dtype, device: torch.device) -> tuple[Any, str]:
    """The SDXL ``AutoencoderKL``: ``spec``, else ``<checkpoint>/vae``, else the README's hub id."""
    where = spec or (str(directory / "vae") if (directory / "vae").is_dir() else VAE_HUB)
    try:
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(where)
    except ImportError as exc:
        raise LoadError(f"JanusFlow decodes images with diffusers' AutoencoderKL: install diffusers ({exc})") from exc
    except (OSError, ValueError) as exc:
        raise LoadError(f"cannot load the SDXL VAE from {where!r} (a diffusers AutoencoderKL folder: config.json + "
                        f"diffusion_pytorch_model.safetensors; pass vae=PATH, or put it in {directory}/vae): {exc}"
                        ) from exc  # fmt: skip
    return vae.to(device, dtype).eval(), where


def _to_pil(pixels: torch.Tensor) -> Any:
    """A decoded image ``(3, H, W)`` in [-1, 1] → an RGB PIL image (the README's ``save_image(x * 0.5 + 0.5)``)."""
    from PIL import Image

    image = ((pixels.detach().float().clamp(-1, 1) + 1) / 2 * 255 + 0.5).clamp(0, 255).to(torch.uint8)  # (3, H, W)
    return Image.fromarray(image.permute(1, 2, 0).cpu().numpy(), mode="RGB")
