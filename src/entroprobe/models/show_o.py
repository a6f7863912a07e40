"""Show-o (``showlab/Show-o``, v1 at the checkout's top level): a Phi-1.5 decoder over text and MAGVIT-v2 tokens.

The code comes from the user's checkout (``repo=PATH``, see :mod:`.upstream`); nothing of it is imported before
:meth:`ShowOAdapter.load`. The checkpoint folder is laid out as released (``showlab/show-o-512x512``,
``showlab/show-o``, ``showlab/show-o-w-clip-vit-512x512``…): ``config.json`` + ``pytorch_model.bin``; the Phi
config and tokenizer come from the config's ``llm_model_path`` (``llm=`` over it), the MAGVIT-v2 tokenizer from
``vq=`` (default the demo yaml's ``showlab/magvitv2``), and, when the config says ``w_clip_vit``, the CLIP-ViT
understanding encoder from ``clip=`` (default ``inference_mmu.py``'s). See :mod:`.show_o_load`.

States are those of ``showo.model.layers`` (Phi's decoder layers), captured with hooks; entry 0 is the decoder's
input embeddings (CLIP features included), the last entry goes through Phi's ``final_layernorm``
(``final_norm=True``, as ``output_hidden_states`` and the language head see it).

- ``encode_text``: ``<|sot|>`` (Phi's BOS, as ``UniversalPrompting.lm_prompt`` begins text) + the text's tokens,
  causal, every token;
- ``encode_image``: ``inference_mmu.py``'s understanding sequence — MAGVIT: ``<|mmu|> <|soi|> image… <|eoi|>
  <|sot|> 'USER: \\n' + question + ' ASSISTANT:'`` under ``create_attention_mask_for_mmu``; CLIP-ViT:
  ``<|mmu|> system <|soi|> features… <|eoi|> conversation`` under ``create_attention_mask_for_mmu_vit``; the
  states of the image positions only (``num_vq_tokens`` MAGVIT tokens, or the tower's 576 patch features);
- ``respond_text``: that sequence (for a text prompt the same without ``<|soi|> image <|eoi|>``, causal),
  ``mmu_generate`` as the script calls it (top-k 1, stopping at ``<|eot|>``), then one teacher-forced pass over
  prompt + generated tokens under the same mask. ``prompt``: the image positions and the question's tokens;
  ``response``: every generated token;
- ``respond_image``: ``inference_t2i.py``'s masked generation (``UniversalPrompting`` ``t2i_gen``, CFG with the
  empty prompt, ``t2i_generate`` with the mask schedule), then ONE teacher-forced pass over the conditional row
  with every image token at its final value: ``[pad…] <|t2i|> <|sot|> text <|eot|> <|soi|> image… <|eoi|>`` under
  ``create_attention_mask_predict_next``. ``prompt``: the text's tokens; ``response``: the ``num_vq_tokens``
  image positions. See :mod:`.show_o_generate`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from entroprobe.errors import InputError, LoadError
from entroprobe.models.base import (
    LayerStates,
    Reading,
    Response,
    resolve_device,
    resolve_dtype,
    tokenizer_reading,
    weights_fingerprint,
)
from entroprobe.models.hf import prompt_item, require_text, room_to_generate
from entroprobe.models.hf_loading import check_length
from entroprobe.models.hooks import capture_layers, to_layer_states
from entroprobe.models.show_o_load import (
    IMAGE_DEFAULTS,
    LOAD_DEFAULTS,
    TEXT_DEFAULTS,
    load_parts,
)
from entroprobe.models.upstream import Upstream, UpstreamAdapter, settings

__all__ = ["IMAGE_DEFAULTS", "LOAD_DEFAULTS", "TEXT_DEFAULTS", "ShowOAdapter"]

# inference_mmu.py:32 SYSTEM_PROMPT (the CLIP-ViT path)
SYSTEM_PROMPT = ("A chat between a curious user and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the user's questions.")  # fmt: skip
CLIP_FEATURES = 576  # training/prompting_utils.py create_attention_mask_for_mmu_vit: index = 1 + system + 1 + 576
_LOAD_KEYS = ("device", "llm", *LOAD_DEFAULTS)


class ShowOAdapter(UpstreamAdapter):
    """Layer states of Show-o prompts and responses; built by :meth:`load`.

    Attributes:
        model: the ``Showo`` in eval mode; ``vq`` its ``MAGVITv2``; ``prompting`` the ``UniversalPrompting`` (its
            ``text_tokenizer`` the Phi tokenizer with Show-o's tokens, ``sptids_dict`` their ids).
        clip, processor, conversation: the CLIP-ViT tower, its image processor and the ``phi1.5`` conversation
            template (``w_clip_vit`` checkpoints; None otherwise).
        num_image_tokens: MAGVIT tokens per image (``num_vq_tokens`` of the checkpoint's config).
        resolution: the image side in pixels (√num_image_tokens × the tokenizer's downsampling).
    """

    family = "show-o"
    capabilities = frozenset(
        {("encode", "text"), ("encode", "image"), ("text-gen", "text"), ("text-gen", "image"), ("image-gen", "text")}
    )
    upstream = Upstream(
        name="Show-o", github="showlab/Show-o", marker="models/modeling_showo.py",
        packages=("models", "training", "llava"),
        tested=(("45a5a2de01d1ebd10cd5864d29310a76476cdf23", "2026-01-09"),), transformers="5.23",
        licence="Apache-2.0 (the repository's LICENSE; files carry the Apache 2.0 header); the checkout's terms "
                "govern its use",
    )  # fmt: skip

    def __init__(self, parts: dict[str, Any], *, dtype: torch.dtype, load: dict[str, Any], text: dict[str, Any],
                 image: dict[str, Any], **common: Any):  # fmt: skip
        super().__init__(**common)
        self.model, self.vq, self.prompting = parts["model"], parts["vq"], parts["prompting"]
        self.clip, self.processor, self.conversation = parts["clip"], parts["processor"], parts["conversation"]
        self.code, self.llm_source = parts["code"], parts["llm"]
        self.dtype, self.load_settings = dtype, load
        self.text_settings, self.image_settings = text, image
        self.tokenizer = self.prompting.text_tokenizer
        self.ids = {name: int(value) for name, value in self.prompting.sptids_dict.items()}
        config = self.model.config
        self.w_clip_vit = bool(config.w_clip_vit)
        self.num_image_tokens = int(config.num_vq_tokens)
        self.num_new_special_tokens = int(load["num_new_special_tokens"])
        self.image_offset = len(self.tokenizer)  # inference_mmu.py: vq_model.get_code(image) + len(text_tokenizer)
        side = round(self.num_image_tokens**0.5)
        self.resolution = side * 2 ** (int(self.vq.encoder.num_resolutions) - 1)
        self.context = int(self.model.showo.config.max_position_embeddings)
        self.vq_source = str(load["vq"])

    # -- loading ---------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | None = None, **kwargs: Any) -> ShowOAdapter:
        """Load a Show-o checkpoint folder as released, with its MAGVIT-v2 tokenizer and the authors' defaults.

        Args:
            path: the checkpoint folder (``config.json``, ``pytorch_model.bin``).
            **kwargs: ``repo`` (the Show-o checkout), ``device``, ``llm`` (over the config's ``llm_model_path``),
                the keys of :data:`LOAD_DEFAULTS` (``vq``, ``clip``, ``dtype``…), and the settings of
                :data:`TEXT_DEFAULTS` and :data:`IMAGE_DEFAULTS`.

        Raises:
            InputError: no path, an unknown keyword, or a setting that does not parse.
            LoadError: no checkout, or a file of the layout missing (named with the layout expected).
        """
        if not path:
            raise InputError(f"Family '{cls.family}' needs a checkpoint folder: '{cls.family}:DIR'")
        root, rest = cls.split(kwargs, (*_LOAD_KEYS, *TEXT_DEFAULTS, *IMAGE_DEFAULTS))
        pick = lambda table: {k: v for k, v in rest.items() if k in table}
        load, load_given = settings(LOAD_DEFAULTS, pick(LOAD_DEFAULTS), what="Show-o loading")
        text, text_given = settings(TEXT_DEFAULTS, pick(TEXT_DEFAULTS), what="Show-o text-generation")
        image, image_given = settings(IMAGE_DEFAULTS, pick(IMAGE_DEFAULTS), what="Show-o image-generation")
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise LoadError(f"no Show-o checkpoint folder at {folder} (expected config.json and pytorch_model.bin, "
                            "as showlab/show-o-512x512)")  # fmt: skip
        device = resolve_device(rest.get("device"))
        dtype = resolve_dtype(load["dtype"]) or torch.float32
        parts = load_parts(root, cls.upstream, folder, rest, load, device, dtype)
        return cls(parts, dtype=dtype, load=load, text=text, image=image, path=str(folder), root=root, device=device,
                   num_layers=parts["model"].showo.config.num_hidden_layers,
                   d_model=parts["model"].showo.config.hidden_size, final_norm=True,
                   tables={"load": (LOAD_DEFAULTS, load_given), "text-gen": (TEXT_DEFAULTS, text_given),
                           "image-gen": (IMAGE_DEFAULTS, image_given)})  # fmt: skip

    # -- pieces of the authors' sequences ----------------------------------------------------------------------
    def _words(self, text: str | None) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def _embed(self, ids: list[int]) -> torch.Tensor:
        """Token embeddings ``(1, T, d)`` of ``ids``."""
        return self.model.showo.model.embed_tokens(torch.tensor([ids], dtype=torch.long, device=self.device))

    def _image_tokens(self, picture: Any) -> list[int]:
        """``inference_mmu.py``: ``vq_model.get_code(image_transform(image, resolution)) + len(text_tokenizer)``."""
        pixels = self.code["data"].image_transform(picture, resolution=self.resolution).to(self.device)[None]
        codes = self.vq.get_code(pixels)  # (1, N)
        if codes.shape[1] != self.num_image_tokens:
            raise InputError(f"the MAGVIT-v2 tokenizer gives {codes.shape[1]} tokens at {self.resolution}px; the "
                             f"Show-o checkpoint expects num_vq_tokens {self.num_image_tokens}")  # fmt: skip
        return (codes[0] + self.image_offset).tolist()

    def _clip_features(self, picture: Any) -> torch.Tensor:
        """``inference_mmu.py``: CLIP-ViT features of the processor's pixels through ``mm_projector`` → ``(1, 576, d)``."""
        pixels = self.processor.preprocess(picture, return_tensors="pt")["pixel_values"][0]
        features = self.model.mm_projector(self.clip(pixels[None].to(self.device, self.dtype)))
        if features.shape[1] != CLIP_FEATURES:
            raise InputError(f"the CLIP-ViT tower gives {features.shape[1]} features; Show-o's understanding mask "
                             f"(create_attention_mask_for_mmu_vit) expects {CLIP_FEATURES}")  # fmt: skip
        return features

    def _understanding(self, question: str | None, picture: Any | None) -> dict[str, Any]:
        """``inference_mmu.py``'s prompt: ``embeds (1, P, d)``, ``ids`` (None at CLIP features), ``image`` (positions),
        ``question`` (the question's token positions), ``mask`` (the authors' additive mask) and ``kind``."""
        ids_of, prompting = self.ids, self.code["prompting"]
        if self.w_clip_vit:
            conv = self.conversation.copy()
            conv.append_message(conv.roles[0], question or "")
            conv.append_message(conv.roles[1], None)
            system = self._words(SYSTEM_PROMPT)
            asked = self.tokenizer(conv.get_prompt().strip())["input_ids"]
            head = [ids_of["<|mmu|>"], *system]
            if picture is None:
                ids = head + asked
                embeds = self._embed(ids)
                return {"embeds": embeds, "ids": ids, "image": torch.arange(0), "kind": "causal",
                        "question": self._question(len(head), asked, question)}  # fmt: skip
            features = self._clip_features(picture)
            head += [ids_of["<|soi|>"]]
            tail = [ids_of["<|eoi|>"], *asked]
            embeds = torch.cat([self._embed(head), features.to(self.dtype), self._embed(tail)], dim=1)
            ids = [*head, *([None] * features.shape[1]), *tail]
            start = len(head)
            mask = prompting.create_attention_mask_for_mmu_vit(embeds, system_prompt_len=len(system))
            return {"embeds": embeds, "ids": ids, "image": torch.arange(start, start + features.shape[1]),
                    "kind": ("vit", len(system)), "mask": mask,
                    "question": self._question(start + features.shape[1] + 1, asked, question)}  # fmt: skip
        asked = self.tokenizer(["USER: \n" + (question or "") + " ASSISTANT:"])["input_ids"][0]
        if picture is None:
            ids = [ids_of["<|mmu|>"], ids_of["<|sot|>"], *asked]
            return {"embeds": self._embed(ids), "ids": ids, "image": torch.arange(0), "kind": "causal",
                    "question": self._question(2, asked, question)}  # fmt: skip
        image = self._image_tokens(picture)
        ids = [ids_of["<|mmu|>"], ids_of["<|soi|>"], *image, ids_of["<|eoi|>"], ids_of["<|sot|>"], *asked]
        return {"embeds": self._embed(ids), "ids": ids, "image": torch.arange(2, 2 + len(image)), "kind": "mmu",
                "question": self._question(len(image) + 4, asked, question)}  # fmt: skip

    def _question(self, start: int, asked: list[int], question: str | None) -> torch.Tensor:
        """Positions of the question's own tokens inside the rendered turn starting at ``start``."""
        words = self._words(question)
        n = len(words)
        for i in range(len(asked) - n, -1, -1):
            if n and asked[i : i + n] == words:
                return torch.arange(start + i, start + i + n)
        return torch.arange(start, start + len(asked))  # the question merged with the template: the whole turn

    def _mask(self, ids: torch.Tensor | None, embeds: torch.Tensor, kind: Any) -> torch.Tensor:
        """The authors' additive mask ``(1, 1, T, T)`` for the sequence (``ids`` (1, T) or ``embeds`` (1, T, d))."""
        prompting = self.code["prompting"]
        if kind == "mmu":
            return prompting.create_attention_mask_for_mmu(ids, eoi_id=self.ids["<|eoi|>"])
        if isinstance(kind, tuple):
            return prompting.create_attention_mask_for_mmu_vit(embeds, system_prompt_len=kind[1])
        length = embeds.shape[1]
        keep = torch.tril(torch.ones(length, length, dtype=torch.bool, device=self.device))
        return torch.zeros(1, 1, length, length, device=self.device).masked_fill(~keep, torch.finfo(torch.float32).min)

    def _pass(self, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """One decoder pass over a (padded) batch → ``(L + 1, B, T, d)`` captured (last entry before the final norm)."""
        with capture_layers(self.model.showo.model, "layers") as cap, torch.no_grad():
            self.model.showo(inputs_embeds=embeds, attention_mask=mask)
        return cap.calls[-1].stacked()

    def _select(self, states: torch.Tensor, positions: Any, ids: list[int | None] | None) -> LayerStates:
        index = torch.as_tensor(positions, dtype=torch.long)
        tokens = None
        if ids is not None and all(ids[i] is not None for i in index.tolist()):
            tokens = torch.tensor([ids[i] for i in index.tolist()], dtype=torch.long)
        return to_layer_states(states, index, token_ids=tokens, final_norm=self.model.showo.model.final_layernorm)

    # -- the four operations ---------------------------------------------------------------------------------
    def encode_text(self, text: str) -> LayerStates:
        """States of ``<|sot|>`` + the text's tokens, causal, every token.

        Raises:
            ItemError: an empty prompt, or one longer than the decoder's context.
        """
        return self.encode_text_batch([text])[0]

    def encode_text_batch(self, texts: list[str]) -> list[LayerStates]:
        """:meth:`encode_text` of several texts in one pass, right-padded."""
        from entroprobe.models.growing_mask import forced

        self.require("encode", "text")
        rows, embeds = [], []
        for text in texts:
            item = prompt_item(text)
            require_text(text, item)
            rows.append([self.ids["<|sot|>"], *self._words(text)])
            check_length(len(rows[-1]), self.context, item)
            with torch.no_grad():
                embeds.append(self._embed(rows[-1]))
        masks = [self._mask(None, e, "causal")[0, 0] for e in embeds]
        return [self._select(states, range(len(ids)), ids)
                for ids, states in zip(rows, forced(self._pass, [e[0] for e in embeds], masks))]  # fmt: skip

    def encode_image(self, image: Any, instruction: str | None = None) -> LayerStates:
        """States of the image positions of ``inference_mmu.py``'s prompt (MAGVIT tokens or CLIP features).

        Raises:
            ItemError: the image cannot be read, or the prompt is longer than the decoder's context.
        """
        return self.encode_image_batch([image], [instruction])[0]

    def encode_image_batch(self, images: list[Any], instructions: list[str | None] | None = None,
                           ) -> list[LayerStates]:  # fmt: skip
        """:meth:`encode_image` of several image prompts in one pass, right-padded."""
        from entroprobe.models.growing_mask import forced

        prompts, masks = [], []
        for picture, instruction, item in self._image_prompts(images, instructions):
            with torch.no_grad():
                prompt = self._understanding(instruction, picture)
            check_length(prompt["embeds"].shape[1], self.context, item)
            ids = torch.tensor([[0 if i is None else i for i in prompt["ids"]]], device=self.device)
            prompts.append(prompt)
            masks.append(self._mask(ids, prompt["embeds"], prompt["kind"])[0, 0])
        states = forced(self._pass, [p["embeds"][0] for p in prompts], masks)
        return [self._select(mine, p["image"], p["ids"]) for p, mine in zip(prompts, states)]

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
        pass, right-padded (see :mod:`entroprobe.models.growing_mask`); each answer and its states are those of its
        prompt alone."""
        from entroprobe.models.show_o_generate import generate_texts

        built, budgets = [], []
        for text, picture, item in self._replies(prompts):
            with torch.no_grad():
                built.append(self._understanding(text, picture))
            budgets.append(room_to_generate(built[-1]["embeds"].shape[1], max_new_tokens, self.context, item))
        return generate_texts(self, built, budgets, seeds)

    def respond_image(self, text: str, *, seed: int = 0, **generation: Any) -> Response:
        """An image for ``text`` as ``inference_t2i.py`` makes it; one teacher-forced pass (see the module).

        Args:
            text: the image description.
            seed: seeds the sampling; the same seed gives the same image.
            **generation: :data:`IMAGE_DEFAULTS` keys over the load-time settings.

        Raises:
            InputError: an unknown or unparsable setting.
            ItemError: an empty prompt, or one longer than ``max_seq_length`` leaves room for.
        """
        return self.respond_image_batch([text], seeds=[seed], **generation)[0]

    def respond_image_batch(self, texts: list[str], *, seeds: list[int], **generation: Any) -> list[Response]:
        """:meth:`respond_image` of several prompts in one unmasking loop, as ``inference_t2i.py`` batches them, each
        drawing from its own seed; each image and its states are its prompt's alone."""
        from entroprobe.models.show_o_generate import generate_images

        self.require("image-gen", "text")
        items = [prompt_item(text) for text in texts]
        for text, item in zip(texts, items):
            require_text(text, item)
        values = self.for_call(IMAGE_DEFAULTS, self.image_settings, generation, what="Show-o image-generation")
        return generate_images(self, texts, items, seeds, values)

    def read(self, text: str) -> Reading | None:
        """The text's Phi tokens (byte-level BPE: no unknown tokens; Phi's ``unk_token`` is its ``<|endoftext|>``)."""
        unk = getattr(self.tokenizer, "unk_token_id", None)
        return tokenizer_reading(self.tokenizer, text, None if unk == self.tokenizer.eos_token_id else unk)

    def fingerprint(self) -> str:
        """The checkpoint's weights with the MAGVIT-v2 tokenizer's (its weights, or its hub id)."""
        own = weights_fingerprint(self.path)
        vq = Path(self.vq_source).expanduser()
        other = weights_fingerprint(vq) if vq.is_dir() else self.vq_source
        return hashlib.sha256(f"{own}+{other}".encode()).hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        """The common description plus the image facts, the parts' sources and the dtype."""
        return {**super().describe(), "dtype": str(self.dtype), "resolution": self.resolution,
                "num_image_tokens": self.num_image_tokens, "w_clip_vit": self.w_clip_vit, "vq": self.vq_source,
                "llm": self.llm_source,
                "clip": str(self.load_settings["clip"]) if self.w_clip_vit else None}  # fmt: skip
