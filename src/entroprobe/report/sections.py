"""The report's sections: Table 1 and six figures, each computed, drawn, saved and captioned.

Each section function takes the :class:`Context` and returns a :class:`Section`: its HTML, the claims it makes
(as data) and the files it wrote. A section with no rows says so in the page instead of failing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from entroprobe.report import analysis, figures, findings, html, tables
from entroprobe.report.analysis import Boot, select
from entroprobe.report.runs import PROMPT_KEY

__all__ = ["Context", "Section", "SECTIONS"]

TASK_NAMES = {"text-gen": "text generation", "image-gen": "image generation"}
# the generation curves: a task on the prompts of one modality, never pooled over modalities
SERIES = [("text-gen", "text"), ("image-gen", "text"), ("text-gen", "image"), ("image-gen", "image")]

@dataclass
class Context:
    """What every section needs: the rows, the models, the settings of the page."""

    df: pd.DataFrame
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


def _rug(ctx: Context, curves: pd.DataFrame, label: str, group: str, a: str, b: str) -> list[float]:
    both = findings.compare(curves[curves["label"] == label], group, a, b)
    return _at(ctx, curves, label, both.loc[both["differ"], "layer"])


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
    caption = (f"Table 1. Mean prompt entropy (task encode) per model and prompt type at {ctx.layer_text()}, in "
               f"{ctx.unit}; in brackets the 95 % percentile bootstrap interval of the mean over prompts "
               f"({ctx.boot.n_boot} resamples), and n the number of prompts.")
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
    return Section(body, files=files)


def length_section(ctx: Context) -> Section:
    title = "Figure 1 — prompt entropy against prompt length"
    rows = select(ctx.df, task="encode", measure="prompt_entropy", modality="text")
    claims = findings.length_claims(rows, ctx.layers)
    bins = analysis.length_bins(ctx.df, ctx.layers, ctx.boot)
    if bins.empty:
        return Section(html.figure("fig1", title, None, "", "No rows for this figure: no run has encode "
                                   "prompt-entropy rows of text prompts.", []))
    at = rows[rows["layer"] == rows["label"].map(ctx.layers)]
    prompts = at.groupby(PROMPT_KEY, sort=False).agg(value=("value", "mean"), n_tokens=("n_tokens", "first"))
    prompts = prompts.reset_index()
    layers = sorted(set(ctx.layers.values()))
    where = f"layer {layers[0]}" if len(layers) == 1 else "the table layer"
    fig = figures.length_figure(bins, prompts, labels=[m for m in ctx.labels if (prompts["label"] == m).any()],
                                ylabel=f"prompt entropy at {where} ({ctx.unit})", bases=ctx.bases,
                                log_name=ctx.log_name)
    saved = _save(ctx, fig, "fig1_length", bins)
    caption = (f"Text prompt entropy (task encode) at {ctx.layer_text()} against prompt length in tokens, per "
               f"model: dots are single prompts; lines the mean per token-count bin (geometric bins shared by "
               f"all models) with its 95 % bootstrap band over the bin's prompts. The dotted curve is "
               f"{ctx.log_name}, the largest value n tokens can reach.")
    after = _claims_html(claims, "Numbers behind the claims")
    return Section(_figure("fig1", title, saved, caption, after), claims=claims, files=saved.files)


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
               "its own prompts, named with its modality.")
    return Section(_figure("fig3", title, saved, caption), files=saved.files)


def modality_section(ctx: Context) -> Section:
    title = "Figure 4 — text against image prompts"
    rows = select(ctx.df, task="encode", measure="prompt_entropy")
    by_modality = dict(group="modality", boot=ctx.boot, order=["text", "image"])
    curves = analysis.trajectories(rows, name="fig4", **by_modality)
    if curves.empty:
        return Section(html.figure("fig4", title, None, "", "No rows for this figure: no run has encode "
                                   "prompt-entropy rows.", []))
    normalised = analysis.trajectories(analysis.normalised(rows), value="normalised", name="fig4n", **by_modality)
    claims = findings.modality_claims(curves, ctx.unit, normalised=normalised, sizes=analysis.prompt_sizes(rows),
                                      log_name=ctx.log_name)
    rug_label = "layers where the intervals do not overlap"
    columns = []
    for part, ylabel, kind in ((curves, f"prompt entropy ({ctx.unit})", ""),
                               (normalised, f"prompt entropy / {ctx.log_name}", "normalised")):
        column = _panels(ctx, part, "modality", ["text", "image"], ylabel=ylabel, kind=kind,
                         empty="no encode prompt-entropy rows", name=lambda g: f"{g} prompts",
                         title=lambda label, y=ylabel: f"{label}\n{y.split(' (')[0]}")
        for panel, label in zip(column, ctx.labels):
            panel.rug, panel.rug_label = _rug(ctx, part, label, "modality", "text", "image"), rug_label
        columns.append(column)
    panels = [column[i] for i in range(len(ctx.labels)) for column in columns]  # raw | normalised, per model
    fig = figures.grid(panels, ncols=2, title="Prompt entropy across layers: text against image prompts",
                       xlabel=ctx.xlabel, depth=ctx.depth, log_name=ctx.log_name)
    saved = _save(ctx, fig, "fig4_modality", curves)
    _save_extra(ctx, saved, "fig4_modality_normalised", normalised)
    caption = ("Mean prompt entropy (task encode) of text and image prompts at each layer, per model, with 95 % "
               "bootstrap bands over prompts (left), and the same divided by each prompt's ceiling "
               f"{ctx.log_name} (right): text and image prompts differ in length, so their ceilings differ, and "
               "the right panel compares them on one scale. Ticks along the bottom mark layers where the two "
               "intervals do not overlap.")
    after = _claims_html(claims, "Numbers behind the claims")
    return Section(_figure("fig4", title, saved, caption, after), claims=claims, files=saved.files)


def response_section(ctx: Context) -> Section:
    title = "Figure 5 — response patterns: text against image generation"
    rows = select(ctx.df, task=("text-gen", "image-gen"), measure="conditional_entropy")
    curves = analysis.trajectories(rows, ["task", "modality"], ctx.boot, name="fig5", order=SERIES)
    if curves.empty:
        return Section(html.figure("fig5", title, None, "", "No rows for this figure: no run has "
                                   "conditional-entropy rows of text or image generation.", []))
    paired = analysis.paired_difference(rows[rows["modality"] == "text"], "task", "text-gen", "image-gen",
                                        ctx.boot, name="fig5d")
    claims = findings.response_claims(paired, ctx.unit)
    panels = []
    generating = set(curves["label"])  # a model that only encodes (minilm) gets no empty row of panels here
    for curve_panel, label in zip(_panels(ctx, curves, ["task", "modality"], SERIES, name=_series_name,
                                          ylabel=f"conditional entropy ({ctx.unit})", empty="no generation rows",
                                          title=lambda label: f"{label}\nS(Y|X) per task and prompts"), ctx.labels):
        if label not in generating:
            continue
        mine = paired[paired["label"] == label]
        differ = mine.loc[(mine["low"] > 0) | (mine["high"] < 0), "layer"]
        curve_panel.rug = _at(ctx, curves, label, differ)
        curve_panel.rug_label = "layers where the paired difference's interval excludes 0"
        data = mine.rename(columns={ctx.x: "x"})[["x", "mean", "low", "high"]]
        panels += [curve_panel, figures.Panel(
            title=f"{label}\npaired difference on text prompts", ylabel=f"text − image generation ({ctx.unit})",
            kind="difference", rug=list(curve_panel.rug), rug_label=curve_panel.rug_label,
            empty=None if len(mine) else "no text prompt has both generation tasks",
            curves=[figures.Curve("text − image generation, same text prompts (mean of per-prompt differences)",
                                  data, figures.style("difference"))])]
    fig = figures.grid(panels, ncols=2, title="Conditional entropy S(Y|X) across layers: text vs image generation",
                       xlabel=ctx.xlabel, depth=ctx.depth, log_name=ctx.log_name)
    saved = _save(ctx, fig, "fig5_response", curves)
    _save_extra(ctx, saved, "fig5_response_paired", paired)
    prompts = rows.drop_duplicates(["source", "prompt_id", "task"]).groupby(["task", "modality"]).size()
    caption = ("Mean conditional entropy proxy S(Y|X) = S(X,Y) − S(X) of the response given the prompt at each "
               "layer, with 95 % bootstrap bands over prompts (left): one curve per task and prompt modality, "
               "never pooled ("
               + "; ".join(f"{_series_name(k)}: {n} prompts" for k in SERIES if (n := prompts.get(k)) is not None)
               + "). The comparison of the two tasks uses text prompts only, the prompts both tasks answer: "
               "right, the mean over those prompts of the per-prompt difference, text generation minus image "
               "generation, with its 95 % bootstrap interval (prompts resampled in pairs); ticks mark layers "
               "where that interval excludes 0.")
    if skipped := [label for label in ctx.labels if label not in generating]:
        caption += f" Not shown, having no generation rows: {', '.join(skipped)}."
    after = _claims_html(claims, "Numbers behind the claims (text prompts, paired by prompt)")
    return Section(_figure("fig5", title, saved, caption, after), claims=claims, files=saved.files)


def kernel_section(ctx: Context) -> Section:
    title = "Figure 6 — kernel diagnostics"
    encode = analysis.normalised(select(ctx.df, task="encode", measure="prompt_entropy"))
    gen = analysis.normalised(select(ctx.df, task=("text-gen", "image-gen"), measure="conditional_entropy"))
    warnings = findings.kernel_warnings(ctx.df, ctx.log_name)
    after = ("<p><b>Warnings</b></p>" + html.items(warnings, "warn")) if warnings else \
        f"<p>No warnings: no entropy sits at {html.esc(ctx.log_name)} or at 0 for most prompts at any layer.</p>"
    by_modality = dict(group="modality", boot=ctx.boot, order=["text", "image"])
    parts = {  # part → curves
        "sigma": analysis.trajectories(encode, value="sigma", name="fig6s", **by_modality),
        "saturation": analysis.trajectories(encode, value="saturation", name="fig6k", **by_modality),
        "prompt": analysis.trajectories(encode, value="normalised", name="fig6p", **by_modality),
        "conditional": analysis.trajectories(gen, ["task", "modality"], ctx.boot, value="normalised",
                                             name="fig6c", order=SERIES),
    }
    if all(p.empty for p in parts.values()):
        return Section(html.figure("fig6", title, None, "", "No rows for this figure: no run has encode "
                                   "prompt-entropy or conditional-entropy rows.", [], after), warnings=warnings)
    spec = [  # (part, group, order, y label, kind, curve names)
        ("sigma", "modality", ["text", "image"], "kernel σ (distance units)", "sigma", "{} prompts"),
        ("saturation", "modality", ["text", "image"], "saturation (+1: K≈I, −1: K≈1)", "saturation", "{} prompts"),
        ("prompt", "modality", ["text", "image"], f"prompt entropy / {ctx.log_name}", "normalised", "{} prompts"),
        ("conditional", ["task", "modality"], SERIES, f"S(Y|X) / {ctx.log_name} (n+m tokens)", "normalised",
         _series_name),
    ]
    columns = []  # per part, one panel per model
    for part, group, order, ylabel, kind, name in spec:
        column = _panels(ctx, parts[part], group, order, ylabel=ylabel, kind=kind,
                         empty=f"no {'encode' if group == 'modality' else 'generation'} rows",
                         title=lambda label, y=ylabel: f"{label}\n{y.split(' (')[0]}",
                         name=name if callable(name) else name.format)
        columns.append(column)
    panels = [column[i] for i in range(len(ctx.labels)) for column in columns]  # two rows per model
    fig = figures.grid(panels, ncols=2, title="Kernel diagnostics: bandwidth, saturation, values against the "
                       f"ceiling {ctx.log_name}", xlabel=ctx.xlabel, depth=ctx.depth, log_name=ctx.log_name)
    data = pd.concat([p.assign(part=k) for k, p in parts.items() if not p.empty], ignore_index=True)
    saved = _save(ctx, fig, "fig6_kernel", data)
    caption = (f"Per model (two rows each), at each layer: the kernel bandwidth σ used for the prompt kernel (task "
               "encode); the kernel's saturation (+1 when K is nearly the identity, every token unlike every other; "
               "−1 when K is nearly all ones, every token alike); prompt entropy divided by its ceiling "
               f"{ctx.log_name} (n prompt tokens); the conditional entropy proxy divided by {ctx.log_name} of the "
               "n+m prompt and response tokens, per task and prompt modality. Grey strips mark the warning zones "
               "(≥ 0.98 and ≤ 0.02 of the ceiling). Bands: 95 % bootstrap intervals over prompts.")
    return Section(_figure("fig6", title, saved, caption, after), warnings=warnings, files=saved.files)


SECTIONS = [table1_section, length_section, length_layers_section, types_section, modality_section,
            response_section, kernel_section]
