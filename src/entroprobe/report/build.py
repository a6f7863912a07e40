"""make_report: load the runs, compute and draw every section, write the page, the files and the findings.

Output folder layout::

    OUT/report.html              self-contained page (figures inline as base64 PNG)
    OUT/findings.json            {"findings": [...], "claims": [...], "warnings": [...], "notes": [...]}
    OUT/table1.csv, table1.tex   Table 1, tidy CSV and LaTeX
    OUT/figures/figN_*.png|svg   every figure
    OUT/data/figN_*.csv          the curves behind every figure (mean, 95 % interval, prompts per point)
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from entroprobe.errors import InputError, LoadError
from entroprobe.report import analysis, comparisons, control, html, sections
from entroprobe.report.analysis import Boot
from entroprobe.report.runs import Run, load, sigma_text
from entroprobe.report.sections import Context

SECTIONS = sections.SECTIONS + comparisons.SECTIONS

__all__ = ["make_report"]


def make_report(
    run_dirs: Sequence[str | Path] | str | Path,
    out: str | Path,
    *,
    table_layer: int = 0,
    depth_fraction: bool = False,
    allow_mixed: bool = False,
    n_boot: int = 1000,
    seed: int = 0,
) -> Path:
    """Write the report of one or more runs (several runs = several models side by side) into ``out``.

    Args:
        run_dirs: complete run directories (``manifest.json`` + ``results.parquet``).
        out: the folder to write (created if needed; files of an earlier report are replaced).
        table_layer: the layer of Table 1 and of the length figure; 0 = embedding output, negative counts
            from the last layer (−1 = last).
        depth_fraction: draw layers as depth fraction ``layer / num_layers`` (compare models of different depth).
        allow_mixed: accept runs measured with different α, σ rule or base.
        n_boot: bootstrap resamples per interval.
        seed: bootstrap seed (the same seed gives the same intervals).

    Returns:
        The path of ``out/report.html``.

    Raises:
        LoadError: a run directory is missing, partial or unreadable; ``out`` cannot be written.
        InputError: runs with different settings (unless ``allow_mixed``), a table layer a model lacks,
            ``n_boot`` below 1, malformed results tables.
    """
    if not isinstance(n_boot, int) or n_boot < 1:
        raise InputError(f"n_boot must be an integer ≥ 1; got {n_boot!r}")
    if not isinstance(table_layer, int):
        raise InputError(f"table_layer must be an integer layer (0 = embedding output); got {table_layer!r}")
    df, runs = load(run_dirs, allow_mixed=allow_mixed)
    older = list(df.attrs.get("notes", []))
    out = Path(out)
    try:
        for folder in (out, out / "figures", out / "data"):
            folder.mkdir(parents=True, exist_ok=True)
        for old in _outputs(out):  # an earlier report's files must not pass for this one's
            old.unlink()
    except OSError as exc:
        raise LoadError(f"cannot write the report folder {out}: {exc}") from None
    df, notes = _drop_missing(df)
    notes = older + _prompt_set_notes(runs) + notes
    notes += [f"Run {r.name} has no rows (see its errors.jsonl for items that failed)." for r in runs
              if not (df["run"] == r.name).any()]
    bases = sorted({r.base for r in runs})
    raw, matched = control.split(df)
    ctx = Context(
        df=raw[raw["sigma_scale"] == 1.0],
        matched=matched[matched["sigma_scale"] == 1.0],
        everything=df,
        labels=list(dict.fromkeys(df["label"])),
        layers=analysis.resolve_layers(df, table_layer),
        boot=Boot(n_boot=n_boot, seed=seed),
        depth=depth_fraction,
        unit=analysis.unit_name(bases),
        log_name=analysis.log_name(bases),
        bases=bases,
        out=out,
    )
    sections = [make(ctx) for make in SECTIONS]
    claims = [c for s in sections for c in s.claims]
    order = {"modality": 0, "response": 1, "type": 2, "length": 3, "scale": 4}
    claims.sort(key=lambda c: order[c["kind"]])  # stable: models keep their order within a kind
    warnings = [w for s in sections for w in s.warnings]
    summary = {
        "findings": [c["text"] for c in claims],
        "claims": claims,
        "warnings": warnings,
        "notes": notes,
        "runs": [r.name for r in runs],
    }
    (out / "findings.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    body = "\n".join([_head(runs, claims, warnings, notes, ctx)] + [s.html for s in sections])
    path = out / "report.html"
    path.write_text(html.page("entroprobe report", body), encoding="utf-8")
    return path


def _outputs(out: Path) -> list[Path]:
    """The files a report writes into ``out`` (only these are replaced)."""
    names = [out / n for n in ("report.html", "findings.json", "table1.csv", "table1.tex", "table1_matched.csv",
                               "table1_matched.tex", "data/table3_scales.json")]
    for pattern in ("figures/fig[0-9]_*.png", "figures/fig[0-9]_*.svg", "data/fig[0-9]_*.csv"):
        names += out.glob(pattern)
    return [p for p in names if p.is_file()]


def _drop_missing(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Rows without a value (NaN) cannot be averaged: leave them out, and say so in the page."""
    missing = df["value"].isna()
    if not missing.any():
        return df, []
    counts = df[missing].groupby(["run", "task", "measure"]).size()
    where = "; ".join(f"{run}: {n} {task} {measure}" for (run, task, measure), n in counts.items())
    return df[~missing], [f"{int(missing.sum())} rows have no value (NaN) and are left out ({where})."]


_MEASURES = [
    ("prompt entropy S(X)", "the matrix-based Rényi entropy of the prompt tokens' hidden states at a layer: "
     "S_α(X) = 1/(1−α) · log_b tr(A^α), with A = K / tr(K) and the Gaussian kernel "
     "K_ij = exp(−‖x_i − x_j‖² / (2σ²)). It lies between 0 (all tokens alike) and log_b(n) for n tokens, and "
     "grows with n: tokens without structure give about (1 − e⁻¹)·log_b(n) under the median rule."),
    ("response entropy S(Y)", "the same over the response tokens' hidden states."),
    ("joint entropy S(X,Y)", "the same over the block kernel of prompt and response tokens, "
     "[[K_XX, K_XY], [K_YX, K_YY]], at most log_b(n + m)."),
    ("conditional entropy S(Y|X)", "the proxy S(X,Y) − S(X): the structure the response adds to the prompt; "
     "low values mean a response tied to its prompt (fidelity), high values a freer one (creativity)."),
]


def _prompt_set(r: Run) -> str:
    """The prompt sources of a run (and its limit), in words: what its rows were measured on."""
    settings = r.manifest.get("settings", {})
    parts = [f"{kind}: {settings[key]}" for kind, key in (("text", "text_prompts"), ("image", "image_prompts"))
             if settings.get(key)]  # fmt: skip
    if settings.get("limit"):
        parts.append(f"at most {settings['limit']} per source")
    return "; ".join(parts) or "?"


def _prompt_set_notes(runs: list[Run]) -> list[str]:
    """A note when the runs were measured on different prompt sets: models side by side are then on other prompts."""
    sets = {r.name: _prompt_set(r) for r in runs}
    if len(set(sets.values())) < 2:
        return []
    return ["These runs measured different prompt sets, so Table 1, the curves and the findings put models side by "
            "side on different prompts: " + "; ".join(f"{name}: {text}" for name, text in sets.items()) + "."]


def _run_row(r: Run) -> list[object]:
    m, counts = r.manifest.get("model", {}), r.manifest.get("counts", {})
    others = r.manifest.get("layers_by_task") or {}  # tasks measured in another network of the model
    layers = f"{m.get('num_layers', '?')}" + "".join(f" ({task}: {n})" for task, n in others.items())
    return [r.name, m.get("spec", "?"), _prompt_set(r), layers, f"{r.alpha:g}", sigma_text(r.sigma),
            f"{r.base:g}", counts.get("prompts", "?"), counts.get("rows", "?"), counts.get("errors", "?"),
            r.manifest.get("entroprobe_version", "?"), r.manifest.get("device", "?"),
            f"{r.manifest.get('started', '?')} → {r.manifest.get('ended', '?')}"]


def _head(runs: list[Run], claims: list[dict], warnings: list[str], notes: list[str], ctx: Context) -> str:
    """The page's top: main findings, runs and settings, what is measured, notes."""
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    settings = sorted({r.settings_text() for r in runs})
    if len(settings) == 1:
        same = f"Every run used {settings[0]}."
    else:
        same = ("These runs used different settings (allowed by allow_mixed): "
                + "; ".join(f"{r.name}: {r.settings_text()}" for r in runs) + ". Their values are not on one scale.")
    no_claims = ("<p>No claims: the runs lack the text and image prompts or the two generation tasks that the "
                 "comparisons need.</p>")
    parts = [
        "<h1>entroprobe report</h1>",
        f"<p>{len(runs)} run(s), {len(ctx.labels)} model(s), {len(ctx.df)} measurements. Made {html.esc(now)}.</p>",
        "<h2>Main findings</h2>",
        html.items([c["text"] for c in claims], "findings") or no_claims,
    ]
    if warnings:
        parts.append(f'<p class="empty">{len(warnings)} kernel warning(s): see <a href="#fig6">Figure 6</a>.</p>')
    parts += [
        "<h2>Runs and settings</h2>",
        html.table(["run", "model", "prompt sources", "layers", "α", "σ", "base", "prompts", "rows", "errors",
                    "entroprobe", "device", "started → ended"], [_run_row(r) for r in runs]),
        f"<p>{html.esc(same)}</p>",
        "<h2>What is measured</h2>",
        "<ul>" + "".join(f"<li><b>{html.esc(n)}</b>: {html.esc(d)}</li>" for n, d in _MEASURES) + "</ul>",
        f"<p>{html.esc(_method_text(runs, ctx))}</p>",
    ]
    if notes:
        parts += ["<h2>Notes</h2>", html.items(notes)]
    return "\n".join(parts)


def _method_text(runs: list[Run], ctx: Context) -> str:
    """The settings behind every number, in words."""
    alphas = ", ".join(sorted({f"{r.alpha:g}" for r in runs}))
    sigmas = ", ".join(sorted({sigma_text(r.sigma) for r in runs}))
    bases = ", ".join(sorted({f"{r.base:g}" for r in runs}))
    depth = ("; the figures draw depth = layer / number of layers (1 = the last layer) to compare models of "
             "different depth") if ctx.depth else ""
    return (
        f"Order α = {alphas} (α → 1 is Shannon entropy); bandwidth σ: {sigmas} (median rule: for each prompt and "
        "layer, σ = sqrt(median over token pairs of ‖z_i − z_j‖² / 2), the median pairwise distance divided by √2, "
        "over the prompt's tokens for the prompt entropy, the response's for the response entropy and their union "
        "for the joint and conditional entropies; pooled: that rule over token pairs pooled from a calibration "
        "sample of the run, one σ per layer; fixed: one σ everywhere); "
        f"logarithm base {bases}, so values are in {ctx.unit}. Layer 0 is the embedding output, layer i the "
        f"output of layer i{depth}. Every entropy grows with its token count, so each value is read against what "
        "tokens without structure give at the same count and σ (the structureless reference), and each "
        "comparison is made again at matched token counts: the mean over random subsets of k prompt tokens (and "
        "m response tokens), among the prompts that reach them. Every mean is over prompts, with a 95 % "
        f"percentile bootstrap interval from {ctx.boot.n_boot} resamples of the prompts (seed {ctx.boot.seed}). "
        "A claim's number is the mean over layers of each prompt's values: image against text prompts, and a "
        "modality's highest against its lowest prompt type, as a difference of two groups' means; text against "
        "image generation as the mean per-prompt difference on the text prompts both tasks answer. A difference "
        "is clear when its interval excludes 0; a type comparison, the widest of several pairs, has intervals "
        "that hold for every pair at once."
    )
