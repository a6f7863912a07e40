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

import contextlib
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from entroprobe.errors import CapabilityError, EntroprobeError, InputError, ItemError, LoadError
from entroprobe.models import placement
from entroprobe.probe import batching
from entroprobe.probe import progress as reporting
from entroprobe.probe import reading as prompt_reading
from entroprobe.probe import rundir, store
from entroprobe.probe.lock import RunLock
from entroprobe.probe import units as unit_work
from entroprobe.probe.measures import MeasureSettings, parse_layers, resolve_layers
from entroprobe.probe.rundir import PLACEMENT_KEYS
from entroprobe.probe.schema import TASKS

__all__ = ["ProbeConfig", "RunSummary", "run_probe", "collect", "parse_model_args"]

SETTINGS_KEYS = (
    "model", "model_args", "text_prompts", "image_prompts", "tasks",
    "alpha", "sigma", "base", "limit", "max_new_tokens", "seed",
    "sigma_scales", "match_tokens", "match_response_tokens", "match_draws", "calibration_units", "layers",
)  # fmt: skip
SIGMA_RULES = ("median", "pooled")


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
    sigma: str | float = "median"  # "median" (per sequence and layer), "pooled" (per layer, for the run) or a σ
    base: float = 2.0
    sigma_scales: tuple[float, ...] = (1.0,)  # every measure also at σ × each factor (1 is always included)
    match_tokens: int = 16  # prompt tokens of the matched measures (0: none)
    match_response_tokens: int = 16  # response tokens of the matched measures (0: response whole)
    match_draws: int = 8  # random subsets averaged per matched measure
    calibration_units: int = 32  # units whose token pairs set the pooled σ (--sigma pooled)
    limit: int | None = None  # at most this many prompts per source
    max_new_tokens: int = 32  # for text responses
    seed: int = 0
    batch_size: int = 1  # prompts per forward pass and per generate call (rows equal B = 1's, float tolerance)
    state_memory: float | None = 2.0  # GiB of a pass's float32 states kept on the GPU; larger ones go to the CPU
    layers: str | None = None  # the layers measured: "0,4,8,-1" or "every=4" (None: all)
    save_states: bool = False  # keep every unit's layer states (safetensors) under RUN_DIR/states/
    overwrite: bool = False  # start afresh in a run directory holding a run with other settings
    progress: bool | None = None  # a bar; None: a bar on a terminal, a line every 30 s elsewhere; False: none

    def settings(self) -> dict[str, Any]:
        """The settings that define a run's results; resuming requires the same ones."""
        out = {key: getattr(self, key) for key in SETTINGS_KEYS}
        out["tasks"] = list(self.tasks)
        out["sigma_scales"] = list(self.scales())
        if self.sigma != "pooled":  # settings that change nothing in this run are not part of its identity
            out.pop("calibration_units")
        if not self.match_tokens and not self.match_response_tokens:
            out.pop("match_draws")
        if not self.layers:
            out.pop("layers")  # all layers: as runs that predate --layers
        out["model_args"] = {k: str(v) for k, v in sorted(self.model_args.items()) if k not in PLACEMENT_KEYS}
        return out

    def scales(self) -> tuple[float, ...]:
        """The σ scales measured: the given factors and 1, ascending."""
        return tuple(sorted({1.0, *(float(s) for s in self.sigma_scales)}))

    def measure_settings(self, pooled: list[float] | None = None, num_layers: int | None = None,
                         device: Any = None) -> MeasureSettings:  # fmt: skip
        """How every unit is measured; ``pooled`` is the calibrated σ per layer under ``--sigma pooled``,
        ``num_layers`` the model's (to resolve ``layers``), ``device`` where the estimators compute."""
        if self.sigma == "pooled":
            sigma, rule = torch.tensor(pooled, dtype=torch.float64), "pooled"
        else:
            sigma, rule = self.sigma, "median" if self.sigma == "median" else "fixed"
        return MeasureSettings(alpha=self.alpha, sigma=sigma, sigma_rule=rule, base=self.base, scales=self.scales(),
                               match_tokens=self.match_tokens, match_response_tokens=self.match_response_tokens,
                               draws=self.match_draws,
                               layer_spec=self.layers, num_layers=num_layers,
                               device=None if device is None else torch.device(device))  # fmt: skip

    def check(self) -> None:
        """Refuse settings the run would fail on, before anything is loaded."""
        from entroprobe.entropy import check_parameters

        if isinstance(self.sigma, str) and self.sigma not in SIGMA_RULES:
            raise InputError(f"Unknown sigma rule '{self.sigma}'; use a positive number or one of: "
                             + ", ".join(SIGMA_RULES))  # fmt: skip
        check_parameters(alpha=self.alpha, sigma="median" if self.sigma == "pooled" else self.sigma, base=self.base,
                         sigma_scale=list(self.sigma_scales) or [1.0])  # fmt: skip
        parse_layers(self.layers)
        unknown = [task for task in self.tasks if task not in TASKS]
        if unknown:
            raise InputError(f"Unknown task(s) {', '.join(unknown)}; expected any of {', '.join(TASKS)}")
        if not self.tasks:
            raise InputError("No task given; expected any of " + ", ".join(TASKS))
        if not self.text_prompts and not self.image_prompts:
            raise InputError("Nothing to probe: give --text-prompts and/or --image-prompts")
        for name in ("max_new_tokens", "limit", "match_draws", "calibration_units", "batch_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InputError(f"{name} must be a positive integer; got {value!r}")
        for name in ("match_tokens", "match_response_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InputError(f"{name} must be a whole number of tokens (0 turns matching off); got {value!r}")
        memory = self.state_memory
        if memory is not None and (isinstance(memory, bool) or not isinstance(memory, (int, float))
                                   or not math.isfinite(memory) or memory < 0):  # fmt: skip
            raise InputError(f"state_memory must be a number of GiB ≥ 0 (0: every unit's states on the CPU); got "
                             f"{memory!r}")  # fmt: skip


@dataclass
class RunSummary:
    run_dir: Path
    units: int = 0  # units this run had to do (all ranks)
    done_before: int = 0  # units already committed when it started (resume)
    succeeded: int = 0  # units this process committed with rows
    failed: int = 0  # units this process recorded as errors
    rows: int = 0  # rows in results.parquet (rank 0) or committed by this process
    skipped: list[str] = field(default_factory=list)  # task/modality pairs the model cannot do
    too_short: int = 0  # units this process measured without matched rows: shorter than the matched counts
    matched: str = ""  # the matched token counts, in words
    rank: int = 0  # the rank this summary is of (rows: all ranks' on rank 0, this rank's elsewhere)
    notices: list[str] = field(default_factory=list)  # what a resume or a repair changed, in words
    reading: dict[str, Any] = field(default_factory=dict)  # unknown tokens of the prompts (see probe.reading)
    seconds: float = 0.0
    model_seconds: float = 0.0  # time in the model adapter (forward passes, generation)
    entropy_seconds: float = 0.0  # time in the estimators
    peak_gpu_bytes: int = 0  # the most GPU memory one unit's (or batch's) model work took above the model's own
    state_memory: float | None = None  # GiB of states kept on the GPU (larger ones went to the CPU)

    @property
    def entropy_share(self) -> float:
        busy = self.model_seconds + self.entropy_seconds
        return self.entropy_seconds / busy if busy else 0.0

    def describe(self) -> str:
        lines = [
            f"run directory: {self.run_dir}",
            f"units: {self.units} ({self.done_before} already done), {self.succeeded} succeeded, {self.failed} failed",
            f"rows in results.parquet: {self.rows}" if self.rank == 0 else f"rows committed by rank {self.rank}: "
                                                                          f"{self.rows}",
            f"time: {self.seconds:.1f} s, {self.succeeded / self.seconds if self.seconds else 0:.2f} units/s, "
            f"entropy {100 * self.entropy_share:.0f} % of model + entropy time",
        ]
        if self.peak_gpu_bytes:
            kept = "" if self.state_memory is None else f"; states over {self.state_memory:g} GiB kept on the CPU"
            lines.append(f"GPU memory: a unit's (or batch's) model work took at most "
                         f"{self.peak_gpu_bytes / (1 << 30):.2f} GiB above the model{kept}")  # fmt: skip
        if self.matched:
            lines.append(f"matched measures at {self.matched}: {self.too_short} units too short for them")
        if prompt_reading.describe(self.reading):
            lines.append(prompt_reading.describe(self.reading))
        lines += [f"skipped (the model cannot do it): {s}" for s in self.skipped]
        lines += [f"note: {n}" for n in self.notices]
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


# -- the run --------------------------------------------------------------------------------------------------


def run_probe(config: ProbeConfig, adapter: Any = None) -> RunSummary:
    """Run (or resume) a probe run; returns its summary. ``adapter`` may be given already loaded.

    The run directory is locked while the run writes it (see :mod:`.lock`): a second writer is refused.

    Raises:
        InputError / LoadError / CapabilityError: when the setup is wrong (unknown model or source, settings
            differing from the run directory's, nothing the model can do, ``out`` not a writable directory,
            another process writing it, a full disk).
        EntroprobeError: when every unit failed (the errors are in errors.jsonl).
    """
    started = time.perf_counter()
    config.check()
    rank, world = rundir.world()
    prompts = unit_work.run_prompts(config)  # a bad source fails before the model loads
    if adapter is None:
        _refuse_impossible(config, prompts)  # so does a model that can do none of the tasks
    run_dir, made = rundir.open_run_dir(config.out, rank)  # so does an --out that cannot be written
    lock = RunLock(run_dir) if rank == 0 else contextlib.nullcontext()
    budget = None if config.state_memory is None else int(config.state_memory * (1 << 30))
    with lock, placement.state_budget(budget):  # large states go to the CPU (models.placement), calibration too
        try:
            return _run(config, adapter, prompts, run_dir, rank, world, started)
        except BaseException:
            if made and rank == 0:
                rundir.remove_if_empty(run_dir)  # a run that failed before its first unit leaves no empty --out
            raise


def _check_depths(config: ProbeConfig, adapter: Any, tasks: set[str]) -> None:
    """Refuse ``--layers`` a network of the model lacks, and a pooled σ where tasks run in networks of different
    depth (one σ per layer of one network cannot measure another)."""
    depths = {task: int(adapter.layers_for(task)) for task in sorted(tasks)}
    for depth in {adapter.num_layers, *depths.values()}:
        resolve_layers(config.layers, depth)
    other = {task: depth for task, depth in depths.items() if depth != adapter.num_layers}
    if other and config.sigma == "pooled":
        said = ", ".join(f"{task} in one of {depth}" for task, depth in other.items())
        raise InputError(f"--sigma pooled calibrates one σ per layer of {config.model}'s {adapter.num_layers}-layer "
                         f"network, but it measures {said}: use --sigma median or a fixed σ for this model")  # fmt: skip


def _run(config: ProbeConfig, adapter: Any, prompts: list[Any], run_dir: Path, rank: int, world: int,
         started: float) -> RunSummary:  # fmt: skip
    if rank == 0:
        store.remove_stale_temporaries(run_dir)  # under the lock: no live writer of this directory has any
    previous = rundir.prepare_run_dir(config, run_dir, rank)
    rundir.barrier(world)  # no rank reads the directory before rank 0 has prepared it
    if adapter is None:
        adapter = _load(config, world, rank)
    units, skipped = unit_work.plan(config, adapter, prompts)
    _check_depths(config, adapter, {unit.task for unit in units})  # a layer the model lacks: refused before any work
    if not units:
        raise CapabilityError(f"Model '{config.model}' can do none of the requested work: {', '.join(skipped)}")
    fingerprint = adapter.fingerprint()
    pooled, changed = None, []
    if rank == 0:
        previous = rundir.check_weights(config, run_dir, previous, fingerprint, adapter.describe().get("defaults"))
        changed = _forget_changed(run_dir, units)
        pooled = unit_work.pooled_sigma(config, adapter, units, previous, rank, run_dir)  # before the first unit

    threads = torch.get_num_threads()
    reading, readings = prompt_reading.read_prompts(adapter, list({id(u.prompt): u.prompt for u in units}.values()))
    manifest = {
        "entroprobe_version": rundir.versions()["entroprobe"],
        "status": "running",
        "model": {"spec": config.model, **adapter.describe(), "fingerprint": fingerprint},
        "settings": config.settings(),
        "started": (previous or {}).get("started") or rundir.now(),
        "ended": None,
        "counts": {"prompts": len({(u.prompt.source, u.prompt.id) for u in units}), "units": len(units)},
        "skipped": skipped,
        "reading": reading,
        "versions": rundir.versions(),
        "device": str(getattr(adapter, "device", "cpu")),
        "placement": {k: str(v) for k, v in config.model_args.items() if k in PLACEMENT_KEYS},
        # tasks measured in another network of the model, with its layer count (OmniGen2's diffusion transformer)
        "layers_by_task": {task: int(adapter.layers_for(task)) for task in config.tasks
                           if int(adapter.layers_for(task)) != adapter.num_layers},  # fmt: skip
        "world_size": (previous or {}).get("world_size", world),  # what the run began with
        "threads": (previous or {}).get("threads", threads),
        "batch_size": (previous or {}).get("batch_size", config.batch_size),
        "invocations": [*(previous or {}).get("invocations", []),
                        {"started": rundir.now(), "world_size": world, "threads": threads,
                         "batch_size": config.batch_size}],
    }
    notices = _resume_notices(previous, world, threads, changed, config.batch_size)
    if prompt_reading.warning(reading, config.model):
        notices.append(prompt_reading.warning(reading, config.model))
    if rank == 0:
        if pooled is not None:
            manifest["sigma_pooled"] = pooled
        rundir.write_manifest(run_dir, manifest)
        rundir.write_prompts(run_dir, prompts, readings)

    # rank 0 has wiped (--overwrite), forgotten edited units and written the pooled σ before any rank reads marks
    rundir.barrier(world)
    done = store.done_units(run_dir)
    rundir.barrier(world)  # every rank has read the done marks before any creates its shard
    if rank != 0:
        pooled = unit_work.pooled_sigma(config, adapter, units, None, rank, run_dir)
    settings = config.measure_settings(None if pooled is None else pooled["sigma"], adapter.num_layers,
                                       getattr(adapter, "device", None))  # fmt: skip
    todo = [u for u in units[rank::world] if u.key not in done]
    summary = RunSummary(run_dir=run_dir, units=len(units), done_before=len(done.keys() & {u.key for u in units}),
                         skipped=skipped, matched=_matched_text(config), rank=rank, notices=notices,
                         reading=reading)  # fmt: skip
    timer = unit_work.Timer()
    shard = store.ShardStore(run_dir, rank)
    if shard.repaired:
        summary.notices.append(f"repaired {shard.path}: {shard.repaired} rows an older entroprobe had committed "
                               "twice are kept once")  # fmt: skip
    desc = f"probing {config.model}" + (f" (rank 0's share of {world} ranks)" if world > 1 else "")
    progress = reporting.progress(len(todo), desc, config.progress, rank)
    errors_path = run_dir / "errors.jsonl"

    def lowered(sizes: dict[str, int]) -> None:  # rank 0's, written at once: kept if the run is stopped
        manifest["invocations"][-1]["batch_sizes_lowered"] = sizes
        rundir.write_manifest(run_dir, manifest)  # a failed write says its path and the cause (LoadError)

    log = batching.BatchLog(config.batch_size, on_lower=lowered if rank == 0 else None)  # sizes, fallbacks
    pairs = (pair for batch in batching.batches(todo, config.batch_size)
             for pair in batching.outcomes(config, adapter, batch, timer, run_dir, settings, log))  # fmt: skip
    try:
        for unit, outcome in pairs:
            if isinstance(outcome, Exception):  # one item's failure is recorded; the run goes on
                exc = outcome
                if store.disk_full(exc):  # not the item's fault: every later unit would fail alike
                    raise store.commit_failure(exc, run_dir) from None
                reason = exc.reason if isinstance(exc, ItemError) else f"{type(exc).__name__}: {exc}"
                record = {"item": unit.prompt.id, "source": unit.prompt.source, "task": unit.task, "reason": reason}
                shard.commit_error(unit.key, unit.order, record, unit.content)
                if batching.out_of_memory(exc):
                    batching.free_memory()  # after an out-of-memory item, the next ones get the memory back
                try:
                    with open(errors_path, "a") as handle:  # live view; rewritten whole at the end
                        handle.write(json.dumps(record) + "\n")
                except OSError as write_error:
                    raise store.commit_failure(write_error, errors_path) from None
                summary.failed += 1
            else:
                rows, output, too_short = outcome
                shard.commit_unit(unit.key, unit.order, rows, output, unit.content)
                summary.succeeded += 1
                summary.rows += len(rows)
                summary.too_short += too_short
            progress.update(1)
        if log.fallbacks:
            summary.notices.append(f"{len(log.fallbacks)} batches failed as a batch and were done one prompt at a "
                                   f"time (first: {log.fallbacks[0]})")  # fmt: skip
        summary.notices += log.lowered
    finally:
        pairs.close()  # a stopped batch's states go now, not with the traceback (which a notebook keeps)
        progress.close()
        shard.close()
    summary.model_seconds, summary.entropy_seconds = timer.model, timer.entropy
    summary.peak_gpu_bytes, summary.state_memory = timer.peak_gpu, config.state_memory

    rundir.barrier(world)
    if rank == 0:
        frame = collect(run_dir)
        summary.rows = len(frame)
        errors = store.read_errors(run_dir)
        manifest.update(status="complete", ended=rundir.now())
        manifest["counts"].update(rows=len(frame), errors=len(errors), succeeded=len(units) - len(errors))
        manifest["matched"] = _matched_counts(config, frame)
        manifest["timing"] = {"model_seconds": timer.model, "entropy_seconds": timer.entropy, "rank": 0,
                              "peak_gpu_bytes": timer.peak_gpu, "state_memory_gib": config.state_memory}
        manifest["invocations"][-1].update(ended=manifest["ended"], seconds=time.perf_counter() - started,
                                           rank0_units=summary.succeeded + summary.failed,
                                           rank0_model_seconds=timer.model, rank0_entropy_seconds=timer.entropy)
        rundir.write_manifest(run_dir, manifest)
        if errors and len(errors) == len(units):
            raise EntroprobeError(
                f"Every unit failed ({len(errors)}); the first: {errors[0]['item']}: {errors[0]['reason']} "
                f"(all in {errors_path})"
            )
    summary.seconds = time.perf_counter() - started
    return summary


def _load(config: ProbeConfig, world: int, rank: int) -> Any:
    """Load the model; in a batch job's log (stderr not a terminal) one line says so instead of a redrawn bar."""
    from entroprobe.models import load_model

    if sys.stderr.isatty() or config.progress:
        return load_model(config.model, **rundir.placed(config.model_args, world))
    from transformers.utils import logging as hf_logging

    if rank == 0:
        print(f"loading {config.model} …", file=sys.stderr, flush=True)
    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return load_model(config.model, **rundir.placed(config.model_args, world))
    finally:
        if was:
            hf_logging.enable_progress_bar()


def _refuse_impossible(config: ProbeConfig, prompts: list[Any]) -> None:
    """Refuse, before loading it, a model whose family can do none of the requested tasks on these prompts."""
    from entroprobe.models import capabilities_of

    can = capabilities_of(config.model)
    wanted = {(task, p.modality) for task in config.tasks for p in prompts}
    if not wanted & can:
        have = ", ".join(f"{t}/{m}" for t, m in sorted(can)) or "nothing"
        asked = ", ".join(f"{t}/{m}" for t, m in sorted(wanted))
        raise CapabilityError(f"Model '{config.model}' can do none of the requested work ({asked}); it can do: {have}")


def _forget_changed(run_dir: Path, units: list[Any]) -> list[str]:
    """Units committed with other prompt content than they have now: removed, so that they are measured again."""
    done = store.done_units(run_dir)
    changed = [u.key for u in units if u.key in done and done[u.key] is not None and done[u.key] != u.content]
    if changed:
        store.forget(run_dir, changed)
    return changed


def _resume_notices(previous: dict[str, Any] | None, world: int, threads: int, changed: list[str],
                    batch_size: int = 1) -> list[str]:  # fmt: skip
    """What a resume changes, in words: edited prompts measured again, another thread count, world size or
    batch size."""
    notices = []
    if changed:
        notices.append(f"{len(changed)} units' prompts changed since they were measured (e.g. {changed[0]}): "
                       "measured again")  # fmt: skip
    if previous is None:
        return notices
    for name, now, before in (("threads", threads, previous.get("threads")),
                              ("world size", world, previous.get("world_size")),
                              ("batch size", batch_size, previous.get("batch_size"))):  # fmt: skip
        if before is not None and before != now:
            notices.append(f"this invocation runs with {name} {now}, the run began with {before}: values can differ "
                           "in the last digits (about 1e-6 bits) from those of an uninterrupted run")
    return notices


def _matched_text(config: ProbeConfig) -> str:
    """``"16 prompt / 16 response tokens (8 draws)"``, or empty when the run matches nothing."""
    if not config.match_tokens and not config.match_response_tokens:
        return ""
    prompt = f"{config.match_tokens} prompt" if config.match_tokens else "all prompt"
    response = f"{config.match_response_tokens} response" if config.match_response_tokens else "all response"
    return f"{prompt} / {response} tokens ({config.match_draws} draws)"


def _matched_counts(config: ProbeConfig, frame: Any) -> dict[str, Any]:
    """The matched token counts and, per task, the units measured without matched rows (too short for them)."""
    out: dict[str, Any] = {"match_tokens": config.match_tokens, "match_response_tokens": config.match_response_tokens,
                           "draws": config.match_draws, "units_too_short": {}}  # fmt: skip
    if not _matched_text(config) or frame.empty:
        return out
    unit = ["source", "prompt_id", "task"]
    raw = frame.loc[frame["subsample"].eq(0) & frame["subsample_response"].eq(0), unit].drop_duplicates()
    if not config.match_tokens:  # encode units have no matched block then: they are not short of it
        raw = raw[raw["task"] != "encode"]
    matched = frame.loc[frame["subsample"].gt(0) | frame["subsample_response"].gt(0), unit].drop_duplicates()
    short = raw.merge(matched, how="left", indicator=True).query("_merge == 'left_only'")
    out["units_too_short"] = {str(task): int(n) for task, n in short.groupby("task").size().items()}
    return out


def collect(run_dir: str | Path, *, repair: bool = False) -> Any:
    """Write ``results.parquet``, ``errors.jsonl`` and ``responses.jsonl`` from what the run has committed.

    Works on a finished run and on one still running or killed (on demand); returns the results DataFrame.
    Rows an older entroprobe committed twice (two writers) are read once (``frame.attrs["dropped_duplicates"]``
    counts the copies left out); ``repair`` removes them from the shards for good, with the stale temporary
    files of killed processes (refused while a run writes the directory).
    """
    run_dir = Path(run_dir)
    if not store.shard_paths(run_dir):
        raise LoadError(f"{run_dir} holds no committed results (no shards/rank-*.sqlite)")
    if repair:
        with RunLock(run_dir):  # refused while a run writes the directory
            store.repair(run_dir)
            store.remove_stale_temporaries(run_dir)
    frame, dropped = store.read_rows(run_dir)
    frame.attrs["dropped_duplicates"] = dropped
    store.write_atomic(run_dir / "results.parquet", lambda tmp: frame.to_parquet(tmp, index=False))
    for name, records in (("errors.jsonl", store.read_errors(run_dir)), ("responses.jsonl", store.read_outputs(run_dir))):
        text = "".join(json.dumps(r) + "\n" for r in records)
        store.write_atomic(run_dir / name, lambda tmp, text=text: tmp.write_text(text))
    return frame
