"""Adapters of the built-in micro models: ``micro-ar`` and ``micro-mask`` (see :mod:`.model`).

Sequences the adapters build (``W`` = the prompt's words, ``c`` = image codes):

- text prompt, encoded: ``<bos> W``; states of ``W``;
- image prompt, encoded: ``<bos> <boi> c_0 … c_63 <eoi> [instruction] <ans>``; states of the 64 codes;
- text response: the prompt above (``<bos> W <ans>`` for text) followed by the generated words; the response
  states are those of every generated token (its closing ``<eos>`` included) in one teacher-forced pass over
  prompt + response. With causal attention over text, these equal the states seen while generating;
- image response: ``<bos> W <boi> c_0 … c_63 <eoi>`` — one teacher-forced pass over the prompt and the final
  codes, the response states being the 64 codes'. For micro-ar this matches what each code saw when it was
  drawn. For micro-mask the codes were drawn over ``steps`` masked passes (8 by default); the response states
  come from one extra pass after the last, with nothing masked, in which the 64 codes see each other.

The prompt's ``<bos>`` and the ``<ans>``/``<boi>`` separators are not part of any measured token set. Any text
works: unknown words become ``<unk>``; any RGB image works: it is resized to 32×32 (box filter). Prompts longer
than the context (384 positions with the response) raise :class:`~entroprobe.errors.InputError`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from entroprobe.errors import InputError, LoadError
from entroprobe.models.base import (
    LayerStates,
    ModelAdapter,
    Reading,
    Response,
    resolve_device,
    resolve_dtype,
    weights_fingerprint,
)
from entroprobe.models.micro import sampling
from entroprobe.models.micro.train import Micro, load_checkpoint, weights_path

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

__all__ = ["MicroARAdapter", "MicroMaskAdapter"]

_ALL = frozenset(
    {("encode", "text"), ("encode", "image"), ("text-gen", "text"), ("text-gen", "image"), ("image-gen", "text")}
)


class _MicroAdapter(ModelAdapter):
    """What both variants share; a subclass names its family and how it draws images."""

    capabilities = _ALL
    temperature: ClassVar[float] = 1.0  # default sampling temperature of text and image responses

    def __init__(self, micro: Micro, device: torch.device):
        self.micro = micro
        self.model = micro.model
        self.vocab = micro.vocab
        self.codebook = micro.codebook
        self.name = self.family
        self.num_layers = micro.model.config.n_layer
        self.d_model = micro.model.config.n_embd
        self.device = device

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, **kwargs: Any) -> ModelAdapter:
        """Load the shipped weights (``path=None``), a checkpoint file, or a directory holding ``<family>.pt``.

        Args:
            path: see above.
            device: ``"cpu"``, ``"cuda"``… (default: CUDA when available).
            dtype: only float32 (``None``/``"auto"``/``"float32"``): the weights are stored in fp16 and run
                in float32.

        Raises:
            LoadError: the weights are missing or unreadable, or belong to the other variant.
            InputError: an unsupported keyword or dtype.
        """
        device = resolve_device(kwargs.pop("device", None))
        dtype = resolve_dtype(kwargs.pop("dtype", None))
        if kwargs:
            raise InputError(
                f"{cls.family} accepts the loading keywords device and dtype; got {', '.join(sorted(kwargs))}"
            )
        if dtype not in (None, torch.float32):
            raise InputError(f"{cls.family} runs in float32; got dtype {dtype}")
        file = weights_path(cls.family) if path is None else Path(path)
        if file.is_dir():
            file = file / f"{cls.family}.pt"
        micro = load_checkpoint(file, device)
        if micro.variant != cls.family:
            raise LoadError(f"'{file}' holds {micro.variant} weights; {cls.family} expected")
        return cls(micro, device)

    # -- inputs ----------------------------------------------------------------------------------------
    def _words(self, text: str | None, what: str) -> list[int]:
        if not isinstance(text, str):
            raise InputError(f"{what} must be a string; got {type(text).__name__}")
        ids = self.vocab.encode(text)
        if not ids:
            raise InputError(f"{what} has no words to encode: {text!r}")
        return ids

    def _codes(self, image: Image.Image) -> list[int]:
        from PIL import Image

        if not isinstance(image, Image.Image):
            raise InputError(f"image must be a PIL.Image.Image; got {type(image).__name__}")
        size = self.codebook.image_size
        small = image.convert("RGB").resize((size, size), Image.Resampling.BOX)
        pixels = torch.from_numpy(np.asarray(small, dtype=np.uint8).copy())[None]  # (1, H, W, 3)
        return (self.codebook.encode(pixels)[0] + self.vocab.code_offset).tolist()

    def _image_prompt(self, image: Image.Image, instruction: str | None) -> tuple[list[int], slice]:
        """``<bos> <boi> codes <eoi> [instruction] <ans>`` and where the codes are."""
        v = self.vocab
        words = v.encode(instruction) if instruction else []
        codes = self._codes(image)
        return [v.bos, v.boi, *codes, v.eoi, *words, v.ans], slice(2, 2 + len(codes))

    def _check_length(self, n: int, room: int = 0) -> None:
        limit = self.model.config.block_size - room
        if n > limit:
            raise InputError(
                f"Prompt too long for {self.family}: {n} tokens, at most {limit} fit with a {room}-token response"
            )

    def _states(self, seqs: list[list[int]], wheres: list[tuple[slice, ...]]) -> list[list[LayerStates]]:
        """ONE pass over the sequences (left-padded into one batch); per sequence, the states at each slice."""
        idx, pad = sampling.left_pad(seqs, sampling.PAD, self.device)
        hidden = self.model.hidden_states(idx, pad).float()  # (L + 1, B, T, C)
        out = []
        for row, (ids, where) in enumerate(zip(seqs, wheres)):
            shift, positions, tokens = int(pad[row]), torch.arange(len(ids)), torch.tensor(ids)
            out.append([LayerStates(states=hidden[:, row, shift + w.start : shift + w.stop], positions=positions[w],
                                    token_ids=tokens[w]) for w in where])  # fmt: skip
        return out

    @staticmethod
    def _generators(seeds: list[int]) -> list[torch.Generator]:
        """One CPU generator per prompt: what a prompt draws does not depend on its batch."""
        return [torch.Generator().manual_seed(int(seed)) for seed in seeds]

    # -- the four operations, one prompt at a time or a batch of prompts at once ------------------------------
    def encode_text(self, text: str) -> LayerStates:
        """States of the text's words (``<bos>`` excluded). Unknown words are ``<unk>`` tokens."""
        return self.encode_text_batch([text])[0]

    def encode_text_batch(self, texts: list[str]) -> list[LayerStates]:
        self.require("encode", "text")
        seqs = [[self.vocab.bos, *self._words(text, "text")] for text in texts]
        for ids in seqs:
            self._check_length(len(ids))
        return [states[0] for states in self._states(seqs, [(slice(1, len(ids)),) for ids in seqs])]

    def encode_image(self, image: Image.Image, instruction: str | None = None) -> LayerStates:
        """States of the 64 image codes. The instruction follows the image, so it cannot change them."""
        return self.encode_image_batch([image], [instruction])[0]

    def encode_image_batch(self, images: list[Image.Image], instructions: list[str | None] | None = None):
        self.require("encode", "image")
        built = [self._image_prompt(image, text) for image, text in zip(images, instructions or [None] * len(images))]
        for ids, _ in built:
            self._check_length(len(ids))
        return [states[0] for states in self._states([ids for ids, _ in built], [(codes,) for _, codes in built])]

    def respond_text(
        self,
        text: str | None = None,
        image: Image.Image | None = None,
        *,
        max_new_tokens: int = 64,
        seed: int = 0,
        temperature: float | None = None,
    ) -> Response:
        """Answer a text prompt, or an image with an optional instruction ``text``, in words.

        Args:
            text: the prompt, or the instruction that goes with ``image``.
            image: an image prompt.
            max_new_tokens: most tokens to generate (the closing ``<eos>`` counts).
            seed: seeds the sampling.
            temperature: sampling temperature (0 = greedy); default :attr:`temperature`.

        Raises:
            InputError: neither text nor image, ``max_new_tokens`` below 1, or a prompt too long.
        """
        return self.respond_text_batch([(text, image)], max_new_tokens=max_new_tokens, seeds=[seed],
                                       temperature=temperature)[0]  # fmt: skip

    def respond_text_batch(self, prompts: list[tuple[str | None, Image.Image | None]], *, max_new_tokens: int = 64,
                           seeds: list[int], temperature: float | None = None) -> list[Response]:  # fmt: skip
        """:meth:`respond_text` for several ``(text, image)`` prompts at once, prompt ``i`` seeded by ``seeds[i]``."""
        for text, image in prompts:
            self.require("text-gen", "image" if image is not None else "text")
        if max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be at least 1; got {max_new_tokens}")
        built = []
        for text, image in prompts:
            if image is not None:
                ids, prompt = self._image_prompt(image, text)
            elif text is None:
                raise InputError("respond_text needs a text prompt, an image, or both; got neither")
            else:
                words = self._words(text, "text")
                ids, prompt = [self.vocab.bos, *words, self.vocab.ans], slice(1, 1 + len(words))
            self._check_length(len(ids), max_new_tokens)
            built.append((ids, prompt))
        temperature = self.temperature if temperature is None else temperature
        outs = sampling.generate_text(self.model, [ids for ids, _ in built], max_new_tokens, temperature,
                                      self._generators(seeds))  # fmt: skip
        seqs = [ids + out for (ids, _), out in zip(built, outs)]
        wheres = [(prompt, slice(len(ids), len(ids) + len(out))) for (ids, prompt), out in zip(built, outs)]
        return [
            Response(prompt=p, response=r, output=self.vocab.decode(out), output_ids=torch.tensor(out),
                     extra={"temperature": temperature, "ended": "eos" if out[-1] == self.vocab.eos else "length"})
            for (p, r), out in zip(self._states(seqs, wheres), outs)
        ]  # fmt: skip

    def respond_image(self, text: str, *, seed: int = 0, **generation: Any) -> Response:
        """Draw a 32×32 picture for ``text``; the response states are the 64 codes' (see the module docstring).

        Args:
            text: the prompt.
            seed: seeds the sampling.
            **generation: ``temperature`` (default :attr:`temperature`; 0 = greedy) and, for micro-mask,
                ``steps`` (masked decoding passes, default 8).

        Raises:
            InputError: an empty or too long prompt, or an unknown generation keyword.
        """
        return self.respond_image_batch([text], seeds=[seed], **generation)[0]

    def respond_image_batch(self, texts: list[str], *, seeds: list[int], **generation: Any) -> list[Response]:
        """:meth:`respond_image` for several prompts at once, prompt ``i`` seeded by ``seeds[i]``."""
        from PIL import Image

        self.require("image-gen", "text")
        temperature = generation.pop("temperature", self.temperature)
        options = self._image_options(generation)
        v, n = self.vocab, self.model.config.image_tokens
        prompts = [[v.bos, *self._words(text, "text")] for text in texts]
        for ids in prompts:
            self._check_length(len(ids), n + 2)
        codes = self._draw(prompts, temperature, self._generators(seeds), **options)  # (B, n)
        seqs = [ids + [v.boi, *row.tolist(), v.eoi] for ids, row in zip(prompts, codes)]
        wheres = [(slice(1, len(ids)), slice(len(ids) + 1, len(ids) + 1 + n)) for ids in prompts]
        pictures = self.codebook.decode((codes - v.code_offset).cpu()).numpy()  # (B, H, W, 3) uint8
        return [
            Response(prompt=p, response=r, output=Image.fromarray(picture), output_ids=row.cpu(),
                     extra={"temperature": temperature, **options, "response_pass": self._response_pass})
            for (p, r), picture, row in zip(self._states(seqs, wheres), pictures, codes)
        ]  # fmt: skip

    # -- what the variants fill in ---------------------------------------------------------------------
    _response_pass: ClassVar[str] = ""

    def _image_options(self, generation: dict[str, Any]) -> dict[str, Any]:
        if generation:
            raise InputError(f"{self.family} image generation takes temperature; got {', '.join(generation)}")
        return {}

    def _draw(self, prompts: list[list[int]], temperature: float, generators: list[torch.Generator],
              **options: Any) -> torch.Tensor:  # fmt: skip
        raise NotImplementedError

    def read(self, text: str) -> Reading | None:
        """The text's words and punctuation; those outside the vocabulary are ``<unk>``."""
        if not isinstance(text, str):
            return None
        from entroprobe.models.micro.world import tokenize

        words = tokenize(text)
        unknown = [w for w in words if w not in self.vocab.stoi]
        return Reading(tokens=len(words), unknown=len(unknown), unknown_words=tuple(dict.fromkeys(unknown)))

    # -- provenance ------------------------------------------------------------------------------------
    def fingerprint(self) -> str:
        """sha256 (16 hex digits) of the checkpoint file."""
        return weights_fingerprint(self.micro.path)

    def describe(self) -> dict[str, Any]:
        cfg = self.model.config
        train = self.micro.meta.get("train", {})
        return {
            **super().describe(),
            "weights": str(self.micro.path),
            "parameters": self.model.num_params(),
            "vocab_size": cfg.vocab_size,
            "words": len(self.vocab.words),
            "image_codes": self.codebook.num_codes,
            "image_size": self.codebook.image_size,
            "image_tokens": cfg.image_tokens,
            "bidirectional_image": cfg.bidirectional_image,
            "temperature": self.temperature,
            "response_pass": self._response_pass,
            "train_seed": train.get("seed"),
            "train_steps": train.get("steps"),
        }


class MicroARAdapter(_MicroAdapter):
    """``micro-ar``: image codes drawn one at a time by next-token prediction (Janus-like)."""

    family = "micro-ar"
    _response_pass = "teacher-forced pass over prompt + final codes (causal: what each code saw when drawn)"

    def _draw(self, prompts, temperature, generators, **options):
        return sampling.generate_image_ar(self.model, prompts, temperature, generators)


class MicroMaskAdapter(_MicroAdapter):
    """``micro-mask``: image codes drawn by iterative masked prediction (MaskGIT/Harmon-like)."""

    family = "micro-mask"
    _response_pass = "one extra pass over prompt + final codes, nothing masked, after the decoding passes"

    def _image_options(self, generation: dict[str, Any]) -> dict[str, Any]:
        steps = generation.pop("steps", 8)
        if generation:
            raise InputError(f"{self.family} image generation takes temperature and steps; got {', '.join(generation)}")
        if not isinstance(steps, int) or steps < 1:
            raise InputError(f"steps must be a positive integer; got {steps!r}")
        return {"steps": steps}

    def _draw(self, prompts, temperature, generators, **options):
        return sampling.generate_image_mask(self.model, prompts, options["steps"], temperature, generators)
