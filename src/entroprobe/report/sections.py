"""The report's sections: Table 1 and six figures, each computed, drawn, saved and captioned.

Each section function takes the :class:`Context` and returns a :class:`Section`: its HTML, the claims it makes
(as data) and the files it wrote. A section with no rows says so in the page instead of failing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from entroprobe.report import analysis, control, figures, findings, html, tables
from entroprobe.report.analysis import Boot, select
from entroprobe.report.runs import PROMPT_KEY

__all__ = ["Context", "Section", "SECTIONS"]

TASK_NAMES = {"text-gen": "text generation", "image-gen": "image generation"}
# the generation curves: a task on the prompts of one modality, never pooled over modalities
SERIES = [("text-gen", "text"), ("image-gen", "text"), ("text-gen", "image"), ("image-gen", "image")]

@dataclass
class Context:
    """What every section needs: the rows, the models, the settings of the page."""

    df: pd.DataFrame  # the raw rows (every token) at σ × 1: what the paper's table and figures show
    matched: pd.DataFrame  # the rows at matched token counts, σ × 1
    everything: pd.DataFrame  # every row: raw and matched, at every σ scale
    labels: list[str]  # the models, in the order of the runs
    layers: dict[str, int]  # each model's Table 1 layer
    boot: Boot
    depth: bool  # x axis as depth fraction
    unit: str  # "bits", "nats", …
    log_name: str  # "log2(n)", …
    bases: list[float]
    out: Path

    @property
    def x(self) -> str:
        return "depth" if self.depth else "layer"

    @property
    def xlabel(self) -> str:
        return "depth = layer / number of layers" if self.depth else "layer (0 = embedding output)"

    def layer_text(self) -> str:
        values = sorted(set(self.layers.values()))
        if not values:
            return "the table layer"
        if values == [0]:
            return "layer 0 (the embedding output)"
        if len(values) == 1:
            return f"layer {values[0]}"
        return "layer " + "; ".join(f"{v} for {k}" for k, v in self.layers.items())


@dataclass
class Section:
    html: str
    claims: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


def _series_name(key: tuple[str, str]) -> str:
    """``("text-gen", "image")`` → ``text generation, image prompts``."""
    return f"{TASK_NAMES[key[0]]}, {key[1]} prompts"


def _curves(curves: pd.DataFrame, group: str | list[str], value, x: str, index: int,
            name: str | None = None) -> figures.Curve:
    """The curve of one group (a value of ``group``, or a tuple of values of its columns)."""
    cols, key = ([group], (value,)) if isinstance(group, str) else (list(group), tuple(value))
    keep = pd.Series(True, index=curves.index)
    for col, v in zip(cols, key):
        keep &= curves[col] == v
    data = curves[keep].rename(columns={x: "x"})[["x", "mean", "low", "high"]]
    look = "|".join(map(str, key))
    return figures.Curve(name or look, data, figures.style(look, index))


def _panels(ctx: Context, curves: pd.DataFrame, group: str | list[str], order: list, *, ylabel: str, empty: str,
            title=lambda label: label, kind: str = "", name=None) -> list[figures.Panel]:
    """One panel per model with a curve per group of ``order`` present; ``name(group)`` names a curve."""
    cols = [group] if isinstance(group, str) else list(group)
    panels = []
    for label in ctx.labels:
        mine = curves[curves["label"] == label]
        have = set(zip(*(mine[c] for c in cols)))
        present = [g for g in order if (g if isinstance(g, tuple) else (g,)) in have]
        panels.append(figures.Panel(
            title=title(label), ylabel=ylabel, kind=kind, empty=None if present else empty,
            curves=[_curves(mine, group, g, ctx.x, i, name(g) if name else None) for i, g in enumerate(present)],
        ))
    return panels


@dataclass
class Saved:
    png: bytes
    files: list[str]
    width_px: int  # the figure's natural width on screen


def _save(ctx: Context, fig, stem: str, data: pd.DataFrame) -> Saved:
    png = figures.save(fig, ctx.out / "figures", stem)
    data.to_csv(ctx.out / "data" / f"{stem}.csv", index=False)
    files = [f"figures/{stem}.png", f"figures/{stem}.svg", f"data/{stem}.csv"]
    return Saved(png, files, int(fig.get_figwidth() * 96))


def _figure(anchor: str, title: str, saved: Saved, caption: str, after: str = "") -> str:
    return html.figure(anchor, title, saved.png, html.esc(caption), "", saved.files, after, saved.width_px)


def _claims_html(claims: list[dict], heading: str) -> str:
    if not claims:
        return ""
    return f"<p><b>{html.esc(heading)}</b></p>" + html.items([c["text"] for c in claims], "findings")


def _at(ctx: Context, curves: pd.DataFrame, label: str, layers) -> list[float]:
    """Layers as x positions of a model's panel (depth fractions when the figure draws depth)."""
    if not ctx.depth or len(layers) == 0:
        return [float(v) for v in layers]
    num_layers = curves.loc[curves["label"] == label, "num_layers"].iloc[0]
    return [float(v) / num_layers for v in layers]


def _save_extra(ctx: Context, saved: Saved, stem: str, data: pd.DataFrame) -> None:
    """Write a second data file of a figure (``data/<stem>.csv``) and list it with the figure's files."""
    data.to_csv(ctx.out / "data" / f"{stem}.csv", index=False)
    saved.files.append(f"data/{stem}.csv")


def table1_section(ctx: Context) -> Section:
    table = analysis.table1(ctx.df, ctx.layers, ctx.boot)
    caption = (f"Table 1. Mean prompt entropy (task encode, every token) per model and prompt type at "
               f"{ctx.layer_text()}, in {ctx.unit}; in brackets the 95 % percentile bootstrap interval of the mean "
               f"over prompts ({ctx.boot.n_boot} resamples), then the number of prompts n and their mean token "
               "count. Cells of different token counts are not comparable: Table 2 compares them at one count.")
    have = set(zip(table["modality"], table["prompt_type"]))
    missing = [t for m, types in (("text", analysis.TEXT_TYPES), ("image", analysis.IMAGE_TYPES)) for t in types
               if (m, t) not in have]
    if missing:
        caption += f" The paper's types {', '.join(missing)} have no prompts in these runs."
    head = '<h2 id="table1">Table 1 — prompt entropy by prompt type</h2>'
    if table.empty:
        return Section(head + '<p class="empty">No rows for Table 1: no run has encode prompt-entropy rows at '
                       f"{html.esc(ctx.layer_text())}.</p>")
    tables.write_csv(table, ctx.out / "table1.csv")
    (ctx.out / "table1.tex").write_text(tables.to_latex(table, caption, ctx.unit), encoding="utf-8")
    files = ["table1.csv", "table1.tex"]
    body = (f'{head}<p class="caption">{html.esc(caption)}</p>{tables.to_html(table)}'
            f'<p class="files">Files: {", ".join(f"<code>{f}</code>" for f in files)}</p>')
    return Section(body + _matched_table(ctx), files=files + _matched_files(ctx))


def _matched_files(ctx: Context) -> list[str]:
    return ["table1_matched.csv", "table1_matched.tex"] if (ctx.out / "table1_matched.csv").exists() else []


def _matched_table(ctx: Context) -> str:
    """Table 2: Table 1 at the runs' matched prompt token count k (one table per k), with the prompts left out."""
    table = analysis.table1_matched(ctx.everything, ctx.layers, ctx.boot)
    head = '<h2 id="table2">Table 2 — prompt entropy by prompt type at one token count</h2>'
    if table.empty:
        return head + ('<p class="empty">No matched rows: these runs did not measure prompts at a matched token '
                       "count (run with --match-tokens K), so Table 1's cells cannot be compared across token "
                       "counts.</p>")
    tables.write_csv(table, ctx.out / "table1_matched.csv")
    latex, parts = [], [head]
    for k, part in table.groupby("k", sort=True):
        left = int(part["left_out"].sum())
        caption = (f"Table 2 (k = {k}). Mean prompt entropy at k = {k} tokens per prompt (the mean over random "
                   f"subsets of {k} of its tokens), task encode, at {ctx.layer_text()}, in {ctx.unit}; interval, n "
                   f"and mean token count as in Table 1. Prompts shorter than {k} tokens are left out: {left} in all, "
                   "counted per cell.")
        latex.append(tables.to_latex(part.drop(columns=["k"]), caption, ctx.unit, label=f"tab:prompt-entropy-k{k}"))
        parts.append(f'<p class="caption">{html.esc(caption)}</p>{tables.to_html(part)}')
    (ctx.out / "table1_matched.tex").write_text("\n".join(latex), encoding="utf-8")
    parts.append('<p class="files">Files: <code>table1_matched.csv</code>, <code>table1_matched.tex</code></p>')
    return "".join(parts)


def length_section(ctx: Context) -> Section:
    title = "Figure 1 — prompt entropy against prompt length"
    rows = select(ctx.df, task="encode", measure="prompt_entropy", modality="text")
    fits = control.length_fits(ctx.df, ctx.matched, ctx.layers)
    matched_k = select(ctx.matched, task="encode", measure="prompt_entropy").groupby("label")["subsample"].first()
    claims = findings.length_claims(fits, ctx.layers, {label: f"{k} tokens each" for label, k in matched_k.items()})
    bins = analysis.length_bins(ctx.df, ctx.layers, ctx.boot)
    if bins.empty:
        return Section(html.figure("fig1", title, None, "", "No rows for this figure: no run has encode "
                                   "prompt-entropy rows of text prompts.", []))
    at = rows[rows["layer"] == rows["label"].map(ctx.layers)]
    prompts = at.groupby(PROMPT_KEY, sort=False).agg(value=("value", "mean"), n_tokens=("n_tokens", "first"))
    prompts = prompts.reset_index()
    layers = sorted(set(ctx.layers.values()))
    where = f"layer {layers[0]}" if len(layers) == 1 else "the table layer"
    drawn = fits.copy()
    if ctx.depth:
        encode = ctx.df[ctx.df["task"] == "encode"]
        drawn["layer"] = drawn["layer"] / drawn["label"].map(encode.groupby("label")["num_layers"].first())
    fig = figures.length_figure(bins, prompts, drawn, labels=[m for m in ctx.labels if (prompts["label"] == m).any()],
                                ylabel=f"prompt entropy at {where} ({ctx.unit})", bases=ctx.bases,
                                log_name=ctx.log_name, xlabel=ctx.xlabel,
                                shared_reference=_median_reference(at, prompts))  # fmt: skip
    saved = _save(ctx, fig, "fig1_length", bins)
    _save_extra(ctx, saved, "fig1_length_fits", fits)
    caption = (f"Left: text prompt entropy (task encode) at {ctx.layer_text()} against prompt length in tokens, per "
               f"model: dots are single prompts; lines the mean per token-count bin (geometric bins shared by "
               f"all models) with its 95 % bootstrap band over the bin's prompts. Dashed, in each model's colour: "
               f"what tokens without structure give at the bin's token counts under the same σ rule. The dotted "
               f"curve is {ctx.log_name}, the largest value n tokens can reach. Right: at each layer, the share of "
               "the spread across prompts that the token count alone explains (R² of the value on log2 n); near "
               "1, prompt entropy mostly counts tokens.")
    after = _claims_html(claims, "What the figure says")
    return Section(_figure("fig1", title, saved, caption, after), claims=claims, files=saved.files)


def _median_reference(rows: pd.DataFrame, prompts: pd.DataFrame):
    """``(n, reference)`` over the prompts' token counts when every row is of the median rule at one α and base."""
    if set(rows["sigma_rule"]) != {"median"} or rows["alpha"].nunique() != 1 or rows["base"].nunique() != 1:
        return None
    from entroprobe.entropy import structureless_entropy

    n = np.unique(np.geomspace(max(2, prompts["n_tokens"].min()), prompts["n_tokens"].max(), 60).round())
    alpha, base = float(rows["alpha"].iloc[0]), float(rows["base"].iloc[0])
    return n, np.array([structureless_entropy(int(k), alpha=alpha, base=base).item() for k in n])


def length_layers_section(ctx: Context) -> Section:
    title = "Figure 2 — layer-wise prompt entropy by prompt length"
    text, how = analysis.length_groups(ctx.df)
    rows = select(text, task="encode", measure="prompt_entropy")
    curves = analysis.trajectories(rows, "length", ctx.boot, name="fig2", order=list(analysis.LENGTHS))
    if curves.empty:
        return Section(html.figure("fig2", title, None, "", "No rows for this figure: no run has encode "
                                   "prompt-entropy rows of text prompts.", []))
    panels = _panels(ctx, curves, "length", list(analysis.LENGTHS), ylabel=f"prompt entropy ({ctx.unit})",
                     empty="no encode rows of text prompts")
    fig = figures.grid(panels, ncols=3, title="Text prompt entropy across layers, by prompt length",
                       xlabel=ctx.xlabel, depth=ctx.depth, log_name=ctx.log_name)
    saved = _save(ctx, fig, "fig2_length_layers", curves)
    caption = ("Mean text prompt entropy (task encode) at each layer for short, medium and long prompts, with "
               "95 % bootstrap bands over prompts. Lengths: " + "; ".join(f"{k}: {v}" for k, v in how.items()) + ".")
    return Section(_figure("fig2", title, saved, caption), files=saved.files)


def types_section(ctx: Context) -> Section:
    title = "Figure 3 — layer-wise prompt entropy by prompt type"
    rows = select(ctx.df, task="encode", measure="prompt_entropy")
    keys = analysis.type_keys(rows)  # (modality, type): a name both modalities use stays two types
    names = dict(zip(keys, analysis.type_names(keys)))
    curves = analysis.trajectories(rows, ["modality", "prompt_type"], ctx.boot, name="fig3", order=keys)
    if curves.empty:
        return Section(html.figure("fig3", title, None, "", "No rows for this figure: no run has encode "
                                   "prompt-entropy rows.", []))
    panels = []
    for label in ctx.labels:
        for modality in ("text", "image"):
            mine = curves[(curves["label"] == label) & (curves["modality"] == modality)]
            present = [t for m, t in keys if m == modality and (mine["prompt_type"] == t).any()]
            panels.append(figures.Panel(  # a type's look is fixed by its place in the paper's order
                title=f"{label}\n{modality} prompts", ylabel=f"prompt entropy ({ctx.unit})",
                empty=None if present else f"no encode rows of {modality} prompts",
                curves=[_curves(mine, "prompt_type", t, ctx.x, keys.index((modality, t)), names[modality, t])
                        for t in present]))
    fig = figures.grid(panels, ncols=2, title="Prompt entropy across layers, by prompt type",
                       xlabel=ctx.xlabel, depth=ctx.depth, log_name=ctx.log_name)
    saved = _save(ctx, fig, "fig3_prompt_types", curves)
    caption = ("Mean prompt entropy (task encode) at each layer per prompt type, text types (left) and image "
               "types (right) for each model, with 95 % bootstrap bands over the prompts of each type. A type is "
               "a (modality, type) pair: a type name that text and image prompts share is two curves, each from "
               "its own prompts, named with its modality. Types differ in length as well: each modality's highest and "
               "lowest type of 20 prompts or more are compared again at one token count (below, when there are two).")
    claims = [findings.comparison_claim(c, ctx.unit) for c in control.type_comparisons(ctx.df, ctx.matched, ctx.boot)]
    short = control.type_shortfalls(ctx.df)
    after = _claims_html(claims, "What the figure says") + (html.items(short, "notes") if short else "")
    return Section(_figure("fig3", title, saved, caption, after), claims=claims, files=saved.files)


SECTIONS = [table1_section, length_section, length_layers_section, types_section]  # then .comparisons
