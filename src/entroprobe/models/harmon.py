"""Harmon and Harmon-RecA (wusize/Harmon): a Qwen2.5 LLM that reads and writes images through a MAR encoder.

Released layout (README: ``huggingface-cli download wusize/harmon --local-dir DIR``), built as the authors'
scripts build it (see :mod:`.harmon_build`)::

    DIR/kl16.ckpt            the VAE
    DIR/harmon_1.5b.pth      (or harmon_0.5b.pth, harmon_1.5b-o.pth; checkpoint=NAME when several)
    DIR/Qwen2.5-1.5B-Instruct/   the LLM + tokenizer the config names (or llm=PATH; else the hub id, offline cache)

Layer states come from the LLM's decoder layers (``llm.model.layers``), the last entry through its final norm
(``final_norm=True``). What each operation returns (layout in :mod:`entroprobe.models.base`):

- ``encode_text``: every token of the text, no template;
- ``encode_image``: the image-token positions of ``scripts/image2text.py``'s prompt — the image padded to a
  square (grey 127), resized to ``prompt_image_size``, through ``harmon.encode`` and
  ``harmon.extract_visual_feature`` into ``(size // 16)² + 64`` ``<image>`` positions, of which the first
  ``(size // 16)²`` are the image's patches (returned) and the last 64 MAR's buffer (not returned, as in
  ``respond_image``);
- ``respond_text``: greedy ``llm.generate`` on the script's prompt (``prompt_template['INSTRUCTION']``), then one
  teacher-forced pass; prompt states are the question's tokens (and the image's patches for an image prompt);
- ``respond_image``: ``scripts/text2image.py`` (``"Generate an image: {text}"``, CFG against ``cfg_prompt``,
  ``harmon.sample``) for one image; sample() returns pixels, so its final MAE tokens are taken at its
  ``decode`` call; then one teacher-forced pass (docs/upstream.md): ``forward_mae_encoder`` of every token,
  nothing masked, with the conditional prompt in the same call. A batch of prompts is one ``sample`` in the
  script's layout, each prompt drawing from its own seed (:mod:`.harmon_sample`). Prompt = the user's words, response = the
  ``m·n`` image positions ``[P, P + m·n)`` (the 64 buffer positions after them are not measured).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from entroprobe.errors import InputError, ItemError
from entroprobe.models.base import LayerStates, Response, resolve_device, resolve_dtype
from entroprobe.models.compat.devices import cuda_calls_to
from entroprobe.models.compat.harmon import legacy_cache
from entroprobe.models.defaults import Default
from entroprobe.models.hf import load_image, prompt_item, require_text, room_to_generate, tokenize_checked
from entroprobe.models.hf_batch import embedded_passes, pad_right
from entroprobe.models.hf_loading import check_length, context_limit
from entroprobe.models.hooks import capture_layers, to_layer_states
from entroprobe.models.prompt_tokens import locate, prompt_selection, question_positions
from entroprobe.models.upstream import Upstream, UpstreamAdapter, settings

__all__ = ["HarmonAdapter", "TEXT_DEFAULTS", "IMAGE_DEFAULTS"]

TEXT_DEFAULTS = {
    "do_sample": Default(False, "scripts/image2text.py: model.llm.generate(do_sample=False)"),
    "prompt_image_size": Default(512, "scripts/image2text.py: --image_size 512 (image prompts, encode too)"),
}
IMAGE_DEFAULTS = {
    "cfg": Default(3.0, "scripts/text2image.py: --cfg 3.0"),
    "cfg_prompt": Default("Generate an image.", "scripts/text2image.py: --cfg_prompt 'Generate an image.'"),
    "temperature": Default(1.0, "scripts/text2image.py: --temperature 1.0"),
    "cfg_schedule": Default("constant", "scripts/text2image.py: --cfg_schedule constant"),
    "num_iter": Default(64, "scripts/text2image.py: --num_iter 64"),
    "image_size": Default(512, "scripts/text2image.py: --image_size 512 (m = n = image_size // 16)"),
}
LOAD_KEYS = ("dtype", "device", "llm", "checkpoint", "config")
IMAGE_TOKEN = "<image>"  # scripts/image2text.py adds it as a special token


@contextlib.contextmanager
def final_tokens(model: Any) -> Iterator[list[torch.Tensor]]:
    """Record the MAE tokens ``(B, m, n, c)`` that ``model.decode`` turns into pixels (before it scales them)."""
    grabbed: list[torch.Tensor] = []
    original = model.decode

    def decode(z: torch.Tensor) -> torch.Tensor:
        grabbed.append(z.detach().clone())
        return original(z)

    model.decode = decode
    try:
        yield grabbed
    finally:
        del model.decode


def expand_to_square(image: Any, fill: tuple[int, int, int] = (127, 127, 127)) -> Any:
    """``image`` centred on a square canvas of its longer side, filled with ``fill`` (image2text.py's padding)."""
    from PIL import Image

    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


class HarmonAdapter(UpstreamAdapter):
    """Layer states of Harmon prompts and responses, over the user's checkout of wusize/Harmon.

    Attributes:
        model: the checkout's ``Harmon`` module (``llm``, ``mar``, ``vae``, ``tokenizer``) in eval mode.
        module: the checkout's ``src.models.harmon`` (its ``DynamicCache`` name is shimmed during sampling).
        image_token_id: the ``<image>`` id added to the tokenizer, as image2text.py adds it.
    """

    family = "harmon"
    capabilities = frozenset(
        {("encode", "text"), ("encode", "image"), ("text-gen", "text"), ("text-gen", "image"), ("image-gen", "text")}
    )
    upstream = Upstream(
        name="Harmon",
        github="wusize/Harmon",
        marker="src/models/harmon.py",
        packages=("src",),
        tested=(("4eb608765629a1d1b1ce28a85f4c3d126d98b690", "2025-05-21"),),
        transformers="5.23",
        licence="S-Lab License 1.0: non-commercial use only; the user's checkout governs its own use",
    )

    def __init__(self, model: Any, module: Any, *, text: dict[str, Any], image: dict[str, Any],
                 given: tuple[dict[str, Any], dict[str, Any]], weights: dict[str, int], **common: Any):  # fmt: skip
        tables = {"text-gen": (TEXT_DEFAULTS, given[0]), "image-gen": (IMAGE_DEFAULTS, given[1])}
        super().__init__(**common, tables=tables)
        self.model = model
        self.module = module
        self.tokenizer = model.tokenizer
        self.text_settings, self.image_settings = text, image  # the defaults with the user's values over them
        self.weights = weights
        self.context = context_limit(model.llm.config)
        self.tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
        self.image_token_id = int(self.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
        self.template = model.prompt_template["INSTRUCTION"]

    @classmethod
    def load(cls, path: str | None = None, **kwargs: Any) -> HarmonAdapter:
        """Build Harmon from the checkout's config and load ``DIR/harmon_*.pth`` (see the module docstring).

        Args:
            path: the checkpoint folder DIR.
            **kwargs: ``repo`` (the checkout), ``dtype`` (default: the config's bfloat16), ``device``, ``llm``,
                ``checkpoint``, ``config``, and the settings of :data:`TEXT_DEFAULTS` / :data:`IMAGE_DEFAULTS`.

        Raises:
            InputError: an unknown keyword or a setting that does not parse.
            LoadError: no checkout, a missing file (naming the layout expected), or a model that does not build.
        """
        from entroprobe.models.harmon_build import build_harmon, find_layout, load_weights, pick_config
        from entroprobe.models.upstream import import_from

        text = {k: kwargs.pop(k) for k in list(kwargs) if k in TEXT_DEFAULTS}
        image = {k: kwargs.pop(k) for k in list(kwargs) if k in IMAGE_DEFAULTS}
        root, rest = cls.split(kwargs, LOAD_KEYS)
        text, text_given = settings(TEXT_DEFAULTS, text, what="harmon text-gen")
        image, image_given = settings(IMAGE_DEFAULTS, image, what="harmon image-gen")
        if not path:
            raise InputError("Family 'harmon' needs the checkpoint folder: 'harmon:DIR'")
        pth, vae = find_layout(path, rest.get("checkpoint"))
        config = pick_config(root, pth, rest.get("config"))
        model, _ = build_harmon(root, cls.upstream, config, pth.parent, vae, llm=rest.get("llm"),
                                dtype=resolve_dtype(rest.get("dtype")))  # fmt: skip
        model = model.to(model.dtype)  # as the scripts: every part in the LLM's dtype
        weights = load_weights(model, pth)
        device = resolve_device(rest.get("device"))
        model.to(device)
        llm = model.llm.config
        return cls(model, import_from(root, "src.models.harmon", cls.upstream), text=text, image=image,
                   given=(text_given, image_given), weights=weights, path=str(path), root=root, device=device,
                   num_layers=llm.num_hidden_layers, d_model=llm.hidden_size, final_norm=True)  # fmt: skip

    # -- prompts -----------------------------------------------------------------------------------------------
    def _layers(self, **options: Any):
        return capture_layers(self.model.llm.model, "layers", **options)

    def _states(self, states: torch.Tensor, positions: Any, token_ids: Any = None) -> LayerStates:
        """:class:`LayerStates` of ``positions`` of captured states ``(L + 1, [1,] T, d)``."""
        return to_layer_states(states, positions, token_ids=token_ids, final_norm=self.model.llm.model.norm)

    def _image_prompt(self, image: Any, question: str | None, item: str) -> tuple[str, torch.Tensor, torch.Tensor]:
        """image2text.py's prompt: ``(templated string, ids (1, T), input embeddings (1, T, d))``."""
        import numpy as np

        size = int(self.text_settings["prompt_image_size"])
        picture = expand_to_square(load_image(image, item)).resize((size, size))
        pixels = torch.from_numpy(np.array(picture)).to(self.model.dtype).to(self.device)  # (H, W, 3)
        pixels = 2 * (pixels.permute(2, 0, 1)[None] / 255) - 1  # (1, 3, H, W) in [-1, 1]
        count = (size // 16) ** 2 + self.model.mar.buffer_size
        prompt = self._render((IMAGE_TOKEN * count) + "\n" + (question or ""))
        ids = self.tokenizer.encode(prompt, add_special_tokens=True, return_tensors="pt").to(self.device)  # (1, T)
        check_length(ids.shape[1], self.context, item)
        with torch.no_grad():
            _, z_enc = self.model.extract_visual_feature(self.model.encode(pixels))  # (1, count, d)
            embeds = z_enc.new_zeros(*ids.shape, self.d_model)
            is_image = ids == self.image_token_id
            if int(is_image.sum()) != z_enc.shape[1]:
                raise ItemError(item, f"{int(is_image.sum())} <image> tokens in the prompt for {z_enc.shape[1]} features")
            embeds[is_image] = z_enc.flatten(0, 1)
            embeds[~is_image] = self.model.llm.get_input_embeddings()(ids[~is_image])
        return prompt, ids, embeds

    def _patches(self, ids: torch.Tensor) -> torch.Tensor:
        """The image-patch positions of a prompt's ``<image>`` run: all but its last ``buffer_size``, which hold
        MAR's buffer embeddings (``extract_visual_feature`` moves them after the patches), as image generation
        measures the ``m·n`` patches without the buffer."""
        where = torch.nonzero(ids[0] == self.image_token_id).squeeze(1).cpu()
        return where[: where.numel() - int(self.model.mar.buffer_size)]

    def _render(self, content: str) -> str:
        return self.template.format(input=content)

    def _question(self, render: Any, templated: str, question: str | None, ids: torch.Tensor, item: str,
                  image: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """The prompt positions measured: the question's tokens (and ``image`` positions), see :mod:`.prompt_tokens`."""
        asked = None
        if question and question.strip():
            asked = question_positions(self.tokenizer, templated, question, ids.cpu(), item=item,
                                       start=locate(render, question))  # fmt: skip
        return prompt_selection("question", ids.shape[0], asked, image)

    # -- the four operations -----------------------------------------------------------------------------------
    def encode_text(self, text: str) -> LayerStates:
        """Layer states of every token of ``text`` (no template), from one pass of the LLM."""
        return self.encode_text_batch([text])[0]

    def encode_text_batch(self, texts: list[str]) -> list[LayerStates]:
        """:meth:`encode_text` of several texts in one pass, right-padded."""
        rows = self._text_rows(texts)
        with torch.no_grad():
            embeds = [self.model.llm.get_input_embeddings()(ids.to(self.device)) for ids in rows]
        return [self._states(states, slice(None), ids) for ids, states in
                zip(rows, embedded_passes(self.model.llm.model, embeds))]  # fmt: skip

    def encode_image(self, image: Any, instruction: str | None = None) -> LayerStates:
        """Layer states of the ``<image>`` positions of image2text.py's prompt (``instruction`` after the image)."""
        return self.encode_image_batch([image], [instruction])[0]

    def encode_image_batch(self, images: list[Any], instructions: list[str | None] | None = None,
                           ) -> list[LayerStates]:  # fmt: skip
        """:meth:`encode_image` of several image prompts in one pass, right-padded."""
        prompts = [self._image_prompt(picture, instruction, item)[1:]
                   for picture, instruction, item in self._image_prompts(images, instructions)]  # fmt: skip
        out = []
        for (ids, _), states in zip(prompts, embedded_passes(self.model.llm.model, [e[0] for _, e in prompts])):
            where = self._patches(ids)
            out.append(self._states(states, where, ids[0, where]))
        return out

    def respond_text(self, text: str | None = None, image: Any = None, *, max_new_tokens: int = 64,
                     seed: int = 0) -> Response:  # fmt: skip
        """image2text.py's answer (greedy by default) under ``seed``, then one teacher-forced pass."""
        return self.respond_text_batch([(text, image)], max_new_tokens=max_new_tokens, seeds=[seed])[0]

    def respond_text_batch(self, prompts: list[tuple[str | None, Any]], *, max_new_tokens: int = 64,
                           seeds: list[int]) -> list[Response]:  # fmt: skip
        """:meth:`respond_text` of several prompts: one ``generate`` over their embeddings, left-padded (a sampled
        answer draws from its own seed, see :mod:`entroprobe.models.hf_generate`), then one teacher-forced pass,
        right-padded; each answer and its states are those of its prompt alone."""
        from entroprobe.models.hf_generate import Asked, answer_embedded, forced_states

        asked = []
        for text, image, item in self._replies(prompts):
            if image is not None:
                templated, ids, embeds = self._image_prompt(image, text, item)
                count = int((ids == self.image_token_id).sum())
                render = lambda q, count=count: self._render(IMAGE_TOKEN * count + "\n" + q)  # noqa: E731
            else:
                ids = tokenize_checked(self.tokenizer, self._render(text) if text else text, limit=self.context,
                                       item=item).to(self.device)  # fmt: skip
                templated, render = self._render(text), self._render
                with torch.no_grad():
                    embeds = self.model.llm.get_input_embeddings()(ids)
            asked.append(Asked(text, image, item, templated, render, ids[0], embeds[0],
                               room_to_generate(ids.shape[1], max_new_tokens, self.context, item)))  # fmt: skip
        tok = self.tokenizer
        settings = {"do_sample": bool(self.text_settings["do_sample"]), "eos_token_id": tok.eos_token_id,
                    "pad_token_id": tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id}  # fmt: skip
        try:
            answers = answer_embedded(self.model.llm, asked, seeds=seeds, device=self.device, generation=settings,
                                      use_cache=True)  # fmt: skip
        except ValueError as exc:
            raise InputError(f"Harmon generation rejected the settings {self.text_settings}: {exc}") from exc
        out = []
        for a, new, states in zip(asked, answers, forced_states(self.model.llm.model, asked, answers)):
            n = a.ids.shape[0]
            patches = self._patches(a.ids[None]) if a.image is not None else None
            keep = self._question(a.render, a.templated, a.text, a.ids, a.item, patches)
            out.append(Response(
                prompt=self._states(states, keep, a.ids[keep.to(a.ids.device)]),
                response=self._states(states, torch.arange(n, n + new.shape[0]), new),
                output=tok.decode(new, skip_special_tokens=True), output_ids=new, extra={"prompt": a.templated},
            ))  # fmt: skip
        return out

    def respond_image(self, text: str, *, seed: int = 0, **generation: Any) -> Response:
        """text2image.py's image for ``text`` (one image, not its 2×2 grid) under ``seed``; states of the final
        tokens from one teacher-forced pass (see the module docstring)."""
        return self.respond_image_batch([text], seeds=[seed], **generation)[0]

    def respond_image_batch(self, texts: list[str], *, seeds: list[int], **generation: Any) -> list[Response]:
        """:meth:`respond_image` of several prompts in one ``Harmon.sample``, laid out as text2image.py lays out its
        batch (the conditional rows, then the unconditional ones, right-padded), each prompt drawing its order and
        noise from its own seed (:mod:`.harmon_sample`); then one teacher-forced pass, right-padded. Each image
        and its states are its prompt's alone."""
        from entroprobe.models.harmon_sample import per_prompt_draws

        self.require("image-gen", "text")
        if len(seeds) != len(texts):
            raise InputError(f"{len(texts)} prompts need as many seeds; got {len(seeds)}")
        values = self.for_call(IMAGE_DEFAULTS, self.image_settings, generation, what="harmon image-gen")
        if values["cfg_schedule"] not in ("constant", "linear"):
            raise InputError(f"cfg_schedule must be constant or linear; got {values['cfg_schedule']!r}")
        m = n = int(values["image_size"]) // 16
        asked, prompts, items = [], [], [prompt_item(text) for text in texts]
        for text, item in zip(texts, items):
            require_text(text, item)
            asked.append(f"Generate an image: {text}")
            cond = self.model.prepare_text_conditions(asked[-1], values["cfg_prompt"])  # [prompt, cfg_prompt]
            rows = [ids[: int(mask.sum())] for ids, mask in zip(cond["input_ids"], cond["attention_mask"])]
            check_length(rows[0].shape[0] + m * n + self.model.mar.buffer_size, self.context, item)
            prompts.append(rows)
        guided = values["cfg"] != 1.0
        rows = [p[0] for p in prompts] + ([p[1] for p in prompts] if guided else [])
        ids, mask = self._right_padded(rows)
        with per_prompt_draws(self.model, seeds, self.device), legacy_cache(self.module), \
                cuda_calls_to(self.device), final_tokens(self.model) as grabbed, torch.no_grad():  # fmt: skip
            pixels = self.model.sample(input_ids=ids, attention_mask=mask, num_iter=int(values["num_iter"]),
                                       cfg=float(values["cfg"]), cfg_schedule=values["cfg_schedule"],
                                       temperature=float(values["temperature"]), progress=False, image_shape=(m, n))
        count = len(texts)
        tokens = grabbed[-1][:count]  # (B, m, n, c): the conditional rows
        prompt_ids, prompt_mask = self._right_padded([p[0] for p in prompts])
        with self._layers() as cap, torch.no_grad():
            self.model.forward_mae_encoder(tokens, tokens.new_zeros(count, m * n), input_ids=prompt_ids,
                                           attention_mask=prompt_mask)  # fmt: skip
        states = cap.calls[0].stacked()  # (L + 1, B, T + m·n + buffer, d)
        widest = prompt_ids.shape[1]
        render = lambda q: self._render(f"Generate an image: {q}")  # noqa: E731
        from PIL import Image

        out = []
        for b, (text, item, words, (own, _)) in enumerate(zip(texts, items, asked, prompts)):
            length = own.shape[0]
            alone = torch.cat([states[:, b, :length], states[:, b, widest:]], dim=1)  # as the prompt alone has them
            keep = self._question(render, self._render(words), text, own, item)
            picture = torch.clamp(127.5 * pixels[b].float() + 128.0, 0, 255).to(torch.uint8)  # (3, H, W)
            out.append(Response(prompt=self._states(alone, keep, own[keep.to(own.device)]),
                                response=self._states(alone, torch.arange(length, length + m * n)),
                                output=Image.fromarray(picture.permute(1, 2, 0).cpu().numpy()),
                                extra={"prompt": self._render(words), "tokens": tokens[b].float().cpu(), **values}))
        return out

    def _right_padded(self, rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``rows`` of ids padded on the right with ``eos`` as ``prepare_text_conditions`` pads them: ``(ids, mask)``."""
        ids, mask = pad_right(rows, self.tokenizer.eos_token_id)
        return ids.to(self.device), mask.bool().to(self.device)

    def describe(self) -> dict[str, Any]:
        """The common description plus the checkpoint's key counts and the image-patch count of a prompt."""
        size = int(self.text_settings["prompt_image_size"])
        return {**super().describe(), "weights": self.weights,
                "prompt_image_tokens": (size // 16) ** 2, "mar_buffer_tokens": int(self.model.mar.buffer_size)}  # fmt: skip
