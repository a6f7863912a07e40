"""What a prompt source yields: :class:`Prompt`, one record per text or image prompt."""

from __future__ import annotations

import functools
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from entroprobe.errors import ItemError

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

__all__ = ["Prompt", "TEXT_TYPES", "IMAGE_TYPES"]

# The paper's prompt types: four text types (T2I-CoReBench) and six image types (MMBench).
TEXT_TYPES = ("composition", "deductive", "inductive", "abductive")
IMAGE_TYPES = ("coarse", "single-instance", "cross-instance", "attribute", "relation", "logical")


@dataclass(frozen=True)
class Prompt:
    """One prompt.

    Attributes:
        id: unique within its source (e.g. ``"C-MI/0001"``, ``"mmbench/42"``).
        source: the source's registered name (``"t2i-corebench"``, ``"mmbench"``, ``"samples"``, …).
        modality: ``"text"`` or ``"image"``.
        prompt_type: one of TEXT_TYPES / IMAGE_TYPES for the paper's benchmarks; free-form elsewhere.
        text: the prompt text; for an image prompt, the instruction or question that goes with it (may be None).
        image_bytes: the encoded image (PNG/JPEG…) of an image prompt, decoded lazily by :meth:`load_image`.
        image_path: alternatively, where the image file is.
        meta: extra string fields kept for the report (sub-class, category, length bucket, file…).
        image_error: why the image cannot be had, found while loading the source (a dangling reference, bad
            base64); :meth:`load_image` raises it as this prompt's :class:`ItemError`, so the run records it.
    """

    id: str
    source: str
    modality: str
    prompt_type: str
    text: str | None = None
    image_bytes: bytes | None = field(default=None, repr=False)
    image_path: str | None = None
    meta: dict[str, str | int | float | bool] = field(default_factory=dict)
    image_error: str | None = None

    @functools.cached_property
    def content_hash(self) -> str:
        """A hash of what the model sees of this prompt: its text and its image's bytes (16 hex digits)."""
        digest = hashlib.sha256(b"text\0" + (self.text or "").encode("utf-8") + b"\0image\0")
        if self.image_bytes is not None:
            digest.update(self.image_bytes)
        elif self.image_path is not None:
            try:
                digest.update(Path(self.image_path).read_bytes())
            except OSError as exc:  # the run records the unreadable image as this prompt's error
                digest.update(f"unreadable: {exc}".encode())
        elif self.image_error is not None:
            digest.update(self.image_error.encode())
        return digest.hexdigest()[:16]

    def load_image(self) -> Image.Image:
        """Decode the image as RGB; an unreadable image raises :class:`ItemError` naming this prompt."""
        from PIL import Image, UnidentifiedImageError

        if self.image_error is not None:
            raise ItemError(self.id, self.image_error)
        if self.image_bytes is None and self.image_path is None:
            raise ItemError(self.id, "has no image")
        try:
            stream = io.BytesIO(self.image_bytes) if self.image_bytes is not None else Path(self.image_path).open("rb")
            with stream, Image.open(stream) as image:
                return image.convert("RGB")
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            where = f" ({self.image_path})" if self.image_path else ""
            raise ItemError(self.id, f"unreadable image{where}: {exc}") from None
