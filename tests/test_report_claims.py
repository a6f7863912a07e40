"""The report's claims: each comparison raw and at matched token counts, in words; warnings; σ scales.

The synthetic runs (synthetic_runs.py) have known answers: the raw image − text prompt difference is token
count (equal at 16 tokens each), the text − image generation difference survives matching.
"""

from __future__ import annotations

import html
import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from entroprobe.report import load_runs, make_report
from entroprobe.report.control import Comparison, Estimate
from entroprobe.report.findings import comparison_claim, kernel_warnings, rho_interval, verdict
from synthetic_runs import K, M, matched_rows, raw_rows, write_run


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("claims")
    runs = [write_run(root / "a", "causal-lm:tiny-a", 4, seed=1),
            write_run(root / "b", "janus:tiny-b", 8, length_meta=False, image_ceiling=True, seed=2)]
    path = make_report(runs, root / "out", n_boot=400)
    return path, runs, json.loads((path.parent / "findings.json").read_text(encoding="utf-8"))


def _per_prompt_means(df: pd.DataFrame, by: str) -> pd.DataFrame:
    return df.groupby(["model", "source", "prompt_id", by])["value"].mean().reset_index()


def test_the_modality_claim_is_token_count_with_the_numbers_of_a_direct_computation(report):
    path, runs, summary = report
    df = pd.concat([pd.read_parquet(r / "results.parquet") for r in runs])
    for claim in [c for c in summary["claims"] if c["kind"] == "modality"]:
        mine = df[(df["model"] == claim["model"]) & (df["task"] == "encode") & (df["measure"] == "prompt_entropy")]
        for part, pick in (("raw", raw_rows), ("matched", matched_rows)):
            prompts = _per_prompt_means(pick(mine), "modality")
            image = prompts.loc[prompts["modality"] == "image", "value"]
            text = prompts.loc[prompts["modality"] == "text", "value"]
            assert claim[part]["mean"] == pytest.approx(image.mean() - text.mean(), rel=1e-12), part
            assert (claim[part]["n_a"], claim[part]["n_b"]) == (len(image), len(text))
            assert claim[part]["low"] <= claim[part]["mean"] <= claim[part]["high"]
        # with every token, on only the prompts that reach K: the difference is still there
        reach = set(matched_rows(mine)["prompt_id"])
        prompts = _per_prompt_means(raw_rows(mine[mine["prompt_id"].isin(reach)]), "modality")
        same = prompts.loc[prompts["modality"] == "image", "value"].mean() - \
            prompts.loc[prompts["modality"] == "text", "value"].mean()
        assert claim["same_prompts_raw"]["mean"] == pytest.approx(same, rel=1e-12) and same > 1.0
        assert claim["verdict"] == "token count"
        assert f"image prompts score higher than text prompts, by {claim['raw']['mean']:.2f}" in claim["text"]
        assert f"is token count: with every token these prompts differ by {same:+.2f}" in claim["text"]
        assert f"bits, and at {K} tokens each" in claim["text"]
        assert html.escape(claim["text"]) in path.read_text(encoding="utf-8")


def test_the_response_claim_survives_matching_paired_by_prompt(report):
    _, runs, summary = report
    df = pd.concat([pd.read_parquet(r / "results.parquet") for r in runs])
    for claim in [c for c in summary["claims"] if c["kind"] == "response"]:
        mine = df[(df["model"] == claim["model"]) & (df["measure"] == "conditional_entropy")
                  & (df["modality"] == "text")]  # fmt: skip
        for part, pick in (("raw", raw_rows), ("matched", matched_rows)):
            wide = _per_prompt_means(pick(mine), "task").pivot_table(index="prompt_id", columns="task",
                                                                    values="value").dropna()  # fmt: skip
            assert claim[part]["mean"] == pytest.approx((wide["text-gen"] - wide["image-gen"]).mean(), rel=1e-12)
            assert claim[part]["n_a"] == len(wide)
        assert claim["verdict"] == "survives" and claim["matched"]["low"] > 0
        assert "text generation has the higher S(Y|X)" in claim["text"]
        assert f"It survives token-count control: at {K} prompt and {M} response tokens" in claim["text"]


def test_a_rise_gone_at_few_matched_prompts_is_inconclusive(report):
    _, _, summary = report
    (claim,) = [c for c in summary["claims"] if c["kind"] == "length" and c["model"] == "janus:tiny-b"]
    assert claim["spearman"] > 0.5 and claim["r2"] > 0.5
    assert "rises with prompt length at layer 0" in claim["text"] and "log2 n alone explains R² =" in claim["text"]
    # the matched values do not follow n, but ~20 prompts cannot rule out a rise of a quarter of the raw ρ
    low, high = claim["matched_interval"]
    assert max(abs(low), abs(high)) > 0.25 * claim["spearman"]
    assert claim["verdict"] == "inconclusive"
    assert f"At {K} tokens each, ρ = {claim['matched_spearman']:.2f} [{low:.2f}, {high:.2f}]: too few prompts " \
        f"({claim['matched_prompts']}) to tell whether the rise is token count." in claim["text"]


def test_the_length_claim_says_the_rise_is_token_count_when_enough_prompts_reach_the_matched_count(tmp_path):
    run = write_run(tmp_path / "r", "causal-lm:tiny-a", 2, tasks=("encode",), n_text=100, n_image=1)
    summary = json.loads((make_report([run], tmp_path / "out", n_boot=50).parent / "findings.json").read_text())
    (claim,) = [c for c in summary["claims"] if c["kind"] == "length"]
    low, high = claim["matched_interval"]
    assert claim["matched_prompts"] > 250 and max(abs(low), abs(high)) < 0.25 * claim["spearman"]
    assert claim["verdict"] == "token count" and f"At {K} tokens each" in claim["text"]
    assert claim["text"].endswith("the rise is token count.")


def test_the_matched_rho_interval_covers_the_population_rho_95_times_in_100():
    # bivariate normal with Pearson r: Spearman's population ρ is (6/π) asin(r/2) (Pearson 1907)
    r, n, trials = 0.5, 30, 2000
    population = 6 / np.pi * np.arcsin(r / 2)
    rng = np.random.default_rng(3)
    xy = rng.multivariate_normal([0, 0], [[1, r], [r, 1]], size=(trials, n))
    covered = 0
    for sample in xy:
        rho = pd.Series(sample[:, 0]).corr(pd.Series(sample[:, 1]), method="spearman")
        low, high = rho_interval(rho, n)
        covered += low <= population <= high
    assert 0.935 <= covered / trials <= 0.965
    assert rho_interval(0.0, 109) == pytest.approx((-np.tanh(1.96 * 0.1), np.tanh(1.96 * 0.1)))


def test_claims_come_in_order_and_the_page_folds_the_layer_by_layer_detail(report):
    path, _, summary = report
    assert [c["kind"] for c in summary["claims"]][:4] == ["modality", "modality", "response", "response"]
    page = path.read_text(encoding="utf-8")
    assert page.count("<details><summary>Layer by layer") == 2
    layers = pd.read_csv(path.parent / "data" / "fig4_modality_layers.csv")
    assert set(layers["which"]) == {"raw", "matched"} and (layers["low"] <= layers["high"]).all()


def _comparison(raw, matched, kind="modality"):
    estimate = lambda e: None if e is None else Estimate(*e)  # noqa: E731
    a, b = ("image prompts", "text prompts") if kind == "modality" else ("text generation", "image generation")
    return Comparison(kind, "m", a, b, estimate(raw), estimate(matched), "16 tokens each" if matched else "")


@pytest.mark.parametrize(
    "raw, matched, expected, words",
    [
        ((1.9, 1.7, 2.1, 30, 20), (0.1, -0.2, 0.3, 30, 20), "token count",
         "m: image prompts score higher than text prompts, by 1.90 [1.70, 2.10] bits, on 30 image and 20 text "
         "prompts (mean over layers). The raw difference of 1.90 bits is token count: at 16 tokens each (30 image "
         "and 20 text prompts) it is +0.10 [-0.20, +0.30] (image prompts − text prompts)."),
        ((1.9, 1.7, 2.1, 30, 20), (1.7, -0.1, 3.5, 6, 6), "inconclusive",
         "Token-count control is inconclusive: at 16 tokens each (6 image and 6 text prompts) it is +1.70 "
         "[-0.10, +3.50] (image prompts − text prompts), an interval too wide to tell."),
        ((1.9, 1.7, 2.1, 30, 20), (0.5, 0.2, 0.8, 30, 20), "survives",
         "It survives token-count control: at 16 tokens each (30 image and 20 text prompts) image prompts are still "
         "higher, by 0.50 [0.20, 0.80] bits."),
        ((1.9, 1.7, 2.1, 30, 20), (-0.5, -0.8, -0.2, 30, 20), "reverses",
         "It reverses at 16 tokens each (30 image and 20 text prompts): there text prompts are higher, by 0.50 "
         "[0.20, 0.80] bits."),
        ((0.1, -0.1, 0.3, 30, 20), (0.5, 0.2, 0.8, 30, 20), "appears",
         "m: image prompts and text prompts do not clearly differ: +0.10 [-0.10, +0.30] bits"),
        ((0.1, -0.1, 0.3, 30, 20), (0.0, -0.2, 0.2, 30, 20), "neither", "Nor at 16 tokens each"),
        ((1.9, 1.7, 2.1, 30, 20), None, "unchecked", "Not checked at matched token counts"),
        ((1.9, 1.7, 2.1, 30, 20), (0.1, -0.2, 0.3, 3, 20), "unchecked", "too few prompts reach it (3 and 20)"),
        ((1.9, 1.7, 2.1, 4, 20), (0.1, -0.2, 0.3, 4, 20), "too few", "not enough prompts to compare"),
    ],
)
def test_every_verdict_in_words(raw, matched, expected, words):
    c = _comparison(raw, matched)
    assert verdict(c) == expected
    claim = comparison_claim(c, "bits")
    assert words in claim["text"] and claim["verdict"] == expected


def _prompt_rows(source, modality, count, n, raw, matched, rng):
    """Encode rows of ``count`` prompts of ``n`` tokens, 3 layers: ``raw`` every token, ``matched`` at K (None: none)."""
    rows = []
    for i in range(count):
        for k, value in ((0, raw), (K, matched)):
            if value is None:
                continue
            for layer in range(3):
                rows.append({"label": "m", "model": "m", "source": source, "prompt_id": f"{source}-{i}",
                             "modality": modality, "prompt_type": "t", "task": "encode", "measure": "prompt_entropy",
                             "layer": layer, "num_layers": 2, "value": value + rng.normal(0, 0.05), "n_tokens": n,
                             "n_response_tokens": 0, "subsample": k, "subsample_response": 0, "sigma_scale": 1.0})
    return rows


def test_a_difference_made_by_the_prompts_matching_leaves_out_is_selection_not_token_count():
    from entroprobe.report.analysis import Boot
    from entroprobe.report.control import modality_comparisons, split

    rng = np.random.default_rng(0)
    rows = (_prompt_rows("images", "image", 10, 576, 5.0, 3.0, rng)
            + _prompt_rows("long", "text", 10, 40, 5.0, 3.0, rng)  # as high as the images, with every token
            + _prompt_rows("short", "text", 10, 8, 1.0, None, rng))  # lower, and too short to be matched
    raw, matched = split(pd.DataFrame(rows))
    (c,) = modality_comparisons(raw, matched, Boot(n_boot=200))
    assert c.raw.clear and c.raw.mean == pytest.approx(2.0, abs=0.1) and (c.raw.n_a, c.raw.n_b) == (10, 20)
    assert not c.matched.clear and not c.same.clear and (c.same.n_a, c.same.n_b) == (10, 10)
    assert verdict(c) == "selection"
    assert "Matching cannot tell whether it is token count: at 16 tokens each (10 image and 10 text prompts)" in \
        comparison_claim(c, "bits")["text"]
    # the long prompts lower too with every token: then matching does show token count, and says so with both
    rows = [r if r["source"] != "long" or r["subsample"] else {**r, "value": r["value"] - 2.0} for r in rows]
    raw, matched = split(pd.DataFrame(rows))
    (c,) = modality_comparisons(raw, matched, Boot(n_boot=200))
    assert c.same.clear and verdict(c) == "token count"
    claim = comparison_claim(c, "bits")
    assert f"with every token these prompts differ by {c.same.mean:+.2f}" in claim["text"]
    assert claim["same_prompts_raw"]["n_b"] == 10


@pytest.mark.parametrize("same, matched, expected", [
    ((1.9, -0.1, 3.9, 6, 6), (0.1, -1.0, 1.2, 6, 6), "inconclusive"),  # the same prompts: too few to tell
    ((-1.5, -1.9, -1.1, 30, 20), (0.0, -0.1, 0.1, 30, 20), "selection"),  # the same prompts differ the other way
    ((0.3, 0.1, 0.5, 30, 20), (0.0, -0.4, 0.4, 30, 20), "inconclusive"),  # matching cannot rule out their 0.3
    ((0.3, 0.1, 0.5, 30, 20), (0.0, -0.05, 0.05, 30, 20), "token count"),
    ((0.1, -0.2, 0.4, 30, 20), (0.0, -0.05, 0.05, 30, 20), "selection"),  # they show under a quarter of 2.0
])
def test_matching_is_held_to_what_the_same_prompts_show_with_every_token(same, matched, expected):
    c = replace(_comparison((2.0, 1.6, 2.4, 40, 60), matched), same=Estimate(*same))
    assert verdict(c) == expected
    text = comparison_claim(c, "bits")["text"]
    if expected == "token count":
        assert "with every token these prompts differ by +0.30 [+0.10, +0.50] bits" in text
    if expected == "selection":
        assert f"these prompts already show little of it: {same[0]:+.2f}" in text


def test_the_response_claim_names_the_tasks():
    claim = comparison_claim(_comparison((-0.85, -0.98, -0.73, 36, 36), (0.02, -0.05, 0.11, 7, 7), "response"),
                             "bits")  # fmt: skip
    assert claim["text"] == (
        "m: image generation has the higher S(Y|X), by 0.85 [0.73, 0.98] bits, on the same 36 text prompts (mean "
        "over layers). The raw difference of 0.85 bits is token count: at 16 tokens each (7 text prompts) it is "
        "+0.02 [-0.05, +0.11] (text generation − image generation).")


def test_kernel_warnings_name_the_flagged_states_once_per_model(report, tmp_path):
    _, _, summary = report
    (warning,) = [w for w in summary["warnings"] if "janus:tiny-b" in w]
    assert warning.startswith("Warning — janus:tiny-b: most prompts' values are within 20 % of what tokens without "
                              "structure give")
    assert "prompt entropy of image prompts (encode, text-gen) at layer 0 of 9 layers (100% of prompts)" in warning
    assert not any("causal-lm:tiny-a" in w for w in summary["warnings"])
    run = write_run(tmp_path / "r", tasks=("encode",), n_text=2, n_image=2)
    df = load_runs([run])
    df.loc[(df["modality"] == "text") & (df["layer"] == 2), "kernel_state"] = "collapsed"
    (warning,) = kernel_warnings(df)
    assert warning == ("Warning — causal-lm:tiny-a: most prompts' values are ≈ 0: the kernel sees every token "
                       "alike (a σ too large for these states): prompt entropy of text prompts (encode) at layer 2 "
                       "of 5 layers (100% of prompts).")


def test_sigma_scales_get_a_table_and_say_whether_the_conclusions_hold(tmp_path):
    run = write_run(tmp_path / "r", scales=(0.5, 1.0, 2.0), seed=3)
    path = make_report([run], tmp_path / "out", n_boot=200)
    summary = json.loads((path.parent / "findings.json").read_text(encoding="utf-8"))
    scale_claims = [c for c in summary["claims"] if c["kind"] == "scale"]
    assert len(scale_claims) == 2
    modality = next(c for c in scale_claims if "image prompts" in c["comparison"])
    assert modality["verdicts"] == {"0.5": "token count", "1.0": "token count", "2.0": "token count"}
    assert "the same at every σ scale (× 0.5, × 1, × 2): token count" in modality["text"]
    records = json.loads((path.parent / "data" / "table3_scales.json").read_text())
    assert {r["sigma_scale"] for r in records} == {0.5, 1.0, 2.0}
    # the main findings use σ × 1 only
    main = [c for c in summary["claims"] if c["kind"] == "modality"]
    assert len(main) == 1 and main[0]["sigma_scale"] == 1.0
    page = path.read_text(encoding="utf-8")
    assert "Table 3 — the comparisons at other bandwidths" in page
    image, text = main[0]["raw"]["n_a"], main[0]["raw"]["n_b"]
    table3 = page.split('<h2 id="table3">')[1].split("<h2")[0]
    assert image != text and f"(n = {image}, {text})</td>" in table3  # two groups: both counts
    single = make_report([write_run(tmp_path / "s", n_text=2, n_image=2)], tmp_path / "out2", n_boot=20)
    assert "One bandwidth only: run with --sigma-scale 0.5,1,2" in single.read_text(encoding="utf-8")


def test_runs_without_matched_rows_say_the_comparison_is_unchecked(tmp_path):
    run = write_run(tmp_path / "r", matched=False)
    path = make_report([run], tmp_path / "out", n_boot=100)
    summary = json.loads((path.parent / "findings.json").read_text(encoding="utf-8"))
    assert {c["verdict"] for c in summary["claims"] if c["kind"] in ("modality", "response")} == {"unchecked"}
    assert "No matched rows: these runs did not measure prompts at a matched token count" in \
        path.read_text(encoding="utf-8")
    assert not (path.parent / "table1_matched.csv").exists()


def test_a_run_that_kept_responses_whole_says_so_not_that_it_matched_nothing(tmp_path):
    run = write_run(tmp_path / "r")
    df = pd.read_parquet(run / "results.parquet")  # as measured with --match-response-tokens 0
    df.loc[df["subsample_response"] > 0, "subsample_response"] = 0
    df.to_parquet(run / "results.parquet", index=False)
    summary = json.loads((make_report([run], tmp_path / "out", n_boot=50).parent / "findings.json").read_text())
    (response,) = [c for c in summary["claims"] if c["kind"] == "response"]
    assert response["verdict"] == "unchecked" and response["matched"] is None
    assert "the run matched the prompts' tokens but kept every response whole (--match-response-tokens 0)" \
        in response["text"]
    (modality,) = [c for c in summary["claims"] if c["kind"] == "modality"]
    assert modality["verdict"] == "token count"  # the prompts' matched rows are still used


def test_fewer_than_five_prompts_is_not_enough_for_a_claim(tmp_path):
    run = write_run(tmp_path / "r", n_text=1, n_image=1)  # 4 text and 6 image prompts
    summary = json.loads((make_report([run], tmp_path / "out", n_boot=50).parent / "findings.json").read_text())
    (modality,) = [c for c in summary["claims"] if c["kind"] == "modality"]
    assert modality["verdict"] == "too few" and "not enough prompts" in modality["text"]
    (length,) = [c for c in summary["claims"] if c["kind"] == "length"]
    assert length["verdict"] == "too few"


def test_a_run_from_an_older_entroprobe_is_read_as_raw_rows_and_said(tmp_path):
    run = write_run(tmp_path / "r", n_text=2, n_image=2, matched=False)
    df = pd.read_parquet(run / "results.parquet")
    df.drop(columns=["reference", "kernel_state", "subsample", "subsample_response", "draws", "sigma_scale"]) \
        .to_parquet(run / "results.parquet")
    loaded = load_runs([run])
    assert (loaded["subsample"] == 0).all() and (loaded["sigma_scale"] == 1.0).all()
    np.testing.assert_allclose(loaded["reference"], df["reference"], rtol=1e-9)  # the median rule's closed form
    page = make_report([run], tmp_path / "out", n_boot=20).read_text(encoding="utf-8")
    assert "was written by an older entroprobe without subsample, subsample_response, draws, sigma_scale, " \
        "reference, kernel_state" in page


def test_runs_of_one_model_matched_at_different_counts_are_kept_apart(tmp_path):
    a = write_run(tmp_path / "a", n_text=2, n_image=2)
    b = write_run(tmp_path / "b", n_text=2, n_image=2, seed=5)
    manifest = json.loads((b / "manifest.json").read_text())
    manifest["settings"]["match_tokens"] = 8  # as if measured at another matched count
    (b / "manifest.json").write_text(json.dumps(manifest))
    df = pd.read_parquet(b / "results.parquet")
    df["prompt_id"] = "other-" + df["prompt_id"]
    df.to_parquet(b / "results.parquet")
    assert set(load_runs([a, b])["label"]) == {"causal-lm:tiny-a [a]", "causal-lm:tiny-a [b]"}


def test_figure_5_counts_each_models_prompts_and_response_tokens_apart(tmp_path):
    a = write_run(tmp_path / "a", "causal-lm:tiny-a", seed=0)
    b = write_run(tmp_path / "b", "causal-lm:tiny-b", seed=1)
    df = pd.read_parquet(b / "results.parquet")
    df.loc[df["task"] == "text-gen", "n_response_tokens"] = 240  # b answers in 240 tokens, a in 24
    df.to_parquet(b / "results.parquet", index=False)
    page = html.unescape(make_report([a, b], tmp_path / "out", n_boot=20).read_text(encoding="utf-8"))
    for model, tokens in (("causal-lm:tiny-a", 24), ("causal-lm:tiny-b", 240)):
        assert f"{model}: text generation, text prompts: 24 prompts; image generation, text prompts: 24 prompts; " \
            f"text generation, image prompts: 30 prompts; text generation: {tokens} response tokens on average" in page
