"""What every transformers-based adapter shares (``hf_text.py`` — any causal LM, any encoder, the bundled
MiniLM —, ``emu3.py``, ``chameleon.py`` and ``janus.py`` import it), and the base of the image-token families.

Shared pieces, in the order an adapter uses them:

- :func:`split_kwargs`: loading keywords vs generation defaults (loading itself: :mod:`.hf_loading`).
- :func:`load_image`, :func:`prompt_item`, :func:`tokenize_checked`: inputs, named in errors.
- :func:`forward_states`: one forward pass → ``(layers + 1, tokens, d_model)`` float32.
- :func:`generate_seeded`: ``generate`` drawing from one seed alone (see :mod:`.hf_generate`) → the new ids.
- :func:`teacher_forced`: ONE forward pass over prompt + response → prompt and response :class:`LayerStates`
  (every generated token, the last one too, seen as the model sees it — not generate()'s per-step outputs).
- :func:`detect_final_norm`: is ``hidden_states[-1]`` after the final norm? (checked against a layer hook).
"""

from __future__ import annotations

import inspect

import io
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from entroprobe.errors import EntroprobeError, InputError, ItemError
from entroprobe.models.base import LayerStates, ModelAdapter, Reading, Response, stack_hidden_states, tokenizer_reading
from entroprobe.models.hf_loading import (
    LOAD_KEYS,
    as_bool,
    check_length,
    fingerprint_of,
)
from entroprobe.models.hf_batch import encode_rows
from entroprobe.models.hf_generate import generate_rows, teacher_forced_rows
from entroprobe.models.hooks import LayerCapture

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

__all__ = [
    "GENERATION_KEYS",
    "split_kwargs",
    "parse_generation",
    "load_image",
    "prompt_item",
    "require_text",
    "require_prompt",
    "tokenize_checked",
    "room_to_generate",
    "chat_prompt",
    "forward_states",
    "generate_seeded",
    "teacher_forced",
    "find_decoder_layers",
    "detect_final_norm",
    "HFAdapter",
    "ImageTokenAdapter",
]

# generation defaults a family accepts at load time (`--model-args do_sample=true,temperature=0.7`)
GENERATION_KEYS: dict[str, Callable[[Any], Any]] = {
    "do_sample": lambda v: as_bool(v, "do_sample"),
    "temperature": float,
    "top_p": float,
    "top_k": int,
    "repetition_penalty": float,
    "min_new_tokens": int,
}


# -- loading -------------------------------------------------------------------------------------------------


def split_kwargs(kwargs: Mapping[str, Any], extra: tuple[str, ...] = ()) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a family's keywords into loading keywords (``LOAD_KEYS``) and the family's own ``extra`` ones.

    Raises:
        InputError: for a keyword in neither, listing the accepted ones.
    """
    unknown = sorted(set(kwargs) - set(LOAD_KEYS) - set(extra))
    if unknown:
        raise InputError(f"Unknown model argument(s) {', '.join(unknown)}; accepted: {', '.join(LOAD_KEYS + extra)}")
    load = {k: v for k, v in kwargs.items() if k in LOAD_KEYS}
    return load, {k: v for k, v in kwargs.items() if k not in LOAD_KEYS}


def parse_generation(values: Mapping[str, Any]) -> dict[str, Any]:
    """Generation defaults given as strings on the command line → typed values.

    Raises:
        InputError: naming the key and the value that does not parse.
    """
    parsed = {}
    for key, value in values.items():
        if key not in GENERATION_KEYS:
            continue
        try:
            parsed[key] = GENERATION_KEYS[key](value)
        except (TypeError, ValueError) as exc:
            raise InputError(f"Generation argument {key}={value!r} does not parse: {exc}") from None
    return parsed


# -- inputs --------------------------------------------------------------------------------------------------


def prompt_item(text: str | None = None, image: Any = None) -> str:
    """How errors name a prompt: ``"text prompt 'A red cube on…'"`` or ``"image prompt 'photo.png'"``."""
    if image is not None:
        where = f" '{image}'" if isinstance(image, (str, os.PathLike)) else ""
        return f"image prompt{where}"
    if not isinstance(text, str):
        return "text prompt"
    short = text if len(text) <= 40 else text[:40] + "…"
    return f"text prompt {short!r}"


def load_image(image: Image.Image | str | os.PathLike[str] | bytes, item: str = "image prompt") -> Image.Image:
    """A PIL image, an image file's path or its bytes → an RGB PIL image.

    Raises:
        ItemError: naming ``item`` (and the path) when the image cannot be read.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        if isinstance(image, Image.Image):
            image.load()
            return image.convert("RGB")
        if isinstance(image, (str, os.PathLike)):
            with Image.open(Path(image)) as opened:
                return opened.convert("RGB")
        if isinstance(image, (bytes, bytearray)):
            with Image.open(io.BytesIO(image)) as opened:
                return opened.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        where = f" ({image})" if isinstance(image, (str, os.PathLike)) else ""
        raise ItemError(item, f"unreadable image{where}: {exc}") from None
    raise ItemError(item, f"expected a PIL image, an image path or image bytes; got {type(image).__name__}")


def require_text(text: Any, item: str) -> str:
    """``text`` when it is a non-empty string; else :class:`ItemError` naming ``item``."""
    if not isinstance(text, str) or not text.strip():
        raise ItemError(item, f"the prompt text is empty; got {text!r}")
    return text


def require_prompt(text: Any, image: Any) -> None:
    """Refuse a response asked for with neither a text prompt nor an image (:class:`InputError`)."""
    if (not isinstance(text, str) or not text.strip()) and image is None:
        raise InputError("respond_text needs a text prompt, an image, or both; got neither")


def tokenize_checked(
    tokenizer: Any, text: str | None, *, limit: int | None, item: str, add_special_tokens: bool = True
) -> torch.Tensor:
    """Tokenize one prompt → ``(1, tokens)`` int64 ids, checked against the model's context.

    Raises:
        ItemError: when the text is empty or longer than the context ``limit``.
    """
    require_text(text, item)
    ids = tokenizer(text, add_special_tokens=add_special_tokens, return_tensors="pt")["input_ids"]  # (1, T)
    check_length(ids.shape[1], limit, item)
    return ids.long()


def room_to_generate(n_prompt: int, max_new_tokens: int, limit: int | None, item: str) -> int:
    """How many tokens may be generated after ``n_prompt`` prompt tokens: ``max_new_tokens``, capped so that
    prompt + response fit in the context.

    Raises:
        InputError: when ``max_new_tokens`` is below 1.
        ItemError: when the prompt leaves no room in the context.
    """
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be a positive integer; got {max_new_tokens!r}")
    if limit is None:
        return max_new_tokens
    if n_prompt >= limit:
        raise ItemError(item, f"{n_prompt} prompt tokens leave no room to respond in the model's context of {limit}")
    return min(max_new_tokens, limit - n_prompt)


def chat_prompt(owner: Any, text: str, *, image: bool = False, structured: bool = False,
                system: str | None = None) -> str | None:  # fmt: skip
    """The prompt in ``owner``'s (a tokenizer's or processor's) chat template with the assistant turn opened,
    or None when it has no template. ``structured`` content (``[{"type": "image"}, {"type": "text"…}]``) is what
    processors expect; tokenizers take a plain string. ``system``: a system message before the user's.
    """
    if getattr(owner, "chat_template", None) is None:
        return None
    if structured or image:
        content: Any = ([{"type": "image"}] if image else []) + [{"type": "text", "text": text}]
    else:
        content = text
    messages = [{"role": "user", "content": content}]
    if system:
        messages.insert(0, {"role": "system", "content": [{"type": "text", "text": system}] if structured or image
                            else system})  # fmt: skip
    return owner.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


# -- forward passes ------------------------------------------------------------------------------------------


def forward_states(model: Any, num_layers: int, **inputs: Any) -> torch.Tensor:
    """One forward pass with ``output_hidden_states`` → row 0's ``(layers + 1, tokens, d_model)`` float32.

    Raises:
        EntroprobeError: when the model returns no hidden states or not ``num_layers + 1`` of them.
    """
    if _takes(model, "logits_to_keep"):  # the states need no logits: only the last position's, not T × vocab
        inputs.setdefault("logits_to_keep", 1)
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True, return_dict=True)
    hidden = getattr(out, "hidden_states", None)
    if hidden is None or len(hidden) != num_layers + 1:
        got = "none" if hidden is None else len(hidden)
        raise EntroprobeError(
            f"{type(model).__name__} returned {got} hidden states; expected {num_layers + 1} (layers + embedding)"
        )
    return stack_hidden_states(hidden)  # (L + 1, T, d)


def _one_budget(budgets: list[int]) -> int:
    """The response length of a batch: its prompts must leave the same room (else done one by one)."""
    if len(set(budgets)) > 1:
        raise EntroprobeError(f"the prompts of this batch leave different room to respond ({sorted(set(budgets))} "
                              "tokens): each is generated alone")  # fmt: skip
    return budgets[0]


def _takes(model: Any, name: str) -> bool:
    """Whether ``model.forward`` has a parameter ``name``."""
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def generate_seeded(
    model: Any,
    input_ids: torch.Tensor,
    *,
    seed: int,
    max_new_tokens: int,
    generation: Mapping[str, Any] | None = None,
    **extra: Any,
) -> torch.Tensor:
    """``model.generate`` of one prompt ``(1, P)``, drawing from ``seed`` alone (see :mod:`.hf_generate`) → the
    new token ids ``(n,)``. ``generation`` holds settings (``do_sample``…), ``extra`` per-call arguments
    (``prefix_allowed_tokens_fn``…)."""
    return generate_rows(model, [input_ids[0]], seeds=[seed], max_new_tokens=max_new_tokens, device=input_ids.device,
                         generation=generation, **extra)[0].to(input_ids.device)  # fmt: skip


def teacher_forced(
    model: Any,
    prompt_ids: torch.Tensor,
    response_ids: torch.Tensor,
    *,
    num_layers: int,
    final_norm: bool,
    **extra: Any,
) -> tuple[LayerStates, LayerStates]:
    """ONE forward pass over prompt + response → (prompt states, response states).

    Args:
        prompt_ids: ``(1, P)`` prompt token ids.
        response_ids: ``(n,)`` generated token ids, all of them (the last one too).
        extra: further forward keywords for the model.

    Raises:
        EntroprobeError: when the model does not return ``num_layers + 1`` hidden states.
    """
    full = torch.cat([prompt_ids[0], response_ids.to(prompt_ids.device)])[None]  # (1, P + n)
    states = forward_states(
        model, num_layers, input_ids=full, attention_mask=torch.ones_like(full), use_cache=False, **extra
    )  # (L + 1, P + n, d)
    n_prompt = prompt_ids.shape[1]
    positions = torch.arange(full.shape[1])
    ids = full[0].cpu()
    prompt = LayerStates(states[:, :n_prompt], positions[:n_prompt], ids[:n_prompt], final_norm)
    response = LayerStates(states[:, n_prompt:], positions[n_prompt:], ids[n_prompt:], final_norm)
    return prompt, response


def find_decoder_layers(model: torch.nn.Module, num_layers: int) -> tuple[str, torch.nn.ModuleList] | None:
    """The ``ModuleList`` of ``num_layers`` layers whose name says "layers" (or "layer", "h", "blocks"), or None."""
    candidates = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.ModuleList) and len(module) == num_layers
    ]
    for suffix in ("layers", "layer", "h", "blocks"):
        for name, module in candidates:
            if name.split(".")[-1] == suffix:
                return name, module
    return candidates[0] if candidates else None


def detect_final_norm(model: Any, num_layers: int, device: torch.device, **extra: Any) -> bool | None:
    """Whether ``hidden_states[-1]`` is after the model's final norm: run two tokens, compare it with a hook
    on the last layer. None when the model has no layer list to hook (unknown; recorded as such).
    """
    found = find_decoder_layers(model, num_layers)
    if found is None:
        return None  # no layer list to compare with: unknown, and the manifest says so
    ids = torch.tensor([[1, 2]], device=device) % max(2, model.config.get_text_config().vocab_size)
    capture = LayerCapture([found[1][-1]])
    capture.attach()
    try:
        states = forward_states(model, num_layers, input_ids=ids, **extra)  # (L + 1, 2, d)
    finally:
        capture.detach()
    raw = capture.calls[0].outputs[0][0].float().to(states.device)  # (2, d), from the last layer's device
    return not torch.allclose(states[-1], raw, rtol=1e-4, atol=1e-5)


# -- adapters ------------------------------------------------------------------------------------------------


class HFAdapter(ModelAdapter):
    """What every transformers-based adapter holds: the model, where it came from, its shape and defaults.

    Attributes:
        model: the loaded transformers model (eval mode).
        path, revision: where the weights came from (for :meth:`fingerprint`).
        context: the longest sequence the model accepts (None when its config does not say).
        final_norm: whether the last layer entry is after the model's final norm.
        generation: generation defaults (``do_sample``, ``temperature``…) applied to every response.
    """

    def __init__(
        self,
        model: Any,
        *,
        path: str,
        device: torch.device,
        num_layers: int,
        d_model: int,
        final_norm: bool,
        context: int | None,
        revision: str | None = None,
        generation: Mapping[str, Any] | None = None,
    ):
        self.model = model
        self.path = path
        self.revision = revision
        self.device = device
        self.num_layers = num_layers
        self.d_model = d_model
        self.final_norm = final_norm
        self.context = context
        self.generation = dict(generation or {})
        self.name = f"{self.family}:{path}"

    def fingerprint(self) -> str:
        """sha256 over the checkpoint's weight files (local), or ``hub:ID@REVISION``."""
        return fingerprint_of(self.path, self.revision)

    def read(self, text: str) -> Reading | None:
        """The text's tokens without special tokens; unknown ones are the tokenizer's ``unk_token_id`` (none for
        a byte-level tokenizer, whose unknown token no text produces)."""
        tokenizer = getattr(self, "tokenizer", None) or getattr(getattr(self, "processor", None), "tokenizer", None)
        return None if tokenizer is None else tokenizer_reading(tokenizer, text)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "path": self.path,
            "revision": self.revision,
            "final_norm": self.final_norm,
            "context": self.context,
            "dtype": str(next(self.model.parameters()).dtype),
            "generation": dict(self.generation),
        }


class ImageTokenAdapter(HFAdapter):
    """Base of multimodal families whose processor turns an image into placeholder tokens that the model fills
    with discrete image tokens (Emu3, Chameleon). Subclasses give two things:

    - ``_text_ids(text, respond)``: a text prompt → ``(1, T)`` ids (``respond``: formatted for a reply);
    - ``_image_ids(image, instruction)``: an image prompt → ``(1, T)`` ids with the image's real token ids in
      place of the placeholders, and the ``(T,)`` boolean mask of those image positions.

    Feeding the real image token ids (rather than pixels) makes every pass — encoding, generation, the
    teacher-forced pass — see exactly the same input.
    """

    def __init__(self, model: Any, processor: Any, *, chat_template: str | bool = "auto", **common: Any):
        super().__init__(model, **common)
        self.processor = processor
        self.chat_template = chat_template

    def _text_ids(self, text: str, *, respond: bool) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _image_ids(self, image: Any, instruction: str | None) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError  # pragma: no cover - abstract

    def _text_generation(self) -> dict[str, Any]:
        """The generation settings of a text reply (a family puts its authors' defaults under the user's)."""
        return dict(self.generation)

    def _checked(self, ids: torch.Tensor, item: str) -> torch.Tensor:
        check_length(ids.shape[1], self.context, item)
        return ids.long().to(self.device)

    def encode_text(self, text: str) -> LayerStates:
        """Layer states of every token of a text prompt.

        Raises:
            ItemError: for an empty prompt or one longer than the model's context.
        """
        return self.encode_text_batch([text])[0]

    def encode_text_batch(self, texts: list[str]) -> list[LayerStates]:
        """:meth:`encode_text` of each text from one right-padded pass (see :mod:`.hf_batch`)."""
        self.require("encode", "text")
        rows = [self._text_ids(text, respond=False)[0] for text in texts]
        return encode_rows(self.model, self.num_layers, rows, self.processor.tokenizer.pad_token_id, self.device,
                           self.final_norm, use_cache=False)  # fmt: skip

    def encode_image(self, image: Any, instruction: str | None = None) -> LayerStates:
        """Layer states of the image-token positions of an image prompt (``instruction`` placed as in a reply).

        Raises:
            ItemError: for an unreadable image, or a prompt longer than the model's context.
        """
        return self.encode_image_batch([image], [instruction])[0]

    def encode_image_batch(self, images: list[Any], instructions: list[str | None] | None = None,
                           ) -> list[LayerStates]:  # fmt: skip
        """:meth:`encode_image` of each image from one right-padded pass: the image tokens are ids."""
        self.require("encode", "image")
        built = [self._image_ids(image, instruction)  # (1, T), (T,) each
                 for image, instruction in zip(images, instructions or [None] * len(images))]  # fmt: skip
        rows = encode_rows(self.model, self.num_layers, [ids[0] for ids, _ in built],
                           self.processor.tokenizer.pad_token_id, self.device, self.final_norm, use_cache=False)  # fmt: skip
        return [row.select(mask.cpu()) for row, (_, mask) in zip(rows, built)]

    def respond_text(
        self, text: str | None = None, image: Any = None, *, max_new_tokens: int = 64, seed: int = 0
    ) -> Response:
        """Generate (seeded) a text reply to a text prompt or to an image (+ ``text`` instruction); states from
        one teacher-forced pass over prompt + reply. ``extra["image_mask"]`` marks the measured prompt tokens that
        are the image's.

        Raises:
            ItemError: for an unreadable image, an empty text prompt, or no room left in the context.
        """
        return self.respond_text_batch([(text, image)], max_new_tokens=max_new_tokens, seeds=[seed])[0]

    def respond_text_batch(self, prompts: list[tuple[str | None, Any]], *, max_new_tokens: int = 64,
                           seeds: list[int]) -> list[Response]:  # fmt: skip
        """:meth:`respond_text` of several prompts: one left-padded ``generate``, one right-padded pass."""
        built = []
        for text, image in prompts:
            self.require("text-gen", "image" if image is not None else "text")
            if image is not None:
                ids, mask = self._image_ids(image, text)
            else:
                ids = self._text_ids(text, respond=True)  # type: ignore[arg-type]
                mask = torch.zeros(ids.shape[1], dtype=torch.bool)
            built.append((ids[0], mask.cpu(), room_to_generate(ids.shape[1], max_new_tokens, self.context,
                                                               prompt_item(text, image))))  # fmt: skip
        budget = _one_budget([b for _, _, b in built])
        rows = [ids for ids, _, _ in built]
        news = generate_rows(self.model, rows, seeds=seeds, max_new_tokens=budget, device=self.device,
                             generation=self._text_generation())  # fmt: skip
        pairs = teacher_forced_rows(self.model, rows, news, num_layers=self.num_layers, final_norm=self.final_norm,
                                    device=self.device)  # fmt: skip
        out = []
        for (text, image), (ids, mask, _), new, (prompt, response) in zip(prompts, built, news, pairs):
            keep = self._measured_reply(text, image is not None, ids.cpu(), mask)
            output = self.processor.tokenizer.decode(new, skip_special_tokens=True)
            out.append(Response(prompt.select(keep), response, output, new, extra={"image_mask": mask[keep]}))
        return out

    def _measured_reply(self, text: str | None, with_image: bool, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The prompt positions a reply measures: every one (a family with ``prompt_tokens`` narrows them)."""
        return torch.arange(ids.shape[0])
