"""Which tokens of a templated prompt are the prompt's own: the ``prompt_tokens=question`` choice.

A chat template wraps a question in a system prompt and role markers: Janus-Pro turns the 3 tokens of "what is
this" into 38. ``encode`` measures the question's tokens; the response level (S(X), S(X, Y), S(Y|X) of text and
image generation) measures the same ones by default, ``prompt_tokens=question``, with the template still in the
model's context. ``prompt_tokens=template`` measures every prompt token the model is given.

:func:`question_positions` finds the question's tokens in the sequence the model saw: it tokenizes the templated
string alone with character offsets, keeps the tokens that overlap the question's last occurrence, and places
them from the end of the model's sequence (what a processor adds — BOS, a system prompt, image tokens — comes
before the question; ``tail`` counts what comes after the templated string, e.g. a begin-of-image token). Every
placed token is checked against the model's own ids.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from entroprobe.errors import ItemError

__all__ = ["SENTINEL", "locate", "question_positions", "prompt_selection"]


SENTINEL = "\u2063entroprobe-question\u2063"  # rendered in the question's place to find where a template puts it


def locate(render: Callable[[str], str], question: str) -> int | None:
    """Where ``render`` (a template: question → prompt string) puts the question: the character offset of its
    first character, found by rendering a sentinel in its place; None when the template does not keep text as
    it is (then :func:`question_positions` falls back to the question's last occurrence)."""
    marked = render(SENTINEL)
    at = marked.find(SENTINEL)
    text = question.strip()
    if at < 0 or not text:
        return None
    real = render(question)
    offset = at + (len(question) - len(question.lstrip()))
    return offset if real[offset : offset + len(text)] == text else None


def question_positions(tokenizer: Any, templated: str, question: str, sequence: torch.Tensor, *, item: str,
                       tail: int = 0, start: int | None = None) -> torch.Tensor:  # fmt: skip
    """Indices into ``sequence`` (the prompt ids the model saw, 1-D) of the tokens that carry ``question``.

    ``start``: where in ``templated`` the question begins (see :func:`locate`); else its last occurrence, which
    is wrong when the template repeats the question's words after it.

    Raises:
        ItemError: the question is not in the templated prompt, the tokenizer gives no character offsets (a slow
            tokenizer), or the placed tokens differ from the model's ids; each says to use
            ``prompt_tokens=template``.
    """
    text = question.strip()
    if start is None or templated[start : start + len(text)] != text:
        start = templated.rfind(text)
    if not text or start < 0:
        raise ItemError(item, f"the question is not in the templated prompt; use prompt_tokens=template "
                              f"(templated: {templated[:200]!r})")  # fmt: skip
    end = start + len(text)
    try:
        encoded = tokenizer(templated, add_special_tokens=False, return_offsets_mapping=True)
    except (NotImplementedError, ValueError, TypeError) as exc:
        raise ItemError(item, f"prompt_tokens=question needs a tokenizer with character offsets ({exc}); "
                              "use prompt_tokens=template") from None  # fmt: skip
    ids, offsets = list(encoded["input_ids"]), list(encoded["offset_mapping"])
    inside = [i for i, (a, b) in enumerate(offsets) if b > start and a < end]
    first = sequence.shape[0] - tail - len(ids)  # where the templated string's tokens begin in the sequence
    positions = torch.tensor([first + i for i in inside], dtype=torch.long)
    if not inside or first < 0 or sequence[positions].tolist() != [ids[i] for i in inside]:
        raise ItemError(item, "cannot place the question's tokens in the model's prompt (the processor "
                              "tokenizes the template differently); use prompt_tokens=template")  # fmt: skip
    return positions


def prompt_selection(choice: str, n_prompt: int, question: torch.Tensor | None,
                     image: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """The prompt positions a response measures: all ``n_prompt`` of them (``template``), or the question's and
    an image prompt's image positions (``question``), ascending."""
    if choice == "template" or (question is None and image is None):
        return torch.arange(n_prompt)
    parts = [p for p in (image, question) if p is not None]
    return torch.unique(torch.cat(parts)).sort().values
