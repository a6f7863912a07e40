"""What every upstream family's tests share: the checkouts from ``ENTROPROBE_UPSTREAM`` (skip without them), a
whole ``entroprobe run`` over all four tasks, and an independent capture of a module list's outputs.

Upstream code is never committed: tests import it from ``$ENTROPROBE_UPSTREAM/<Name>`` (``Bagel``, ``Harmon``,
``Show-o``, ``Janus``, ``OmniGen2``) and skip when the variable or the folder is missing, as CI does.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

UPSTREAM = os.environ.get("ENTROPROBE_UPSTREAM")
ALL_TASKS = ("encode", "text-gen", "image-gen")


def checkout_or_skip(name: str) -> Path:
    """``$ENTROPROBE_UPSTREAM/<name>``, or skip the test (CI has no checkouts)."""
    if not UPSTREAM:
        pytest.skip("ENTROPROBE_UPSTREAM is not set: upstream checkouts are needed")
    root = Path(UPSTREAM).expanduser() / name
    if not root.is_dir():
        pytest.skip(f"no {name} checkout under ENTROPROBE_UPSTREAM={UPSTREAM}")
    return root


def needs(*modules: str) -> None:
    """Skip unless the checkout's own dependencies (``einops``, ``diffusers``…) are importable."""
    for module in modules:
        pytest.importorskip(module)


def run_all_tasks(spec: str, model_args: dict[str, Any], out: Path, *, limit: int = 2,
                  max_new_tokens: int = 4, **config: Any) -> tuple[pd.DataFrame, dict[str, Any]]:  # fmt: skip
    """``entroprobe run`` of ``spec`` on the built-in samples (text and image prompts), every task; asserts no unit
    failed, no batch (``batch_size=`` in ``config``) fell back to one prompt at a time, and every (task, modality)
    the paper measures has rows. Returns ``(results, manifest)``."""
    from entroprobe.probe import ProbeConfig, run_probe

    settings = dict(model=spec, out=out, model_args=model_args, text_prompts="samples", image_prompts="samples",
                    tasks=ALL_TASKS, limit=limit, max_new_tokens=max_new_tokens, progress=False, match_tokens=0,
                    match_response_tokens=0)  # fmt: skip
    settings.update(config)
    summary = run_probe(ProbeConfig(**settings))
    errors = out / "errors.jsonl"
    assert summary.failed == 0, errors.read_text() if errors.exists() else summary.describe()
    assert not [n for n in summary.notices if "one prompt at a time" in n], summary.notices  # batches stayed batches
    frame = pd.read_parquet(out / "results.parquet")
    seen = set(zip(frame["task"], frame["modality"]))
    wanted = {("encode", "text"), ("encode", "image"), ("text-gen", "text"), ("text-gen", "image"), ("image-gen", "text")}
    assert wanted <= seen, f"no rows for {sorted(wanted - seen)}"
    manifest = json.loads((out / "manifest.json").read_text())
    return frame, manifest


@contextmanager
def captured(layers: list[torch.nn.Module], first_input: Callable[[tuple, dict], torch.Tensor] | None = None,
             ) -> Iterator[list[dict[str, Any]]]:  # fmt: skip
    """An independent capture: every call through ``layers`` as ``{"input": first layer's input, "outputs": [...]}``
    written with plain forward hooks (not :mod:`entroprobe.models.hooks`), outputs' first element when a tuple.

    ``first_input(args, kwargs)`` picks the first layer's input (default: the first positional argument, else the
    first tensor keyword)."""
    calls: list[dict[str, Any]] = []

    def pick(args: tuple, kwargs: dict) -> torch.Tensor:
        if first_input is not None:
            return first_input(args, kwargs)
        if args and torch.is_tensor(args[0]):
            return args[0]
        return next(v for v in kwargs.values() if torch.is_tensor(v))

    def before(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        calls.append({"input": pick(args, kwargs).detach().clone(), "outputs": []})

    def after(index: int) -> Callable[..., None]:
        def hook(module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            value = output[0] if isinstance(output, (tuple, list)) else output
            calls[-1]["outputs"].append(value.detach().clone())

        return hook

    handles = [layers[0].register_forward_pre_hook(before, with_kwargs=True)]
    handles += [layer.register_forward_hook(after(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def stacked(call: dict[str, Any]) -> torch.Tensor:
    """One captured call → ``(layers + 1, ..., d)`` float32: the first layer's input, then every layer's output."""
    return torch.stack([call["input"], *call["outputs"]]).float()


def check_encode_batches(adapter: Any, layers: list[torch.nn.Module], texts: list[str], images: list[Any],
                         instructions: list[str | None], atol: float = 1e-4) -> None:  # fmt: skip
    """``encode_text_batch`` and ``encode_image_batch`` make one pass through ``layers`` for the whole batch, and each
    prompt's states, positions and token ids are those it has alone."""
    cases = (("text", lambda: adapter.encode_text_batch(texts), [adapter.encode_text(t) for t in texts]),
             ("image", lambda: adapter.encode_image_batch(images, instructions),
              [adapter.encode_image(i, t) for i, t in zip(images, instructions)]))  # fmt: skip
    for kind, batch, alone in cases:
        with captured(layers) as calls:
            batched = batch()
        assert len(calls) == 1 and stacked(calls[0]).shape[1] == len(alone), kind  # one pass, every prompt in it
        for mine, theirs in zip(batched, alone):
            assert torch.equal(mine.positions, theirs.positions), kind
            assert (mine.token_ids is None) == (theirs.token_ids is None), kind
            assert mine.token_ids is None or torch.equal(mine.token_ids, theirs.token_ids), kind
            assert mine.final_norm == theirs.final_norm, kind
            torch.testing.assert_close(mine.states, theirs.states, atol=atol, rtol=atol)


def count_embedded_calls(monkeypatch: Any, language_model: Any, decoder: Any) -> list[tuple[str, int]]:
    """Record, in order, each ``language_model.generate`` over input embeddings (``("generate", rows)``) and each
    ``decoder`` call: ``("pass", rows)`` for a teacher-forced pass (``use_cache=False``), ``("step", rows)`` for a
    generation step. The list fills as the calls are made."""
    calls: list[tuple[str, int]] = []
    generate, forward = language_model.generate, decoder.forward
    monkeypatch.setattr(language_model, "generate",
                        lambda **kw: calls.append(("generate", kw["inputs_embeds"].shape[0])) or generate(**kw))

    def counted(**kw: Any) -> Any:
        rows = kw["inputs_embeds"] if kw.get("inputs_embeds") is not None else kw["input_ids"]
        calls.append(("pass" if kw.get("use_cache") is False else "step", rows.shape[0]))
        return forward(**kw)

    monkeypatch.setattr(decoder, "forward", counted)
    return calls


def same_as_alone(response: Any, alone: Any, *, rtol: float = 1e-4, pixels: int = 1) -> None:
    """A batched response equals its prompt's alone: the same answer (ids and text), or the same picture within
    ``pixels`` levels (and the same image ids, where there are any), and on each side the same positions and token
    ids and the states within 1e-4."""
    import numpy as np

    if alone.output_ids is not None:
        assert torch.equal(response.output_ids, alone.output_ids)
    if isinstance(alone.output, str):
        assert response.output == alone.output
    else:
        assert np.abs(np.asarray(response.output, dtype=int) - np.asarray(alone.output, dtype=int)).max() <= pixels
    for side in ("prompt", "response"):
        mine, theirs = getattr(response, side), getattr(alone, side)
        assert torch.equal(mine.positions, theirs.positions), side
        assert (mine.token_ids is None) == (theirs.token_ids is None), side
        assert mine.token_ids is None or torch.equal(mine.token_ids, theirs.token_ids), side
        torch.testing.assert_close(mine.states, theirs.states, atol=1e-4, rtol=rtol)
