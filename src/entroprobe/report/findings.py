"""The claims a report makes, in short sentences with their numbers, and the kernel warnings.

Each claim is one comparison of one model (see :mod:`.control`): its raw number with its 95 % bootstrap interval,
then whether it survives token-count control, in words. A difference is *clear* when its interval excludes 0.
"""

from __future__ import annotations

import math

import pandas as pd

from entroprobe.entropy import STRUCTURELESS_MARGIN

from entroprobe.report.control import MIN_PROMPTS, Comparison, Estimate
from entroprobe.report.stats import layer_ranges

__all__ = ["comparison_claim", "verdict", "length_claims", "rho_interval", "kernel_warnings", "MAJORITY",
           "TOKEN_COUNT_SHARE"]

MAJORITY = 0.5  # warn when at least this share of prompts has a kernel in one state
TOKEN_COUNT_SHARE = 0.25  # a raw difference is token count when matching leaves less than this share of it


def _signed(e: Estimate) -> str:
    return f"{e.mean:+.2f} [{e.low:+.2f}, {e.high:+.2f}]"


def _direction(e: Estimate, a: str, b: str) -> tuple[str, str, str]:
    """(the higher side, the lower side, ``"0.26 [0.16, 0.34]"``: the size of the difference and its interval).

    A clear interval whose near end would print as 0.00 gets three decimals (``"0.015 [0.004, 0.026]"``), so
    that it does not read as touching 0."""
    high, low = (a, b) if e.mean > 0 else (b, a)
    ends = sorted((abs(e.low), abs(e.high)))
    digits = 3 if e.clear and round(ends[0], 2) == 0 else 2
    return high, low, f"{abs(e.mean):.{digits}f} [{ends[0]:.{digits}f}, {ends[1]:.{digits}f}]"


def _is(name: str) -> str:
    return "are" if name.endswith("s") else "is"


def _prompts(c: Comparison, e: Estimate) -> str:
    if c.kind == "type":
        return f"{e.n_a} {c.a} and {e.n_b} {c.b} prompts"
    return f"{e.n_a} image and {e.n_b} text prompts" if c.kind == "modality" else f"the same {e.n_a} text prompts"


def _level(c: Comparison) -> str:
    """How a type comparison's intervals were widened, in words."""
    pairs = c.types * (c.types - 1) // 2
    if pairs < 2:
        return "mean over layers"
    return f"mean over layers; {100 * c.level:.1f} % intervals, 95 % for all {pairs} pairs of types at once"


def verdict(c: Comparison) -> str:
    """``survives``, ``token count``, ``inconclusive``, ``selection``, ``reverses``, ``appears``, ``neither``,
    ``unchecked`` or ``too few``.

    A clear raw difference that matching loses is first held to ``c.same``, the raw difference on only the units
    that reach the matched count. It is ``selection`` when ``c.same`` rules out ``TOKEN_COUNT_SHARE`` of the raw
    difference in the raw direction (its far end closer to 0, or beyond it): the difference comes from the units
    matching leaves out. It is ``token count`` only when the matched interval rules out ``TOKEN_COUNT_SHARE`` of
    what those same units show (of the raw difference when ``c.same`` is unknown), both its ends closer to 0 than
    that. Anything between is ``inconclusive``: absence of evidence is not evidence.
    """
    if not c.enough(c.raw):
        return "too few"
    if c.matched is None or not c.enough(c.matched):
        return "unchecked"
    if c.raw.clear:
        if c.matched.clear:
            return "survives" if (c.matched.mean > 0) == (c.raw.mean > 0) else "reverses"
        sign = 1.0 if c.raw.mean > 0 else -1.0
        shown = abs(c.raw.mean)  # what matching has to explain
        if c.same is not None and c.enough(c.same):
            if max(sign * c.same.low, sign * c.same.high) < TOKEN_COUNT_SHARE * abs(c.raw.mean):
                return "selection"
            if sign * c.same.low <= 0:  # the same units may or may not differ: nothing to hold matching to
                return "inconclusive"
            shown = abs(c.same.mean)
        bound = TOKEN_COUNT_SHARE * shown
        return "token count" if max(abs(c.matched.low), abs(c.matched.high)) < bound else "inconclusive"
    return "appears" if c.matched.clear else "neither"


def _lead(c: Comparison, unit: str) -> str:
    raw = c.raw
    if c.kind == "type":
        types = f"{c.types} {c.modality} prompt types"
        if c.left_out:
            types += f" of {c.min_prompts} prompts or more ({', '.join(c.left_out)}: fewer, not compared)"
        if not raw.clear:
            return (f"{c.model}: the widest gap between its {types}, {c.a} − {c.b}, is not clear: "
                    f"{_signed(raw)} {unit}, on {_prompts(c, raw)} ({_level(c)}).")
        _, _, size = _direction(raw, c.a, c.b)
        return (f"{c.model}: of its {types}, {c.a} scores highest and {c.b} lowest, {size} {unit} apart, on "
                f"{_prompts(c, raw)} ({_level(c)}).")
    if not raw.clear:
        return (f"{c.model}: {c.a} and {c.b} do not clearly differ: {_signed(raw)} {unit} ({c.a} − {c.b}), "
                f"on {_prompts(c, raw)} (mean over layers).")
    high, low, size = _direction(raw, c.a, c.b)
    if c.kind == "modality":
        return f"{c.model}: {high} score higher than {low}, by {size} {unit}, on {_prompts(c, raw)} (mean over layers)."
    return f"{c.model}: {high} has the higher S(Y|X), by {size} {unit}, on {_prompts(c, raw)} (mean over layers)."


def _second(c: Comparison, kind: str, unit: str) -> str:
    """What token-count control makes of the raw difference, in one sentence."""
    raw, matched = c.raw, c.matched
    if kind == "unchecked":
        if matched is None and c.whole_responses:
            return ("Not checked at matched token counts: the run matched the prompts' tokens but kept every "
                    "response whole (--match-response-tokens 0), so the responses' lengths still differ.")
        if matched is None:
            return ("Not checked at matched token counts: no prompt has matched rows on both sides (its run "
                    "matched none, or no unit reached the matched count).")
        return f"Not checked at {c.at}: too few prompts reach it ({matched.n_a} and {matched.n_b})."
    where = f"at {c.at} ({_prompts(c, matched).replace('the same ', '')})"
    high, _, size = _direction(matched, c.a, c.b)
    if kind == "selection":
        return (f"Matching cannot tell whether it is token count: {where} it is {_signed(matched)} ({c.a} − {c.b}), "
                f"and with every token these prompts already show little of it: {_signed(c.same)} {unit}. The raw "
                "difference comes from the prompts or responses too short to reach the matched count.")
    if kind == "token count" and c.same is not None:  # the same prompts with every token: the difference is there
        return (f"The raw difference of {abs(raw.mean):.2f} {unit} is token count: with every token these prompts "
                f"differ by {_signed(c.same)} {unit}, and {where} by {_signed(matched)} ({c.a} − {c.b}).")
    return {
        "survives": f"It survives token-count control: {where} {high} {_is(high)} still higher, by {size} {unit}.",
        "token count": f"The raw difference of {abs(raw.mean):.2f} {unit} is token count: {where} it is "
                       f"{_signed(matched)} ({c.a} − {c.b}).",
        "inconclusive": f"Token-count control is inconclusive: {where} it is {_signed(matched)} ({c.a} − {c.b}), "
                        "an interval too wide to tell.",
        "reverses": f"It reverses {where}: there {high} {_is(high)} higher, by {size} {unit}.",
        "appears": f"A difference appears {where}: {high} {_is(high)} higher, by {size} {unit}.",
        "neither": f"Nor {where}: {_signed(matched)} ({c.a} − {c.b}).",
    }[kind]


def comparison_claim(c: Comparison, unit: str) -> dict:
    """The claim of one comparison: two short sentences (the raw number; what token-count control does to it)."""
    raw, matched, kind = c.raw, c.matched, verdict(c)
    if kind == "too few":
        text = (f"{c.model}: not enough prompts to compare {c.a} and {c.b} ({raw.n_a} and {raw.n_b}; a claim needs "
                f"at least {c.min_prompts} on each side).")
    else:
        text = f"{_lead(c, unit)} {_second(c, kind, unit)}"
    return {"kind": c.kind, "model": c.model, "verdict": kind, "text": text, "sigma_scale": c.scale,
            "raw": vars(raw), "matched": None if matched is None else vars(matched), "matched_at": c.at,
            "same_prompts_raw": None if c.same is None else vars(c.same), "level": c.level,
            **({"modality": c.modality, "types": c.types, "pair": [c.a, c.b]} if c.kind == "type" else {})}


def _trend(rho: float, n: int) -> int:
    """+1 / −1 when Spearman's ρ over n prompts lies outside ±1.96/√(n − 1), the 95 % band of no association; else 0."""
    band = 1.96 / math.sqrt(max(n - 1, 1))
    return 1 if rho > band else -1 if rho < -band else 0


def rho_interval(rho: float, n: int) -> tuple[float, float]:
    """The 95 % interval of Spearman's ρ over n prompts (n ≥ 4): Fisher's z with the standard error
    √(1.06 / (n − 3)) of Fieller, Hartley and Pearson (1957)."""
    z = math.atanh(min(max(rho, -0.999999), 0.999999))
    half = 1.96 * math.sqrt(1.06 / (n - 3))
    return math.tanh(z - half), math.tanh(z + half)


def length_claims(fits: pd.DataFrame, layers: dict[str, int], at_text: dict[str, str]) -> list[dict]:
    """Per model, at its table layer: how text prompt entropy follows the token count, raw and matched.

    A trend is a Spearman ρ outside the 95 % band of no association, ±1.96/√(n − 1) for n prompts. A raw trend
    that matching removes is ``token count`` only when the matched ρ's 95 % interval (:func:`rho_interval`) rules
    out a trend of ``TOKEN_COUNT_SHARE`` of the raw ρ, as :func:`verdict` asks of a difference; a wider interval
    is ``inconclusive`` (a few prompts at the matched count cannot show that the trend is gone).

    Args:
        fits: from :func:`.control.length_fits`.
        layers: each model's table layer.
        at_text: per model, its matched prompt count in words ("16 tokens each"), absent without matched rows.
    """
    claims = []
    for label, layer in layers.items():
        row = fits[(fits["label"] == label) & (fits["layer"] == layer)]
        if row.empty or math.isnan(row["spearman"].iloc[0]):
            continue
        r = row.iloc[0]
        if r["prompts"] < MIN_PROMPTS:
            text = f"{label}: not enough text prompts ({int(r['prompts'])}) to tell how entropy follows length."
            claims.append({"kind": "length", "model": label, "layer": layer, "verdict": "too few", "text": text,
                           "spearman": r["spearman"], "r2": r["r2"], "prompts": int(r["prompts"])})  # fmt: skip
            continue
        rho = r["spearman"]
        trend = "rises" if _trend(rho, r["prompts"]) > 0 else "falls" if _trend(rho, r["prompts"]) < 0 else \
            "shows no clear trend"
        text = (f"{label}: text prompt entropy {trend} with prompt length at layer {layer} (Spearman ρ = {rho:.2f}, "
                f"{int(r['prompts'])} prompts); log2 n alone explains R² = {r['r2']:.2f} of its spread.")
        matched = r["matched_spearman"]
        interval = None
        if label not in at_text or math.isnan(matched) or r["matched_prompts"] < MIN_PROMPTS:
            kind = "unchecked"
            text += " Not checked at a matched token count."
        else:
            before, after = _trend(rho, r["prompts"]), _trend(matched, r["matched_prompts"])
            low, high = interval = rho_interval(matched, int(r["matched_prompts"]))
            if after == 0 and before:
                gone = max(abs(low), abs(high)) < TOKEN_COUNT_SHARE * abs(rho)
                kind = "token count" if gone else "inconclusive"
            elif after == 0:
                kind = "neither"
            elif before == 0:
                kind = "appears"
            else:
                kind = "survives" if after == before else "reverses"
            tail = {"survives": "the trend survives", "neither": "still no trend",
                    "token count": f"the {'rise' if rho > 0 else 'fall'} is token count",
                    "reverses": "the trend reverses", "appears": "a trend appears",
                    "inconclusive": f"too few prompts ({int(r['matched_prompts'])}) to tell whether the "
                                    f"{'rise' if rho > 0 else 'fall'} is token count"}[kind]
            text += f" At {at_text[label]}, ρ = {matched:.2f} [{low:.2f}, {high:.2f}]: {tail}."
        claims.append({"kind": "length", "model": label, "layer": layer, "verdict": kind, "text": text,
                       "spearman": rho, "r2": r["r2"], "matched_spearman": matched,
                       "matched_interval": None if interval is None else list(interval),
                       "prompts": int(r["prompts"]), "matched_prompts": int(r["matched_prompts"])})  # fmt: skip
    return claims


_STATE_WHY = {
    "structureless": f"most prompts' values are within {STRUCTURELESS_MARGIN * 100:g} % of what tokens without "
                     "structure give at the same count and σ, so they count tokens more than they measure structure",
    "collapsed": "most prompts' values are ≈ 0: the kernel sees every token alike (a σ too large for these states)",
    "identical": "most prompts' values are 0: every token is the same point",
}


def _layers(layers) -> str:
    """``layer 3`` or ``layers 0–2, 5``."""
    return f"layer{'s' if len(layers) > 1 else ''} {layer_ranges(layers)}"


def kernel_warnings(df: pd.DataFrame) -> list[str]:
    """One plain warning per model and flagged kernel state that most prompts are in at some layers.

    Raw rows at σ × 1; entropies (prompt, response, joint) are checked, the conditional proxy sharing the joint
    kernel's state. A measure that several tasks share (the prompt entropy) is named once, with its tasks.
    """
    rows = df[(df["measure"] != "conditional_entropy") & (df["sigma_scale"] == 1.0)]
    rows = rows[(rows["subsample"] == 0) & (rows["subsample_response"] == 0)]
    if rows.empty:
        return []
    states = pd.get_dummies(rows["kernel_state"]).reindex(columns=list(_STATE_WHY), fill_value=False)
    rows = pd.concat([rows[["label", "task", "measure", "modality", "layer"]], states.astype(float)], axis=1)
    keys = ["label", "task", "measure", "modality"]
    shares = rows.groupby(keys + ["layer"], sort=False)[list(_STATE_WHY)].mean().reset_index()
    hits: dict[tuple, dict] = {}  # (label, state, measure, modality, layers) → tasks and shares
    for (label, task, measure, modality), sub in shares.groupby(keys, sort=False):
        for state in _STATE_WHY:
            hit = sub[sub[state] >= MAJORITY]
            if hit.empty:
                continue
            entry = hits.setdefault((label, state, measure, modality, _layers(hit["layer"]), len(sub)),
                                    {"tasks": [], "shares": []})  # fmt: skip
            entry["tasks"].append(task)
            entry["shares"] += hit[state].tolist()
    by_model: dict[tuple[str, str], list[str]] = {}
    for (label, state, measure, modality, layers, total), entry in hits.items():
        low, high = f"{min(entry['shares']):.0%}", f"{max(entry['shares']):.0%}"
        share = low if low == high else f"{low}–{high}"
        by_model.setdefault((label, state), []).append(
            f"{measure.replace('_', ' ')} of {modality} prompts ({', '.join(entry['tasks'])}) at {layers} of "
            f"{total} layers ({share} of prompts)")
    return [f"Warning — {label}: {_STATE_WHY[state]}: " + "; ".join(items) + "."
            for (label, state), items in by_model.items()]
