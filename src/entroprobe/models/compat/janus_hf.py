"""Compatibility shim for transformers' own Janus (see :mod:`entroprobe.models.compat`).

- :func:`janus_text_generate` — transformers' ``JanusForConditionalGeneration.generate`` (5.x), in text mode,
  hands on to ``GenerationMixin.generate`` without the ``logits_processor`` it was given, so per-prompt sampling
  (:mod:`.hf_generate`) would be silently dropped. This calls ``GenerationMixin.generate`` the way that text
  branch does (``guidance_scale=None``: no classifier-free guidance for text), with the processors kept.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

__all__ = ["janus_text_generate"]


def janus_text_generate(model: Any) -> Callable[..., Any]:
    """``generate`` for a Janus model's text answers that keeps ``logits_processor`` (see the module docstring)."""
    from transformers import GenerationMixin

    return functools.partial(GenerationMixin.generate, model, guidance_scale=None)
