"""The run directory and the ranks that share it: preparing, checking, resuming, the manifest, torchrun.

Rank 0 prepares the directory (refusing other settings or other weights unless ``overwrite``) and writes
``manifest.json``; every rank waits at barriers where the others must have got that far.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from entroprobe.errors import InputError, LoadError
from entroprobe.probe import store

if TYPE_CHECKING:  # pragma: no cover
    from entroprobe.probe.run import ProbeConfig

__all__ = ["PLACEMENT_KEYS", "world", "barrier", "versions", "now", "open_run_dir", "remove_if_empty",
           "prepare_run_dir", "check_weights", "placed", "write_manifest", "write_prompts", "PROMPT_COLUMNS"]

# loading keywords that place the model but do not change its results: a run may resume elsewhere
PLACEMENT_KEYS = ("device", "device_map", "offload_folder")


def world() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) outside it."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def barrier(world: int) -> None:
    if world <= 1:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        # ranks may finish hours apart (uneven generation lengths): wait up to three days at the final barrier
        dist.init_process_group(backend="gloo", timeout=_dt.timedelta(days=3))
    dist.barrier()


def versions() -> dict[str, str]:
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


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def wipe(run_dir: Path) -> None:
    for name in ("shards", "states", "images"):
        shutil.rmtree(run_dir / name, ignore_errors=True)
    for name in ("results.parquet", "errors.jsonl", "responses.jsonl", "manifest.json", "prompts.parquet"):
        (run_dir / name).unlink(missing_ok=True)


def open_run_dir(out: str | Path, rank: int) -> tuple[Path, bool]:
    """The run directory, made if need be (rank 0), checked to be a writable directory before anything loads.

    Returns the path and whether this call made it. Stale temporary files of dead processes are removed.

    Raises:
        LoadError: ``out`` is a file, or cannot be made or written (naming why).
    """
    run_dir = Path(out)
    if rank != 0:
        return run_dir, False
    if run_dir.exists() and not run_dir.is_dir():
        raise LoadError(f"--out {run_dir} is a file, not a directory: choose a directory for the run")
    made = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".entroprobe-write-test.{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise LoadError(f"cannot write the run directory {run_dir}: {exc.strerror or exc}") from None
    store.remove_stale_temporaries(run_dir)
    return run_dir, made


def remove_if_empty(run_dir: Path) -> None:
    """Remove a run directory this run made when it holds nothing but the lock (it failed before any unit)."""
    from entroprobe.probe.lock import LOCK_NAME

    try:
        if all(p.name == LOCK_NAME for p in run_dir.iterdir()):
            shutil.rmtree(run_dir)
    except OSError:  # pragma: no cover - left for the user to see
        pass


def prepare_run_dir(config: ProbeConfig, run_dir: Path, rank: int) -> dict[str, Any] | None:
    """Check the run directory (rank 0 alone, holding its lock); returns the manifest of the run to resume.

    The same settings resume; other settings are refused unless ``overwrite``, which then starts afresh.
    """
    if rank != 0:
        return None
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
            wipe(run_dir)
            previous = None
    elif store.shard_paths(run_dir):
        if not config.overwrite:
            raise InputError(f"{run_dir} holds shards but no manifest.json; pass --overwrite to start afresh")
        wipe(run_dir)
    return previous


def check_weights(config: ProbeConfig, run_dir: Path, previous: dict[str, Any] | None,
                   fingerprint: str, defaults: Any = None) -> dict[str, Any] | None:  # fmt: skip
    """Refuse to resume a run with other weights at the same path, or whose model family now generates with
    other defaults (``defaults``: the adapter's record, e.g. an entroprobe that follows the authors' settings);
    unless overwrite: start afresh.

    Returns the manifest of the run to resume, None when there is none (any more).
    """
    if previous is None:
        return None
    before = previous.get("model", {}).get("fingerprint")
    earlier = json.loads(json.dumps(previous.get("model", {}).get("defaults")))
    now = json.loads(json.dumps(defaults))
    why = None
    if before is not None and before != fingerprint:
        why = f"was started with other weights (fingerprint {before}, now {fingerprint})"
    elif earlier != now:
        earlier, now = earlier or {}, now or {}
        changed = sorted(k for k in {*earlier, *now} if earlier.get(k) != now.get(k))
        why = (f"was measured with other generation defaults ({', '.join(changed) or 'none recorded'} differ: "
               "see model.defaults in its manifest.json)")
    if why is not None:
        if not config.overwrite:
            raise InputError(f"{run_dir} {why}; pass --overwrite to start afresh, or choose another --out")
        wipe(run_dir)
        return None
    return previous


def placed(model_args: dict[str, Any], world: int) -> dict[str, Any]:
    """Under torchrun on GPUs, each rank's model goes to its own GPU (``cuda:LOCAL_RANK``)."""
    if world <= 1 or not torch.cuda.is_available() or "device_map" in model_args:
        return model_args
    if str(model_args.get("device", "auto")) not in ("auto", "cuda"):
        return model_args
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    return {**model_args, "device": f"cuda:{local_rank}"}


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    text = json.dumps(manifest, indent=2, default=str) + "\n"
    store.write_atomic(run_dir / "manifest.json", lambda tmp: tmp.write_text(text))


PROMPT_COLUMNS = ["source", "prompt_id", "modality", "prompt_type", "text", "image", "content", "prompt_meta",
                  "n_text_tokens", "n_unknown_tokens"]  # fmt: skip


def write_prompts(run_dir: Path, prompts: list[Any], readings: dict[tuple[str, str], Any] | None = None) -> None:
    """``RUN_DIR/prompts.parquet``: what each prompt was (text, image file or ``<bytes>``, content hash, meta) and
    how the model read its text (tokens, unknown tokens; empty when the model cannot say), one row per prompt;
    the results' ``source`` and ``prompt_id`` join to it."""
    import pandas as pd

    readings = readings or {}
    rows = [[p.source, p.id, p.modality, p.prompt_type, p.text, p.image_path or ("<bytes>" if p.image_bytes else None),
             p.content_hash, json.dumps(p.meta, sort_keys=True)] for p in prompts]  # fmt: skip
    frame = pd.DataFrame(rows, columns=PROMPT_COLUMNS[:-2]).astype("string")
    for column, field in (("n_text_tokens", "tokens"), ("n_unknown_tokens", "unknown")):
        frame[column] = pd.array([getattr(readings.get((p.source, p.id)), field, None) for p in prompts], dtype="Int64")
    store.write_atomic(run_dir / "prompts.parquet", lambda tmp: frame.to_parquet(tmp, index=False))
