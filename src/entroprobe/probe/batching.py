"""Units in batches: several prompts per forward pass and per ``generate`` call (``--batch-size B``).

The unit stays what is committed and resumed; a batch is only how the model's work is done. Units of one task
and prompt modality are batched together, sorted by prompt length so that padding stays small (the order of
``results.parquet`` is the units' own, whatever the batches). Each unit keeps its own seed, and the adapters
pad so that a unit's states do not depend on its batch: its rows equal those at ``B = 1`` up to float tolerance.

When a batch runs out of memory, it is split in halves and each half tried in turn, down to one unit; later
batches of that task and modality are then at most the size that fitted (see :class:`BatchLog`). A unit that
runs out of memory while it is measured beside the states its batch still holds has the batch's units not yet
measured made again in halves, and lowers the size likewise. When a batch fails otherwise (one prompt too
long, an unreadable image), its units are done again one by one, so that only the one at fault is recorded as
failed. Only units measured in full are committed, so no unit's work is lost: a batch that failed in the model
has committed nothing, and one that ran out of memory while measured keeps the units measured before.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from entroprobe.probe import units as unit_work

if TYPE_CHECKING:  # pragma: no cover
    from entroprobe.probe.measures import MeasureSettings
    from entroprobe.probe.run import ProbeConfig
    from entroprobe.probe.units import Timer, Unit

__all__ = ["BatchLog", "batches", "produce", "outcomes", "out_of_memory", "free_memory"]


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


@dataclass
class BatchLog:
    """What a run's batches met: the most units per batch for each task and prompt modality (``--batch-size``,
    lowered where a batch ran out of memory), and in words each batch done one unit at a time and each lowering.

    A batch of n units that runs out of memory lowers its task's size to ⌈n / 2⌉, unless one of its units then
    runs out of memory alone: a prompt too large for the device on its own says nothing of the batch size. The
    same holds for a unit that runs out of memory while it is measured beside the states its batch still holds
    (the adapters return one tensor for a batch, each unit's states a view of it, so it is held until the batch's
    last unit is measured): the units not yet measured are made again in halves, and the size is lowered to
    ⌈n / 2⌉ only if none of them then runs out of memory alone. One prompt too large alone thus keeps the sizes
    of every batch it is part of: later batches that do not fit are halved again, which costs time, not rows.
    The sizes are per task and prompt modality,
    and they last one invocation: a resumed run finds them anew. ``on_lower`` is called with the sizes each time
    one is lowered (the run writes them to its manifest there, so that a run stopped mid-batch still says so).
    """

    size: int
    sizes: dict[str, int] = field(default_factory=dict)  # "task/modality" → the most units per batch from now on
    fallbacks: list[str] = field(default_factory=list)  # why batches were done one unit at a time
    lowered: list[str] = field(default_factory=list)  # each lowering, in words
    on_lower: Callable[[dict[str, int]], None] | None = None

    def size_for(self, key: str) -> int:
        return self.sizes.get(key, self.size)

    def lower(self, key: str, failed: int, how: str = "") -> None:
        size = (failed + 1) // 2
        if size < self.size_for(key):
            self.sizes[key] = size
            self.lowered.append(f"{key}: a batch of {failed} ran out of memory{' ' + how if how else ''}; "
                                f"batches of at most {size} from then on")  # fmt: skip
            if self.on_lower is not None:
                self.on_lower(dict(self.sizes))


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says a device (or the host) ran out of memory."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        words in text for words in ("out of memory", "can't allocate memory", "alloc_failed"))  # the last: cuBLAS, cuDNN


def free_memory() -> None:
    """Give back what a failed call left: its tensors (reference cycles included), then CUDA's cached blocks."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def outcomes(config: ProbeConfig, adapter: Any, batch: list[Unit], timer: Timer, run_dir: Path,
             settings: MeasureSettings, log: BatchLog | None = None) -> Iterator[tuple[Unit, Any]]:  # fmt: skip
    """``(unit, (rows, output, too_short) or the exception it failed with)`` for every unit of the batch, in the
    batch's order; ``log`` (default: a fresh one at the batch's size) keeps the sizes and says what happened."""
    log = log if log is not None else BatchLog(len(batch))
    with torch.inference_mode():  # no autograd anywhere in a unit: less memory, no version counters
        yield from _attempt(_Work(config, adapter, timer, run_dir, settings, log), batch)


@dataclass(frozen=True)
class _Work:
    config: ProbeConfig
    adapter: Any
    timer: Timer
    run_dir: Path
    settings: MeasureSettings
    log: BatchLog


def _attempt(work: _Work, batch: list[Unit]) -> Generator[tuple[Unit, Any], None, bool]:
    """Yield every unit's outcome; return whether one of them ran out of memory alone."""
    key = f"{batch[0].task}/{batch[0].prompt.modality}"
    size = work.log.size_for(key)
    if len(batch) > size:  # a lowered size: the batch's parts in turn (each part reads the size anew)
        alone_oom = False
        for start in range(0, len(batch), size):
            alone_oom |= yield from _attempt(work, batch[start : start + size])
        return alone_oom
    produced, failure, oom = _produce(work, batch) if len(batch) > 1 else (None, None, False)
    if oom:  # the batch committed nothing; its halves are tried in turn
        free_memory()
        half = (len(batch) + 1) // 2
        alone_oom = (yield from _attempt(work, batch[:half])) | (yield from _attempt(work, batch[half:]))
        if not alone_oom:
            work.log.lower(key, len(batch))
        return alone_oom
    if failure is not None:
        work.log.fallbacks.append(f"{batch[0].task} of {len(batch)} prompts: {failure}")
    alone_oom = False
    for i, unit in enumerate(batch):
        measuring_oom, mine = False, None
        try:
            if produced is None:
                outcome = unit_work.compute(work.config, work.adapter, unit, work.timer, work.run_dir, work.settings)
            else:
                mine, produced[i] = produced[i], None  # the batch's tensor goes with the last unit's view
                outcome = unit_work.measure(work.config, unit, *mine, work.timer, work.run_dir, work.settings)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            measuring_oom = produced is not None and out_of_memory(exc)
            alone_oom |= produced is None and out_of_memory(exc)
            outcome = _bare(exc)  # its frames' tensors are freed now, not when the next unit starts
        mine = None
        if measuring_oom:  # the states the batch still holds left too little to measure: the rest made again
            del outcome
            produced = None
            free_memory()
            rest, half = batch[i:], (len(batch) - i + 1) // 2
            rest_oom = yield from _attempt(work, rest[:half])
            if rest[half:]:
                rest_oom |= yield from _attempt(work, rest[half:])
            if not rest_oom:  # a unit too large to measure even alone says nothing of the batch size
                work.log.lower(key, len(batch), "while measured beside its batch's states")
            return alone_oom | rest_oom
        yield unit, outcome
    return alone_oom


def _bare(exc: Exception) -> Exception:
    """``exc`` without the tracebacks of it and of every exception it was raised from or during: their frames,
    and the tensors those hold, are freed now."""
    seen, todo = set(), [exc]
    while todo:
        link = todo.pop()
        if link is not None and id(link) not in seen:
            seen.add(id(link))
            link.with_traceback(None)
            todo += [link.__cause__, link.__context__]
    return exc


def _produce(work: _Work, batch: list[Unit]) -> tuple[list[tuple[Any, Any]] | None, str | None, bool]:
    """``(what the model made for each unit, None, False)``, or ``(None, why it failed, whether it ran out of
    memory)``: the exception, and with it the tensors its frames held, is gone when this returns."""
    try:
        with work.timer.model_work(getattr(work.adapter, "device", None)):
            return produce(work.config, work.adapter, batch), None, False
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:
        return None, exc.reason if hasattr(exc, "reason") else f"{type(exc).__name__}: {exc}", out_of_memory(exc)
