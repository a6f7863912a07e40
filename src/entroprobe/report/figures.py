"""The report's figures, drawn with matplotlib's Agg canvas (no pyplot, no global backend change).

A figure is a grid of panels; a panel holds curves (a line for the mean over prompts and a band for its
95 % bootstrap interval). The palette is Okabe–Ito (safe for colour-blind readers) and every curve also
differs by line style and marker, so the figures survive grey-scale printing.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import LogLocator, MaxNLocator, NullFormatter, ScalarFormatter

from entroprobe.entropy import STRUCTURELESS_MARGIN

__all__ = ["Curve", "Panel", "grid", "length_figure", "save", "style"]

# Okabe & Ito (2008), without yellow (too pale on white)
OKABE_ITO = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"]
LINESTYLES = ["-", "--", "-.", ":", (0, (5, 1, 1, 1)), (0, (3, 1, 1, 1, 1, 1)), (0, (1, 1))]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]
FIXED = {  # the same meaning gets the same look in every figure
    "text": 0, "image": 1, "text-gen": 2, "image-gen": 3,
    "text-gen|text": 2, "image-gen|text": 3, "text-gen|image": 4, "image-gen|image": 5, "difference": 6,
    "short": 5, "medium": 4, "long": 3,
}
RC = {"font.size": 10.5, "axes.titlesize": 11, "axes.labelsize": 10.5, "legend.fontsize": 9.5,
      "xtick.labelsize": 9.5, "ytick.labelsize": 9.5, "figure.titlesize": 13,
      "svg.hashsalt": "entroprobe"}  # the same figure gives the same SVG
PANEL_SIZE = (4.3, 3.1)  # inches


@dataclass(frozen=True)
class Style:
    color: str
    linestyle: object
    marker: str


def style(key: str, index: int = 0) -> Style:
    """The look of a curve: fixed for modalities, tasks and lengths, else the ``index``-th of the cycle."""
    i = FIXED.get(key, index)
    return Style(OKABE_ITO[i % len(OKABE_ITO)], LINESTYLES[i % len(LINESTYLES)], MARKERS[i % len(MARKERS)])


@dataclass
class Curve:
    """One curve: ``data`` has columns ``x, mean, low, high``."""

    name: str
    data: pd.DataFrame
    style: Style


@dataclass
class Panel:
    """One panel of a grid; ``empty`` replaces the curves with a message when there is nothing to draw."""

    title: str
    ylabel: str
    curves: list[Curve] = field(default_factory=list)
    empty: str | None = None
    rug: list[float] = field(default_factory=list)  # x positions to mark along the bottom
    rug_label: str = ""
    kind: str = ""  # "normalised" | "relative" | "saturation" | "sigma" | "difference" | "": reference lines, scales


def _draw_curve(ax, curve: Curve, band_alpha: float) -> None:
    d = curve.data.sort_values("x")
    ax.fill_between(d["x"], d["low"], d["high"], color=curve.style.color, alpha=band_alpha, linewidth=0)
    ax.plot(d["x"], d["mean"], color=curve.style.color, linestyle=curve.style.linestyle, linewidth=1.7,
            marker=curve.style.marker, markersize=4, markevery=max(1, len(d) // 12), label=curve.name)


def _decorate(ax, panel: Panel, log_name: str) -> None:
    if panel.kind == "normalised":
        ax.axhline(1.0, color="0.3", linewidth=0.8, linestyle=":")
        ax.axhspan(1 - STRUCTURELESS_MARGIN, max(1.05, ax.get_ylim()[1]), color="0.5", alpha=0.15, linewidth=0)
        ax.set_ylim(min(-0.05, ax.get_ylim()[0]), max(1.13, ax.get_ylim()[1]))
        ax.text(0.01, 1.01, "tokens without structure", transform=ax.get_yaxis_transform(), va="bottom",
                fontsize=8, color="0.3")
    elif panel.kind == "relative":
        ax.axhline(1.0, color="0.3", linewidth=0.8, linestyle=":")
        ax.text(0.01, 1.01, "an independent response without structure", transform=ax.get_yaxis_transform(),
                va="bottom", fontsize=8, color="0.3")
    elif panel.kind == "difference":
        ax.axhline(0.0, color="0.3", linewidth=0.8, linestyle=":")
    elif panel.kind == "saturation":
        ax.axhline(0.0, color="0.3", linewidth=0.8, linestyle=":")
        ax.set_ylim(-1.05, 1.05)
    elif panel.kind == "sigma":
        lows = [c.data["low"].min() for c in panel.curves]
        highs = [c.data["high"].max() for c in panel.curves]
        if lows and min(lows) > 0 and max(highs) / min(lows) > 20:
            ax.set_yscale("log")
    if panel.rug:  # in a strip added below the data, so the marks never cover a curve
        low, high = ax.get_ylim()
        ax.set_ylim(low - 0.12 * (high - low), high)
        ax.plot(panel.rug, np.full(len(panel.rug), low - 0.07 * (high - low)), linestyle="none", marker="|",
                markersize=8, markeredgewidth=1.6, color="black", label=panel.rug_label)


def _axes_grid(n: int, ncols: int) -> tuple[Figure, list]:
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    width = max(PANEL_SIZE[0] * ncols, 6.4)  # room for the title and the legend
    fig = Figure(figsize=(width, PANEL_SIZE[1] * nrows + 1.1), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def grid(panels: list[Panel], *, ncols: int, title: str, xlabel: str, depth: bool, log_name: str) -> Figure:
    """Small multiples: one axes per panel, a title on top, one legend (with the band) below.

    Args:
        panels: the panels, filled row by row.
        ncols: panels per row.
        title: the figure's title (what is plotted).
        xlabel: the x axis label of every panel.
        depth: x is a depth fraction in [0, 1] (else integer layers).
        log_name: how the ceiling is written, e.g. ``log2(n)``.
    """
    import matplotlib

    with matplotlib.rc_context(RC):
        fig, axes = _axes_grid(len(panels), ncols)
        legend: dict[str, object] = {}
        for ax, panel in zip(axes, panels):
            ax.set_title(panel.title)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(panel.ylabel)
            ax.grid(True, color="0.9", linewidth=0.6)
            if panel.empty or not panel.curves:
                ax.text(0.5, 0.5, panel.empty or "no rows", transform=ax.transAxes, ha="center", va="center",
                        wrap=True, fontsize=9.5, color="0.25")
                ax.set_xticks([])
                ax.set_yticks([])
                continue
            band_alpha = 0.2 if len(panel.curves) <= 3 else 0.1  # overlapping bands stay see-through
            for curve in panel.curves:
                _draw_curve(ax, curve, band_alpha)
                legend.setdefault(curve.name, Line2D([], [], color=curve.style.color, linewidth=1.7,
                                                     linestyle=curve.style.linestyle, marker=curve.style.marker,
                                                     markersize=4))
            _decorate(ax, panel, log_name)
            if panel.rug:
                legend.setdefault(panel.rug_label, Line2D([], [], color="black", linestyle="none", marker="|",
                                                          markersize=9, markeredgewidth=1.6))
            if depth:
                ax.set_xlim(-0.02, 1.02)
            else:
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        legend["95 % bootstrap band"] = Patch(color="0.5", alpha=0.3, linewidth=0)
        widest = max(len(name) for name in legend) * 0.075 + 0.9  # inches per legend entry, roughly
        fits = max(1, int(fig.get_figwidth() // widest))
        fig.legend(list(legend.values()), list(legend.keys()), loc="outside lower center",
                   ncols=min(len(legend), 5, fits), frameon=False)
        fig.suptitle(title, fontweight="bold")
    return fig


def length_figure(
    bins: pd.DataFrame, prompts: pd.DataFrame, fits: pd.DataFrame, *, labels: list[str], ylabel: str,
    bases: list[float], log_name: str, xlabel: str, shared_reference: tuple[np.ndarray, np.ndarray] | None = None,
) -> Figure:
    """Entropy against prompt length, and how much of it the token count explains, per model.

    Left: per model its prompts (dots), bin means (line + band) and the structureless reference of the bins
    (dashed: what tokens without structure give at those counts), and the ceiling log_b(n). Right: R² of the
    value on log2 n across prompts, at every layer.

    Args:
        bins: from :func:`entroprobe.report.analysis.length_bins`.
        prompts: one row per prompt with ``label, n_tokens, value``.
        fits: from :func:`entroprobe.report.control.length_fits` (``label, layer, r2``; ``layer`` may be a depth).
        labels: the models, in order.
        ylabel: the left y axis label; xlabel: the right panel's x axis label.
        shared_reference: ``(n, reference)`` when every model has the same reference (the median rule at one α
            and base): drawn once, in grey, instead of once per model.
        bases: the logarithm bases of the values (one ceiling log_b(n) drawn per base).
        log_name: how the ceiling is written.
    """
    import matplotlib

    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(12.4, 4.9), layout="constrained")
        ax, fit_ax = fig.subplots(1, 2, width_ratios=[1.6, 1])
        for i, label in enumerate(labels):
            s = style(label, i)
            dots = prompts[prompts["label"] == label]
            ax.scatter(dots["n_tokens"], dots["value"], s=9, color=s.color, alpha=0.3, linewidth=0,
                       marker=s.marker)
            b = bins[bins["label"] == label].sort_values("n_tokens_mean")
            ax.fill_between(b["n_tokens_mean"], b["low"], b["high"], color=s.color, alpha=0.18, linewidth=0)
            ax.plot(b["n_tokens_mean"], b["mean"], color=s.color, linestyle=s.linestyle, marker=s.marker,
                    markersize=5, linewidth=1.8, label=f"{label}: bin mean ({len(dots)} prompts)")
            if shared_reference is None:
                ax.plot(b["n_tokens_mean"], b["reference"], color=s.color, linestyle=(0, (2, 2)), linewidth=1.2,
                        label=f"{label}: tokens without structure")
            mine = fits[fits["label"] == label].sort_values("layer")
            fit_ax.plot(mine["layer"], mine["r2"], color=s.color, linestyle=s.linestyle, marker=s.marker,
                        markersize=4, linewidth=1.7, label=label)
        n = np.geomspace(max(1.0, float(prompts["n_tokens"].min())), float(prompts["n_tokens"].max()), 200)
        if shared_reference is not None:
            ax.plot(*shared_reference, color="0.35", linestyle=(0, (4, 2)), linewidth=1.5,
                    label="tokens without structure: the same n, the same σ rule")
        for j, base in enumerate(bases):
            name = log_name if len(bases) == 1 else f"log{base:g}(n)"
            ax.plot(n, np.log(n) / np.log(base), color="0.2", linestyle=[":", "-."][j % 2], linewidth=1.6,
                    label=f"{name}: the ceiling for n tokens")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("prompt length n (tokens, log scale)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", color="0.9", linewidth=0.6)
        handles, names = ax.get_legend_handles_labels()
        handles.append(Patch(color="0.5", alpha=0.3, linewidth=0))
        names.append("95 % bootstrap interval over prompts in the bin")
        ax.legend(handles, names, loc="best", frameon=True, framealpha=0.9, fontsize=8)
        ax.set_title("Text prompt entropy against prompt length (dots: single prompts)")
        fit_ax.set_ylim(-0.02, 1.02)
        fit_ax.set_xlabel(xlabel)
        fit_ax.set_ylabel("R² of the value on log2 n")
        fit_ax.grid(True, color="0.9", linewidth=0.6)
        fit_ax.set_title("How much of the spread the token count explains")
        fit_ax.legend(loc="best", frameon=True, framealpha=0.9, fontsize=8)
    return fig


def save(fig: Figure, folder: Path, stem: str) -> bytes:
    """Write ``folder/stem.png`` (150 dpi) and ``folder/stem.svg``; return the PNG's bytes."""
    import matplotlib

    with matplotlib.rc_context(RC):
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=150, metadata={"Software": None})
        png = buffer.getvalue()
        (folder / f"{stem}.png").write_bytes(png)
        fig.set_layout_engine("none")  # keep the layout just computed: the SVG needs no second pass
        fig.savefig(folder / f"{stem}.svg", format="svg", metadata={"Date": None})
    return png
