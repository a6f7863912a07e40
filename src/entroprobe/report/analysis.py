"""The numbers behind the report: Table 1 and every figure's curves, as tidy tables with bootstrap intervals.

Every function takes the stacked rows of :func:`entroprobe.report.runs.load` and returns one tidy DataFrame
(written next to the figure as CSV). Curves have columns ``label, <group>, layer, depth, mean, low, high, n``:
the mean over prompts, its 95 % bootstrap interval and the number of prompts at that point.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from entroprobe.errors import InputError
from entroprobe.report.runs import PROMPT_KEY
from entroprobe.report.stats import bootstrap_mean, curve

__all__ = [
    "TEXT_TYPES",
    "IMAGE_TYPES",
    "LENGTHS",
    "Boot",
    "select",
    "type_order",
    "type_keys",
    "type_names",
    "resolve_layers",
    "table1",
    "table1_matched",
    "length_bins",
    "length_groups",
    "trajectories",
    "paired_difference",
    "different_depths",
    "normalised",
    "unit_name",
    "log_name",
]

# The paper's prompt types, in the order of its Table 1.
TEXT_TYPES = ("composition", "abductive", "inductive", "deductive")
IMAGE_TYPES = ("attribute", "logical", "relation", "coarse", "single-instance", "cross-instance")
LENGTHS = ("short", "medium", "long")


@dataclass(frozen=True)
class Boot:
    """Bootstrap settings shared by every interval of a report."""

    n_boot: int = 1000
    seed: int = 0


def select(df: pd.DataFrame, *, task: str | tuple[str, ...], measure: str, modality: str | None = None) -> pd.DataFrame:
    """Rows of one measure, for a task (or several) and optionally one prompt modality."""
    tasks = (task,) if isinstance(task, str) else task
    keep = df["task"].isin(tasks) & (df["measure"] == measure)
    if modality is not None:
        keep &= df["modality"] == modality
    return df[keep]


def type_order(types) -> list[str]:
    """The paper's text types, then its image types, then any other type (sorted), keeping those present."""
    present = set(types)
    paper = [t for t in TEXT_TYPES + IMAGE_TYPES if t in present]
    return paper + sorted(present - set(paper))


def type_keys(rows: pd.DataFrame) -> list[tuple[str, str]]:
    """The ``(modality, prompt_type)`` pairs present in ``rows``: text before image, each in :func:`type_order`.

    A type is keyed with its modality, so a name that both modalities use (``untyped``, or an image folder
    called ``composition``) stays two types, never one that mixes text and image prompts.
    """
    pairs = set(zip(rows["modality"], rows["prompt_type"]))
    modalities = [m for m in ("text", "image") if any(p[0] == m for p in pairs)]
    modalities += sorted({m for m, _ in pairs} - set(modalities))
    return [(m, t) for m in modalities for t in type_order(t for mm, t in pairs if mm == m)]


def type_names(keys: list[tuple[str, str]]) -> list[str]:
    """How each ``(modality, prompt_type)`` is shown: the type, with its modality when both modalities use it.

    >>> type_names([("text", "composition"), ("text", "deductive"), ("image", "composition")])
    ['composition (text)', 'deductive', 'composition (image)']
    """
    modalities: dict[str, set[str]] = {}
    for m, t in keys:
        modalities.setdefault(t, set()).add(m)
    return [f"{t} ({m})" if len(modalities[t]) > 1 else t for m, t in keys]


def resolve_layers(df: pd.DataFrame, table_layer: int) -> dict[str, int]:
    """Each model's layer for ``table_layer`` (negative counts from the last layer, −1 = last), in the network that
    encodes its prompts: the table and the length figure measure the encode rows (a model whose image generation
    runs in another network counts that network's layers only in its own curves; a model with no encode rows has
    no table layer).

    Raises:
        InputError: the layer does not exist for a model (naming the model and its layers).
    """
    out = {}
    counts = df[df["task"] == "encode"].groupby("label", sort=False)["num_layers"].first()
    for label, num_layers in counts.items():
        layer = table_layer if table_layer >= 0 else int(num_layers) + 1 + table_layer
        if not 0 <= layer <= num_layers:
            raise InputError(
                f"table layer {table_layer} does not exist for model {label}: its layers are 0 (embedding output) "
                f"to {int(num_layers)} (or −1 to −{int(num_layers) + 1} counting from the last)"
            )
        out[label] = layer
    return out


def _cells(rows: pd.DataFrame, labels, boot: Boot, name: str, layers: dict[str, int]) -> list[dict]:
    """Table 1's cells of ``rows`` (one measure at each model's table layer), models in ``labels``' order."""
    out = []
    for label in labels:
        for modality, prompt_type in type_keys(rows):
            cell = rows[(rows["label"] == label) & (rows["modality"] == modality)
                        & (rows["prompt_type"] == prompt_type)]
            if cell.empty:
                continue
            per_prompt = cell.groupby(PROMPT_KEY).agg(value=("value", "mean"), n=("n_tokens", "first"))
            mean, low, high, n = bootstrap_mean(
                per_prompt["value"].to_numpy(), n_boot=boot.n_boot, seed=boot.seed,
                key=f"{name}|{label}|{modality}|{prompt_type}",
            )
            out.append({
                "model": label,
                "modality": modality,
                "prompt_type": prompt_type,
                "layer": layers[label],
                "n_prompts": int(n),
                "mean_tokens": float(per_prompt["n"].mean()),
                "mean": float(mean),
                "ci_low": float(low),
                "ci_high": float(high),
            })
    return out


TABLE1_COLUMNS = ["model", "modality", "prompt_type", "layer", "n_prompts", "mean_tokens", "mean", "ci_low", "ci_high"]


def table1(df: pd.DataFrame, layers: dict[str, int], boot: Boot) -> pd.DataFrame:
    """Mean prompt entropy (task encode, every token) per model × (modality, prompt type) at each model's table layer.

    Returns:
        Columns ``model, modality, prompt_type, layer, n_prompts, mean_tokens, mean, ci_low, ci_high``, models in
        the order of the runs, text types before image types, each in the paper's order (see :func:`type_keys`).
    """
    rows = select(df, task="encode", measure="prompt_entropy")
    rows = rows[(rows["layer"] == rows["label"].map(layers)) & (rows["sigma_scale"] == 1.0)]
    rows = rows[(rows["subsample"] == 0) & (rows["subsample_response"] == 0)]
    return pd.DataFrame(_cells(rows, df["label"].unique(), boot, "table1", layers), columns=TABLE1_COLUMNS)


def table1_matched(df: pd.DataFrame, layers: dict[str, int], boot: Boot) -> pd.DataFrame:
    """Table 1 at a matched token count: the prompt entropy at k tokens (the mean over random k-subsets).

    Only the prompts that reach k are in a cell; ``left_out`` counts the cell's other prompts. Models whose runs
    matched at different k are separate tables: the ``k`` column says which.

    Returns:
        The columns of :func:`table1`, then ``k`` and ``left_out``.
    """
    columns = [*TABLE1_COLUMNS, "k", "left_out"]
    encode = select(df, task="encode", measure="prompt_entropy")
    encode = encode[(encode["layer"] == encode["label"].map(layers)) & (encode["sigma_scale"] == 1.0)]
    raw = encode[(encode["subsample"] == 0) & (encode["subsample_response"] == 0)]
    matched = encode[encode["subsample"] > 0]
    out = []
    for k in sorted(set(matched["subsample"])):
        rows = matched[matched["subsample"] == k]
        for cell in _cells(rows, df["label"].unique(), boot, f"table1-k{k}", layers):
            everyone = raw[(raw["label"] == cell["model"]) & (raw["modality"] == cell["modality"])
                           & (raw["prompt_type"] == cell["prompt_type"])]  # fmt: skip
            prompts = len(everyone.drop_duplicates(["source", "prompt_id"]))  # two sources may share ids
            out.append({**cell, "k": int(k), "left_out": prompts - int(cell["n_prompts"])})
    return pd.DataFrame(out, columns=columns)


def length_bins(df: pd.DataFrame, layers: dict[str, int], boot: Boot, max_bins: int = 8) -> pd.DataFrame:
    """Text prompt entropy (task encode) per token-count bin, at each model's table layer.

    Bins are shared by every model: geometric edges from the fewest to the most tokens.

    Returns:
        Columns ``label, bin, n_tokens_from, n_tokens_to, n_tokens_mean, mean, low, high, n, reference`` (the
        mean structureless reference of the bin's prompts: what tokens without structure give at their counts).
    """
    columns = ["label", "bin", "n_tokens_from", "n_tokens_to", "n_tokens_mean", "mean", "low", "high", "n", "reference"]
    rows = select(df, task="encode", measure="prompt_entropy", modality="text")
    rows = rows[rows["layer"] == rows["label"].map(layers)]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    prompts = rows.groupby(PROMPT_KEY, sort=False).agg(value=("value", "mean"), n_tokens=("n_tokens", "first"),
                                                       reference=("reference", "mean"))  # fmt: skip
    prompts = prompts.reset_index()
    edges = _geometric_edges(prompts["n_tokens"].to_numpy(), max_bins)
    prompts["bin"] = np.clip(np.searchsorted(edges, prompts["n_tokens"], side="right") - 1, 0, len(edges) - 2)
    out = []
    for (label, b), sub in prompts.groupby(["label", "bin"], sort=False):
        mean, low, high, n = bootstrap_mean(
            sub["value"].to_numpy(), n_boot=boot.n_boot, seed=boot.seed, key=f"length|{label}|{b}"
        )
        out.append([label, int(b), int(edges[b]), int(edges[b + 1]) - 1, float(sub["n_tokens"].mean()),
                    float(mean), float(low), float(high), int(n), float(sub["reference"].mean())])
    return pd.DataFrame(out, columns=columns).sort_values(["label", "bin"], kind="stable", ignore_index=True)


def _geometric_edges(n_tokens: np.ndarray, max_bins: int) -> np.ndarray:
    """Integer bin edges ``[e0, e1, …]``, bin i holding ``e_i ≤ n < e_{i+1}``."""
    low, high = int(n_tokens.min()), int(n_tokens.max()) + 1
    k = max(1, min(max_bins, len(np.unique(n_tokens))))
    edges = np.unique(np.round(np.geomspace(max(low, 1), high, k + 1)).astype(np.int64))
    edges[0], edges[-1] = min(edges[0], low), max(edges[-1], high)
    return edges if len(edges) > 1 else np.array([low, high])


def length_groups(df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    """Text prompts' rows with a ``length`` column (short / medium / long), and how each model's was found.

    The length comes from ``prompt_meta["length"]`` when every text prompt of the model has one of
    short / medium / long there, and otherwise from tertiles of the model's prompt token counts.

    Returns:
        The text prompts' rows (every task and measure) with ``length``, and per model a sentence on the method.
    """
    text = df[df["modality"] == "text"].copy()
    meta_length = {m: _meta_length(m) for m in text["prompt_meta"].dropna().unique()}
    text["length"] = text["prompt_meta"].map(meta_length).astype("object")
    how = {}
    for label, sub in text.groupby("label", sort=False):
        if sub["length"].isin(LENGTHS).all():
            how[label] = "from the prompts' length field (prompt_meta 'length')"
            continue
        tokens = sub.groupby(PROMPT_KEY)["n_tokens"].first().to_numpy()
        q1, q2 = np.quantile(tokens, [1 / 3, 2 / 3])
        n = sub["n_tokens"]
        text.loc[sub.index, "length"] = np.where(n <= q1, "short", np.where(n <= q2, "medium", "long"))
        how[label] = (f"from tertiles of token count (short ≤ {q1:g}, medium ≤ {q2:g}, long > {q2:g} tokens; "
                      "the prompts carry no length field)")
    return text, how


def _meta_length(meta: str) -> str | None:
    try:
        value = json.loads(meta)
    except (TypeError, ValueError):
        return None
    length = value.get("length") if isinstance(value, dict) else None
    return length if length in LENGTHS else None


def trajectories(
    rows: pd.DataFrame, group: str | list[str], boot: Boot, *, value: str = "value", name: str,
    order: list | None = None,
) -> pd.DataFrame:
    """Per model and per value of ``group``, the mean of ``value`` over prompts at each layer, with a band.

    Args:
        rows: the rows to average (one measure).
        group: the column whose values become separate curves (``modality``, ``task``, …), or several
            columns whose combinations do (``["modality", "prompt_type"]``, ``["task", "modality"]``).
        boot: bootstrap settings.
        value: the column averaged (``value``, ``sigma``, ``saturation``, ``normalised``).
        name: the figure's name, mixed into the bootstrap seed.
        order: the order of the groups (values, or tuples for several columns; others follow in the order of
            appearance); default the order of appearance.

    Returns:
        Columns ``label, <group column(s)>, layer, depth, num_layers, mean, low, high, n``.
    """
    cols = [group] if isinstance(group, str) else list(group)
    columns = ["label", *cols, "layer", "depth", "num_layers", "mean", "low", "high", "n"]
    rows = rows[rows[value].notna()]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    present = list(dict.fromkeys(zip(*(rows[c] for c in cols))))  # one tuple per group
    wanted = [k if isinstance(k, tuple) else (k,) for k in (order or [])]
    groups = [g for g in wanted if g in present] + [g for g in present if g not in wanted]
    out = []
    for label, by_model in rows.groupby("label", sort=False):
        parts = dict(iter(by_model.groupby(cols, sort=False)))  # tuple key → rows
        for g in groups:
            sub = parts.get(g)
            if sub is None:
                continue
            num_layers = int(sub["num_layers"].iloc[0])  # per group: a task may run in another network
            c = curve(sub, by="layer", unit=PROMPT_KEY, value=value, n_boot=boot.n_boot, seed=boot.seed,
                      key=f"{name}|{label}|{'|'.join(map(str, g))}")
            c.insert(0, "label", label)
            for i, (col, v) in enumerate(zip(cols, g)):
                c.insert(1 + i, col, v)
            c.insert(len(cols) + 2, "depth", c["layer"] / num_layers if num_layers else np.nan)
            c.insert(len(cols) + 3, "num_layers", num_layers)
            out.append(c)
    return pd.concat(out, ignore_index=True)[columns]


def paired_difference(rows: pd.DataFrame, group: str, a: str, b: str, boot: Boot, *, name: str) -> pd.DataFrame:
    """Per model and layer, ``a`` minus ``b`` prompt by prompt, over the prompts measured under both.

    The bootstrap resamples prompts and averages their differences, so what the prompts share (a prompt
    that is high under both) cancels: the interval is that of the paired difference, not of two means.

    Args:
        rows: one measure's rows; only prompts with a value under both ``a`` and ``b`` at a layer count there.
        group: the column that holds ``a`` and ``b`` (e.g. ``task``).
        a, b: the two values of ``group`` compared.
        boot: bootstrap settings.
        name: the figure's name, mixed into the bootstrap seed.

    Returns:
        Columns ``label, layer, depth, num_layers, mean_a, mean_b, mean, low, high, n``: the means of ``a`` and
        ``b`` over the paired prompts, the mean difference ``a − b`` with its 95 % interval, the pairs ``n``.
        Models without a paired prompt are left out, and so are models that measure ``a`` and ``b`` in networks of
        different depth (:func:`different_depths`): their layer ``i`` is not the same place in both.
    """
    columns = ["label", "layer", "depth", "num_layers", "mean_a", "mean_b", "mean", "low", "high", "n"]
    out = []
    for label, by_model in rows[rows[group].isin([a, b])].groupby("label", sort=False):
        if by_model.groupby(group)["num_layers"].first().nunique() > 1:
            continue
        wide = by_model.groupby([*PROMPT_KEY, "layer", group])["value"].mean().unstack(group)  # (P·L, 2)
        if a not in wide.columns or b not in wide.columns:
            continue
        both = wide[[a, b]].dropna()
        if both.empty:
            continue
        diff = (both[a] - both[b]).rename("value").reset_index()  # one row per (prompt, layer)
        c = curve(diff, by="layer", unit=PROMPT_KEY, n_boot=boot.n_boot, seed=boot.seed, key=f"{name}|{label}")
        means = both.groupby(level="layer").mean()
        num_layers = int(by_model["num_layers"].iloc[0])
        c.insert(0, "label", label)
        c.insert(2, "depth", c["layer"] / num_layers if num_layers else np.nan)
        c.insert(3, "num_layers", num_layers)
        c.insert(4, "mean_a", c["layer"].map(means[a]).to_numpy())
        c.insert(5, "mean_b", c["layer"].map(means[b]).to_numpy())
        out.append(c)
    return pd.concat(out, ignore_index=True)[columns] if out else pd.DataFrame(columns=columns)


def different_depths(df: pd.DataFrame, tasks: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """The models whose ``tasks`` run through networks of different depth: ``{label: {task: num_layers}}``."""
    rows = df[df["task"].isin(tasks)]
    counts = rows.groupby(["label", "task"], sort=False)["num_layers"].first()
    out = {}
    for label in rows["label"].unique():
        mine = counts.loc[label]
        if mine.nunique() > 1:
            out[label] = {task: int(n) for task, n in mine.items()}
    return out


def normalised(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` with ``normalised = value / reference``: 1 where the tokens are as mutually distinct as noise.

    The reference is what tokens without structure give at the same token count and σ; NaN where it is 0.
    (value / log_b n does not remove the token count: the reference itself grows like (1 − e⁻¹)·log_b n under
    the median rule, and the ratio then falls with n.)
    """
    rows = rows.copy()
    reference = rows["reference"].where(rows["reference"] > 0)
    rows["normalised"] = rows["value"] / reference
    return rows


def unit_name(bases) -> str:
    """The unit of entropies in these bases: ``bits`` (2), ``nats`` (e), ``dits`` (10), else ``log-b units``."""
    bases = sorted({float(b) for b in bases})
    if len(bases) != 1:
        return "units of each run's log base"
    b = bases[0]
    for known, name in ((2.0, "bits"), (float(np.e), "nats"), (10.0, "dits")):
        if np.isclose(b, known):
            return name
    return f"log{b:g} units"


def log_name(bases) -> str:
    """How the ceiling log_b(n) is written: ``log2(n)``, ``ln(n)``, ``log10(n)``, ``log_b(n)``."""
    bases = sorted({float(b) for b in bases})
    if len(bases) != 1:
        return "log_b(n)"
    b = bases[0]
    return "ln(n)" if np.isclose(b, np.e) else f"log{b:g}(n)"
