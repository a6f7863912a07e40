"""Generation defaults as each model's authors run it: one table per family, each value with where it comes from.

A family module declares its table once, e.g. Janus-Pro's image generation::

    IMAGE = {
        "guidance_scale": Default(5.0, "generation_inference.py: cfg_weight=5"),
        "top_k": Default(0, "generation_inference.py samples the full softmax (transformers would keep 50)"),
    }

:func:`settle` merges a table with what the user gave (``--model-args``, keywords of a call) and returns the
values to use and a record for ``manifest.json``: every key with its value and its source, the user's overrides
marked as such, with the default they replaced.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Default", "settle", "record", "PROMPT_TOKENS", "prompt_tokens_choice"]

OVERRIDE = "--model-args"  # the source a user's value is recorded with


@dataclass(frozen=True)
class Default:
    """One default and where it comes from (the authors' script, file and argument)."""

    value: Any
    source: str


def settle(defaults: Mapping[str, Default], given: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(values, record)``: the defaults with ``given`` over them, and what the manifest records of them.

    Keys in ``given`` that the table lacks are kept too (a GenerationConfig field the authors left alone).
    """
    values = {key: default.value for key, default in defaults.items()}
    values.update(given)
    return values, record(defaults, given)


def record(defaults: Mapping[str, Default], given: Mapping[str, Any]) -> dict[str, Any]:
    """``{key: {"value", "source"[, "default"]}}`` for every key of ``defaults`` and ``given``."""
    out: dict[str, Any] = {}
    for key, default in defaults.items():
        out[key] = {"value": default.value, "source": default.source}
    for key, value in given.items():
        entry = {"value": value, "source": OVERRIDE}
        if key in defaults:
            entry["default"] = defaults[key].value
        out[key] = entry
    return {key: _jsonable(entry) for key, entry in out.items()}


def _jsonable(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v if isinstance(v, (str, int, float, bool, type(None))) else str(v) for k, v in entry.items()}


# which prompt tokens the response level measures (S(X), S(X, Y), S(Y|X)) when a chat template wraps the prompt
PROMPT_TOKENS = ("question", "template")


def prompt_tokens_choice(value: Any) -> str:
    """``question`` (the prompt's own tokens: its text, and an image prompt's image tokens) or ``template`` (every
    token the model is given: system prompt, role markers, the text).

    Raises:
        InputError: any other value.
    """
    from entroprobe.errors import InputError

    if value not in PROMPT_TOKENS:
        raise InputError(f"prompt_tokens must be one of {', '.join(PROMPT_TOKENS)}; got {value!r}")
    return str(value)
