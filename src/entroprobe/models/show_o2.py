"""Show-o2 (``showlab/Show-o``, ``show-o2/``): a Qwen2.5 decoder with a flow head over Wan2.1 VAE latents.

The code comes from the user's checkout (``repo=PATH``, see :mod:`.upstream`); nothing of it is imported before
:meth:`ShowO2Adapter.load`. The checkpoint folder is laid out as released (``showlab/show-o2-7B``):
``config.json`` + ``pytorch_model.bin`` (or shards with an index), with the Wan2.1 VAE (``Wan2.1_VAE.pth``)
beside it or named by ``vae=``. The Qwen2.5 config and tokenizer come from the config's ``llm_model_path``
(``llm=`` over it) and the SigLIP config from ``clip_pretrained_model_path`` (``siglip=``), as the authors'
``inference_t2i.py`` / ``inference_mmu.py`` load them.

States are those of ``showo.model.layers`` (the decoder), captured with hooks; entry 0 is the decoder's input
embeddings (image features and the time embedding included), the last entry goes through the decoder's final
norm (``final_norm=True``, as the flow head and the language head see it).

- ``encode_text``: ``<|im_start|>`` (the authors' ``bos_id``) + the text's tokens, causal mask, every token;
- ``encode_image``: the understanding sequence of ``inference_mmu.py`` (system prompt, user turn, ``boi``, the
  time embedding at t=1, the image's fused features, ``eoi``, the instruction, the assistant turn) under the
  authors' omni-attention mask; the states of the image-feature positions only;
- ``respond_text``: that sequence (without the image part for a text prompt), ``mmu_generate`` as the authors
  call it (top-k 1), then one teacher-forced pass over prompt + generated tokens under the same mask. The prompt
  states are the image positions and the question's tokens; the response every generated token;
- ``respond_image``: ``inference_t2i.py``'s flow sampling (``prepare_gen_input``, CFG with the empty prompt, the
  ODE sampler over ``t2i_generate``); prompt and response states come from the sampler's **last** call's
  conditional rows (the call closest to the clean image, seeing every image token): the prompt's text tokens
  and the image tokens at ``offset + 1 … offset + length − 1`` of ``modality_positions`` (``offset`` holds the
  time embedding). See ``docs/upstream.md``.

The VAE encoding of an image prompt samples the latent (``vae_model.sample``, as ``inference_mmu.py``): under
the response's seed, and seed 0 for ``encode_image``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from entroprobe.errors import InputError, LoadError
from entroprobe.models.base import LayerStates, Response, resolve_device, resolve_dtype, seeded
from entroprobe.models.defaults import Default
from entroprobe.models.hf import prompt_item, require_text, room_to_generate
from entroprobe.models.hf_loading import check_length
from entroprobe.models.hooks import capture_layers, to_layer_states
from entroprobe.models.upstream import Upstream, UpstreamAdapter, import_from, settings

__all__ = ["ShowO2Adapter", "TEXT_DEFAULTS", "IMAGE_DEFAULTS"]

_T2I = "inference_t2i.py"
_YAML = "configs/showo2_7b_demo_432x432.yaml"
TEXT_DEFAULTS = {
    "top_k": Default(1, "inference_mmu.py: top_k = 1 (mmu_generate keeps the most likely token)"),
    "temperature": Default(1.0, "inference_mmu.py: temperature = 1.0"),
}
IMAGE_DEFAULTS = {
    "guidance_scale": Default(7.5, f"README.md: python3 {_T2I} … guidance_scale=7.5"),
    "num_inference_steps": Default(50, f"README.md: python3 {_T2I} … num_inference_steps=50"),
    "sampling_method": Default("euler", f"{_YAML}: transport.sampling_method"),
    "time_shifting_factor": Default(3.0, f"{_YAML}: transport.time_shifting_factor"),
    "atol": Default(1e-6, f"{_YAML}: transport.atol"),
    "rtol": Default(1e-3, f"{_YAML}: transport.rtol"),
    "max_seq_length": Default(1024, f"{_YAML}: dataset.preprocessing.max_seq_length"),
}
# the demo configs' sequence lengths by resolution (the 1.5B-HQ checkpoints generate at 512 and 1024)
_SEQ_BY_RESOLUTION = {
    512: Default(1280, "configs/showo2_1.5b_demo_512x512.yaml: dataset.preprocessing.max_seq_length"),
    1024: Default(4352, "configs/showo2_1.5b_demo_1024x1024.yaml: dataset.preprocessing.max_seq_length"),
}
SYSTEM = "system\nYou are a helpful assistant.<|im_end|>"  # inference_mmu.py: sys_prompt_ids
ROLE_USER, ROLE_ASSISTANT = "\n<|im_start|>user\n", "\n<|im_start|>assistant\n"  # inference_mmu.py: role_a, role_b
VAE_STRIDE = 8  # Wan2.1 VAE: 8x spatial downsampling
_LOAD_KEYS = ("dtype", "device", "llm", "siglip", "vae")
# one model serves every task: the generation script's dtype on a GPU (float32 on the CPU)
DTYPE = Default("bfloat16", f"{_T2I}: weight_type from {_YAML} model.weight_type (bfloat16); inference_mmu.py:53 "
                            "runs understanding in float32: pass dtype=float32 to measure encode and text-gen as it does")


class ShowO2Adapter(UpstreamAdapter):
    """Layer states of Show-o2 prompts and responses; built by :meth:`load`.

    Attributes:
        model: the ``Showo2Qwen2_5`` in eval mode; ``vae`` its ``WanVAE``; ``tokenizer`` the Qwen2.5 tokenizer
            with Show-o2's tokens (``get_text_tokenizer``), ``ids`` its ``showo_token_ids``.
        num_image_tokens: image tokens per image (latent height × width), without the time embedding.
        resolution: the image side in pixels (``image_latent_height`` × ``patch_size`` × 8).
    """

    family = "show-o2"
    capabilities = frozenset(
        {("encode", "text"), ("encode", "image"), ("text-gen", "text"), ("text-gen", "image"), ("image-gen", "text")}
    )
    upstream = Upstream(
        name="Show-o", github="showlab/Show-o", marker="models/modeling_showo2_qwen2_5.py",
        packages=("models", "transport"), subdir="show-o2",
        tested=(("45a5a2de01d1ebd10cd5864d29310a76476cdf23", "2026-01-09"),), transformers="5.23",
        licence="Apache-2.0 (show-o2/ files carry the Apache 2.0 header); the checkout's terms govern its use",
    )  # fmt: skip

    def __init__(self, model: Any, vae: Any, tokenizer: Any, ids: dict[str, int], code: dict[str, Any], *,
                 dtype: torch.dtype, text: dict[str, Any], image: dict[str, Any], **common: Any):  # fmt: skip
        super().__init__(**common)
        self.model, self.vae, self.tokenizer, self.ids, self.code = model, vae, tokenizer, ids, code
        self.dtype = dtype
        self.text_settings, self.image_settings = text, image
        config = model.config
        self.add_time_embeds = bool(config.add_time_embeds)
        self.num_image_tokens = int(config.image_latent_height) * int(config.image_latent_width)
        self.resolution = int(config.image_latent_height) * int(config.patch_size) * VAE_STRIDE
        self.context = int(model.showo.config.max_position_embeddings)
        self._system = tokenizer(SYSTEM, add_special_tokens=False)["input_ids"]
        self._user = tokenizer(ROLE_USER, add_special_tokens=False)["input_ids"]
        self._assistant = tokenizer(ROLE_ASSISTANT, add_special_tokens=False)["input_ids"]

    # -- loading ---------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | None = None, **kwargs: Any) -> ShowO2Adapter:
        """Load a Show-o2 checkpoint folder as released, with its VAE, tokenizer and the authors' defaults.

        Args:
            path: the checkpoint folder (``config.json``, ``pytorch_model.bin``; ``Wan2.1_VAE.pth`` beside it).
            **kwargs: ``repo`` (the Show-o checkout), ``dtype`` (default bfloat16 on CUDA as the demo configs'
                ``weight_type``, float32 on CPU), ``device``, ``llm`` / ``siglip`` (over the config's
                ``llm_model_path`` / ``clip_pretrained_model_path``), ``vae`` (the VAE file), and the settings of
                :data:`TEXT_DEFAULTS` and :data:`IMAGE_DEFAULTS`.

        Raises:
            InputError: no path, an unknown keyword, or a setting that does not parse.
            LoadError: no checkout, or a file of the layout missing (named with the layout expected).
        """
        if not path:
            raise InputError(f"Family '{cls.family}' needs a checkpoint folder: '{cls.family}:DIR'")
        root, rest = cls.split(kwargs, (*_LOAD_KEYS, *TEXT_DEFAULTS, *IMAGE_DEFAULTS))
        text_given = {k: v for k, v in rest.items() if k in TEXT_DEFAULTS}
        image_given = {k: v for k, v in rest.items() if k in IMAGE_DEFAULTS}
        text, text_given = settings(TEXT_DEFAULTS, text_given, what="Show-o2 text-generation")
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise LoadError(f"no Show-o2 checkpoint folder at {folder} (expected config.json, pytorch_model.bin "
                            "and Wan2.1_VAE.pth, as showlab/show-o2-7B with the Wan2.1 VAE)")  # fmt: skip
        device = resolve_device(rest.get("device"))
        dtype = resolve_dtype(rest.get("dtype")) or (resolve_dtype(DTYPE.value) if device.type == "cuda" else torch.float32)

        from entroprobe.models.compat.show_o2 import construction, ensure_flax_weights_name, load_showo2, wan_vae
        from entroprobe.models.compat.transformers5 import ensure_default_rope

        ensure_default_rope()
        ensure_flax_weights_name()
        showo = import_from(root, "models.modeling_showo2_qwen2_5", cls.upstream)
        misc = import_from(root, "models.misc", cls.upstream)
        omni = import_from(root, "models.omni_attention", cls.upstream)
        wan = import_from(root, "models.wan21_vae", cls.upstream)
        transport = import_from(root, "transport", cls.upstream)
        overrides = {key: str(rest[arg]) for arg, key in (("llm", "llm_model_path"),
                                                          ("siglip", "clip_pretrained_model_path")) if arg in rest}  # fmt: skip
        overrides["load_from_showo"] = True  # build the skeleton; every weight comes from the checkpoint
        stored = showo.Showo2Qwen2_5.load_config(str(folder)) if (folder / "config.json").is_file() else {}
        llm_path = overrides.get("llm_model_path", stored.get("llm_model_path", ""))
        try:
            with construction(showo):
                model = load_showo2(showo.Showo2Qwen2_5, folder, **overrides)
            tokenizer, ids = misc.get_text_tokenizer(llm_path, add_showo_tokens=True, return_showo_token_ids=True,
                                                     llm_name="qwen2_5")  # fmt: skip
        except (OSError, ValueError) as exc:
            raise LoadError(f"Cannot load Show-o2 from {folder} (Qwen2.5 config/tokenizer from {llm_path!r}, "
                            f"SigLIP config from the config's clip_pretrained_model_path or siglip=): {exc}") from None
        model.to(device=device, dtype=dtype)
        vae_file = Path(rest["vae"]).expanduser() if "vae" in rest else folder / "Wan2.1_VAE.pth"
        vae = wan_vae(wan, vae_file, dtype=dtype, device=device)
        resolution = int(model.config.image_latent_height) * int(model.config.patch_size) * VAE_STRIDE
        image_table = dict(IMAGE_DEFAULTS)
        if resolution in _SEQ_BY_RESOLUTION:
            image_table["max_seq_length"] = _SEQ_BY_RESOLUTION[resolution]
        image, image_given = settings(image_table, image_given, what="Show-o2 image-generation")
        code = {"misc": misc, "omni": omni, "transport": transport}
        return cls(model, vae, tokenizer, ids, code, dtype=dtype, text=text, image=image, path=str(folder), root=root,
                   device=device, num_layers=model.showo.config.num_hidden_layers,
                   d_model=model.showo.config.hidden_size, final_norm=True,
                   tables={"text-gen": (TEXT_DEFAULTS, text_given), "image-gen": (image_table, image_given)})  # fmt: skip

    # -- pieces of the authors' sequences ----------------------------------------------------------------------
    def _words(self, text: str | None) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def _embed(self, ids: list[int]) -> torch.Tensor:
        """Token embeddings ``(1, T, d)`` of ``ids``."""
        return self.model.showo.model.embed_tokens(torch.tensor([ids], dtype=torch.long, device=self.device))

    def _image_features(self, picture: Any) -> torch.Tensor:
        """``inference_mmu.py``'s image path (its lines 112-121, written out: they are the script's own, not a function
        of the checkout): center crop, VAE sample, dual-path fusion → ``(1, N, d)``."""
        from torchvision import transforms

        size = self.resolution
        pixels = transforms.Compose([
            transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC), transforms.CenterCrop(size),
            transforms.ToTensor(), transforms.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
        ])(picture).to(self.device)[None]  # (1, 3, H, W) in [-1, 1], as datasets/utils.py image_transform
        model = self.model
        latents = self.vae.sample(pixels.unsqueeze(2)).squeeze(2).to(self.dtype)  # (1, 16, H/8, W/8)
        und = model.image_embedder_und(latents)
        if model.position_embedding.weight.shape[0] == model.image_position_ids.shape[-1]:  # the trained grid (432²)
            und = und + model.position_embedding(model.image_position_ids)
        else:  # another resolution: the position embeddings interpolated, as Showo2Qwen2_5.forward does
            p = int(model.config.patch_size)
            und = und + self.code["misc"].interpolate_pos_encoding(int(model.config.clip_latent_dim),
                                                                   model.position_embedding, latents.shape[-2] // p,
                                                                   latents.shape[-1] // p, 1)  # fmt: skip
        und = model.und_trans(und)["last_hidden_state"]
        gen = model.image_embedder_gen(latents)
        return model.fusion_proj(torch.cat([und, gen], dim=-1))  # (1, N, d)

    def _understanding(self, question: str | None, picture: Any | None) -> tuple[torch.Tensor, list[int], Any, Any]:
        """``(embeds (1, P, d), ids (img_pad_id at the time embedding and image features), image positions, modality_positions)`` of the
        ``inference_mmu.py`` prompt; without a picture the same turn without its image part."""
        asked = self._words(question)
        head = [self.ids["bos_id"], *self._system, *self._user]
        if picture is None:
            ids = head + asked + self._assistant
            return self._embed(ids), ids, torch.arange(0), None
        features = self._image_features(picture)
        pieces, ids = [self._embed(head), self._embed([self.ids["boi_id"]])], [*head, self.ids["boi_id"]]
        shift = 1 if self.add_time_embeds else 0
        if self.add_time_embeds:
            time = self.model.time_embed(torch.Tensor([[1.0]]).to(self.device), pieces[0].dtype)
            if hasattr(self.model, "time_embed_proj"):
                time = self.model.time_embed_proj(time)
            pieces.append(time)
            ids.append(self.ids["img_pad_id"])
        start = len(ids)
        tail = [self.ids["eoi_id"], *asked, *self._assistant]
        pieces += [features, self._embed(tail)]
        ids += [self.ids["img_pad_id"]] * features.shape[1] + tail
        # inference_mmu.py: modality_positions = [len(text_tokens_a) + 1 + shift, num_mmu_image_tokens (+1)]
        block = torch.tensor([len(head) + 1 + shift, self.num_image_tokens + shift], device=self.device)[None, None]
        embeds = torch.cat(pieces, dim=1).to(self.dtype)  # (1, P, d)
        return embeds, ids, torch.arange(start, start + features.shape[1]), block

    def _mask(self, length: int, block: Any) -> torch.Tensor:
        """The authors' attention mask (additive, ``(1, 1, T, T)``): causal, or omni-attention over ``block``."""
        omni = self.code["omni"]
        if block is None:
            mask = omni.causal_attn_mask_naive(1, length, self.device, inverted=True)
        else:
            mask = omni.omni_attn_mask_naive(B=1, LEN=length, modalities=block, device=self.device, inverted=True)
        return mask.to(self.dtype)

    def _pass(self, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """One decoder pass → ``(L + 1, B, T, d)`` captured (last entry before the final norm)."""
        with capture_layers(self.model.showo.model, "layers") as cap, torch.no_grad():
            self.model.showo(inputs_embeds=embeds, attention_mask=mask)
        return cap.calls[-1].stacked()

    def _select(self, states: torch.Tensor, positions: Any, ids: list[int] | None) -> LayerStates:
        index = torch.as_tensor(positions, dtype=torch.long)
        tokens = None if ids is None else torch.tensor([ids[i] for i in index.tolist()], dtype=torch.long)
        return to_layer_states(states, index, token_ids=tokens, final_norm=self.model.showo.model.norm)

    # -- the four operations ---------------------------------------------------------------------------------
    def encode_text(self, text: str) -> LayerStates:
        """States of ``<|im_start|>`` + the text's tokens (no chat template), causal, every token.

        Raises:
            ItemError: an empty prompt, or one longer than the decoder's context.
        """
        return self.encode_text_batch([text])[0]

    def encode_text_batch(self, texts: list[str]) -> list[LayerStates]:
        """:meth:`encode_text` of several texts in one pass, right-padded."""
        from entroprobe.models.growing_mask import forced

        self.require("encode", "text")
        rows = []
        for text in texts:
            item = prompt_item(text)
            require_text(text, item)
            rows.append([self.ids["bos_id"], *self._words(text)])
            check_length(len(rows[-1]), self.context, item)
        with torch.no_grad():
            embeds = [self._embed(ids)[0].to(self.dtype) for ids in rows]
        masks = [self._mask(len(ids), None)[0, 0] for ids in rows]
        return [self._select(states, range(len(ids)), ids) for ids, states in zip(rows, forced(self._pass, embeds, masks))]

    def encode_image(self, image: Any, instruction: str | None = None) -> LayerStates:
        """States of the image-feature positions of ``inference_mmu.py``'s prompt (``num_image_tokens``).

        Raises:
            ItemError: the image cannot be read, or the prompt is longer than the decoder's context.
        """
        return self.encode_image_batch([image], [instruction])[0]

    def encode_image_batch(self, images: list[Any], instructions: list[str | None] | None = None,
                           ) -> list[LayerStates]:  # fmt: skip
        """:meth:`encode_image` of several image prompts in one pass, right-padded (each image's VAE latent drawn
        under seed 0, as alone)."""
        from entroprobe.models.growing_mask import forced

        embeds, masks, wheres = [], [], []
        for picture, instruction, item in self._image_prompts(images, instructions):
            with seeded(0, self.device), torch.no_grad():
                prompt, _, where, block = self._understanding(instruction, picture)
            check_length(prompt.shape[1], self.context, item)
            embeds.append(prompt[0])
            masks.append(self._mask(prompt.shape[1], block)[0, 0])
            wheres.append(where)
        return [self._select(states, where, None) for where, states in zip(wheres, forced(self._pass, embeds, masks))]

    def respond_text(self, text: str | None = None, image: Any = None, *, max_new_tokens: int = 64,
                     seed: int = 0) -> Response:  # fmt: skip
        """``mmu_generate`` on ``inference_mmu.py``'s prompt, then one teacher-forced pass (see the module).

        Raises:
            InputError: neither text nor image, or ``max_new_tokens`` below 1.
            ItemError: an unreadable image, or a prompt that leaves no room in the context.
        """
        return self.respond_text_batch([(text, image)], max_new_tokens=max_new_tokens, seeds=[seed])[0]

    def respond_text_batch(self, prompts: list[tuple[str | None, Any]], *, max_new_tokens: int = 64,
                           seeds: list[int]) -> list[Response]:  # fmt: skip
        """:meth:`respond_text` of several prompts: ``mmu_generate``'s loop over them at once, then one teacher-forced
        pass, right-padded (see :mod:`entroprobe.models.growing_mask`); each answer and its states are those of
        its prompt alone."""
        from entroprobe.models.growing_mask import forced, generate

        asked = []
        for (text, picture, item), seed in zip(self._replies(prompts), seeds):
            with seeded(seed, self.device), torch.no_grad():  # the image path samples its VAE latent
                embeds, ids, where, block = self._understanding(text, picture)
            budget = room_to_generate(embeds.shape[1], max_new_tokens, self.context, item)
            asked.append((text, embeds, ids, where, block, budget))
        showo = self.model.showo
        def logits_of(embeds: torch.Tensor, mask: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
            hidden = showo.model(inputs_embeds=embeds, attention_mask=mask)[0]  # what Qwen2ForCausalLM gives lm_head
            return showo.lm_head(hidden[torch.arange(hidden.shape[0], device=ends.device), ends])  # (b, V)

        news = generate(logits_of,
                        lambda token: self._embed([token])[0, 0],
                        [(a[1][0], self._mask(a[1].shape[1], a[4])[0, 0]) for a in asked], [a[5] for a in asked], seeds,
                        top_k=self.text_settings["top_k"], temperature=float(self.text_settings["temperature"]),
                        eos=self.tokenizer.eos_token_id)  # fmt: skip
        with torch.no_grad():
            joined = [torch.cat([embeds, self._embed(new).to(embeds.dtype)], dim=1)[0] if new else embeds[0]
                      for (_, embeds, *_), new in zip(asked, news)]  # (P + G, d) each  # fmt: skip
            states = forced(self._pass, joined, [self._mask(j.shape[0], a[4])[0, 0] for j, a in zip(joined, asked)])
        out = []
        for (text, embeds, ids, where, _, _), new, mine in zip(asked, news, states):
            n_prompt = embeds.shape[1]
            end = n_prompt - len(self._assistant)
            prompt_positions = torch.cat([where, torch.arange(end - len(self._words(text)), end)])
            every = ids + new
            out.append(Response(
                prompt=self._select(mine, prompt_positions, every),  # image features carry img_pad_id
                response=self._select(mine, torch.arange(n_prompt, n_prompt + len(new)), every),
                output=self.tokenizer.decode(new, skip_special_tokens=True), output_ids=torch.tensor(new),
                extra={"top_k": self.text_settings["top_k"]},
            ))  # fmt: skip
        return out

    def respond_image(self, text: str, *, seed: int = 0, **generation: Any) -> Response:
        """An image for ``text`` as ``inference_t2i.py`` makes it; states of the last sampler call (see the module).

        Args:
            text: the image description.
            seed: seeds the initial noise; the same seed gives the same image.
            **generation: :data:`IMAGE_DEFAULTS` keys over the load-time settings.

        Raises:
            InputError: an unknown or unparsable setting.
            ItemError: an empty prompt, or one longer than ``max_seq_length`` leaves room for.
        """
        return self.respond_image_batch([text], seeds=[seed], **generation)[0]

    def respond_image_batch(self, texts: list[str], *, seeds: list[int], **generation: Any) -> list[Response]:
        """:meth:`respond_image` of several prompts in one sampler run, as ``inference_t2i.py`` batches them (one
        prompt at a time under an adaptive ODE solver, whose steps would depend on the batch)."""
        from entroprobe.models.show_o2_generate import generate_images

        self.require("image-gen", "text")
        items = [prompt_item(text) for text in texts]
        for text, item in zip(texts, items):
            require_text(text, item)
        values = self.for_call(IMAGE_DEFAULTS, self.image_settings, generation, what="Show-o2 image-generation")
        return generate_images(self, texts, items, seeds, values)

    def describe(self) -> dict[str, Any]:
        """The common description plus the image facts and the dtype."""
        return {**super().describe(), "dtype": str(self.dtype), "dtype_source": DTYPE.source, "resolution": self.resolution,
                "num_image_tokens": self.num_image_tokens, "add_time_embeds": self.add_time_embeds}  # fmt: skip
