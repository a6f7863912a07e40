"""Load run directories for the report: check each is complete, check their settings agree, stack their rows.

A run directory holds ``manifest.json`` and ``results.parquet`` (columns in :mod:`entroprobe.probe.schema`).
The stacked table keeps the schema's columns and adds three:

- ``run``: the run directory, as given;
- ``label``: the name the report shows for the model (its spec; the spec and the run's folder name when the
  same spec comes from runs measured differently: α, σ rule, base, matched token counts or pooled σ);
- ``depth``: ``layer / num_layers``, 0 at the embedding output, 1 at the last layer.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from entroprobe.errors import InputError, LoadError
from entroprobe.probe.schema import COLUMNS, MEASURES, MODALITIES, ROW_KEY, TASKS

__all__ = ["Run", "load", "PROMPT_KEY"]

# what identifies one prompt of one model: the unit the bootstrap resamples
PROMPT_KEY = ["label", "source", "prompt_id"]


@dataclass(frozen=True)
class Run:
    """One loaded run directory: where it is, its manifest and the settings the report compares."""

    path: Path
    manifest: dict[str, Any]
    alpha: float
    sigma: str | float  # "median", "pooled" or the fixed bandwidth
    base: float

    @property
    def name(self) -> str:
        return str(self.path)

    def settings_text(self) -> str:
        return f"α = {self.alpha:g}, σ = {sigma_text(self.sigma)}, base = {self.base:g}"


def sigma_text(sigma: str | float) -> str:
    """``"median"`` → ``"median rule"``, ``"pooled"`` → ``"pooled median rule"``; a number → ``"fixed 1.5"``."""
    if sigma in ("median", "pooled"):
        return "median rule" if sigma == "median" else "pooled median rule (one σ per layer for the run)"
    return f"fixed {float(sigma):g}"


def load(run_dirs: Sequence[str | Path], *, allow_mixed: bool = False) -> tuple[pd.DataFrame, list[Run]]:
    """Load and check run directories; stack their rows.

    Args:
        run_dirs: one or more run directories (each with ``manifest.json`` and ``results.parquet``).
        allow_mixed: accept runs whose α, σ rule or base differ (otherwise refused).

    Returns:
        The stacked rows (schema columns + ``run``, ``label``, ``depth``) and the runs, in the order given.

    Raises:
        InputError: no run directory given; settings differ (without ``allow_mixed``); a table that lacks
            schema columns, has unknown tasks/measures/modalities, disagrees with its manifest, or repeats
            measurements of another run.
        LoadError: a directory that is missing, partial (status not ``"complete"`` or no results.parquet) or
            whose files cannot be read.
    """
    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    if len(run_dirs) == 0:
        raise InputError("make a report from at least one run directory; got none")
    seen: set[Path] = set()
    runs, tables = [], []
    for given in run_dirs:
        path = Path(given)
        if path.resolve() in seen:
            raise InputError(f"run directory {path} is given twice; give each run once")
        seen.add(path.resolve())
        run = _read_manifest(path)
        runs.append(run)
        tables.append(_read_results(run))
    notes = [note for table in tables for note in table.attrs.get("notes", [])]
    if not allow_mixed:
        _refuse_mixed(runs)
    df = pd.concat(tables, ignore_index=True)
    df.attrs["notes"] = notes
    df["label"] = _labels(df, runs)
    df["depth"] = df["layer"] / df["num_layers"].where(df["num_layers"] > 0)
    _check_consistent(df)
    return df, runs


def _read_manifest(path: Path) -> Run:
    if not path.is_dir():
        raise LoadError(f"run directory {path} does not exist (expected a folder written by `entroprobe run`)")
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise LoadError(f"run directory {path} has no manifest.json: not a run directory, or a partial run")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LoadError(f"cannot read {manifest_path}: {exc}") from None
    if not isinstance(manifest, dict):
        raise LoadError(f"{manifest_path} must hold a JSON object; got {type(manifest).__name__}")
    status = manifest.get("status")
    if status != "complete":
        raise LoadError(
            f"run directory {path} is partial: manifest status is {status!r}, expected 'complete' "
            "(resume the run with the same command, then make the report)"
        )
    if not (path / "results.parquet").is_file():
        raise LoadError(f"run directory {path} is partial: it has no results.parquet (resume or re-run it)")
    settings = manifest.get("settings")
    if not isinstance(settings, dict):
        raise LoadError(f"{manifest_path} has no 'settings' object (expected alpha, sigma, base, …)")
    missing = [key for key in ("alpha", "sigma", "base") if key not in settings]
    if missing:
        raise LoadError(f"{manifest_path} settings lack {', '.join(missing)} (expected alpha, sigma, base)")
    sigma = settings["sigma"]
    if sigma not in ("median", "pooled"):
        try:
            sigma = float(sigma)
        except (TypeError, ValueError):
            raise LoadError(f"{manifest_path} settings.sigma must be 'median', 'pooled' or a number; "
                            f"got {sigma!r}") from None
    try:
        alpha, base = float(settings["alpha"]), float(settings["base"])
    except (TypeError, ValueError):
        raise LoadError(
            f"{manifest_path} settings.alpha and settings.base must be numbers; "
            f"got {settings['alpha']!r} and {settings['base']!r}"
        ) from None
    return Run(path=path, manifest=manifest, alpha=alpha, sigma=sigma, base=base)


def _read_results(run: Run) -> pd.DataFrame:
    file = run.path / "results.parquet"
    try:
        df = pd.read_parquet(file)
    except Exception as exc:  # pyarrow raises several unrelated types for a broken file
        raise LoadError(f"cannot read {file}: {exc}") from None
    notes = _fill_older_columns(df, run)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"{file} lacks the columns {', '.join(missing)} (expected every column of probe.schema)")
    df = df[list(COLUMNS)].copy()
    for column, (dtype, _) in COLUMNS.items():
        try:
            df[column] = df[column].astype("float64" if dtype == "int64" and df[column].isna().any() else dtype)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{file} column {column!r} is not {dtype}: {exc}") from None
    for column, known in (("task", TASKS), ("measure", MEASURES), ("modality", MODALITIES)):
        unknown = sorted(set(df[column].dropna()) - set(known))
        if unknown:
            raise InputError(f"{file} has unknown {column} values {unknown}; expected one of {list(known)}")
    _check_against_manifest(df, run, file)
    df.insert(0, "run", run.name)
    df.attrs["notes"] = notes
    return df


# columns an older entroprobe did not write, and what its rows mean in them
_OLDER_DEFAULTS = {"subsample": 0, "subsample_response": 0, "draws": 1, "sigma_scale": 1.0}


def _fill_older_columns(df: pd.DataFrame, run: Run) -> list[str]:
    """Give a table from an older entroprobe the columns it lacks; return a note saying so (or nothing)."""
    added = [c for c in (*_OLDER_DEFAULTS, "reference", "kernel_state") if c not in df.columns]
    if not added:
        return []
    for column, value in _OLDER_DEFAULTS.items():
        if column not in df.columns:
            df[column] = value
    if "reference" not in df.columns:  # known in closed form under the median rule; unknown for a fixed σ
        from entroprobe.entropy import structureless_entropy

        df["reference"] = float("nan")
        if run.sigma == "median":
            @functools.lru_cache(maxsize=None)  # one closed form per token count, not one per row
            def ref(n: int) -> float:
                return structureless_entropy(int(n), alpha=run.alpha, base=run.base).item()

            kernel = [round(run.base**m) if m > 0 else 1 for m in df["max_entropy"]]  # the rows the kernel saw
            df["reference"] = [ref(k) - (ref(n) if measure == "conditional_entropy" else 0.0)
                               for k, n, measure in zip(kernel, df["n_tokens"], df["measure"])]  # fmt: skip
    if "kernel_state" not in df.columns:
        df["kernel_state"] = "unknown"
    return [f"{run.path / 'results.parquet'} was written by an older entroprobe without {', '.join(added)}: its "
            "rows are taken as measured on every token at σ × 1, without matched rows or kernel states."]


def _check_against_manifest(df: pd.DataFrame, run: Run, file: Path) -> None:
    """The table's α, σ rule and base must be the manifest's: the report states the manifest's."""
    for column, expected in (("alpha", run.alpha), ("base", run.base)):
        values = sorted(set(df[column].dropna().round(12)))
        if any(not math.isclose(v, expected, rel_tol=1e-9) for v in values):
            raise InputError(f"{file} has {column} {values} but its manifest says {expected:g}")
    rule = run.sigma if run.sigma in ("median", "pooled") else "fixed"
    rules = sorted(set(df["sigma_rule"].dropna()))
    if any(r != rule for r in rules):
        raise InputError(f"{file} has sigma_rule {rules} but its manifest's sigma {run.sigma!r} means {rule!r}")


def _refuse_mixed(runs: list[Run]) -> None:
    differing = []
    for name, get in (("α", lambda r: r.alpha), ("σ", lambda r: sigma_text(r.sigma)), ("base", lambda r: r.base)):
        values = [get(r) for r in runs]
        if len(set(values)) > 1:
            differing.append(f"{name}: " + ", ".join(f"{r.name} has {v if isinstance(v, str) else f'{v:g}'}"
                                                     for r, v in zip(runs, values)))
    if differing:
        raise InputError(
            "these runs were measured with different settings and are not comparable in one report ("
            + "; ".join(differing)
            + "). Report them separately, or pass allow_mixed=True (--allow-mixed) to compare them anyway."
        )


def _measured_alike(run: Run) -> tuple:
    """What must agree for two runs of one model to be one curve: α, σ rule, base, the matched token counts
    (a matched comparison must not mix counts) and, under ``--sigma pooled``, the calibrated ruler itself."""
    settings = run.manifest.get("settings", {})
    pooled = run.manifest.get("sigma_pooled") or {}
    return (run.alpha, sigma_text(run.sigma), run.base, settings.get("match_tokens"),
            settings.get("match_response_tokens"), tuple(pooled.get("sigma", ())))


def _labels(df: pd.DataFrame, runs: list[Run]) -> pd.Series:
    """The model spec, made unique when one spec comes from runs measured differently (see ``_measured_alike``)."""
    settings = {r.name: _measured_alike(r) for r in runs}
    labels = df["model"].astype("string").copy()
    for model, group in df.groupby("model", sort=False)["run"]:
        names = list(dict.fromkeys(group))
        if len({settings[n] for n in names}) > 1:
            for name in names:
                rows = (df["model"] == model) & (df["run"] == name)
                labels[rows] = f"{model} [{Path(name).name}]"
    return labels


def _check_consistent(df: pd.DataFrame) -> None:
    # one layer count per model and task: a task may run through another network of the model (OmniGen2 makes
    # images with a diffusion transformer beside its MLLM), never two counts within one task
    layers = df.groupby(["label", "task"])["num_layers"].unique()
    for (label, task), values in layers.items():
        if len(values) > 1:
            raise InputError(f"model {label} has {task} rows with different num_layers "
                             f"{sorted(int(v) for v in values)}; expected one per task")  # fmt: skip
    key = PROMPT_KEY + [c for c in ROW_KEY if c not in PROMPT_KEY]
    dup = df.duplicated(key, keep=False)
    if dup.any():
        rows = df[dup]
        first = rows.iloc[0]
        runs = sorted(set(rows.loc[(rows[key] == first[key]).all(axis=1), "run"]))
        raise InputError(
            f"{int(dup.sum())} rows measure the same thing twice, e.g. model {first['label']}, prompt "
            f"{first['source']}/{first['prompt_id']}, task {first['task']}, measure {first['measure']}, layer "
            f"{first['layer']} in {', '.join(runs)}; expected each (model, prompt, task, measure, layer) once"
        )
