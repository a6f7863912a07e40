"""The claims a report makes, each with the numbers behind it, and the kernel warnings.

A claim compares two curves layer by layer; two curves *differ* at a layer when their 95 % bootstrap
intervals do not overlap there.
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


def modality_claims(curves: pd.DataFrame, unit: str) -> list[dict]:
    """Per model: the layers where text and image prompt entropies differ (curves grouped by ``modality``)."""
    claims = []
    for label, by_model in curves.groupby("label", sort=False):
        both = compare(by_model, "modality", "text", "image")
        if both.empty:
            continue
        differ = both[both["differ"]]
        image_higher = differ[differ["mean_b"] > differ["mean_a"]]
        first = both.iloc[0]
        if differ.empty:
            where = f"do not differ at any of {len(both)} layers (95 % intervals overlap at every layer)"
        else:
            where = (f"differ (95 % intervals not overlapping) at {len(differ)} of {len(both)} layers "
                     f"({layer_ranges(differ['layer'])}); image prompts are higher at {len(image_higher)} of them")
        text = (
            f"{label}: text and image prompt entropies {where}. At layer {int(first['layer'])}: text "
            f"{_interval(first['mean_a'], first['low_a'], first['high_a'])} vs image "
            f"{_interval(first['mean_b'], first['low_b'], first['high_b'])} {unit} "
            f"({int(first['n_a'])} text, {int(first['n_b'])} image prompts)."
        )
        claims.append({
            "kind": "modality",
            "model": label,
            "layers": int(len(both)),
            "differ_layers": [int(v) for v in differ["layer"]],
            "image_higher_layers": [int(v) for v in image_higher["layer"]],
            "text": text,
        })
    return claims


def response_claims(curves: pd.DataFrame, unit: str) -> list[dict]:
    """Per model: which generation task has the higher conditional entropy, at how many layers."""
    claims = []
    for label, by_model in curves.groupby("label", sort=False):
        both = compare(by_model, "task", "text-gen", "image-gen")
        if both.empty:
            continue
        text_higher = both["mean_a"] > both["mean_b"]
        image_higher = both["mean_b"] > both["mean_a"]
        n_text, n_image = int(text_higher.sum()), int(image_higher.sum())
        clear_text, clear_image = int((text_higher & both["differ"]).sum()), int((image_higher & both["differ"]).sum())
        if n_text == n_image:
            lead = f"neither generation task has the higher conditional entropy at more of the {len(both)} layers"
        else:
            leader = "text generation" if n_text > n_image else "image generation"
            lead = f"{leader} has the higher conditional entropy at {max(n_text, n_image)} of {len(both)} layers"
        text = (
            f"{label}: {lead} "
            f"(text generation higher at {n_text}, {clear_text} with intervals not overlapping; image generation "
            f"higher at {n_image}, {clear_image} not overlapping). Mean over layers: text generation "
            f"{both['mean_a'].mean():.2f} vs image generation {both['mean_b'].mean():.2f} {unit} "
            f"({int(both['n_a'].max())} and {int(both['n_b'].max())} prompts)."
        )
        claims.append({
            "kind": "response",
            "model": label,
            "layers": int(len(both)),
            "text_gen_higher_layers": [int(v) for v in both.loc[text_higher, "layer"]],
            "image_gen_higher_layers": [int(v) for v in both.loc[image_higher, "layer"]],
            "differ_layers": [int(v) for v in both.loc[both["differ"], "layer"]],
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
