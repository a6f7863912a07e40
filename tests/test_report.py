"""The report, on run directories these tests write in the run directory format from synthetic rows.

The synthetic runs are built so the answers are known: image prompts have a higher prompt entropy than text
prompts at every layer, text generation a higher conditional entropy than image generation, and one model's
image prompts sit at the ceiling log2(n) at layer 0 (a kernel warning).
"""

from __future__ import annotations

import argparse
import html
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
from entroprobe.report.findings import kernel_warnings, modality_claims, response_claims
from entroprobe.report.runs import load
from entroprobe.report.stats import bootstrap_mean, layer_ranges

TEXT_TYPES = ["composition", "deductive", "inductive", "abductive"]
IMAGE_TYPES = ["coarse", "single-instance", "cross-instance", "attribute", "relation", "logical"]
LENGTH_TOKENS = {"short": (8, 20), "medium": (30, 80), "long": (120, 300)}


def _rows(model, num_layers, *, tasks, n_text, n_image, length_meta, image_ceiling, alpha, sigma, base, rng):
    """One row per measurement of a synthetic run, with plausible values in base ``base``."""
    log = lambda n: np.log(n) / np.log(base)  # noqa: E731
    prompts = []
    for t in TEXT_TYPES:
        for i in range(n_text):
            length = list(LENGTH_TOKENS)[i % 3]
            meta = {"sub_class": f"{t}-{i % 2}"} | ({"length": length} if length_meta else {})
            prompts.append(("text", t, f"{t}/{i:03d}", int(rng.integers(*LENGTH_TOKENS[length])), meta))
    for t in IMAGE_TYPES:
        for i in range(n_image):
            prompts.append(("image", t, f"{t}/{i:03d}", 64, {"category": t}))
    out = []
    for modality, ptype, pid, n, meta in prompts:
        source = "samples" if modality == "text" else "images"
        for task in tasks:
            if task == "image-gen" and modality == "image":
                continue
            m = 0 if task == "encode" else (24 if task == "text-gen" else 64)
            for layer in range(num_layers + 1):
                d = layer / num_layers
                if modality == "text":
                    frac = 0.45 + 0.35 * d + rng.normal(0, 0.03)
                else:
                    frac = (0.995 if image_ceiling and layer == 0 else 0.93 - 0.05 * d) + rng.normal(0, 0.003)
                frac = min(frac, 0.999)
                prompt = frac * log(n)
                sat = float(np.clip(2 * frac - 1, -1, 1))
                values = {"prompt_entropy": (prompt, log(n))}
                if task != "encode":  # the joint entropy stays below 0.95 of its ceiling log(n + m)
                    cond = (1.4 + 0.6 * d if task == "text-gen" else 0.5) + rng.normal(0, 0.08)
                    cond = min(cond, 0.95 * log(n + m) - prompt)
                    values["conditional_entropy"] = (cond, log(n + m))
                    values["joint_entropy"] = (prompt + cond, log(n + m))
                    values["response_entropy"] = (0.7 * log(m) + rng.normal(0, 0.05), log(m))
                for measure, (value, ceiling) in values.items():
                    out.append({
                        "model": model, "prompt_id": pid, "source": source, "modality": modality,
                        "prompt_type": ptype, "prompt_meta": json.dumps(meta), "task": task, "measure": measure,
                        "layer": layer, "num_layers": num_layers, "value": float(value), "n_tokens": n,
                        "n_response_tokens": m, "alpha": alpha,
                        "sigma": (2.0 + 3.0 * layer + rng.normal(0, 0.2)) if sigma == "median" else float(sigma),
                        "sigma_rule": "median" if sigma == "median" else "fixed", "base": base,
                        "saturation": sat, "saturated": abs(sat) > 0.95, "max_entropy": float(ceiling),
                    })
    return out


def write_run(path: Path, model: str = "causal-lm:tiny-a", num_layers: int = 4, *,
              tasks=("encode", "text-gen", "image-gen"), n_text: int = 6, n_image: int = 5, length_meta=True,
              image_ceiling=False, alpha=1.01, sigma="median", base=2.0, status="complete", seed=0) -> Path:
    """Write a run directory in the run format: manifest.json + results.parquet (schema columns and dtypes)."""
    rng = np.random.default_rng(seed)
    rows = _rows(model, num_layers, tasks=tasks, n_text=n_text, n_image=n_image, length_meta=length_meta,
                 image_ceiling=image_ceiling, alpha=alpha, sigma=sigma, base=base, rng=rng)
    df = pd.DataFrame(rows, columns=list(COLUMNS)).astype({c: d for c, (d, _) in COLUMNS.items()})
    path.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path / "results.parquet", index=False)
    manifest = {
        "entroprobe_version": "0.1.0", "status": status,
        "model": {"spec": model, "family": model.split(":")[0], "num_layers": num_layers, "d_model": 64,
                  "fingerprint": "sha256:test"},
        "settings": {"alpha": alpha, "sigma": sigma, "base": base, "tasks": list(tasks), "text_prompts": "samples",
                     "image_prompts": "images:x", "limit": None, "max_new_tokens": 16, "seed": 0},
        "started": "2026-01-01T00:00:00+00:00", "ended": "2026-01-01T00:05:00+00:00",
        "counts": {"prompts": int(df["prompt_id"].nunique()), "rows": len(df), "errors": 0},
        "versions": {"torch": "2.13.0"}, "device": "cpu",
    }
    (path / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return path


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


FIGURES = ["fig1_length", "fig2_length_layers", "fig3_prompt_types", "fig4_modality", "fig5_response",
           "fig6_kernel"]


# ---- the files ---------------------------------------------------------------------------------------------


def test_report_files_exist_and_are_fast(report):
    path, _ = report
    out = path.parent
    assert path.name == "report.html" and path.stat().st_size > 10_000
    for name in ["findings.json", "table1.csv", "table1.tex"]:
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
                   "tertiles of token count", "prompts&#x27; length field", "95 %"]:
        assert needed in text, needed


# ---- Table 1 -----------------------------------------------------------------------------------------------


def _direct_table(run_dirs, layer_of) -> pd.DataFrame:
    df = pd.concat([pd.read_parquet(d / "results.parquet") for d in run_dirs])
    df = df[(df["task"] == "encode") & (df["measure"] == "prompt_entropy")]
    df = df[df["layer"] == df["model"].map(layer_of)]
    return df.groupby(["model", "prompt_type"])["value"].agg(["mean", "count"])


def test_table1_equals_direct_pandas_computation(report, two_runs):
    got = pd.read_csv(report[0].parent / "table1.csv").set_index(["model", "prompt_type"])
    want = _direct_table(two_runs, {"causal-lm:tiny-a": 0, "janus:tiny-b": 0})
    assert sorted(got.index) == sorted(want.index)
    np.testing.assert_allclose(got.loc[want.index, "mean"], want["mean"], rtol=1e-12)
    np.testing.assert_array_equal(got.loc[want.index, "n_prompts"], want["count"])
    assert (got["layer"] == 0).all()
    # the paper's order: the four text types, then the six image types
    order = list(dict.fromkeys(got.reset_index()["prompt_type"]))
    assert order == ["composition", "abductive", "inductive", "deductive", "attribute", "logical", "relation",
                     "coarse", "single-instance", "cross-instance"]
    tex = (report[0].parent / "table1.tex").read_text(encoding="utf-8")
    assert "layer 0 (the embedding output)" in tex and "causal-lm:tiny-a" in tex and "\\toprule" in tex


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


def test_every_curve_interval_contains_its_mean(report):
    out = report[0].parent
    frames = [pd.read_csv(out / "data" / f"{s}.csv") for s in FIGURES]
    frames.append(pd.read_csv(out / "table1.csv").rename(columns={"ci_low": "low", "ci_high": "high"}))
    for f in frames:
        assert ((f["low"] <= f["mean"] + 1e-12) & (f["mean"] <= f["high"] + 1e-12)).all()


# ---- claims ------------------------------------------------------------------------------------------------


def test_findings_state_the_numbers_behind_them(report):
    out = report[0].parent
    summary = json.loads((out / "findings.json").read_text(encoding="utf-8"))
    assert all(isinstance(t, str) for t in summary["findings"])
    kinds = [c["kind"] for c in summary["claims"]]
    assert kinds[:4] == ["modality", "modality", "response", "response"]
    curves = pd.read_csv(out / "data" / "fig4_modality.csv")
    for claim in [c for c in summary["claims"] if c["kind"] == "modality"]:
        mine = curves[curves["label"] == claim["model"]]
        t, i = (mine[mine["modality"] == m].set_index("layer") for m in ("text", "image"))
        apart = t.index[(t["high"] < i["low"]) | (i["high"] < t["low"])]
        assert claim["differ_layers"] == apart.tolist()
        assert f"at {len(apart)} of {len(t)} layers ({layer_ranges(apart)})" in claim["text"]
    a = next(c for c in summary["claims"] if c["kind"] == "response" and c["model"] == "causal-lm:tiny-a")
    assert a["text"].startswith("causal-lm:tiny-a: text generation has the higher conditional entropy at 5 of 5")
    length = next(c for c in summary["claims"] if c["kind"] == "length" and c["model"] == "janus:tiny-b")
    assert length["spearman"] > 0.5 and "rises with prompt length" in length["text"]
    html_text = report[0].read_text(encoding="utf-8")
    assert all(html.escape(c["text"]) in html_text for c in summary["claims"])


def _curves(group, a, b, rows):
    """Curves of one model: rows of (layer, mean_a, low_a, high_a, mean_b, low_b, high_b)."""
    out = []
    for layer, ma, la, ha, mb, lb, hb in rows:
        out.append({"label": "m", group: a, "layer": layer, "mean": ma, "low": la, "high": ha, "n": 9})
        out.append({"label": "m", group: b, "layer": layer, "mean": mb, "low": lb, "high": hb, "n": 7})
    return pd.DataFrame(out)


def _sizes(text_tokens=20.0, image_tokens=576.0):
    return pd.DataFrame({"label": ["m", "m"], "modality": ["text", "image"], "n_prompts": [9, 7],
                         "mean_tokens": [text_tokens, image_tokens],
                         "mean_ceiling": [np.log2(text_tokens), np.log2(image_tokens)]})


def _paired(rows):
    """A paired-difference table of one model: rows of (layer, mean_a, mean_b, low, high, n)."""
    return pd.DataFrame([{"label": "m", "layer": layer, "mean_a": a, "mean_b": b, "mean": a - b, "low": lo,
                          "high": hi, "n": n} for layer, a, b, lo, hi, n in rows])


def test_claims_on_hand_made_curves():
    overlap = _curves("modality", "text", "image", [(0, 1.0, 0.5, 1.5, 1.2, 0.9, 1.6),
                                                    (1, 2.0, 1.9, 2.1, 2.05, 1.95, 2.2)])
    (claim,) = modality_claims(overlap, "bits", normalised=overlap, sizes=_sizes())
    assert claim["differ_layers"] == [] and "do not differ at any of 2 layers" in claim["text"]
    assert "At layer 0: text 1.00 [0.50, 1.50] vs image 1.20 [0.90, 1.60] bits (9 text, 7 image prompts)" in \
        claim["text"]
    apart = _curves("modality", "text", "image", [(0, 1, 0.9, 1.1, 3, 2.9, 3.1), (1, 1, 0.9, 1.1, 1.05, 1, 1.2),
                                                  (2, 4, 3.9, 4.1, 2, 1.9, 2.1)])
    (claim,) = modality_claims(apart, "nats", normalised=apart, sizes=_sizes())
    assert claim["differ_layers"] == [0, 2] and claim["image_higher_layers"] == [0]
    assert "at 2 of 3 layers (0, 2); image prompts are higher at 1 of them" in claim["text"]
    tie = _paired([(0, 2, 1, 0.8, 1.2, 9), (1, 1, 1.2, -0.7, 0.3, 9)])
    (claim,) = response_claims(tie, "bits")
    assert "neither generation task has the higher conditional entropy at more of the 2 layers" in claim["text"]
    assert ("text generation higher at 1, 1 of them with the 95 % interval of the per-prompt difference excluding "
            "0; image generation higher at 1, 0 excluding 0; the interval excludes 0 at 1 of 2 layers (0))") in \
        claim["text"]
    image = _paired([(0, 1, 2, -1.1, -0.9, 9), (1, 1, 1.2, -0.5, 0.1, 8)])
    (claim,) = response_claims(image, "bits")
    assert claim["text"].startswith("m: image generation has the higher conditional entropy at 2 of 2 layers, on "
                                    "the same 9 text prompts compared prompt by prompt")
    assert "Mean over layers: text generation 1.00 vs image generation 1.60 bits, difference -0.60 bits" in \
        claim["text"]
    assert claim["differ_layers"] == [0] and claim["image_gen_higher_layers"] == [0, 1]


def test_modality_claim_normalises_by_the_ceiling():
    # raw: image prompts far above text prompts at every layer; per token ceiling: the same
    raw = _curves("modality", "text", "image", [(0, 3.5, 3.4, 3.6, 7.3, 7.2, 7.4), (1, 3.6, 3.5, 3.7, 7.4, 7.3, 7.5)])
    norm = _curves("modality", "text", "image", [(0, 0.80, 0.78, 0.82, 0.80, 0.79, 0.81),
                                                 (1, 0.83, 0.81, 0.85, 0.78, 0.77, 0.79)])
    (claim,) = modality_claims(raw, "bits", normalised=norm, sizes=_sizes(20.0, 576.0), log_name="log2(n)")
    assert claim["differ_layers"] == [0, 1] and claim["image_higher_layers"] == [0, 1]
    assert claim["normalised_differ_layers"] == [1] and claim["normalised_image_higher_layers"] == []
    assert claim["mean_tokens"] == {"text": 20.0, "image": 576.0}
    assert ("Text prompts have 20.0 tokens on average and image prompts 576.0, so their ceilings log2(n) differ "
            "(4.32 against 9.17 bits on average). Normalised by the ceiling (value / log2(n), per prompt) they "
            "differ (95 % intervals not overlapping) at 1 of 2 layers (1); image prompts are higher at 0 of them."
            ) in claim["text"]
    assert claim["text"].endswith("(9 text, 7 image prompts); normalised 0.80 [0.78, 0.82] vs 0.80 [0.79, 0.81].")


def test_modality_claims_of_a_report_state_tokens_and_normalised_layers(report, two_runs):
    out = report[0].parent
    summary = json.loads((out / "findings.json").read_text(encoding="utf-8"))
    df = pd.concat([pd.read_parquet(d / "results.parquet") for d in two_runs])
    df = df[(df["task"] == "encode") & (df["measure"] == "prompt_entropy")]
    for claim in [c for c in summary["claims"] if c["kind"] == "modality"]:
        mine = df[df["model"] == claim["model"]]
        prompts = mine.groupby(["modality", "source", "prompt_id"])["n_tokens"].first()
        tokens = {m: float(prompts[m].mean()) for m in ("text", "image")}
        assert claim["mean_tokens"] == pytest.approx(tokens)
        assert (f"Text prompts have {tokens['text']:.1f} tokens on average and image prompts "
                f"{tokens['image']:.1f}") in claim["text"]
        curves = pd.read_csv(out / "data" / "fig4_modality_normalised.csv")
        direct = (mine["value"] / mine["max_entropy"]).groupby([mine["modality"], mine["layer"]]).mean()
        got = curves[curves["label"] == claim["model"]].set_index(["modality", "layer"])["mean"]
        np.testing.assert_allclose(got.loc[direct.index], direct, rtol=1e-12)
        t, i = (curves[(curves["label"] == claim["model"]) & (curves["modality"] == m)].set_index("layer")
                for m in ("text", "image"))
        apart = t.index[(t["high"] < i["low"]) | (i["high"] < t["low"])]
        assert claim["normalised_differ_layers"] == apart.tolist()


def test_response_claim_pairs_text_prompts_and_keeps_image_prompts_apart(tmp_path):
    run = write_run(tmp_path / "r", n_text=6, n_image=5)
    df = pd.read_parquet(run / "results.parquet")
    cond, text = df["measure"] == "conditional_entropy", df["modality"] == "text"
    ids = df.loc[text, "prompt_id"].unique()
    base = dict(zip(ids, np.random.default_rng(5).uniform(0, 10, len(ids))))  # prompts differ a lot…
    rows = cond & text
    df.loc[rows, "value"] = df.loc[rows, "prompt_id"].map(base) + np.where(df.loc[rows, "task"] == "image-gen",
                                                                           0.1, 0.0)  # …the tasks by 0.1
    df.loc[cond & ~text, "value"] = 50.0  # text generation on image prompts: far above, and not comparable
    df.to_parquet(run / "results.parquet")
    out = tmp_path / "out"
    make_report([run], out, n_boot=200)
    summary = json.loads((out / "findings.json").read_text(encoding="utf-8"))
    (claim,) = [c for c in summary["claims"] if c["kind"] == "response"]
    assert claim["text"].startswith("causal-lm:tiny-a: image generation has the higher conditional entropy at 5 "
                                    "of 5 layers, on the same 24 text prompts compared prompt by prompt")
    assert claim["differ_layers"] == [0, 1, 2, 3, 4]  # paired: every prompt is 0.1 apart
    paired = pd.read_csv(out / "data" / "fig5_response_paired.csv")
    np.testing.assert_allclose(paired[["mean", "low", "high"]].to_numpy(), -0.1, atol=1e-9)
    assert (paired["n"] == 24).all()
    curves = pd.read_csv(out / "data" / "fig5_response.csv")
    assert set(zip(curves["task"], curves["modality"])) == {("text-gen", "text"), ("image-gen", "text"),
                                                            ("text-gen", "image")}
    on_images = curves[(curves["task"] == "text-gen") & (curves["modality"] == "image")]
    assert (on_images["mean"] == 50.0).all() and (on_images["n"] == 30).all()
    on_text = curves[(curves["task"] == "text-gen") & (curves["modality"] == "text")]
    np.testing.assert_allclose(on_text["mean"], np.mean(list(base.values())), rtol=1e-12)
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "text generation, image prompts: 30 prompts" in page and "uses text prompts only" in page
    kernel = pd.read_csv(out / "data" / "fig6_kernel.csv")
    assert {"text", "image"} <= set(kernel.loc[kernel["part"] == "conditional", "modality"])


def test_a_type_name_in_both_modalities_stays_two_types(tmp_path):
    run = write_run(tmp_path / "r", n_text=3, n_image=2)
    df = pd.read_parquet(run / "results.parquet")
    df.loc[df["prompt_type"] == "coarse", "prompt_type"] = "composition"  # an images:DIR folder "composition"
    df.to_parquet(run / "results.parquet")
    out = tmp_path / "out"
    make_report([run], out, n_boot=50)
    table = pd.read_csv(out / "table1.csv")
    cells = table[table["prompt_type"] == "composition"].set_index("modality")
    assert sorted(cells.index) == ["image", "text"]
    enc = df[(df["task"] == "encode") & (df["measure"] == "prompt_entropy") & (df["layer"] == 0)
             & (df["prompt_type"] == "composition")]
    want = enc.groupby("modality")["value"].agg(["mean", "count"])
    np.testing.assert_allclose(cells.loc[want.index, "mean"], want["mean"], rtol=1e-12)
    assert cells.loc["text", "n_prompts"] == 3 and cells.loc["image", "n_prompts"] == 2
    assert list(zip(table["modality"], table["prompt_type"]))[:5] == [
        ("text", "composition"), ("text", "abductive"), ("text", "inductive"), ("text", "deductive"),
        ("image", "composition")]
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "<th>composition (text)</th>" in page and "<th>composition (image)</th>" in page
    assert 'colspan="4">text prompt types' in page and 'colspan="6">image prompt types' in page
    tex = (out / "table1.tex").read_text(encoding="utf-8")
    assert "Composition (text) & Abductive" in tex and "Composition (image)" in tex
    svg = (out / "figures" / "fig3_prompt_types.svg").read_text(encoding="utf-8")
    assert "composition (text)" in svg and "composition (image)" in svg  # the legend tells the curves apart
    curves = pd.read_csv(out / "data" / "fig3_prompt_types.csv")
    mine = curves[curves["prompt_type"] == "composition"].set_index(["modality", "layer"])["mean"]
    rows = df[(df["task"] == "encode") & (df["measure"] == "prompt_entropy") & (df["prompt_type"] == "composition")]
    np.testing.assert_allclose(mine.sort_index(), rows.groupby(["modality", "layer"])["value"].mean().sort_index(),
                               rtol=1e-12)


def test_kernel_warnings_at_zero(tmp_path):
    run = write_run(tmp_path / "r", tasks=("encode",), n_text=2, n_image=2)
    df = load_runs([run])
    df.loc[(df["modality"] == "text") & (df["layer"] == 2), "value"] = 0.001
    (warning,) = kernel_warnings(df, "log2(n)")
    assert warning.startswith("Warning — causal-lm:tiny-a, task encode, prompt entropy of text prompts sits at 0 "
                              "(value ≤ 0.02·log2(n)) for 100% of prompts at layer 2 (of 5 layers)")
    assert "a smaller σ would resolve them" in warning


def test_kernel_warnings_name_the_ceiling(report):
    summary = json.loads((report[0].parent / "findings.json").read_text(encoding="utf-8"))
    hits = [w for w in summary["warnings"] if "janus:tiny-b" in w and "image prompts sits at the ceiling log2(n)"
            in w and "task encode" in w]
    assert hits and "for 100% of prompts at layer 0 (of 9 layers)" in hits[0]
    assert not any("causal-lm:tiny-a" in w and "ceiling" in w for w in summary["warnings"])


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
