"""The units of a run (one prompt × one task): planning them, the model's work on each, their rows.

A unit's seed comes from its key alone, so its generated output and its subsets are the same whichever rank,
batch or resume computes it.
"""

from __future__ import annotations

import contextlib
import json
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from entroprobe.errors import InputError, ItemError, LoadError
from entroprobe.probe import store
from entroprobe.probe.calibration import calibrate
from entroprobe.probe.measures import MeasureSettings, unit_blocks, unit_rows

if TYPE_CHECKING:  # pragma: no cover
    from entroprobe.probe.run import ProbeConfig

__all__ = ["Unit", "Timer", "run_prompts", "plan", "compute", "measure", "unit_seed", "pooled_sigma"]


@dataclass(frozen=True)
class Unit:
    key: str  # "source/prompt_id/task", unique in the run
    order: int  # position in the run's stable order
    prompt: Any  # a sources.Prompt
    task: str

    @property
    def seed_offset(self) -> int:
        return zlib.crc32(self.key.encode())

    @property
    def content(self) -> str:
        """A hash of what the model sees (see ``Prompt.content_hash``): part of the unit's identity on resume."""
        return self.prompt.content_hash


def run_prompts(config: ProbeConfig) -> list[Any]:
    """The run's prompts: text prompts of the text source, then image prompts of the image source."""
    from entroprobe.sources import load_prompts

    prompts = []
    for spec, modality, flag, other in ((config.text_prompts, "text", "--text-prompts", "--image-prompts"),
                                        (config.image_prompts, "image", "--image-prompts", "--text-prompts")):
        if not spec:
            continue
        mine = load_prompts(spec, limit=config.limit, modality=modality)
        if not mine and (everything := load_prompts(spec)):  # e.g. a text benchmark given as the image prompts
            raise InputError(f"{flag} {spec} holds no {modality} prompts (all {len(everything)} are "
                             f"{everything[0].modality} prompts): give it as {other}")
        prompts += mine
    if not prompts:
        raise InputError(f"The prompt sources hold no prompts of their modality: {config.text_prompts or ''} "
                         f"{config.image_prompts or ''}".strip())  # fmt: skip
    return prompts


def plan(config: ProbeConfig, adapter: Any, prompts: list[Any]) -> tuple[list[Unit], list[str]]:
    """Every (prompt, task) unit the model can do, in a stable order, and the pairs it cannot do."""
    units, skipped = [], []
    for task in config.tasks:
        for modality in ("text", "image"):
            if not any(p.modality == modality for p in prompts):
                continue
            if task == "image-gen" and modality == "image":
                skipped.append("image-gen/image (image generation takes text prompts)")
            elif not adapter.can(task, modality):
                skipped.append(f"{task}/{modality}")
    for prompt in prompts:
        for task in config.tasks:
            if adapter.can(task, prompt.modality):
                key = f"{prompt.source}/{prompt.id}/{task}"
                units.append(Unit(key=key, order=len(units), prompt=prompt, task=task))
    if len({u.key for u in units}) != len(units):
        raise InputError("Prompt ids are not unique within their source; every prompt needs its own id")
    return units, skipped


class Timer:
    """Seconds in the model and in the estimators, and the most GPU memory a unit's model work took above what
    was allocated before it (bytes; 0 off the GPU)."""

    def __init__(self) -> None:
        self.model = 0.0
        self.entropy = 0.0
        self.peak_gpu = 0

    @contextlib.contextmanager
    def model_work(self, device: Any) -> Iterator[None]:
        """Time the block as model work and, on a CUDA device, watch its peak memory."""
        start = time.perf_counter()
        cuda = device is not None and torch.device(device).type == "cuda" and torch.cuda.is_available()
        if cuda:
            before = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
        try:
            yield
        finally:
            self.model += time.perf_counter() - start
            if cuda:
                self.peak_gpu = max(self.peak_gpu, torch.cuda.max_memory_allocated(device) - before)


def unit_seed(config: ProbeConfig, unit: Unit) -> int:
    """The unit's own seed: its sampling and its subsets do not depend on the other units of the run."""
    return config.seed + unit.seed_offset % (2**31)


def _produce(config: ProbeConfig, adapter: Any, unit: Unit) -> tuple[Any, Any]:
    """The adapter's work for one unit: ``(LayerStates, None)`` for encode, ``(None, Response)`` otherwise."""
    prompt, seed = unit.prompt, unit_seed(config, unit)
    image = prompt.load_image() if prompt.modality == "image" else None
    if unit.task == "encode":
        return (adapter.encode_text(prompt.text) if image is None else adapter.encode_image(image)), None
    if unit.task == "text-gen":
        return None, adapter.respond_text(prompt.text, image, max_new_tokens=config.max_new_tokens, seed=seed)
    return None, adapter.respond_image(prompt.text, seed=seed)


def _sides(unit: Unit, states: Any, response: Any) -> tuple[Any, Any]:
    """The prompt's and the response's LayerStates of a unit, refusing a side without tokens."""
    if response is None:
        if states.num_tokens == 0:
            raise ItemError(unit.prompt.id, "the model returned no prompt tokens")
        return states, None
    if response.prompt.num_tokens == 0 or response.response.num_tokens == 0:
        side = "prompt" if response.prompt.num_tokens == 0 else "response"
        raise ItemError(unit.prompt.id, f"the {side} has no tokens (nothing to measure)")
    return response.prompt, response.response


def compute(config: ProbeConfig, adapter: Any, unit: Unit, timer: Timer, run_dir: Path,
             settings: MeasureSettings):  # fmt: skip
    """One unit: states from the adapter, entropies per layer; returns (rows, output record or None, too short)."""
    with timer.model_work(getattr(adapter, "device", None)):
        states, response = _produce(config, adapter, unit)
    return measure(config, unit, states, response, timer, run_dir, settings)


def measure(config: ProbeConfig, unit: Unit, states: Any, response: Any, timer: Timer, run_dir: Path,
            settings: MeasureSettings):  # fmt: skip
    """What :func:`compute` does after the model: entropies per layer, the output saved; (rows, output, short)."""
    start = time.perf_counter()
    prompt_side, response_side = _sides(unit, states, response)
    settings = settings.at_depth(prompt_side.num_layers)  # a task may run in another network of the model
    blocks, too_short = unit_blocks(settings, prompt_side.states, None if response_side is None else
                                    response_side.states, unit_seed(config, unit))  # fmt: skip
    timer.entropy += time.perf_counter() - start

    prompt = unit.prompt
    common = {
        "model": config.model, "prompt_id": prompt.id, "source": prompt.source, "modality": prompt.modality,
        "prompt_type": prompt.prompt_type, "prompt_meta": json.dumps(prompt.meta, sort_keys=True),
        "task": unit.task, "num_layers": prompt_side.num_layers, "n_tokens": prompt_side.num_tokens,
        "n_response_tokens": 0 if response_side is None else response_side.num_tokens,
    }  # fmt: skip
    rows = unit_rows(settings, blocks, common)
    output = None
    stem = store.file_stem(unit.key)
    if response is not None:
        output = {"prompt_id": prompt.id, "source": prompt.source, "task": unit.task}
        if isinstance(response.output, str):
            output["text"] = response.output
        elif response.output is not None and hasattr(response.output, "save"):
            (run_dir / "images").mkdir(exist_ok=True)
            path = run_dir / "images" / f"{stem}.png"
            response.output.save(path)
            output["image"] = str(path.relative_to(run_dir))
    if config.save_states:
        from safetensors.torch import save_file

        (run_dir / "states").mkdir(exist_ok=True)
        tensors = {"prompt": prompt_side.states} if response_side is None else \
            {"prompt": prompt_side.states, "response": response_side.states}
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, run_dir / "states" / f"{stem}.safetensors")
    return rows, output, too_short


def pooled_sigma(config: ProbeConfig, adapter: Any, units: list[Unit], previous: dict[str, Any] | None,
                  rank: int, run_dir: Path) -> dict[str, Any] | None:  # fmt: skip
    """Under ``--sigma pooled``: the calibrated σ per layer, from the manifest of the run resumed or measured now.

    Rank 0 calibrates; the other ranks read what it wrote (they are called after a barrier).
    """
    if config.sigma != "pooled":
        return None
    if rank != 0:
        try:
            return json.loads((run_dir / "manifest.json").read_text())["sigma_pooled"]
        except (OSError, KeyError, json.JSONDecodeError) as exc:
            raise LoadError(f"rank {rank} cannot read the pooled σ rank 0 wrote to {run_dir / 'manifest.json'}: {exc}")
    if previous and previous.get("sigma_pooled"):
        return previous["sigma_pooled"]

    def produce(unit: Unit):
        with torch.inference_mode():
            prompt_side, response_side = _sides(unit, *_produce(config, adapter, unit))
        return prompt_side.states, None if response_side is None else response_side.states

    return calibrate(units, produce, count=config.calibration_units, seed=config.seed)

