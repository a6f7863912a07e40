"""The adapter contract: what every model family gives entroprobe, and the one layout of layer states.

Layer states (documented once, here)
------------------------------------
``LayerStates.states`` has shape ``(layers + 1, tokens, d_model)``, float32, on the model's device (on the CPU
when a pass's states are larger than the run's ``--state-memory``, see :mod:`.placement`):

- entry 0 is the embedding output (what the first decoder/encoder layer receives);
- entry ``i`` is the output of layer ``i``;
- the last entry is the last layer's output, after the model's final norm when ``final_norm`` is True
  (Llama-style decoders in transformers apply the final norm to ``hidden_states[-1]``), before it otherwise.

``positions`` are the indices of these tokens in the sequence the model saw, ``token_ids`` their ids
(``None`` for continuous inputs). An adapter returns only the tokens a measurement is about: the prompt's
tokens, the image-token positions of an image prompt, or the generated tokens of a response.

Capabilities
------------
A capability is a pair ``(task, prompt modality)``:

- ``("encode", "text")``, ``("encode", "image")``: encode a prompt;
- ``("text-gen", "text")``, ``("text-gen", "image")``: respond in text to a text or image prompt;
- ``("image-gen", "text")``: respond with an image to a text prompt.

Asking an adapter for one it lacks raises :class:`~entroprobe.errors.CapabilityError` naming both.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from entroprobe.errors import CapabilityError, InputError

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

__all__ = [
    "TASKS",
    "MODALITIES",
    "Capability",
    "LayerStates",
    "Response",
    "Reading",
    "ModelAdapter",
    "resolve_dtype",
    "resolve_device",
    "stack_hidden_states",
    "weights_fingerprint",
    "seeded",
    "tokenizer_reading",
]

TASKS = ("encode", "text-gen", "image-gen")
MODALITIES = ("text", "image")
Capability = tuple[str, str]  # (task, prompt modality)


@dataclass(frozen=True)
class LayerStates:
    """Hidden states of one sequence's selected tokens, at every layer. See the module docstring."""

    states: torch.Tensor  # (layers + 1, tokens, d_model) float32
    positions: torch.Tensor  # (tokens,) int64
    token_ids: torch.Tensor | None = None  # (tokens,) int64, None for continuous inputs
    final_norm: bool | None = False  # is states[-1] after the model's final norm? (None: the adapter cannot tell)

    def __post_init__(self) -> None:
        if self.states.dim() != 3:
            raise InputError(
                f"LayerStates.states must be (layers + 1, tokens, d_model); got shape {tuple(self.states.shape)}"
            )
        n = self.states.shape[1]
        if self.positions.shape != (n,):
            raise InputError(f"LayerStates.positions must have shape ({n},); got {tuple(self.positions.shape)}")
        if self.token_ids is not None and self.token_ids.shape != (n,):
            raise InputError(f"LayerStates.token_ids must have shape ({n},); got {tuple(self.token_ids.shape)}")

    @property
    def num_layers(self) -> int:
        """Number of layers, not counting the embedding output (``states.shape[0] - 1``)."""
        return self.states.shape[0] - 1

    @property
    def num_tokens(self) -> int:
        return self.states.shape[1]

    @property
    def d_model(self) -> int:
        return self.states.shape[2]

    def select(self, index: torch.Tensor | slice) -> LayerStates:
        """The same states restricted to some tokens (a boolean mask, index tensor or slice over tokens)."""
        return LayerStates(
            states=self.states[:, index],
            positions=self.positions[index],
            token_ids=None if self.token_ids is None else self.token_ids[index],
            final_norm=self.final_norm,
        )


@dataclass
class Response:
    """A model's response to one prompt, with the states of both sides from one teacher-forced pass.

    ``prompt`` holds the prompt tokens' states and ``response`` the generated tokens' states, both taken from a
    single forward pass over prompt + response (every generated token seen as the model sees it). ``output`` is
    the generated text (``str``) or image (``PIL.Image.Image``); ``output_ids`` the generated token ids.
    """

    prompt: LayerStates
    response: LayerStates
    output: Any
    output_ids: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reading:
    """How a model reads a text: its tokens, how many of them are the model's unknown token, and which words
    became unknown (when the tokenizer can say; empty otherwise)."""

    tokens: int
    unknown: int
    unknown_words: tuple[str, ...] = ()


class ModelAdapter:
    """Base class of every model family's adapter.

    Subclasses set ``family`` and ``capabilities`` and override the methods matching their capabilities.
    They are built by ``load(path, **kwargs)``; the constructor is theirs to define.

    Instance attributes every adapter sets: ``name`` (the spec it was loaded from), ``num_layers``,
    ``d_model``, ``device``.
    """

    family: ClassVar[str] = ""
    capabilities: frozenset[Capability] = frozenset()
    name: str
    num_layers: int
    d_model: int
    device: torch.device

    @classmethod
    def load(cls, path: str | None = None, **kwargs: Any) -> ModelAdapter:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- capabilities ----------------------------------------------------------------------------------
    def can(self, task: str, modality: str) -> bool:
        return (task, modality) in self.capabilities

    def require(self, task: str, modality: str) -> None:
        """Raise :class:`CapabilityError` unless this model can do ``task`` on ``modality`` prompts."""
        if not self.can(task, modality):
            have = ", ".join(f"{t}/{m}" for t, m in sorted(self.capabilities)) or "nothing"
            raise CapabilityError(
                f"Model '{getattr(self, 'name', self.family)}' ({self.family}) cannot do {task} on {modality} "
                f"prompts; it can do: {have}"
            )

    def layers_for(self, task: str) -> int:
        """The layer count of the network whose states ``task`` returns: ``num_layers``, unless the family measures
        that task in another network (OmniGen2 draws with a diffusion transformer beside its MLLM)."""
        return self.num_layers

    # -- the four operations -----------------------------------------------------------------------------
    def encode_text(self, text: str) -> LayerStates:
        """Layer states of a text prompt's tokens."""
        self.require("encode", "text")
        raise NotImplementedError

    def encode_image(self, image: Image.Image, instruction: str | None = None) -> LayerStates:
        """Layer states of an image prompt's image-token positions only (``instruction`` is context)."""
        self.require("encode", "image")
        raise NotImplementedError

    def respond_text(
        self,
        text: str | None = None,
        image: Image.Image | None = None,
        *,
        max_new_tokens: int = 64,
        seed: int = 0,
    ) -> Response:
        """Generate a text response to a text prompt, or to an image with an optional instruction ``text``."""
        self.require("text-gen", "image" if image is not None else "text")
        raise NotImplementedError

    def respond_image(self, text: str, *, seed: int = 0, **generation: Any) -> Response:
        """Generate an image for a text prompt; ``response`` holds the generated image tokens' states."""
        self.require("image-gen", "text")
        raise NotImplementedError

    # -- batches: several prompts per forward pass (a family overrides these; here, one prompt at a time) ------
    def encode_text_batch(self, texts: list[str]) -> list[LayerStates]:
        """:meth:`encode_text` of each text; a family that pads a batch returns the same states (float tolerance)."""
        return [self.encode_text(text) for text in texts]

    def encode_image_batch(self, images: list[Image.Image], instructions: list[str | None] | None = None,
                           ) -> list[LayerStates]:  # fmt: skip
        """:meth:`encode_image` of each image."""
        return [self.encode_image(image, text) for image, text in zip(images, instructions or [None] * len(images))]

    def respond_text_batch(self, prompts: list[tuple[str | None, Image.Image | None]], *, max_new_tokens: int = 64,
                           seeds: list[int]) -> list[Response]:  # fmt: skip
        """:meth:`respond_text` of each ``(text, image)`` prompt, prompt ``i`` seeded by ``seeds[i]``: what a
        prompt draws must not depend on the batch it is in."""
        return [self.respond_text(text, image, max_new_tokens=max_new_tokens, seed=seed)
                for (text, image), seed in zip(prompts, seeds)]  # fmt: skip

    def respond_image_batch(self, texts: list[str], *, seeds: list[int], **generation: Any) -> list[Response]:
        """:meth:`respond_image` of each text, text ``i`` seeded by ``seeds[i]``."""
        return [self.respond_image(text, seed=seed, **generation) for text, seed in zip(texts, seeds)]

    def read(self, text: str) -> Reading | None:
        """How the model's tokenizer reads ``text`` (prompt text only, no template or special tokens), or None
        when the adapter cannot say. A run reports the share of unknown tokens over its prompts."""
        return None

    # -- provenance ------------------------------------------------------------------------------------
    def fingerprint(self) -> str:
        """A short hash identifying the weights (recorded in a run's manifest)."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What a manifest records about this model."""
        return {
            "family": self.family,
            "name": getattr(self, "name", None),
            "num_layers": getattr(self, "num_layers", None),
            "d_model": getattr(self, "d_model", None),
            "device": str(getattr(self, "device", "")),
            "capabilities": sorted(f"{t}/{m}" for t, m in self.capabilities),
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={getattr(self, 'name', None)!r})"


# -- helpers shared by the families ------------------------------------------------------------------------

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float64": torch.float64, "fp64": torch.float64,
}  # fmt: skip


def tokenizer_reading(tokenizer: Any, text: str, unknown_id: int | None | str = "unk") -> Reading | None:
    """How ``tokenizer`` reads ``text``: its tokens without special tokens, and how many are the unknown token
    (``unknown_id``: the tokenizer's ``unk_token_id`` by default; None where no text produces it, as in a
    byte-level tokenizer). None for a text that is not a string."""
    if not isinstance(text, str):
        return None
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    unk = getattr(tokenizer, "unk_token_id", None) if unknown_id == "unk" else unknown_id
    return Reading(tokens=len(ids), unknown=0 if unk is None else sum(i == unk for i in ids))


def resolve_dtype(value: str | torch.dtype | None) -> torch.dtype | None:
    """``"bf16"``, ``"bfloat16"``, ``torch.bfloat16``… → a torch dtype; ``None``/``"auto"`` → ``None``."""
    if value is None or isinstance(value, torch.dtype):
        return value
    key = str(value).lower().removeprefix("torch.")
    if key == "auto":
        return None
    if key not in _DTYPES:
        raise InputError(f"Unknown dtype '{value}'; expected one of {', '.join(sorted(_DTYPES))} or 'auto'")
    return _DTYPES[key]


def resolve_device(value: str | torch.device | None) -> torch.device:
    """``None``/``"auto"`` → CUDA when available, else CPU; anything else as torch reads it."""
    if value is None or str(value) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(value)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"Unknown device '{value}': {exc}") from None


def stack_hidden_states(
    hidden_states: tuple[torch.Tensor, ...] | list[torch.Tensor],
    batch_index: int = 0,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """transformers' ``output_hidden_states`` tuple → ``(layers + 1, tokens, d_model)`` float32 of one row.

    With ``device_map`` spreading a model over several GPUs each layer's state lives on its layer's device;
    every state is moved to one device before stacking.

    Args:
        hidden_states: ``layers + 1`` tensors of ``(batch, tokens, d_model)``.
        batch_index: the row to keep.
        device: where the result lives; None: the first state's device.
    """
    from entroprobe.models.placement import stack_layers

    return stack_layers(hidden_states, batch_index, device)  # (L + 1, T, d), on the CPU when large (placement)


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
_CHUNK = 1 << 20


def weights_fingerprint(path: str | os.PathLike[str]) -> str:
    """A sha256 (16 hex digits) over a checkpoint's weight files: their names, sizes, first and last MiB.

    Reading whole multi-GB checkpoints would take minutes; names, sizes and both ends change whenever the
    weights do in practice. ``path`` may be a file or a directory.
    """
    root = Path(path)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.suffix in _WEIGHT_SUFFIXES)
    digest = hashlib.sha256()
    for file in files:
        size = file.stat().st_size
        digest.update(f"{file.name}:{size}".encode())
        with open(file, "rb") as handle:
            digest.update(handle.read(_CHUNK))
            if size > 2 * _CHUNK:
                handle.seek(-_CHUNK, os.SEEK_END)
                digest.update(handle.read(_CHUNK))
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | None = None) -> Iterator[torch.Generator]:
    """Seed torch's global RNGs inside the block without disturbing the caller's RNG state afterwards.

    Yields a ``torch.Generator`` seeded with ``seed`` on ``device`` for code that takes one.
    """
    devices = [device] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield torch.Generator(device=device or "cpu").manual_seed(seed)
