"""The report's comparisons: text against image prompts (Figure 4), text against image generation (Figure 5),
the kernel diagnostics (Figure 6) and the same conclusions at other bandwidths (Table 3).

Each comparison is made raw and at matched token counts (:mod:`.control`); its claim says in words whether the
raw difference survives, and its layer-by-layer numbers are in a table under the figure.
"""

from __future__ import annotations

import pandas as pd

from entroprobe.entropy import STRUCTURELESS_MARGIN

from entroprobe.report import analysis, control, figures, findings, html
from entroprobe.report.analysis import select
from entroprobe.report.sections import (SERIES, TASK_NAMES, Context, Section, _at, _claims_html, _figure, _panels,
                                        _save, _save_extra, _series_name)  # fmt: skip

__all__ = ["modality_section", "response_section", "kernel_section", "scales_section", "SECTIONS"]


def _cell(mean: float, low: float, high: float, n: str) -> str:
    return "—" if pd.isna(mean) else f"{mean:+.3f} [{low:+.3f}, {high:+.3f}] ({n})"


def _n(a: int, b: int) -> str:
    """The prompts behind a difference: one count when paired, both groups' when not."""
    return f"n = {a}" if a == b else f"n = {a}, {b}"


def _layer_table(ctx: Context, layers: pd.DataFrame, what: str) -> str:
    """The layer-by-layer detail, per model: the raw and the matched difference at each layer, folded away."""
    if layers.empty:
        return ""
    parts = []
    for label in ctx.labels:
        mine = layers[layers["label"] == label]
        if mine.empty:
            continue
        wide = {which: part.set_index("layer") for which, part in mine.groupby("which")}
        rows = []
        for layer in sorted(set(mine["layer"])):
            cells = [str(layer)]
            for which in ("raw", "matched"):
                r = wide.get(which)
                if r is None or layer not in r.index:
                    cells.append("—")
                    continue
                r = r.loc[layer]
                cells.append(_cell(r["mean"], r["low"], r["high"], _n(r["n_a"], r["n_b"])))
            rows.append(cells)
        parts.append(f"<p><b>{html.esc(label)}</b></p>"
                     + html.table(["layer", f"raw: {what}", f"matched: {what}"], rows))  # fmt: skip
    return (f"<details><summary>Layer by layer: {html.esc(what)}, every token and at matched token counts, with "
            "95 % bootstrap intervals</summary>" + "".join(parts) + "</details>")


def _clear_layers(layers: pd.DataFrame, label: str) -> list[int]:
    raw = layers[(layers["label"] == label) & (layers["which"] == "raw")]
    return [int(v) for v in raw.loc[(raw["low"] > 0) | (raw["high"] < 0), "layer"]]


def modality_section(ctx: Context) -> Section:
    title = "Figure 4 — text against image prompts"
    rows = select(ctx.df, task="encode", measure="prompt_entropy")
    by_modality = dict(group="modality", boot=ctx.boot, order=["text", "image"])
    curves = analysis.trajectories(rows, name="fig4", **by_modality)
    if curves.empty:
        return Section(html.figure("fig4", title, None, "", "No rows for this figure: no run has encode "
                                   "prompt-entropy rows.", []))
    normalised = analysis.trajectories(analysis.normalised(rows), value="normalised", name="fig4n", **by_modality)
    claims = [findings.comparison_claim(c, ctx.unit)
              for c in control.modality_comparisons(ctx.df, ctx.matched, ctx.boot)]  # fmt: skip
    layers = control.layer_differences(ctx.df, ctx.matched, "modality", ctx.boot)
    rug_label = "layers where the image − text difference's interval excludes 0"
    columns = []
    for part, ylabel, kind in ((curves, f"prompt entropy ({ctx.unit})", ""),
                               (normalised, "prompt entropy / structureless reference", "normalised")):
        column = _panels(ctx, part, "modality", ["text", "image"], ylabel=ylabel, kind=kind,
                         empty="no encode prompt-entropy rows", name=lambda g: f"{g} prompts",
                         title=lambda label, y=ylabel: f"{label}\n{y.split(' (')[0]}")
        if kind == "":  # the raw panel: the layers where the raw difference is clear
            for panel, label in zip(column, ctx.labels):
                panel.rug, panel.rug_label = _at(ctx, part, label, _clear_layers(layers, label)), rug_label
        columns.append(column)
    panels = [column[i] for i in range(len(ctx.labels)) for column in columns]  # raw | normalised, per model
    fig = figures.grid(panels, ncols=2, title="Prompt entropy across layers: text against image prompts",
                       xlabel=ctx.xlabel, depth=ctx.depth, log_name=ctx.log_name)
    saved = _save(ctx, fig, "fig4_modality", curves)
    _save_extra(ctx, saved, "fig4_modality_normalised", normalised)
    _save_extra(ctx, saved, "fig4_modality_layers", layers)
    caption = ("Mean prompt entropy (task encode) of text and image prompts at each layer, per model, with 95 % "
               "bootstrap bands over prompts (left), and the same divided by what tokens without structure give "
               "at each prompt's token count and σ (right: 1 means as mutually distinct as noise; the grey band is "
               "the structureless zone). Text and image prompts differ in length, and every entropy grows with "
               "its token count; the claims below compare them again at one token count. Ticks along the bottom "
               "mark layers where the interval of the image − text difference excludes 0.")
    after = _claims_html(claims, "What the figure says") + _layer_table(ctx, layers, "image − text prompts")
    return Section(_figure("fig4", title, saved, caption, after), claims=claims, files=saved.files)


def _response_counts(rows: pd.DataFrame) -> str:
    """Each curve's prompts and each task's mean response tokens, per model when there are several."""
    units = rows.drop_duplicates(["label", "source", "prompt_id", "task"])
    parts, several = [], units["label"].nunique() > 1
    for label, mine in units.groupby("label", sort=False):
        prompts = mine.groupby(["task", "modality"]).size()
        tokens = mine.groupby("task", sort=False)["n_response_tokens"].mean()
        text = "; ".join([*(f"{_series_name(k)}: {n} prompts" for k in SERIES if (n := prompts.get(k)) is not None),
                          *(f"{TASK_NAMES.get(task, task)}: {n:.0f} response tokens on average"
                            for task, n in tokens.items())])  # fmt: skip
        parts.append(f"{label}: {text}" if several else text)
    return "; ".join(parts) if len(parts) == 1 else " — ".join(parts)


def response_section(ctx: Context) -> Section:
    title = "Figure 5 — response patterns: text against image generation"
    rows = select(ctx.df, task=("text-gen", "image-gen"), measure="conditional_entropy")
    curves = analysis.trajectories(rows, ["task", "modality"], ctx.boot, name="fig5", order=SERIES)
    if curves.empty:
        return Section(html.figure("fig5", title, None, "", "No rows for this figure: no run has "
                                   "conditional-entropy rows of text or image generation.", []))
    paired = analysis.paired_difference(rows[rows["modality"] == "text"], "task", "text-gen", "image-gen",
                                        ctx.boot, name="fig5d")
    deeper = analysis.different_depths(ctx.df, ("text-gen", "image-gen"))  # no layer-by-layer difference for these
    claims = [findings.comparison_claim(c, ctx.unit)
              for c in control.response_comparisons(ctx.df, ctx.matched, ctx.boot)]  # fmt: skip
    layers = control.layer_differences(ctx.df, ctx.matched, "response", ctx.boot)
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
            empty=None if len(mine) else ("text and image generation run in networks of different depth: no "
                                          "layer-by-layer difference" if label in deeper
                                          else "no text prompt has both generation tasks"),
            curves=[figures.Curve("text − image generation, same text prompts (mean of per-prompt differences)",
                                  data, figures.style("difference"))])]
    fig = figures.grid(panels, ncols=2, title="Conditional entropy S(Y|X) across layers: text vs image generation",
                       xlabel=ctx.xlabel, depth=ctx.depth, log_name=ctx.log_name)
    saved = _save(ctx, fig, "fig5_response", curves)
    _save_extra(ctx, saved, "fig5_response_paired", paired)
    _save_extra(ctx, saved, "fig5_response_layers", layers)
    caption = ("Mean conditional entropy proxy S(Y|X) = S(X,Y) − S(X) of the response given the prompt at each "
               "layer, with 95 % bootstrap bands over prompts (left): one curve per task and prompt modality, "
               f"never pooled ({_response_counts(rows)}). The proxy grows with the response's token count: the "
               "claims below compare the tasks again at one prompt and response token count. Right: the "
               "mean over the text prompts both tasks answer of the per-prompt difference, text generation minus "
               "image generation, with its 95 % bootstrap interval (prompts resampled in pairs); ticks mark layers "
               "where that interval excludes 0.")
    if skipped := [label for label in ctx.labels if label not in generating]:
        caption += f" Not shown, having no generation rows: {', '.join(skipped)}."
    for label, counts in deeper.items():
        caption += (f" {label} answers in text with a network of {counts.get('text-gen', '?')} layers and makes "
                    f"images with another of {counts.get('image-gen', '?')}: each curve runs over its own network's "
                    f"layers, the tasks are compared on their means over layers, and there is no layer-by-layer "
                    f"difference for it.")  # fmt: skip
    after = (_claims_html(claims, "What the figure says (text prompts, paired by prompt)")
             + _layer_table(ctx, layers, "text − image generation"))  # fmt: skip
    return Section(_figure("fig5", title, saved, caption, after), claims=claims, files=saved.files)


def kernel_section(ctx: Context) -> Section:
    title = "Figure 6 — kernel diagnostics"
    encode = analysis.normalised(select(ctx.df, task="encode", measure="prompt_entropy"))
    gen = analysis.normalised(select(ctx.df, task=("text-gen", "image-gen"), measure="conditional_entropy"))
    warnings = findings.kernel_warnings(ctx.df)
    after = ("<p><b>Warnings</b></p>" + html.items(warnings, "warn")) if warnings else \
        "<p>No warnings: at no layer are most prompts' kernels structureless, collapsed or of identical tokens.</p>"
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
        ("prompt", "modality", ["text", "image"], "prompt entropy / structureless reference", "normalised",
         "{} prompts"),
        ("conditional", ["task", "modality"], SERIES, "S(Y|X) / structureless reference", "relative",
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
    fig = figures.grid(panels, ncols=2, title="Kernel diagnostics: bandwidth, saturation, values against tokens "
                       "without structure", xlabel=ctx.xlabel, depth=ctx.depth, log_name=ctx.log_name)
    data = pd.concat([p.assign(part=k) for k, p in parts.items() if not p.empty], ignore_index=True)
    saved = _save(ctx, fig, "fig6_kernel", data)
    caption = ("Per model (two rows each), at each layer: the kernel bandwidth σ used for the prompt kernel (task "
               "encode); the kernel's saturation (+1 when K is nearly the identity, every token unlike every other; "
               "−1 when K is nearly all ones, every token alike); prompt entropy divided by what tokens without "
               f"structure give at the same token count and σ (grey: the structureless zone, within "
               f"{STRUCTURELESS_MARGIN * 100:g} % of it, "
               "where a value counts tokens more than it measures structure); the conditional proxy divided by "
               "what an independent response without structure of the same length would add (1: the response is "
               "as unrelated to the prompt as noise; 0: it repeats the prompt), per task and prompt modality. "
               "Bands: 95 % bootstrap intervals over prompts.")
    return Section(_figure("fig6", title, saved, caption, after), warnings=warnings, files=saved.files)


def scales_section(ctx: Context) -> Section:
    """Table 3: each headline comparison at each σ scale the runs measured (only when there are several)."""
    scales = sorted(set(ctx.everything["sigma_scale"]))
    head = '<h2 id="table3">Table 3 — the comparisons at other bandwidths</h2>'
    if len(scales) < 2:
        return Section(head + '<p class="empty">One bandwidth only: run with --sigma-scale 0.5,1,2 to see whether '
                       "these conclusions survive a change of σ.</p>")
    raw, matched = control.split(ctx.everything)
    at_one = control.type_comparisons(raw, matched, ctx.boot)  # each type pair is the widest at σ × 1
    pairs = {(c.model, c.modality): (c.a, c.b) for c in at_one}
    comparisons = [c for s in scales for c in control.modality_comparisons(raw, matched, ctx.boot, s)
                   + control.response_comparisons(raw, matched, ctx.boot, s)
                   + (at_one if s == 1.0 else control.type_comparisons(raw, matched, ctx.boot, s, pairs=pairs))]
    rows, records = [], []
    for c in comparisons:
        kind = findings.verdict(c)
        what = f"{c.modality} prompt types {c.a} − {c.b}" if c.kind == "type" else f"{c.a} − {c.b}"
        raw_cell = _cell(c.raw.mean, c.raw.low, c.raw.high, _n(c.raw.n_a, c.raw.n_b))
        matched_cell = "—" if c.matched is None else _cell(c.matched.mean, c.matched.low, c.matched.high,
                                                           _n(c.matched.n_a, c.matched.n_b))  # fmt: skip
        rows.append([c.model, what, f"× {c.scale:g}", raw_cell, matched_cell, kind])
        records.append({"model": c.model, "comparison": what, "sigma_scale": c.scale, "verdict": kind,
                        "raw": vars(c.raw), "matched": None if c.matched is None else vars(c.matched)})
    pd.DataFrame(records).to_json(ctx.out / "data" / "table3_scales.json", orient="records", indent=1)
    claims = []
    for (model, what), group in pd.DataFrame(records).groupby(["model", "comparison"], sort=False):
        verdicts = dict(zip(group["sigma_scale"], group["verdict"]))
        if len(set(verdicts.values())) == 1:
            text = f"{model}, {what}: the same at every σ scale ({', '.join(f'× {s:g}' for s in verdicts)}): " \
                   f"{next(iter(verdicts.values()))}."
        else:
            text = f"{model}, {what}: the conclusion depends on σ: " + "; ".join(
                f"× {s:g}: {v}" for s, v in verdicts.items()) + "."
        claims.append({"kind": "scale", "model": model, "comparison": what, "verdicts": {str(k): v for k, v in
                       verdicts.items()}, "text": text})  # fmt: skip
    caption = ("Each comparison of Figures 3, 4 and 5 with σ multiplied by each factor the runs measured: the mean "
               "over layers of the difference, every token (raw) and at matched token counts, with 95 % bootstrap "
               "intervals (a type comparison's hold for all its pairs of types at once, and compares at every σ the "
               "pair that is widest at σ × 1), and what token-count control makes of it (survives: the difference "
               "holds at matched counts; token count: it vanishes there).")
    body = (f'{head}<p class="caption">{html.esc(caption)}</p>'
            + html.table(["model", "comparison", "σ", "raw", "matched", "verdict"], rows)
            + _claims_html(claims, "Across bandwidths")
            + '<p class="files">Files: <code>data/table3_scales.json</code></p>')  # fmt: skip
    return Section(body, claims=claims, files=["data/table3_scales.json"])


SECTIONS = [modality_section, response_section, kernel_section, scales_section]
