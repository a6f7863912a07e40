"""How well the model reads a run's prompts: the share of their text tokens that are its unknown token.

A model that reads ``<unk>`` for half of a prompt's words measures the unknown token, not the prompt. Every run
counts, with :meth:`ModelAdapter.read <entroprobe.models.base.ModelAdapter.read>`, the tokens of each prompt's
text (an image prompt's question included) and how many are unknown; the counts go to ``prompts.parquet``
(``n_text_tokens``, ``n_unknown_tokens``), the total to ``manifest.json`` (``reading``) and to the summary, which
warns above :data:`UNKNOWN_WARN`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

__all__ = ["UNKNOWN_WARN", "read_prompts", "describe", "warning"]

UNKNOWN_WARN = 0.01  # above this share of unknown tokens, the summary says the model cannot read the prompts


def read_prompts(adapter: Any, prompts: list[Any]) -> tuple[dict[str, Any], dict[tuple[str, str], Any]]:
    """``(the manifest's record, each prompt's Reading by (source, id))``; the record says ``measured: false`` when
    the adapter cannot tell (no tokenizer, continuous inputs)."""
    readings = {}
    for prompt in prompts:
        reading = adapter.read(prompt.text) if prompt.text else None
        if reading is not None:
            readings[(prompt.source, prompt.id)] = reading
    if not readings:
        return {"measured": False}, {}
    tokens = sum(r.tokens for r in readings.values())
    unknown = sum(r.unknown for r in readings.values())
    words = Counter(w for r in readings.values() for w in r.unknown_words)
    record = {
        "measured": True,
        "prompts": len(readings),
        "text_tokens": tokens,
        "unknown_tokens": unknown,
        "unknown_rate": unknown / tokens if tokens else 0.0,
        "prompts_with_unknown": sum(r.unknown > 0 for r in readings.values()),
        "unknown_words": [w for w, _ in words.most_common(10)],  # in the most prompts first (when the model says)
    }
    return record, readings


def describe(record: dict[str, Any] | None) -> str:
    """``"unknown tokens: 0.0 % of 3,074 prompt text tokens (0 of 60 prompts have some)"`` (the summary's line), or
    empty when not measured; a share too small to show at one decimal reads ``"< 0.1 % (5 tokens)"``, never 0.0."""
    if not record or not record.get("measured"):
        return ""
    percent = 100 * record["unknown_rate"]
    share = f"< 0.1 % ({record['unknown_tokens']:,} tokens)" if 0 < percent < 0.05 else f"{percent:.1f} %"
    return (f"unknown tokens: {share} of {record['text_tokens']:,} prompt text tokens "
            f"({record['prompts_with_unknown']} of {record['prompts']} prompts have some)")


def warning(record: dict[str, Any] | None, model: str) -> str:
    """A notice when the model reads more than :data:`UNKNOWN_WARN` of the prompts' tokens as unknown, else ''."""
    if not record or not record.get("measured") or record["unknown_rate"] <= UNKNOWN_WARN:
        return ""
    words = f" (e.g. {', '.join(map(repr, record['unknown_words'][:5]))})" if record["unknown_words"] else ""
    return (f"{model} reads {100 * record['unknown_rate']:.0f} % of the prompts' text tokens as its unknown token"
            f"{words}: what it measures there is the unknown token, not the prompt; use prompts in its vocabulary")
