"""Units in batches: several prompts per forward pass and per ``generate`` call (``--batch-size B``).

The unit stays what is committed and resumed; a batch is only how the model's work is done. Units of one task
and prompt modality are batched together, sorted by prompt length so that padding stays small (the order of
``results.parquet`` is the units' own, whatever the batches). Each unit keeps its own seed, and the adapters
pad so that a unit's states do not depend on its batch: its rows equal those at ``B = 1`` up to float tolerance.

When a batch fails (one prompt too long, an unreadable image, out of memory), its units are done again one by
one, so that only the one at fault is recorded as failed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from entroprobe.probe import units as unit_work

if TYPE_CHECKING:  # pragma: no cover
    from entroprobe.probe.measures import MeasureSettings
    from entroprobe.probe.run import ProbeConfig
    from entroprobe.probe.units import Timer, Unit

__all__ = ["batches", "produce", "outcomes"]


def _length(unit: Unit) -> int:
    return len(unit.prompt.text or "")  # characters: a cheap stand-in for the token count, enough to group by


def batches(units: list[Unit], size: int) -> list[list[Unit]]:
    """The units in batches of at most ``size``: one task and prompt modality per batch, similar lengths
    together, batches in the order of their first unit."""
    groups: dict[tuple[str, str], list[Unit]] = {}
    for unit in units:
        groups.setdefault((unit.task, unit.prompt.modality), []).append(unit)
    out = []
    for members in groups.values():
        members = sorted(members, key=lambda u: (_length(u), u.order))
        out += [members[i : i + size] for i in range(0, len(members), size)]
    return sorted(out, key=lambda batch: min(u.order for u in batch))


def produce(config: ProbeConfig, adapter: Any, batch: list[Unit]) -> list[tuple[Any, Any]]:
    """The model's work for a batch: per unit ``(LayerStates, None)`` for encode, ``(None, Response)`` otherwise."""
    task, modality = batch[0].task, batch[0].prompt.modality
    seeds = [unit_work.unit_seed(config, u) for u in batch]
    if task == "encode":
        if modality == "text":
            return [(s, None) for s in adapter.encode_text_batch([u.prompt.text for u in batch])]
        return [(s, None) for s in adapter.encode_image_batch([u.prompt.load_image() for u in batch])]
    if task == "text-gen":
        prompts = [(u.prompt.text, u.prompt.load_image() if modality == "image" else None) for u in batch]
        responses = adapter.respond_text_batch(prompts, max_new_tokens=config.max_new_tokens, seeds=seeds)
    else:
        responses = adapter.respond_image_batch([u.prompt.text for u in batch], seeds=seeds)
    return [(None, r) for r in responses]


def outcomes(config: ProbeConfig, adapter: Any, batch: list[Unit], timer: Timer, run_dir: Path,
             settings: MeasureSettings, fallbacks: list[str] | None = None) -> Iterator[tuple[Unit, Any]]:  # fmt: skip
    """``(unit, (rows, output, too_short) or the exception it failed with)`` for every unit of the batch; why a
    batch was done one unit at a time is appended to ``fallbacks``."""
    with torch.inference_mode():  # no autograd anywhere in a unit: less memory, no version counters
        yield from _outcomes(config, adapter, batch, timer, run_dir, settings,
                             fallbacks if fallbacks is not None else [])  # fmt: skip


def _outcomes(config: ProbeConfig, adapter: Any, batch: list[Unit], timer: Timer, run_dir: Path,
              settings: MeasureSettings, fallbacks: list[str]) -> Iterator[tuple[Unit, Any]]:  # fmt: skip
    try:
        with timer.model_work(getattr(adapter, "device", None)):
            produced = produce(config, adapter, batch) if len(batch) > 1 else None
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # one prompt spoilt the batch: each unit alone, so that only that one fails
        reason = exc.reason if hasattr(exc, "reason") else f"{type(exc).__name__}: {exc}"
        fallbacks.append(f"{batch[0].task} of {len(batch)} prompts: {reason}")
        produced = None
    for i, unit in enumerate(batch):
        try:
            if produced is None:
                yield unit, unit_work.compute(config, adapter, unit, timer, run_dir, settings)
            else:
                yield unit, unit_work.measure(config, unit, *produced[i], timer, run_dir, settings)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            yield unit, exc
