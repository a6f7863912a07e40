"""The report's files, tables, options and bad input, on synthetic run directories (see synthetic_runs.py)."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from entroprobe.errors import InputError, LoadError
from entroprobe.probe.schema import COLUMNS
from entroprobe.report import add_arguments, load_runs, make_report, run_command
from entroprobe.report.analysis import Boot, resolve_layers, table1
from entroprobe.report.runs import load
from entroprobe.report.stats import bootstrap_difference, bootstrap_mean
from synthetic_runs import FIGURES, K, raw_rows, write_run

@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("runs")
    return [write_run(root / "a", "causal-lm:tiny-a", 4, seed=1),
            write_run(root / "b", "janus:tiny-b", 8, length_meta=False, image_ceiling=True, seed=2)]


@pytest.fixture(scope="module")
def report(two_runs, tmp_path_factory) -> tuple[Path, float]:
    out = tmp_path_factory.mktemp("report")
    start = time.perf_counter()
    path = make_report(two_runs, out)
    return path, time.perf_counter() - start



# ---- the files ---------------------------------------------------------------------------------------------


def test_report_files_exist_and_are_fast(report):
    path, _ = report
    out = path.parent
    assert path.name == "report.html" and path.stat().st_size > 10_000
    for name in ["findings.json", "table1.csv", "table1.tex", "table1_matched.csv", "table1_matched.tex"]:
        assert (out / name).stat().st_size > 0, name
    for stem in FIGURES:
        assert (out / "figures" / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", stem
        assert "<svg" in (out / "figures" / f"{stem}.svg").read_text(encoding="utf-8")[:2000], stem
        assert len(pd.read_csv(out / "data" / f"{stem}.csv")) > 0, stem


def test_html_references_no_external_resource(report):
    text = report[0].read_text(encoding="utf-8")
    assert not re.search(r"https?:|ftp:|file:", text, re.I)
    assert not re.search(r"<(script|link|iframe|object|embed)\b", text, re.I)
    assert "@import" not in text
    srcs = re.findall(r"""\bsrc\s*=\s*["']([^"']*)""", text, re.I)
    assert len(srcs) == len(FIGURES) and all(s.startswith("data:image/png;base64,") for s in srcs)
    hrefs = re.findall(r"""\bhref\s*=\s*["']([^"']*)""", text, re.I)
    assert all(h.startswith("#") for h in hrefs), hrefs
    assert all(u.startswith("data:") for u in re.findall(r"url\(\s*['\"]?([^'\")]*)", text))


def test_page_states_settings_and_definitions(report):
    text = report[0].read_text(encoding="utf-8")
    for needed in ["α = 1.01", "median rule", "base = 2", "bits", "S(X,Y) − S(X)", "layer 0 (the embedding output)",
                   "tertiles of token count", "prompts&#x27; length field", "95 %", "median pairwise distance divided "
                   "by √2", "structureless reference", "Table 2 — prompt entropy by prompt type at one token count"]:
        assert needed in text, needed


# ---- Table 1 -----------------------------------------------------------------------------------------------


def _direct_table(run_dirs, layer_of, pick=raw_rows) -> pd.DataFrame:
    df = pick(pd.concat([pd.read_parquet(d / "results.parquet") for d in run_dirs]))
    df = df[(df["task"] == "encode") & (df["measure"] == "prompt_entropy")]
    df = df[df["layer"] == df["model"].map(layer_of)]
    return df.groupby(["model", "prompt_type"]).agg(mean=("value", "mean"), count=("value", "size"),
                                                    tokens=("n_tokens", "mean"))


def test_table1_equals_direct_pandas_computation(report, two_runs):
    got = pd.read_csv(report[0].parent / "table1.csv").set_index(["model", "prompt_type"])
    want = _direct_table(two_runs, {"causal-lm:tiny-a": 0, "janus:tiny-b": 0})
    assert sorted(got.index) == sorted(want.index)
    np.testing.assert_allclose(got.loc[want.index, "mean"], want["mean"], rtol=1e-12)
    np.testing.assert_array_equal(got.loc[want.index, "n_prompts"], want["count"])
    np.testing.assert_allclose(got.loc[want.index, "mean_tokens"], want["tokens"], rtol=1e-12)
    assert (got["layer"] == 0).all()
    # the paper's order: the four text types, then the six image types
    order = list(dict.fromkeys(got.reset_index()["prompt_type"]))
    assert order == ["composition", "abductive", "inductive", "deductive", "attribute", "logical", "relation",
                     "coarse", "single-instance", "cross-instance"]
    tex = (report[0].parent / "table1.tex").read_text(encoding="utf-8")
    assert "layer 0 (the embedding output)" in tex and "causal-lm:tiny-a" in tex and "\\toprule" in tex
    assert "n = 5, 576.0 tokens" in tex  # the image cells: five prompts of 576 tokens


def test_table1_at_a_matched_count_equals_direct_pandas_and_counts_who_is_left_out(report, two_runs):
    got = pd.read_csv(report[0].parent / "table1_matched.csv").set_index(["model", "prompt_type"])
    assert (got["k"] == K).all()
    matched = lambda df: df[(df["subsample"] == K) & (df["sigma_scale"] == 1.0)]  # noqa: E731
    want = _direct_table(two_runs, {"causal-lm:tiny-a": 0, "janus:tiny-b": 0}, matched)
    assert sorted(got.index) == sorted(want.index)
    np.testing.assert_allclose(got.loc[want.index, "mean"], want["mean"], rtol=1e-12)
    everyone = _direct_table(two_runs, {"causal-lm:tiny-a": 0, "janus:tiny-b": 0})
    np.testing.assert_array_equal(got.loc[want.index, "left_out"],
                                  everyone.loc[want.index, "count"] - want["count"])  # the prompts under 16 tokens
    assert got["left_out"].sum() > 0
    tex = (report[0].parent / "table1_matched.tex").read_text(encoding="utf-8")
    assert f"k = {K} tokens per prompt" in tex and "left out" in tex


def test_table1_at_a_matched_count_counts_prompts_of_two_sources_with_the_same_ids_apart():
    from entroprobe.report.analysis import Boot, table1_matched

    rows = []
    for source in ("set-a", "set-b"):  # ids 0–3 in both sources; all eight prompts reach k
        for i in range(4):
            for k, value in ((0, 5.0 + i), (16, 3.0 + i)):
                rows.append({"label": "m", "model": "m", "source": source, "prompt_id": str(i), "modality": "image",
                             "prompt_type": "coarse", "task": "encode", "measure": "prompt_entropy", "layer": 0,
                             "num_layers": 2, "value": value, "n_tokens": 576, "n_response_tokens": 0,
                             "subsample": k, "subsample_response": 0, "sigma_scale": 1.0, "reference": 9.0})
    got = table1_matched(pd.DataFrame(rows), {"m": 0}, Boot(n_boot=20))
    assert got[["n_prompts", "k", "left_out"]].values.tolist() == [[8, 16, 0]]


def test_table1_at_the_last_layer(two_runs):
    df, _ = load(two_runs)
    layers = resolve_layers(df, -1)
    assert layers == {"causal-lm:tiny-a": 4, "janus:tiny-b": 8}
    got = table1(df, layers, Boot(n_boot=50)).set_index(["model", "prompt_type"])
    want = _direct_table(two_runs, layers)
    np.testing.assert_allclose(got.loc[want.index, "mean"], want["mean"], rtol=1e-12)
    with pytest.raises(InputError, match=r"table layer 5 does not exist for model causal-lm:tiny-a: .* to 4"):
        resolve_layers(df, 5)


# ---- bootstrap ---------------------------------------------------------------------------------------------


def test_bootstrap_intervals_contain_the_mean_and_shrink():
    rng = np.random.default_rng(0)
    widths = []
    for n in (10, 100, 1000):
        x = rng.normal(3.0, 1.0, size=(n, 4))  # (prompts, layers)
        mean, low, high, count = bootstrap_mean(x, n_boot=1000, seed=0)
        np.testing.assert_allclose(mean, x.mean(axis=0))
        assert (low <= mean).all() and (mean <= high).all() and (count == n).all()
        widths.append(float(np.mean(high - low)))
    assert widths[0] > 2 * widths[1] > 4 * widths[2]  # ~ 1/sqrt(n)
    assert 0.92 < widths[2] / (3.92 / np.sqrt(1000)) < 1.08  # ≈ 2·1.96·σ/√n: a 95 % interval, not 90 %


def test_bootstrap_is_seeded_covers_and_handles_missing():
    x = np.random.default_rng(1).normal(size=(40, 3))
    a, b = bootstrap_mean(x, seed=3, key="k"), bootstrap_mean(x, seed=3, key="k")
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not np.array_equal(a[1], bootstrap_mean(x, seed=4, key="k")[1])
    rng = np.random.default_rng(2)  # coverage of the true mean 0 by the 95 % interval
    hits = [(lambda m, lo, hi, n: lo <= 0 <= hi)(*bootstrap_mean(rng.normal(size=60), n_boot=400, seed=s))
            for s in range(300)]
    assert 0.88 < np.mean(hits) < 0.99
    x[:30, 2] = np.nan  # a layer only 10 prompts reach
    mean, low, high, n = bootstrap_mean(x)
    assert n.tolist() == [40, 40, 10] and mean[2] == pytest.approx(np.nanmean(x[:, 2]))
    assert low[2] <= mean[2] <= high[2] and (high - low)[2] > (high - low)[0]
    one = bootstrap_mean(np.array([2.5]))
    assert one[0] == one[1] == one[2] == 2.5
    with pytest.raises(InputError, match="n_boot must be at least 1; got 0"):
        bootstrap_mean(x, n_boot=0)
    with pytest.raises(InputError, match=r"\(prompts, points\) .* got shape \(2, 2, 2\)"):
        bootstrap_mean(np.zeros((2, 2, 2)))


def test_bootstrap_difference_of_two_groups():
    rng = np.random.default_rng(3)
    a, b = rng.normal(2.0, 1.0, size=(200, 3)), rng.normal(1.0, 1.0, size=(50, 3))
    diff, low, high, n_a, n_b = bootstrap_difference(a, b, n_boot=2000, seed=1)
    np.testing.assert_allclose(diff, a.mean(0) - b.mean(0))
    assert (low <= diff).all() and (diff <= high).all() and (n_a == 200).all() and (n_b == 50).all()
    width = float(np.mean(high - low))  # ≈ 2·1.96·sqrt(1/200 + 1/50): both groups resampled on their own
    assert 0.9 < width / (3.92 * np.sqrt(1 / 200 + 1 / 50)) < 1.1
    _, low, high, _, _ = bootstrap_difference(a, b, n_boot=20000, seed=1, level=1 - 0.05 / 6)  # six pairs at once
    wide = float(np.mean(high - low))  # ≈ 2·2.64·sqrt(…): the normal quantile of 1 − 0.05/12
    assert 0.9 < wide / (2 * 2.638 * np.sqrt(1 / 200 + 1 / 50)) < 1.1
    with pytest.raises(InputError, match="the same points; got 3 and 2"):
        bootstrap_difference(a, b[:, :2])
    for level in (0.0, 1.0, 95):
        with pytest.raises(InputError, match=f"level must lie between 0 and 1; got {level}"):
            bootstrap_difference(a, b, level=level)


def test_every_curve_interval_contains_its_mean(report):
    out = report[0].parent
    frames = [pd.read_csv(out / "data" / f"{s}.csv") for s in FIGURES]
    frames.append(pd.read_csv(out / "table1.csv").rename(columns={"ci_low": "low", "ci_high": "high"}))
    for f in frames:
        assert ((f["low"] <= f["mean"] + 1e-12) & (f["mean"] <= f["high"] + 1e-12)).all()


# ---- options -----------------------------------------------------------------------------------------------


def test_depth_fraction_and_cli_hooks(tmp_path, capsys):
    runs = [write_run(tmp_path / "a", "causal-lm:tiny-a", 4, n_text=2, n_image=2),
            write_run(tmp_path / "b", "janus:tiny-b", 8, n_text=2, n_image=2)]
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([*map(str, runs), "--out", str(tmp_path / "r"), "--depth-fraction",
                              "--table-layer", "-1", "--n-boot", "200"])
    assert run_command(args) == 0
    printed = capsys.readouterr().out
    assert f"report: {tmp_path / 'r' / 'report.html'}" in printed and "- causal-lm:tiny-a:" in printed
    curves = pd.read_csv(tmp_path / "r" / "data" / "fig4_modality.csv")
    assert curves["depth"].between(0, 1).all() and curves.groupby("label")["depth"].max().eq(1).all()
    assert "depth = layer / number of layers" in (tmp_path / "r" / "figures" / "fig4_modality.svg").read_text()
    table = pd.read_csv(tmp_path / "r" / "table1.csv")
    assert table.groupby("model")["layer"].first().to_dict() == {"causal-lm:tiny-a": 4, "janus:tiny-b": 8}


def test_load_runs_adds_labels_and_depth(two_runs):
    df = load_runs(two_runs)
    assert set(COLUMNS) <= set(df.columns) and {"run", "label", "depth"} <= set(df.columns)
    assert df.groupby("label")["depth"].max().eq(1.0).all()
    assert len(df) == sum(len(pd.read_parquet(d / "results.parquet")) for d in two_runs)


# ---- bad input ---------------------------------------------------------------------------------------------


def test_missing_and_partial_runs_are_refused_by_name(tmp_path):
    with pytest.raises(LoadError, match=r"run directory .*nowhere does not exist"):
        make_report([tmp_path / "nowhere"], tmp_path / "out")
    running = write_run(tmp_path / "running", status="running", n_text=1, n_image=1)
    with pytest.raises(LoadError, match=r"run directory .*running is partial: manifest status is 'running'"):
        load_runs([running])
    no_table = write_run(tmp_path / "no_table", n_text=1, n_image=1)
    (no_table / "results.parquet").unlink()
    with pytest.raises(LoadError, match=r"no_table is partial: it has no results.parquet"):
        load_runs([no_table])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LoadError, match=r"empty has no manifest.json"):
        load_runs([empty])
    (empty / "manifest.json").write_text("{not json")
    with pytest.raises(LoadError, match=r"cannot read .*manifest.json"):
        load_runs([empty])
    with pytest.raises(InputError, match="at least one run directory; got none"):
        load_runs([])
    assert not (tmp_path / "out").exists()


def test_mixed_settings_are_refused_unless_allowed(tmp_path):
    a = write_run(tmp_path / "a", "causal-lm:tiny-a", n_text=2, n_image=2)
    b = write_run(tmp_path / "b", "janus:tiny-b", 6, n_text=2, n_image=2, alpha=2.0, sigma=1.5, base=np.e)
    with pytest.raises(InputError, match=r"different settings .*α: .*a has 1.01, .*b has 2; σ: .*a has median "
                                         r"rule, .*b has fixed 1.5; base: .*a has 2, .*b has 2.71828.*allow-mixed"):
        make_report([a, b], tmp_path / "out")
    path = make_report([a, b], tmp_path / "out", allow_mixed=True, n_boot=50)
    text = path.read_text(encoding="utf-8")
    assert "different settings (allowed by allow_mixed)" in text and "not on one scale" in text
    # the same model from runs with different settings is kept apart by the run's folder name
    c = write_run(tmp_path / "c", "causal-lm:tiny-a", n_text=2, n_image=2, alpha=2.0)
    labels = set(load_runs([a, c], allow_mixed=True)["label"])
    assert labels == {"causal-lm:tiny-a [a]", "causal-lm:tiny-a [c]"}


def test_malformed_tables_are_refused(tmp_path):
    run = write_run(tmp_path / "r", n_text=1, n_image=1)
    with pytest.raises(InputError, match=r"given twice"):
        load_runs([run, run])
    copy = shutil.copytree(run, tmp_path / "copy")
    with pytest.raises(InputError, match=r"measure the same thing twice, e.g. model causal-lm:tiny-a, .* in "
                                         r".*copy, .*r; expected each"):
        load_runs([run, copy])
    df = pd.read_parquet(run / "results.parquet")
    df.drop(columns=["sigma", "saturation"]).to_parquet(run / "results.parquet")
    with pytest.raises(InputError, match=r"lacks the columns sigma, saturation"):
        load_runs([run])
    df.assign(task="caption").to_parquet(run / "results.parquet")
    with pytest.raises(InputError, match=r"unknown task values \['caption'\]; expected one of"):
        load_runs([run])
    df.assign(alpha=2.0).to_parquet(run / "results.parquet")
    with pytest.raises(InputError, match=r"has alpha \[2.0\] but its manifest says 1.01"):
        load_runs([run])
    df.to_parquet(run / "results.parquet")
    with pytest.raises(InputError, match=r"n_boot must be an integer ≥ 1; got 0"):
        make_report([run], tmp_path / "out", n_boot=0)
    with pytest.raises(InputError, match=r"table layer 7 does not exist for model causal-lm:tiny-a"):
        make_report([run], tmp_path / "out", table_layer=7)


def test_figures_without_rows_say_so(tmp_path):
    encode_only = write_run(tmp_path / "enc", tasks=("encode",), n_text=3, n_image=0)
    path = make_report([encode_only], tmp_path / "out", n_boot=50)
    text = path.read_text(encoding="utf-8")
    assert "No rows for this figure: no run has conditional-entropy rows of text or image generation." in text
    assert not (tmp_path / "out" / "figures" / "fig5_response.png").exists()
    assert (tmp_path / "out" / "figures" / "fig4_modality.png").exists()  # text prompts only: still drawn
    summary = json.loads((tmp_path / "out" / "findings.json").read_text(encoding="utf-8"))
    assert [c["kind"] for c in summary["claims"]] == ["length"]
    images_only = write_run(tmp_path / "img", tasks=("encode", "text-gen"), n_text=0, n_image=3)
    path = make_report([images_only], tmp_path / "out", n_boot=50)  # the same folder: old figures go
    assert not (tmp_path / "out" / "figures" / "fig1_length.png").exists()
    assert not (tmp_path / "out" / "data" / "fig1_length.csv").exists()
    text = path.read_text(encoding="utf-8")
    assert text.count("no run has encode prompt-entropy rows of text prompts") == 2  # figures 1 and 2
    assert "The paper&#x27;s types composition, abductive, inductive, deductive have no prompts" in text


def test_a_model_that_only_encodes_gets_no_empty_panels_in_the_response_figure(tmp_path, monkeypatch):
    from entroprobe.report import figures

    drawn = {}
    grid = figures.grid

    def recording_grid(panels, **kw):
        drawn[kw["title"]] = panels
        return grid(panels, **kw)

    monkeypatch.setattr(figures, "grid", recording_grid)
    encoder = write_run(tmp_path / "enc", model="minilm", tasks=("encode",), n_text=3, n_image=0)
    generator = write_run(tmp_path / "gen", n_text=3, n_image=2, seed=1)
    text = make_report([encoder, generator], tmp_path / "out", n_boot=20).read_text(encoding="utf-8")
    (panels,) = [p for title, p in drawn.items() if "text vs image generation" in title]
    assert [p.title.split("\n")[0] for p in panels] == ["causal-lm:tiny-a"] * 2  # curves, paired difference
    assert all(p.empty is None for p in panels)
    assert "Not shown, having no generation rows: minilm." in text


def test_a_run_without_rows_gives_a_page_that_says_so(tmp_path):
    run = write_run(tmp_path / "r", n_text=1, n_image=1)
    pd.read_parquet(run / "results.parquet").iloc[:0].to_parquet(run / "results.parquet")
    text = make_report([run], tmp_path / "out", n_boot=10).read_text(encoding="utf-8")
    assert f"Run {run} has no rows" in text and "No rows for Table 1" in text
    assert text.count("No rows for this figure") == 6
    assert not any((tmp_path / "out" / "figures").iterdir())


def test_missing_values_are_left_out_and_said(tmp_path):
    run = write_run(tmp_path / "r", n_text=2, n_image=2)
    df = pd.read_parquet(run / "results.parquet")
    df.loc[df.index[:3], "value"] = np.nan
    df.to_parquet(run / "results.parquet")
    text = make_report([run], tmp_path / "out", n_boot=50).read_text(encoding="utf-8")
    assert "3 rows have no value (NaN) and are left out" in text


# ---- in a browser ------------------------------------------------------------------------------------------


def _chromium() -> str | None:
    return next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


@pytest.mark.skipif(_chromium() is None, reason="no chromium / chromium-browser / google-chrome binary")
def test_headless_chromium_screenshot_is_not_blank(report, tmp_path):
    from PIL import Image

    shot = tmp_path / "shot.png"
    subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1200,3000", report[0].resolve().as_uri()],
                   check=True, capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape[0] >= 1000 and pixels.std() > 10
    assert (pixels < 128).mean() > 0.005  # text and lines, not a white page


def test_runs_on_different_prompt_sets_are_named_and_said(tmp_path):
    a = write_run(tmp_path / "a", "causal-lm:tiny-a", n_text=2, n_image=2)
    b = write_run(tmp_path / "b", "janus:tiny-b", n_text=2, n_image=2)
    manifest = json.loads((b / "manifest.json").read_text())
    manifest["settings"]["text_prompts"] = "t2i-corebench:data"
    (b / "manifest.json").write_text(json.dumps(manifest))
    path = make_report([a, b], tmp_path / "out", n_boot=20)
    page = path.read_text(encoding="utf-8")
    assert "<th>prompt sources</th>" in page and "text: t2i-corebench:data; image: images:x" in page
    notes = json.loads((path.parent / "findings.json").read_text())["notes"]
    assert any(n.startswith("These runs measured different prompt sets") for n in notes)
    same = make_report([a], tmp_path / "out2", n_boot=20)
    assert not any("different prompt sets" in n for n in json.loads((same.parent / "findings.json").read_text())["notes"])


def test_a_model_that_makes_images_in_another_network_is_drawn_over_each_networks_layers(tmp_path):
    """OmniGen2 answers with its MLLM and draws with a diffusion transformer of another depth."""
    run = write_run(tmp_path / "og2", "omnigen2:tiny", 6, image_gen_layers=4, n_text=6, n_image=2)
    df, _ = load([run])
    assert resolve_layers(df, -1) == {"omnigen2:tiny": 6}  # the table measures the encode rows
    out = make_report([run], tmp_path / "out", table_layer=-1, n_boot=50)
    curves = pd.read_csv(out.parent / "data" / "fig5_response.csv")
    image = curves[curves["task"] == "image-gen"]
    assert image["layer"].max() == 4 and (image["num_layers"] == 4).all() and image["depth"].max() == 1.0
    assert curves.loc[curves["task"] == "text-gen", "layer"].max() == 6
    page = out.read_text()
    assert "omnigen2:tiny answers in text with a network of 6 layers and makes images with another of 4" in page
    assert "<td>6 (image-gen: 4)</td>" in page  # the runs table gives both networks' layers
    generation_only = write_run(tmp_path / "gen", "omnigen2:gen", 6, image_gen_layers=4, tasks=("text-gen", "image-gen"),
                                n_text=6, n_image=0)  # fmt: skip
    assert resolve_layers(load([generation_only])[0], 5) == {}  # no encode rows: no table layer to refuse
    findings = json.loads((out.parent / "findings.json").read_text())
    assert any(c["kind"] == "response" and c["model"] == "omnigen2:tiny" for c in findings["claims"])
    df.loc[(df["task"] == "image-gen") & (df["layer"] == 0), "num_layers"] = 5
    df.drop(columns=["label", "run", "depth"], errors="ignore").to_parquet(run / "results.parquet")
    with pytest.raises(InputError, match=r"image-gen rows with different num_layers \[4, 5\]; expected one per task"):
        load_runs([run])
