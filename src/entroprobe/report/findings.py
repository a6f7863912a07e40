"""The claims a report makes, each with the numbers behind it, and the kernel warnings.

Two curves of different prompts (text against image prompts) *differ* at a layer when their 95 % bootstrap
intervals do not overlap there. Two conditions measured on the same prompts (text against image generation,
on text prompts) are compared prompt by prompt: they differ at a layer when the 95 % bootstrap interval of
the mean per-prompt difference excludes 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from entroprobe.report.runs import PROMPT_KEY
from entroprobe.report.stats import layer_ranges, spearman

__all__ = ["compare", "modality_claims", "response_claims", "length_claims", "kernel_warnings",
           "CEILING", "FLOOR", "MAJORITY"]

CEILING = 0.98  # value / log_b(n) at or above this: the value sits at the ceiling
FLOOR = 0.02  # value / log_b(n) at or below this: the value sits at 0
MAJORITY = 0.5  # warn when at least this share of prompts sits there


def compare(curves: pd.DataFrame, group: str, a: str, b: str) -> pd.DataFrame:
    """Layer by layer, curve ``a`` against curve ``b`` of one model.

    Returns:
        Columns ``layer, mean_a, low_a, high_a, n_a, mean_b, low_b, high_b, n_b, differ`` (intervals apart).
    """
    cols = ["layer", "mean", "low", "high", "n"]
    left = curves[curves[group] == a][cols]
    right = curves[curves[group] == b][cols]
    both = left.merge(right, on="layer", suffixes=("_a", "_b")).sort_values("layer", ignore_index=True)
    both["differ"] = (both["high_a"] < both["low_b"]) | (both["high_b"] < both["low_a"])
    return both


def _interval(mean: float, low: float, high: float) -> str:
    return f"{mean:.2f} [{low:.2f}, {high:.2f}]"


def _apart(both: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """The layers where the curves differ, those where image is higher, and the sentence that says so."""
    differ = both[both["differ"]]
    image_higher = differ[differ["mean_b"] > differ["mean_a"]]
    if differ.empty:
        return differ, image_higher, (f"do not differ at any of {len(both)} layers "
                                      "(95 % intervals overlap at every layer)")
    return differ, image_higher, (
        f"differ (95 % intervals not overlapping) at {len(differ)} of {len(both)} layers "
        f"({layer_ranges(differ['layer'])}); image prompts are higher at {len(image_higher)} of them")


def modality_claims(curves: pd.DataFrame, unit: str, *, normalised: pd.DataFrame, sizes: pd.DataFrame,
                    log_name: str = "log_b(n)") -> list[dict]:
    """Per model: the layers where text and image prompt entropies differ, raw and normalised by the ceiling.

    Text and image prompts differ in length (tens against hundreds of tokens), so their ceilings log_b(n)
    differ by bits: each claim states the mean token count and ceiling of both sides, and repeats the
    comparison on value / log_b(n).

    Args:
        curves: prompt-entropy curves grouped by ``modality`` (from :func:`analysis.trajectories`).
        unit: the unit of the values (``bits``, …).
        normalised: the same curves of ``value / max_entropy``.
        sizes: from :func:`analysis.prompt_sizes`: ``label, modality, mean_tokens, mean_ceiling``.
        log_name: how the ceiling is written (``log2(n)``).
    """
    claims = []
    for label, by_model in curves.groupby("label", sort=False):
        both = compare(by_model, "modality", "text", "image")
        if both.empty:
            continue
        differ, image_higher, where = _apart(both)
        size = sizes[sizes["label"] == label].set_index("modality")
        tokens = {m: float(size.loc[m, "mean_tokens"]) for m in ("text", "image")}
        ceilings = {m: float(size.loc[m, "mean_ceiling"]) for m in ("text", "image")}
        norm = compare(normalised[normalised["label"] == label], "modality", "text", "image")
        n_differ, n_image_higher, n_where = _apart(norm)
        if norm.empty:  # every prompt of one side has a single token: its ceiling is 0
            n_where = "cannot be compared (the prompts of one side have a single token: a ceiling of 0)"
        first = both.iloc[0]
        text = (
            f"{label}: text and image prompt entropies {where}. Text prompts have {tokens['text']:.1f} tokens "
            f"on average and image prompts {tokens['image']:.1f}, so their ceilings {log_name} differ "
            f"({ceilings['text']:.2f} against {ceilings['image']:.2f} {unit} on average). "
            f"Normalised by the ceiling (value / {log_name}, per prompt) they {n_where}. "
            f"At layer {int(first['layer'])}: text {_interval(first['mean_a'], first['low_a'], first['high_a'])} "
            f"vs image {_interval(first['mean_b'], first['low_b'], first['high_b'])} {unit} "
            f"({int(first['n_a'])} text, {int(first['n_b'])} image prompts)"
        )
        at = norm[norm["layer"] == first["layer"]]
        if not at.empty:
            f = at.iloc[0]
            text += (f"; normalised {_interval(f['mean_a'], f['low_a'], f['high_a'])} vs "
                     f"{_interval(f['mean_b'], f['low_b'], f['high_b'])}")
        claims.append({
            "kind": "modality",
            "model": label,
            "layers": int(len(both)),
            "differ_layers": [int(v) for v in differ["layer"]],
            "image_higher_layers": [int(v) for v in image_higher["layer"]],
            "mean_tokens": tokens,
            "mean_ceiling": ceilings,
            "normalised_differ_layers": [int(v) for v in n_differ["layer"]],
            "normalised_image_higher_layers": [int(v) for v in n_image_higher["layer"]],
            "text": text + ".",
        })
    return claims


def response_claims(paired: pd.DataFrame, unit: str) -> list[dict]:
    """Per model: which generation task has the higher conditional entropy on the same text prompts.

    Args:
        paired: from :func:`analysis.paired_difference` of text-gen (a) against image-gen (b) on text
            prompts: ``label, layer, mean_a, mean_b, mean, low, high, n`` with ``mean`` the mean per-prompt
            difference and ``low, high`` its 95 % interval. A layer counts as a clear difference when that
            interval excludes 0.
        unit: the unit of the values.
    """
    claims = []
    for label, both in paired.groupby("label", sort=False):
        both = both.sort_values("layer", ignore_index=True)
        text_higher = both["mean"] > 0
        image_higher = both["mean"] < 0
        differ = (both["low"] > 0) | (both["high"] < 0)
        n_text, n_image = int(text_higher.sum()), int(image_higher.sum())
        clear_text, clear_image = int((text_higher & differ).sum()), int((image_higher & differ).sum())
        if n_text == n_image:
            lead = f"neither generation task has the higher conditional entropy at more of the {len(both)} layers"
        else:
            leader = "text generation" if n_text > n_image else "image generation"
            lead = f"{leader} has the higher conditional entropy at {max(n_text, n_image)} of {len(both)} layers"
        where = f" ({layer_ranges(both.loc[differ, 'layer'])})" if differ.any() else ""
        text = (
            f"{label}: {lead}, on the same {int(both['n'].max())} text prompts compared prompt by prompt "
            f"(text generation higher at {n_text}, {clear_text} of them with the 95 % interval of the per-prompt "
            f"difference excluding 0; image generation higher at {n_image}, {clear_image} excluding 0; "
            f"the interval excludes 0 at {int(differ.sum())} of {len(both)} layers{where}). Mean over layers: "
            f"text generation {both['mean_a'].mean():.2f} vs image generation {both['mean_b'].mean():.2f} {unit}, "
            f"difference {both['mean'].mean():.2f} {unit}."
        )
        claims.append({
            "kind": "response",
            "model": label,
            "layers": int(len(both)),
            "prompts": int(both["n"].max()),
            "prompt_modality": "text",
            "text_gen_higher_layers": [int(v) for v in both.loc[text_higher, "layer"]],
            "image_gen_higher_layers": [int(v) for v in both.loc[image_higher, "layer"]],
            "differ_layers": [int(v) for v in both.loc[differ, "layer"]],
            "text": text,
        })
    return claims


def length_claims(rows: pd.DataFrame, layers: dict[str, int]) -> list[dict]:
    """Per model: Spearman's ρ between token count and text prompt entropy at the table layer."""
    claims = []
    for label, sub in rows.groupby("label", sort=False):
        sub = sub[sub["layer"] == layers[label]]
        prompts = sub.groupby(PROMPT_KEY).agg(value=("value", "mean"), n_tokens=("n_tokens", "first"))
        rho = spearman(prompts["n_tokens"].to_numpy(), prompts["value"].to_numpy())
        if np.isnan(rho):
            continue
        trend = "rises" if rho >= 0.3 else "falls" if rho <= -0.3 else "shows no clear trend"
        text = (f"{label}: text prompt entropy at layer {layers[label]} {trend} with prompt length "
                f"(Spearman ρ = {rho:.2f} between token count and entropy over {len(prompts)} prompts).")
        claims.append({"kind": "length", "model": label, "layer": layers[label], "spearman": rho,
                       "prompts": int(len(prompts)), "text": text})
    return claims


_WHY = {
    "ceiling": "the kernel sees the tokens as nearly unrelated (K ≈ I), so this value tells prompts apart poorly; "
               "a larger σ would resolve them",
    "zero": "the kernel sees all tokens as alike (K ≈ all ones); a smaller σ would resolve them",
    "saturated": "the run's kernel diagnostics flagged the kernel as saturated",
}


def _layers(layers) -> str:
    """``layer 3`` or ``layers 0–2, 5``."""
    return f"layer{'s' if len(layers) > 1 else ''} {layer_ranges(layers)}"


def kernel_warnings(df: pd.DataFrame, log_name: str) -> list[str]:
    """Plain warnings wherever most prompts' values sit at the ceiling log_b(n) or at 0, or the kernel saturates.

    Entropies (prompt, response, joint) are checked; the conditional proxy has no ceiling of its own.
    """
    rows = df[(df["measure"] != "conditional_entropy") & (df["max_entropy"] > 0)].copy()
    if rows.empty:
        return []
    ratio = rows["value"] / rows["max_entropy"]
    rows["ceiling"] = ratio >= CEILING
    rows["zero"] = ratio <= FLOOR
    rows["saturated"] = rows["saturated"].fillna(False).astype(bool)
    keys = ["label", "task", "measure", "modality"]
    shares = rows.groupby(keys + ["layer"], sort=False)[["ceiling", "zero", "saturated"]].mean().reset_index()
    warnings = []
    for (label, task, measure, modality), sub in shares.groupby(keys, sort=False):
        for kind in ("ceiling", "zero", "saturated"):
            hit = sub[sub[kind] >= MAJORITY]
            if hit.empty:
                continue
            where = {"ceiling": f"sits at the ceiling {log_name} (value ≥ {CEILING:g}·{log_name})",
                     "zero": f"sits at 0 (value ≤ {FLOOR:g}·{log_name})",
                     "saturated": "has a saturated kernel"}[kind]
            low, high = f"{hit[kind].min():.0%}", f"{hit[kind].max():.0%}"
            warnings.append(
                f"Warning — {label}, task {task}, {measure.replace('_', ' ')} of {modality} prompts {where} for "
                f"{low if low == high else f'{low}–{high}'} of prompts at {_layers(hit['layer'])} "
                f"(of {len(sub)} layers): {_WHY[kind]}."
            )
    return warnings
