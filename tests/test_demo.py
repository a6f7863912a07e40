"""``entroprobe demo`` end to end: probes the micro-world prompts with the shipped models, writes the report."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from entroprobe.cli import main
from entroprobe.demo import DEMO_MODELS, MATCH_TOKENS, run_demo


def test_demo_with_few_prompts_runs_every_model_and_writes_the_report(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--limit", "3"]) == 0
    printed = capsys.readouterr().out
    assert f"report: {tmp_path / 'report' / 'report.html'}" in printed
    assert printed.count("\n- ") >= 1  # the findings
    for model, tasks in DEMO_MODELS.items():
        frame = pd.read_parquet(tmp_path / "runs" / model / "results.parquet")
        assert set(frame["task"]) == set(tasks), model
        assert frame["value"].notna().all()
        reading = json.loads((tmp_path / "runs" / model / "manifest.json").read_text())["reading"]
        assert reading["measured"] and reading["unknown_rate"] <= 0.01, model  # every model reads its prompts
        assert f"{model}: unknown tokens: {100 * reading['unknown_rate']:.1f} % of" in printed
    micro = pd.read_parquet(tmp_path / "runs" / "micro-mask" / "results.parquet")
    assert set(micro["modality"]) == {"text", "image"}
    assert set(micro["measure"]) == {"prompt_entropy", "response_entropy", "joint_entropy", "conditional_entropy"}
    summary = json.loads((tmp_path / "report" / "findings.json").read_text())
    kinds = {claim["text"]: claim["kind"] for claim in summary["claims"]}
    shown = [line[2:] for line in printed.splitlines() if line.startswith("- ")]
    assert 1 <= len(shown) <= 3 and all(text in kinds for text in shown)  # the report's own claims
    order = ["response", "modality", "length", "scale"]
    assert [order.index(kinds[t]) for t in shown] == sorted(order.index(kinds[t]) for t in shown)
    if "response" in kinds.values():  # the paper's central contrast comes first when the report makes it
        assert kinds[shown[0]] == "response"
    html = (tmp_path / "report" / "report.html").read_text()
    assert "micro-ar" in html and "micro-mask" in html and "minilm" in html
    assert not re.search(r"https?:|<script|<link|<iframe", html, re.I)  # self-contained
    # Table 1 of real runs equals a direct computation from their results.parquet (layer 0, encode task)
    table = pd.read_csv(tmp_path / "report" / "table1.csv").set_index(["model", "prompt_type"])
    rows = pd.concat(pd.read_parquet(tmp_path / "runs" / m / "results.parquet") for m in DEMO_MODELS)
    rows = rows[(rows["task"] == "encode") & (rows["measure"] == "prompt_entropy") & (rows["layer"] == 0)]
    raw = rows[(rows["subsample"] == 0) & (rows["sigma_scale"] == 1.0)]
    want = raw.groupby(["model", "prompt_type"])["value"].agg(["mean", "count"])
    assert sorted(table.index) == sorted(want.index)
    np.testing.assert_allclose(table.loc[want.index, "mean"], want["mean"], rtol=1e-12)
    np.testing.assert_array_equal(table.loc[want.index, "n_prompts"], want["count"])
    # and at the demo's matched count, the prompts that reach it
    matched = pd.read_csv(tmp_path / "report" / "table1_matched.csv").set_index(["model", "prompt_type"])
    at_k = rows[rows["subsample"] == MATCH_TOKENS].groupby(["model", "prompt_type"])["value"].agg(["mean", "count"])
    np.testing.assert_allclose(matched.loc[at_k.index, "mean"], at_k["mean"], rtol=1e-12)
    assert (matched["k"] == MATCH_TOKENS).all()
    assert "not enough prompts" in printed  # 3 prompts per modality: below the 5 a claim needs, and said so


def test_demo_resumes_without_recomputing(tmp_path):
    first = run_demo(tmp_path, limit=1, progress=False)
    rows = {run: pd.read_parquet(run / "results.parquet") for run in first.runs}
    again = run_demo(tmp_path, limit=1, progress=False)
    for before, summary in zip(first.summaries, again.summaries):
        assert summary.succeeded == summary.failed == 0  # nothing computed again
        assert summary.done_before == summary.units == before.succeeded
    for run, frame in rows.items():
        pd.testing.assert_frame_equal(pd.read_parquet(run / "results.parquet"), frame)
    assert again.report.exists() and again.findings == first.findings


@pytest.mark.slow
def test_full_demo(tmp_path):  # its wall time is measured by benchmarks/bench_probe.py --demo, not here
    result = run_demo(tmp_path, progress=False)
    assert len(result.findings) >= 2
    assert all(summary.failed == 0 for summary in result.summaries)
    frame = pd.read_parquet(tmp_path / "runs" / "micro-ar" / "results.parquet")
    assert frame["prompt_id"].nunique() == 36 + 24
    for run in result.runs:
        assert json.loads((run / "manifest.json").read_text())["reading"]["unknown_tokens"] == 0
    # the response comparisons are checked at the demo's matched counts: most responses reach them
    matched = frame[(frame["task"] != "encode") & (frame["subsample_response"] > 0)]
    assert matched.groupby("task")["prompt_id"].nunique().min() >= 30
