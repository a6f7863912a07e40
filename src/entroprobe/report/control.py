"""Token-count control: each headline comparison raw and at matched token counts, one number per model.

Every entropy grows with its token count, and text prompts, image prompts, text responses and image responses
differ in length by an order of magnitude. So each comparison the report makes is made twice:

- raw: on every token, as the paper does;
- matched: on the rows the probe computed at one token count for every prompt (``subsample``: the mean over
  random subsets of k prompt tokens, and m response tokens), among the prompts that reach that count.

A comparison's number is a mean over layers: each prompt's values are averaged over the layers first, so every
prompt counts once; the layer-by-layer numbers are in a table of their own.

- modality: image against text prompts (prompt entropy, task encode), two independent groups of prompts;
- type: within one modality, the prompt type with the highest against the one with the lowest raw prompt
  entropy (task encode), two independent groups; chosen as the widest of the types' pairs, its interval covers
  95 % simultaneously over every pair (Bonferroni), so "clear" keeps its meaning after the choice;
- response: text against image generation (the conditional proxy S(Y|X)) on the same text prompts, paired;
- length: how text prompt entropy follows the token count (Spearman ρ; R² of the value on log2 n).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from entroprobe.report.analysis import Boot, select, type_order
from entroprobe.report.runs import PROMPT_KEY
from entroprobe.report.stats import LEVEL, bootstrap_difference, bootstrap_mean, r_squared, spearman

__all__ = ["Estimate", "Comparison", "split", "modality_comparisons", "type_comparisons", "response_comparisons",
           "type_shortfalls", "layer_differences", "length_fits", "MIN_PROMPTS", "TYPE_MIN_PROMPTS"]

MIN_PROMPTS = 5  # a claim on fewer prompts per side says it has not enough
# a prompt type takes part in the type comparison from this many prompts: the percentile bootstrap's far tails,
# which the simultaneous intervals read, are too narrow on fewer (with 8 prompts a type, the widest of six equal
# types was called clear 19 times in 100 instead of 5; with 20, 5 times: tests/test_report_types.py)
TYPE_MIN_PROMPTS = 20
_UNIT = ["source", "prompt_id", "task"]


@dataclass(frozen=True)
class Estimate:
    """A difference ``a − b`` with its bootstrap interval (95 %, or its comparison's level) and the prompts behind
    each side."""

    mean: float
    low: float
    high: float
    n_a: int
    n_b: int

    @property
    def clear(self) -> bool:
        """The interval excludes 0."""
        return bool(self.low > 0 or self.high < 0)


@dataclass(frozen=True)
class Comparison:
    """One model's comparison of ``a`` against ``b``, raw and (when the runs have matched rows) matched."""

    kind: str  # modality | type | response
    model: str
    a: str  # e.g. "image prompts", "text generation", "inductive" (a prompt type)
    b: str
    raw: Estimate
    matched: Estimate | None
    at: str  # the matched counts in words ("16 tokens each"), "" when there are no matched rows
    scale: float = 1.0
    whole_responses: bool = False  # the run matched the prompts only: no rows to compare at a response count
    same: Estimate | None = None  # raw (every token), on the prompts behind ``matched`` only
    modality: str = ""  # kind type: the prompts' modality
    types: int = 0  # kind type: how many types had enough prompts to compare
    left_out: tuple[str, ...] = ()  # kind type: the types with prompts too few to compare
    level: float = LEVEL  # the intervals' coverage
    min_prompts: int = MIN_PROMPTS  # per side, for an estimate to count

    def enough(self, e: Estimate) -> bool:
        """``e`` has :attr:`min_prompts` prompts on each side."""
        return min(e.n_a, e.n_b) >= self.min_prompts


def split(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The raw rows (every token) and the matched rows (subsampled) of a table, at every σ scale."""
    matched = (df["subsample"] > 0) | (df["subsample_response"] > 0)
    return df[~matched], df[matched]


def _per_prompt(rows: pd.DataFrame, by: str) -> pd.DataFrame:
    """Per model, prompt and value of ``by``: the value averaged over layers (columns: label, key…, by, value)."""
    return rows.groupby(["label", *PROMPT_KEY[1:], by], sort=False)["value"].mean().reset_index()


def _counts_text(rows: pd.DataFrame, kind: str) -> str:
    k = sorted(set(rows["subsample"]))
    m = sorted(set(rows["subsample_response"]))
    if kind in ("modality", "type"):
        return f"{k[0]} tokens each" if len(k) == 1 else "matched token counts"
    if len(k) == 1 and len(m) == 1:
        return f"{k[0]} prompt and {m[0]} response tokens" if k[0] else f"whole prompts and {m[0]} response tokens"
    return "matched token counts"


def _modality_estimate(rows: pd.DataFrame, label: str, boot: Boot, key: str) -> Estimate | None:
    prompts = _per_prompt(rows[rows["label"] == label], "modality")
    image = prompts.loc[prompts["modality"] == "image", "value"].to_numpy()
    text = prompts.loc[prompts["modality"] == "text", "value"].to_numpy()
    if len(image) == 0 or len(text) == 0:
        return None
    diff, low, high, n_a, n_b = bootstrap_difference(image, text, n_boot=boot.n_boot, seed=boot.seed, key=key)
    return Estimate(float(diff), float(low), float(high), int(n_a), int(n_b))


def _comparisons(kind: str, names: tuple[str, str], raw: pd.DataFrame, matched: pd.DataFrame, estimate, boot: Boot,
                 scale: float) -> list[Comparison]:  # fmt: skip
    """Per model of ``raw``: ``estimate(rows, label, boot, key)`` on its raw rows and on its matched rows."""
    out = []
    for label in raw["label"].unique():
        c = _compare(kind, names, label, raw, matched, estimate, boot, scale=scale)
        if c is not None:
            out.append(c)
    return out


def _compare(kind: str, names: tuple[str, str], label: str, raw: pd.DataFrame, matched: pd.DataFrame, estimate,
             boot: Boot, *, scale: float, tag: str = "", **fields) -> Comparison | None:  # fmt: skip
    """One model's comparison: ``estimate`` on its raw rows, its matched rows, and the raw rows of the matched
    units (None when its raw rows have nothing to compare). ``tag`` tells apart the bootstrap keys of several
    comparisons of one kind and model."""
    key = f"|{label}|{scale}{tag}"
    on_raw = estimate(raw, label, boot, kind + key)
    if on_raw is None:
        return None
    mine = matched[matched["label"] == label]
    at = estimate(mine, label, boot, f"{kind}-matched{key}") if len(mine) else None
    same = None
    if at is not None:  # the raw rows of the units that have matched rows: which prompts matching keeps
        units = pd.MultiIndex.from_frame(mine[_UNIT].drop_duplicates())
        theirs = raw[(raw["label"] == label) & pd.MultiIndex.from_frame(raw[_UNIT]).isin(units)]
        same = estimate(theirs, label, boot, f"{kind}-same{key}")
    return Comparison(kind, label, *names, on_raw, at, _counts_text(mine, kind) if at else "", scale, same=same,
                      **fields)  # fmt: skip


def modality_comparisons(raw: pd.DataFrame, matched: pd.DataFrame, boot: Boot, scale: float = 1.0) -> list[Comparison]:
    """Per model: image minus text prompt entropy (encode), raw and at the matched prompt token count."""
    raw = select(raw[raw["sigma_scale"] == scale], task="encode", measure="prompt_entropy")
    matched = select(matched[matched["sigma_scale"] == scale], task="encode", measure="prompt_entropy")
    return _comparisons("modality", ("image prompts", "text prompts"), raw, matched, _modality_estimate, boot, scale)


def _type_means(rows: pd.DataFrame) -> pd.DataFrame:
    """Per prompt type of one model's rows: the mean over its prompts (each averaged over layers) and how many."""
    return _per_prompt(rows, "prompt_type").groupby("prompt_type")["value"].agg(["mean", "size"])


def type_comparisons(raw: pd.DataFrame, matched: pd.DataFrame, boot: Boot, scale: float = 1.0,
                     pairs: dict[tuple[str, str], tuple[str, str]] | None = None) -> list[Comparison]:  # fmt: skip
    """Per model and prompt modality: prompt entropy (encode) of its highest against its lowest prompt type.

    The types compared are those with at least :data:`TYPE_MIN_PROMPTS` prompts; the two are the highest and lowest
    raw means, and that pair is compared raw and at the matched prompt token count. Picking the widest of the
    ``p = t(t − 1)/2`` pairs of ``t`` types makes a wide gap likely by chance alone, so every interval of the
    comparison covers ``1 − 0.05/p`` (Bonferroni: 95 % for all pairs at once), from enough resamples that each
    tail holds at least 25 of them. ``pairs`` ((model, modality) → (type a, type b)) fixes the pair instead,
    e.g. to compare at another σ scale the pair chosen at σ × 1.
    """
    raw = select(raw[raw["sigma_scale"] == scale], task="encode", measure="prompt_entropy")
    matched = select(matched[matched["sigma_scale"] == scale], task="encode", measure="prompt_entropy")
    out = []
    for (label, modality), rows in raw.groupby(["label", "modality"], sort=False):
        means = _type_means(rows)
        left_out = tuple(type_order(means.index[means["size"] < TYPE_MIN_PROMPTS]))
        means = means[means["size"] >= TYPE_MIN_PROMPTS].sort_values("mean", kind="stable")
        if len(means) < 2:
            continue
        if pairs is not None and (label, modality) not in pairs:
            continue
        top, bottom = pairs[label, modality] if pairs is not None else (str(means.index[-1]), str(means.index[0]))
        level = 1 - (1 - LEVEL) / (len(means) * (len(means) - 1) // 2)
        wide = Boot(n_boot=max(boot.n_boot, math.ceil(25 / ((1 - level) / 2))), seed=boot.seed)

        def estimate(rows: pd.DataFrame, label: str, boot: Boot, key: str, modality=modality, top=top,
                     bottom=bottom, level=level) -> Estimate | None:  # fmt: skip
            mine = rows[(rows["label"] == label) & (rows["modality"] == modality)]
            prompts = _per_prompt(mine, "prompt_type")
            a = prompts.loc[prompts["prompt_type"] == top, "value"].to_numpy()
            b = prompts.loc[prompts["prompt_type"] == bottom, "value"].to_numpy()
            if len(a) == 0 or len(b) == 0:
                return None
            diff, low, high, n_a, n_b = bootstrap_difference(a, b, n_boot=boot.n_boot, seed=boot.seed, key=key,
                                                             level=level)  # fmt: skip
            return Estimate(float(diff), float(low), float(high), int(n_a), int(n_b))

        c = _compare("type", (top, bottom), label, rows, matched, estimate, wide, scale=scale, tag=f"|{modality}",
                     modality=str(modality), types=len(means), level=level, left_out=left_out,
                     min_prompts=TYPE_MIN_PROMPTS)  # fmt: skip
        out.append(c)
    return out


def type_shortfalls(raw: pd.DataFrame) -> list[str]:
    """Why :func:`type_comparisons` makes no claim, one sentence per model: the modalities with several prompt
    types of which fewer than two reach :data:`TYPE_MIN_PROMPTS` prompts, and their counts."""
    rows = select(raw[raw["sigma_scale"] == 1.0], task="encode", measure="prompt_entropy")
    short: dict[str, list[str]] = {}
    for (label, modality), mine in rows.groupby(["label", "modality"], sort=False):
        sizes = _type_means(mine)["size"]
        if len(sizes) >= 2 and (sizes >= TYPE_MIN_PROMPTS).sum() < 2:
            counts = f"{sizes.iloc[0]} each" if sizes.nunique() == 1 else \
                ", ".join(f"{t} {sizes[t]}" for t in type_order(sizes.index))
            short.setdefault(label, []).append(f"its {len(sizes)} {modality} prompt types have {counts}")
    return [f"{label}: prompt types are not compared, as a type needs {TYPE_MIN_PROMPTS} prompts and "
            f"{'; '.join(parts)}." for label, parts in short.items()]


def _paired_estimate(rows: pd.DataFrame, label: str, boot: Boot, key: str) -> Estimate | None:
    prompts = _per_prompt(rows[(rows["label"] == label) & (rows["modality"] == "text")], "task")
    wide = prompts.pivot_table(index=PROMPT_KEY[1:], columns="task", values="value").dropna()
    if not {"text-gen", "image-gen"} <= set(wide.columns) or wide.empty:
        return None
    diff = (wide["text-gen"] - wide["image-gen"]).to_numpy()
    mean, low, high, n = bootstrap_mean(diff, n_boot=boot.n_boot, seed=boot.seed, key=key)
    return Estimate(float(mean), float(low), float(high), int(n), int(n))


def response_comparisons(raw: pd.DataFrame, matched: pd.DataFrame, boot: Boot, scale: float = 1.0) -> list[Comparison]:
    """Per model: text minus image generation S(Y|X) on the same text prompts, raw and at matched counts."""
    tasks = ("text-gen", "image-gen")
    raw = select(raw[raw["sigma_scale"] == scale], task=tasks, measure="conditional_entropy")
    matched = select(matched[matched["sigma_scale"] == scale], task=tasks, measure="conditional_entropy")
    whole = set(matched.loc[matched["subsample_response"] == 0, "label"])  # --match-response-tokens 0
    matched = matched[matched["subsample_response"] > 0]  # whole responses leave the confound in place
    out = _comparisons("response", ("text generation", "image generation"), raw, matched, _paired_estimate, boot,
                       scale)  # fmt: skip
    return [replace(c, whole_responses=True) if c.matched is None and c.model in whole else c for c in out]


def layer_differences(raw: pd.DataFrame, matched: pd.DataFrame, kind: str, boot: Boot) -> pd.DataFrame:
    """The comparisons layer by layer (σ scale 1).

    Returns:
        Columns ``label, layer, which (raw | matched), mean, low, high, n_a, n_b``.
    """
    columns = ["label", "layer", "which", "mean", "low", "high", "n_a", "n_b"]
    out = []
    for which, rows in (("raw", raw), ("matched", matched)):
        rows = rows[rows["sigma_scale"] == 1.0]
        if kind == "modality":
            rows = select(rows, task="encode", measure="prompt_entropy")
        else:
            rows = select(rows, task=("text-gen", "image-gen"), measure="conditional_entropy")
            rows = rows[rows["modality"] == "text"]
            if which == "matched":
                rows = rows[rows["subsample_response"] > 0]  # as in response_comparisons
        for label, mine in rows.groupby("label", sort=False):
            group = "modality" if kind == "modality" else "task"
            if mine.groupby(group)["num_layers"].first().nunique() > 1:
                continue  # networks of different depth: layer i is not the same place in both
            wide = mine.groupby([*PROMPT_KEY[1:], group, "layer"])["value"].mean().unstack("layer")  # (P, L)
            layers = wide.columns.to_numpy()
            if kind == "modality":
                present = set(wide.index.get_level_values(group))
                if not {"image", "text"} <= present:
                    continue
                a, b = wide.xs("image", level=group).to_numpy(), wide.xs("text", level=group).to_numpy()
                mean, low, high, n_a, n_b = bootstrap_difference(a, b, n_boot=boot.n_boot, seed=boot.seed,
                                                                 key=f"layers|{kind}|{which}|{label}")  # fmt: skip
            else:
                present = set(wide.index.get_level_values(group))
                if not {"text-gen", "image-gen"} <= present:
                    continue
                diff = wide.xs("text-gen", level=group) - wide.xs("image-gen", level=group)  # aligned by prompt
                mean, low, high, n_a = bootstrap_mean(diff.to_numpy(), n_boot=boot.n_boot, seed=boot.seed,
                                                      key=f"layers|{kind}|{which}|{label}")  # fmt: skip
                n_b = n_a
            for i, layer in enumerate(layers):
                out.append([label, int(layer), which, float(mean[i]), float(low[i]), float(high[i]), int(n_a[i]),
                            int(n_b[i])])  # fmt: skip
    return pd.DataFrame(out, columns=columns)


def length_fits(raw: pd.DataFrame, matched: pd.DataFrame, layers: dict[str, int]) -> pd.DataFrame:
    """How text prompt entropy follows its token count, per model and layer (σ scale 1).

    Returns:
        Columns ``label, layer, prompts, r2`` (R² of the value on log2 n over the prompts), ``spearman`` (ρ of
        n and the value), ``matched_spearman`` (ρ of n and the matched value, over the prompts that reach the
        matched count; NaN without matched rows) and ``table_layer`` (whether it is the model's table layer).
    """
    columns = ["label", "layer", "prompts", "r2", "spearman", "matched_spearman", "matched_prompts", "table_layer"]
    pick = lambda rows: select(rows[rows["sigma_scale"] == 1.0], task="encode", measure="prompt_entropy",  # noqa: E731
                               modality="text")
    raw, matched = pick(raw), pick(matched)
    out = []
    for (label, layer), rows in raw.groupby(["label", "layer"], sort=False):
        prompts = rows.groupby(PROMPT_KEY).agg(value=("value", "mean"), n=("n_tokens", "first"))
        sub = matched[(matched["label"] == label) & (matched["layer"] == layer)]
        at_k = sub.groupby(PROMPT_KEY).agg(value=("value", "mean"), n=("n_tokens", "first"))
        out.append([label, int(layer), len(prompts), r_squared(np.log2(prompts["n"]), prompts["value"]),
                    spearman(prompts["n"], prompts["value"]),
                    spearman(at_k["n"], at_k["value"]) if len(at_k) else float("nan"), len(at_k),
                    layers.get(label) == layer])  # fmt: skip
    return pd.DataFrame(out, columns=columns)
