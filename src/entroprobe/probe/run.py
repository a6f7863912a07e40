"""The probe run: stream prompts through a model, compute every layer's entropies as states arrive, commit rows.

>>> from entroprobe.probe import ProbeConfig, run_probe
>>> run_probe(ProbeConfig(model="minilm", text_prompts="samples", out="runs/minilm"))  # doctest: +SKIP

Work is split into units, one prompt × one task. Each unit's rows are committed in one transaction to the
rank's SQLite shard (see :mod:`.store`); a restarted run skips what is done and retries what failed, and
``results.parquet``,
``errors.jsonl``, ``responses.jsonl`` and ``manifest.json`` are written at the end. Under ``torchrun`` the
units are sharded by rank and rank 0 writes the merged results.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import shutil
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from entroprobe.entropy import prompt_response_entropies, renyi_entropy
from entroprobe.entropy.renyi import EntropyResult
from entroprobe.errors import CapabilityError, EntroprobeError, InputError, ItemError, LoadError
from entroprobe.probe import store
from entroprobe.probe.schema import TASKS

__all__ = ["ProbeConfig", "RunSummary", "run_probe", "collect", "parse_model_args"]

# loading keywords that place the model but do not change its results: a run may resume elsewhere
PLACEMENT_KEYS = ("device", "device_map")
SETTINGS_KEYS = (
    "model", "model_args", "text_prompts", "image_prompts", "tasks",
    "alpha", "sigma", "base", "limit", "max_new_tokens", "seed",
)  # fmt: skip


@dataclass
class ProbeConfig:
    """Everything a run needs; the CLI builds one from its flags. ``out`` is the run directory."""

    model: str  # FAMILY:PATH or a built-in name (minilm, micro-ar, micro-mask)
    out: str | Path  # the run directory
    model_args: dict[str, Any] = field(default_factory=dict)  # loading keywords: dtype, device, revision…
    text_prompts: str | None = None  # a prompt source spec, e.g. "t2i-corebench:DIR" or "samples"
    image_prompts: str | None = None  # e.g. "mmbench:FILE.tsv" or "samples"
    tasks: tuple[str, ...] = ("encode",)  # any of encode, text-gen, image-gen
    alpha: float = 1.01
    sigma: str | float = "median"
    base: float = 2.0
    limit: int | None = None  # at most this many prompts per source
    max_new_tokens: int = 32  # for text responses
    seed: int = 0
    save_states: bool = False  # keep every unit's layer states (safetensors) under RUN_DIR/states/
    overwrite: bool = False  # start afresh in a run directory holding a run with other settings
    progress: bool | None = None  # a progress bar; None: only when stderr is a terminal

    def settings(self) -> dict[str, Any]:
        """The settings that define a run's results; resuming requires the same ones."""
        out = {key: getattr(self, key) for key in SETTINGS_KEYS}
        out["tasks"] = list(self.tasks)
        out["model_args"] = {k: str(v) for k, v in sorted(self.model_args.items()) if k not in PLACEMENT_KEYS}
        return out

    def check(self) -> None:
        """Refuse settings the run would fail on, before anything is loaded."""
        from entroprobe.entropy import check_parameters

        check_parameters(alpha=self.alpha, sigma=self.sigma, base=self.base)
        unknown = [task for task in self.tasks if task not in TASKS]
        if unknown:
            raise InputError(f"Unknown task(s) {', '.join(unknown)}; expected any of {', '.join(TASKS)}")
        if not self.tasks:
            raise InputError("No task given; expected any of " + ", ".join(TASKS))
        if not self.text_prompts and not self.image_prompts:
            raise InputError("Nothing to probe: give --text-prompts and/or --image-prompts")
        for name in ("max_new_tokens", "limit"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InputError(f"{name} must be a positive integer; got {value!r}")


@dataclass
class RunSummary:
    run_dir: Path
    units: int = 0  # units this run had to do (all ranks)
    done_before: int = 0  # units already committed when it started (resume)
    succeeded: int = 0  # units this process committed with rows
    failed: int = 0  # units this process recorded as errors
    rows: int = 0  # rows in results.parquet (rank 0) or committed by this process
    skipped: list[str] = field(default_factory=list)  # task/modality pairs the model cannot do
    seconds: float = 0.0
    model_seconds: float = 0.0  # time in the model adapter (forward passes, generation)
    entropy_seconds: float = 0.0  # time in the estimators

    @property
    def entropy_share(self) -> float:
        busy = self.model_seconds + self.entropy_seconds
        return self.entropy_seconds / busy if busy else 0.0

    def describe(self) -> str:
        lines = [
            f"run directory: {self.run_dir}",
            f"units: {self.units} ({self.done_before} already done), {self.succeeded} succeeded, {self.failed} failed",
            f"rows in results.parquet: {self.rows}",
            f"time: {self.seconds:.1f} s, {self.succeeded / self.seconds if self.seconds else 0:.2f} units/s, "
            f"entropy {100 * self.entropy_share:.0f} % of model + entropy time",
        ]
        lines += [f"skipped (the model cannot do it): {s}" for s in self.skipped]
        if self.failed:
            lines.append(f"errors: see {self.run_dir / 'errors.jsonl'}")
        return "\n".join(lines)


def parse_model_args(text: str | None) -> dict[str, Any]:
    """``"dtype=bf16,device=cuda:0,trust_remote_code=true"`` → a dict (numbers and booleans converted)."""
    out: dict[str, Any] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--model-args takes key=value pairs separated by commas; got '{part}' in '{text}'")
        value = value.strip()
        lowered = value.lower()
        if lowered in ("true", "false"):
            out[key.strip()] = lowered == "true"
            continue
        for cast in (int, float):
            try:
                out[key.strip()] = cast(value)
                break
            except ValueError:
                continue
        else:
            out[key.strip()] = value
    return out


# -- distributed ----------------------------------------------------------------------------------------------


def _world() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) outside it."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _barrier(world: int) -> None:
    if world <= 1:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        # ranks may finish hours apart (uneven generation lengths): wait up to three days at the final barrier
        dist.init_process_group(backend="gloo", timeout=_dt.timedelta(days=3))
    dist.barrier()


# -- the run directory ----------------------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    import numpy

    import entroprobe

    versions = {"entroprobe": entroprobe.__version__, "python": platform.python_version(), "torch": torch.__version__,
                "numpy": numpy.__version__, "platform": platform.platform()}  # fmt: skip
    try:
        import transformers

        versions["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass
    return versions


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _wipe(run_dir: Path) -> None:
    for name in ("shards", "states", "images"):
        shutil.rmtree(run_dir / name, ignore_errors=True)
    for name in ("results.parquet", "errors.jsonl", "responses.jsonl", "manifest.json"):
        (run_dir / name).unlink(missing_ok=True)


def _prepare_run_dir(config: ProbeConfig, rank: int) -> tuple[Path, dict[str, Any] | None]:
    """Create or check the run directory (rank 0 alone); returns it and the manifest of the run to resume.

    The same settings resume; other settings are refused unless ``overwrite``, which then starts afresh.
    """
    run_dir = Path(config.out)
    if rank != 0:
        return run_dir, None
    manifest_path = run_dir / "manifest.json"
    previous = None
    if manifest_path.exists():
        try:
            previous = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise LoadError(f"Cannot read {manifest_path}: {exc}") from exc
        old, new = previous.get("settings", {}), json.loads(json.dumps(config.settings()))
        if old != new:
            if not config.overwrite:
                changed = ", ".join(
                    f"{key}: {old.get(key)!r} → {new.get(key)!r}" for key in new if old.get(key) != new.get(key)
                )
                raise InputError(
                    f"{run_dir} holds a run with other settings ({changed}); pass --overwrite to replace it, "
                    "or choose another --out"
                )
            _wipe(run_dir)
            previous = None
    elif store.shard_paths(run_dir):
        if not config.overwrite:
            raise InputError(f"{run_dir} holds shards but no manifest.json; pass --overwrite to start afresh")
        _wipe(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir, previous


def _check_weights(config: ProbeConfig, run_dir: Path, previous: dict[str, Any] | None, fingerprint: str) -> None:
    """Refuse to resume a run with other weights at the same path (unless overwrite: start afresh)."""
    if previous is None:
        return
    before = previous.get("model", {}).get("fingerprint")
    if before is not None and before != fingerprint:
        if not config.overwrite:
            raise InputError(
                f"{run_dir} was started with other weights (fingerprint {before}, now {fingerprint}); "
                "pass --overwrite to start afresh, or choose another --out"
            )
        _wipe(run_dir)


def _placed(model_args: dict[str, Any], world: int) -> dict[str, Any]:
    """Under torchrun on GPUs, each rank's model goes to its own GPU (``cuda:LOCAL_RANK``)."""
    if world <= 1 or not torch.cuda.is_available() or "device_map" in model_args:
        return model_args
    if str(model_args.get("device", "auto")) not in ("auto", "cuda"):
        return model_args
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    return {**model_args, "device": f"cuda:{local_rank}"}


def _write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    text = json.dumps(manifest, indent=2, default=str) + "\n"
    store.write_atomic(run_dir / "manifest.json", lambda tmp: tmp.write_text(text))


# -- the units ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Unit:
    key: str  # "source/prompt_id/task", unique in the run
    order: int  # position in the run's stable order
    prompt: Any  # a sources.Prompt
    task: str

    @property
    def seed_offset(self) -> int:
        return zlib.crc32(self.key.encode())


def _load_prompts(config: ProbeConfig) -> list[Any]:
    """The run's prompts: text prompts of the text source, then image prompts of the image source."""
    from entroprobe.sources import load_prompts

    prompts = []
    if config.text_prompts:
        prompts += load_prompts(config.text_prompts, limit=config.limit, modality="text")
    if config.image_prompts:
        prompts += load_prompts(config.image_prompts, limit=config.limit, modality="image")
    if not prompts:
        raise InputError(f"The prompt sources hold no prompts of their modality: {config.text_prompts or ''} "
                         f"{config.image_prompts or ''}".strip())  # fmt: skip
    return prompts


def _plan(config: ProbeConfig, adapter: Any, prompts: list[Any]) -> tuple[list[_Unit], list[str]]:
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
                units.append(_Unit(key=key, order=len(units), prompt=prompt, task=task))
    if len({u.key for u in units}) != len(units):
        raise InputError("Prompt ids are not unique within their source; every prompt needs its own id")
    return units, skipped


def _rows(config: ProbeConfig, unit: _Unit, measures: dict[str, EntropyResult], n_prompt: int, n_response: int,
          num_layers: int) -> list[dict[str, Any]]:
    prompt = unit.prompt
    common = {
        "model": config.model, "prompt_id": prompt.id, "source": prompt.source, "modality": prompt.modality,
        "prompt_type": prompt.prompt_type, "prompt_meta": json.dumps(prompt.meta, sort_keys=True),
        "task": unit.task, "num_layers": num_layers, "n_tokens": n_prompt, "n_response_tokens": n_response,
        "alpha": config.alpha, "sigma_rule": "median" if isinstance(config.sigma, str) else "fixed",
        "base": config.base,
    }  # fmt: skip
    rows = []
    for measure, result in measures.items():
        ceiling = math.log(result.n, config.base) if result.n > 1 else 0.0
        saturated = result.saturated.tolist()
        for layer, (value, sigma, saturation) in enumerate(
            zip(result.value.tolist(), result.sigma.tolist(), result.saturation.tolist())
        ):
            rows.append({**common, "measure": measure, "layer": layer, "value": value, "sigma": sigma,
                         "saturation": saturation, "saturated": bool(saturated[layer]), "max_entropy": ceiling})  # fmt: skip
    return rows


class _Timer:
    def __init__(self) -> None:
        self.model = 0.0
        self.entropy = 0.0


def _compute(config: ProbeConfig, adapter: Any, unit: _Unit, timer: _Timer, run_dir: Path):
    """One unit: states from the adapter, entropies per layer; returns (rows, output record or None)."""
    prompt, seed = unit.prompt, config.seed + unit.seed_offset % (2**31)
    kwargs = {"alpha": config.alpha, "sigma": config.sigma, "base": config.base}
    image = prompt.load_image() if prompt.modality == "image" else None
    start = time.perf_counter()
    response = None
    if unit.task == "encode":
        states = adapter.encode_text(prompt.text) if image is None else adapter.encode_image(image)
    elif unit.task == "text-gen":
        response = adapter.respond_text(prompt.text, image, max_new_tokens=config.max_new_tokens, seed=seed)
    else:
        response = adapter.respond_image(prompt.text, seed=seed)
    timer.model += time.perf_counter() - start

    start = time.perf_counter()
    if response is None:
        if states.num_tokens == 0:
            raise ItemError(prompt.id, "the model returned no prompt tokens")
        measures = {"prompt_entropy": renyi_entropy(states.states, return_details=True, **kwargs)}
        n_prompt, n_response, num_layers = states.num_tokens, 0, states.num_layers
    else:
        if response.prompt.num_tokens == 0 or response.response.num_tokens == 0:
            side = "prompt" if response.prompt.num_tokens == 0 else "response"
            raise ItemError(prompt.id, f"the {side} has no tokens (nothing to measure)")
        measures = prompt_response_entropies(response.prompt.states, response.response.states, **kwargs)
        n_prompt, n_response = response.prompt.num_tokens, response.response.num_tokens
        num_layers = response.prompt.num_layers
    timer.entropy += time.perf_counter() - start

    rows = _rows(config, unit, measures, n_prompt, n_response, num_layers)
    output = None
    safe_key = unit.key.replace("/", "__")
    if response is not None:
        output = {"prompt_id": prompt.id, "source": prompt.source, "task": unit.task}
        if isinstance(response.output, str):
            output["text"] = response.output
        elif response.output is not None and hasattr(response.output, "save"):
            (run_dir / "images").mkdir(exist_ok=True)
            path = run_dir / "images" / f"{safe_key}.png"
            response.output.save(path)
            output["image"] = str(path.relative_to(run_dir))
    if config.save_states:
        from safetensors.torch import save_file

        (run_dir / "states").mkdir(exist_ok=True)
        tensors = (
            {"prompt": states.states} if response is None
            else {"prompt": response.prompt.states, "response": response.response.states}
        )  # fmt: skip
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, run_dir / "states" / f"{safe_key}.safetensors")
    return rows, output


# -- the run --------------------------------------------------------------------------------------------------


def run_probe(config: ProbeConfig, adapter: Any = None) -> RunSummary:
    """Run (or resume) a probe run; returns its summary. ``adapter`` may be given already loaded.

    Raises:
        InputError / LoadError / CapabilityError: when the setup is wrong (unknown model or source, settings
            differing from the run directory's, nothing the model can do).
        EntroprobeError: when every unit failed (the errors are in errors.jsonl).
    """
    from entroprobe.models import load_model

    started = time.perf_counter()
    config.check()
    rank, world = _world()
    prompts = _load_prompts(config)  # a bad source fails before the model loads
    run_dir, previous = _prepare_run_dir(config, rank)
    _barrier(world)  # no rank reads the directory before rank 0 has prepared it
    if adapter is None:
        adapter = load_model(config.model, **_placed(config.model_args, world))
    units, skipped = _plan(config, adapter, prompts)
    if not units:
        raise CapabilityError(f"Model '{config.model}' can do none of the requested work: {', '.join(skipped)}")
    fingerprint = adapter.fingerprint()
    if rank == 0:
        _check_weights(config, run_dir, previous, fingerprint)

    manifest = {
        "entroprobe_version": _versions()["entroprobe"],
        "status": "running",
        "model": {"spec": config.model, **adapter.describe(), "fingerprint": fingerprint},
        "settings": config.settings(),
        "started": (previous or {}).get("started") or _now(),
        "ended": None,
        "counts": {"prompts": len({(u.prompt.source, u.prompt.id) for u in units}), "units": len(units)},
        "skipped": skipped,
        "versions": _versions(),
        "device": str(getattr(adapter, "device", "cpu")),
        "placement": {k: str(v) for k, v in config.model_args.items() if k in PLACEMENT_KEYS},
        "world_size": world,
    }
    if rank == 0:
        _write_manifest(run_dir, manifest)

    done = store.done_units(run_dir)
    _barrier(world)  # every rank has read the done marks before any creates its shard
    todo = [u for u in units[rank::world] if u.key not in done]
    summary = RunSummary(run_dir=run_dir, units=len(units), done_before=len(done & {u.key for u in units}),
                         skipped=skipped)  # fmt: skip
    timer = _Timer()
    shard = store.ShardStore(run_dir, rank)
    progress = _progress(config, len(todo), rank)
    errors_path = run_dir / "errors.jsonl"
    try:
        for unit in todo:
            try:
                rows, output = _compute(config, adapter, unit, timer, run_dir)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # one item's failure is recorded; the run goes on
                reason = exc.reason if isinstance(exc, ItemError) else f"{type(exc).__name__}: {exc}"
                record = {"item": unit.prompt.id, "source": unit.prompt.source, "task": unit.task, "reason": reason}
                shard.commit_error(unit.key, unit.order, record)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()  # after an out-of-memory item, the next ones get the memory back
                with open(errors_path, "a") as handle:  # live view; rewritten whole at the end
                    handle.write(json.dumps(record) + "\n")
                summary.failed += 1
            else:
                shard.commit_unit(unit.key, unit.order, rows, output)
                summary.succeeded += 1
                summary.rows += len(rows)
            progress.update(1)
    finally:
        progress.close()
        shard.close()
    summary.model_seconds, summary.entropy_seconds = timer.model, timer.entropy

    _barrier(world)
    if rank == 0:
        frame = collect(run_dir)
        summary.rows = len(frame)
        errors = store.read_errors(run_dir)
        manifest.update(status="complete", ended=_now())
        manifest["counts"].update(rows=len(frame), errors=len(errors), succeeded=len(units) - len(errors))
        manifest["timing"] = {"model_seconds": timer.model, "entropy_seconds": timer.entropy, "rank": 0}
        _write_manifest(run_dir, manifest)
        if errors and len(errors) == len(units):
            raise EntroprobeError(
                f"Every unit failed ({len(errors)}); the first: {errors[0]['item']}: {errors[0]['reason']} "
                f"(all in {errors_path})"
            )
    summary.seconds = time.perf_counter() - started
    return summary


def _progress(config: ProbeConfig, total: int, rank: int):
    from tqdm.auto import tqdm

    enabled = config.progress if config.progress is not None else sys.stderr.isatty()
    return tqdm(total=total, unit="item", desc=f"probing {config.model}", disable=not enabled or rank != 0,
                dynamic_ncols=True, smoothing=0.1)  # fmt: skip


def collect(run_dir: str | Path) -> Any:
    """Write ``results.parquet``, ``errors.jsonl`` and ``responses.jsonl`` from what the run has committed.

    Works on a finished run and on one still running or killed (on demand); returns the results DataFrame.
    """
    run_dir = Path(run_dir)
    if not store.shard_paths(run_dir):
        raise LoadError(f"{run_dir} holds no committed results (no shards/rank-*.sqlite)")
    frame = store.read_rows(run_dir)
    key = ["source", "prompt_id", "task", "measure", "layer"]
    duplicated = frame.duplicated(key)
    if duplicated.any():  # pragma: no cover - prevented by the done marks; a corrupted directory
        raise LoadError(f"{run_dir} holds duplicate rows, e.g. {frame[duplicated].iloc[0][key].to_dict()}")
    store.write_atomic(run_dir / "results.parquet", lambda tmp: frame.to_parquet(tmp, index=False))
    for name, records in (("errors.jsonl", store.read_errors(run_dir)), ("responses.jsonl", store.read_outputs(run_dir))):
        text = "".join(json.dumps(r) + "\n" for r in records)
        store.write_atomic(run_dir / name, lambda tmp, text=text: tmp.write_text(text))
    return frame
