"""The prompt-type claim: within a modality, the highest against the lowest prompt type, raw and at one count.

The paper reads Table 1 and its Figure 5 as "prompt types are encoded alike". Types differ in length too, so the
report compares the widest pair of types raw and at the matched token count, with intervals that hold for every
pair at once (the widest pair is picked from the data). These tests build rows whose answers are known.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from entroprobe.report import make_report
from entroprobe.report.analysis import Boot
from entroprobe.report.control import TYPE_MIN_PROMPTS, split, type_comparisons, type_shortfalls
from entroprobe.report.findings import comparison_claim, verdict
from entroprobe.report.stats import bootstrap_difference
from synthetic_runs import K, write_run


def _rows(types: dict[str, tuple[int, int, float, float | None]], rng, *, modality="text", layers=3, noise=0.05):
    """Encode rows: per type, (prompts, tokens, raw value, value at K tokens or None), ``layers`` layers each."""
    rows = []
    for ptype, (count, n, raw, matched) in types.items():
        for i in range(count):
            for k, value in ((0, raw), (K, matched)):
                if value is None:
                    continue
                for layer in range(layers):
                    rows.append({"label": "m", "model": "m", "source": "s", "prompt_id": f"{ptype}-{i}",
                                 "modality": modality, "prompt_type": ptype, "task": "encode",
                                 "measure": "prompt_entropy", "layer": layer, "num_layers": layers - 1,
                                 "value": value + rng.normal(0, noise), "n_tokens": n, "n_response_tokens": 0,
                                 "subsample": k, "subsample_response": 0, "sigma_scale": 1.0})  # fmt: skip
    return pd.DataFrame(rows)


def test_types_apart_by_length_only_are_token_count_with_the_numbers_of_a_direct_computation():
    rng = np.random.default_rng(0)
    df = _rows({"short": (24, 20, 3.0, 2.5), "medium": (22, 60, 4.0, 2.5), "long": (20, 200, 5.0, 2.5)}, rng)
    raw, matched = split(df)
    (c,) = type_comparisons(raw, matched, Boot(n_boot=300))
    assert (c.a, c.b, c.modality, c.types) == ("long", "short", "text", 3)
    assert c.level == pytest.approx(1 - 0.05 / 3)
    for estimate, rows in ((c.raw, raw), (c.matched, matched)):  # each prompt's mean over layers, then per type
        per_prompt = rows.groupby(["prompt_id", "prompt_type"])["value"].mean().groupby("prompt_type")
        assert estimate.mean == pytest.approx(per_prompt.mean()["long"] - per_prompt.mean()["short"], rel=1e-12)
        assert (estimate.n_a, estimate.n_b) == (20, 24)
    assert c.raw.clear and c.raw.mean == pytest.approx(2.0, abs=0.05) and not c.matched.clear
    assert verdict(c) == "token count"
    text = comparison_claim(c, "bits")["text"]
    assert text.startswith(f"m: of its 3 text prompt types, long scores highest and short lowest, {c.raw.mean:.2f} ")
    assert "on 20 long and 24 short prompts (mean over layers; 98.3 % intervals, 95 % for all 3 pairs of types at " \
        "once)" in text
    assert f"is token count: with every token these prompts differ by {c.same.mean:+.2f} [" in text
    assert f"bits, and at {K} tokens each (20 long and 24 short prompts) by {c.matched.mean:+.2f} [" in text


def test_a_gap_that_holds_at_one_count_survives_and_each_modality_is_compared_on_its_own():
    rng = np.random.default_rng(1)
    text = _rows({"a": (20, 50, 4.0, 3.0), "b": (20, 50, 3.0, 2.4)}, rng)
    image = _rows({"a": (20, 576, 6.0, 2.7), "c": (20, 576, 6.0, 2.7), "d": (19, 576, 1.0, 1.0)}, rng, noise=0.0,
                  modality="image")  # "d": one prompt short of a type compared; "a" is the text's name too
    raw, matched = split(pd.concat([text, image]))
    by_modality = {c.modality: c for c in type_comparisons(raw, matched, Boot(n_boot=300))}
    assert set(by_modality) == {"text", "image"}
    c = by_modality["text"]
    assert (c.a, c.b, c.types, c.level) == ("a", "b", 2, 0.95)
    assert verdict(c) == "survives" and c.matched.mean == pytest.approx(0.6, abs=0.05)
    claim = comparison_claim(c, "bits")
    assert "(mean over layers)" in claim["text"] and "It survives token-count control: at 16 tokens each (20 a " \
        "and 20 b prompts) a is still higher, by" in claim["text"]
    assert (claim["kind"], claim["modality"], claim["types"]) == ("type", "text", 2)
    d = by_modality["image"]
    assert d.types == 2 and {d.a, d.b} == {"a", "c"} and verdict(d) == "neither"
    assert d.left_out == ("d",) and comparison_claim(d, "bits")["text"].startswith(
        f"m: the widest gap between its 2 image prompt types of 20 prompts or more (d: fewer, not compared), "
        f"{d.a} − {d.b}, is not clear: ")
    assert c.left_out == () and "of its 2 text prompt types, a scores highest" in claim["text"]


def test_text_and_image_types_draw_their_own_resamples_and_few_matched_prompts_leave_a_type_unchecked():
    rng = np.random.default_rng(7)
    text = _rows({"a": (20, 50, 4.0, 3.0), "b": (20, 50, 3.0, 2.0)}, rng, noise=0.3)
    image = text.assign(modality="image")  # the same values: only their bootstrap keys tell them apart
    reach = text["prompt_id"].isin([f"b-{i}" for i in range(6)])  # of type b, only 6 prompts reach K
    few = text[(text["prompt_type"] == "a") | (text["subsample"] == 0) | reach]
    raw, matched = split(pd.concat([text, image]))
    text_c, image_c = type_comparisons(raw, matched, Boot(n_boot=200))
    assert text_c.raw.mean == image_c.raw.mean and (text_c.raw.low, text_c.raw.high) != (image_c.raw.low,
                                                                                         image_c.raw.high)
    raw, matched = split(few)
    (c,) = type_comparisons(raw, matched, Boot(n_boot=200))
    assert (c.matched.n_a, c.matched.n_b) == (20, 6) and (c.same.n_a, c.same.n_b) == (20, 6)
    assert c.raw.n_b == 20 and c.matched.clear  # clear, but on 6 prompts: the far tails are too narrow to trust
    assert verdict(c) == "unchecked"
    assert "Not checked at 16 tokens each: too few prompts reach it (20 and 6)." in comparison_claim(c, "bits")["text"]


def test_a_clear_interval_near_zero_is_not_printed_as_touching_it():
    from entroprobe.report.control import Comparison, Estimate

    c = Comparison("type", "m", "inductive", "abductive", Estimate(0.37, 0.32, 0.42, 180, 180),
                   Estimate(-0.0151, -0.0262, -0.0043, 180, 180), "16 tokens each", types=4, modality="text",
                   level=1 - 0.05 / 6)  # fmt: skip
    text = comparison_claim(c, "bits")["text"]
    assert "0.37 [0.32, 0.42] bits apart" in text and "abductive is higher, by 0.015 [0.004, 0.026] bits." in text


def test_a_modality_with_one_type_worth_comparing_makes_no_claim_and_says_why():
    rng = np.random.default_rng(2)
    raw, matched = split(_rows({"deductive": (25, 50, 4.0, 3.0), "composition": (12, 50, 3.0, 2.4)}, rng))
    assert type_comparisons(raw, matched, Boot(n_boot=100)) == []
    assert type_shortfalls(raw) == [f"m: prompt types are not compared, as a type needs {TYPE_MIN_PROMPTS} prompts "
                                    "and its 2 text prompt types have composition 12, deductive 25."]
    raw, _ = split(_rows({"deductive": (25, 50, 4.0, 3.0)}, rng))
    assert type_shortfalls(raw) == []  # one type: nothing to compare, nothing to explain


def test_the_widest_of_six_equal_types_is_clear_in_about_5_runs_in_100_not_in_a_third():
    """Six types from one distribution: the widest pair's 95 % interval excludes 0 far more often than 5 %;
    the simultaneous intervals keep the chance of a false claim near 5 % (at 20 prompts a type and more)."""
    rng = np.random.default_rng(3)
    false_claims = naive = 0
    runs = 150
    for run in range(runs):
        df = _rows({t: (TYPE_MIN_PROMPTS, 50, 4.0, None) for t in "abcdef"}, rng, layers=1, noise=0.3)
        raw, matched = split(df)
        (c,) = type_comparisons(raw, matched, Boot(n_boot=100, seed=run))
        false_claims += c.raw.clear
        values = df.set_index("prompt_type")["value"]
        _, low, high, _, _ = bootstrap_difference(values[c.a].to_numpy(), values[c.b].to_numpy(), n_boot=400,
                                                  seed=run)  # fmt: skip
        naive += bool(low > 0 or high < 0)
    assert false_claims <= 0.11 * runs  # Binomial(150, 0.05): mean 7.5, sd 2.7
    assert naive >= 0.25 * runs  # what the claim would say with plain 95 % intervals


def test_the_report_says_whether_the_types_differ_under_figure_3(tmp_path):
    run = write_run(tmp_path / "run", "janus:tiny", 4, n_text=21, n_image=20, seed=4)
    path = make_report([run], tmp_path / "out", n_boot=200)
    summary = json.loads((path.parent / "findings.json").read_text(encoding="utf-8"))
    claims = [c for c in summary["claims"] if c["kind"] == "type"]
    assert {c["modality"] for c in claims} == {"text", "image"}
    assert {c["types"] for c in claims} == {4, 6}
    kinds = [c["kind"] for c in summary["claims"]]
    assert kinds.index("type") > kinds.index("response") and kinds.index("type") < kinds.index("length")
    page = path.read_text(encoding="utf-8")
    figure_3 = page[page.index('id="fig3"'):page.index('id="fig4"')]
    for claim in claims:
        assert claim["text"].split(":")[1].split(",")[0] in figure_3


def test_table_3_compares_at_every_sigma_the_pair_chosen_at_sigma_one(tmp_path):
    rng = np.random.default_rng(5)
    raw, matched = split(_rows({"short": (20, 20, 3.0, 2.5), "medium": (20, 60, 4.0, 2.5), "long": (20, 200, 5.0, 2.5)},
                               rng))  # fmt: skip
    (c,) = type_comparisons(raw, matched, Boot(n_boot=100), pairs={("m", "text"): ("medium", "short")})
    assert (c.a, c.b, c.types) == ("medium", "short", 3) and c.raw.mean == pytest.approx(1.0, abs=0.05)
    assert type_comparisons(raw, matched, Boot(n_boot=100), pairs={("m", "image"): ("a", "b")}) == []

    run = write_run(tmp_path / "run", "janus:tiny", 4, n_text=21, n_image=20, scales=(0.5, 1.0, 2.0), seed=6)
    path = make_report([run], tmp_path / "out", n_boot=100)
    summary = json.loads((path.parent / "findings.json").read_text(encoding="utf-8"))
    at_one = {c["modality"]: c for c in summary["claims"] if c["kind"] == "type"}
    records = json.loads((path.parent / "data" / "table3_scales.json").read_text())
    assert set(at_one) == {"text", "image"}
    for modality, claim in at_one.items():
        mine = [r for r in records if r["comparison"] == f"{modality} prompt types {' − '.join(claim['pair'])}"]
        assert sorted(r["sigma_scale"] for r in mine) == [0.5, 1.0, 2.0]
        one = next(r for r in mine if r["sigma_scale"] == 1.0)
        assert one["verdict"] == claim["verdict"]
        assert one["raw"] == {k: pytest.approx(v, abs=1e-9) for k, v in claim["raw"].items()}
