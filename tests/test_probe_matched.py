"""The probe's token-count control: matched rows, σ scales and the pooled σ, on the fast fake adapter."""

from __future__ import annotations

import json
import sqlite3

import pandas as pd
import pytest
import torch

import fake_adapter
from entroprobe import pooled_sigma, prompt_response_entropies, renyi_entropy
from entroprobe.cli import build_parser
from entroprobe.errors import InputError
from entroprobe.probe import ProbeConfig, run_probe
from entroprobe.probe import calibration as calibration_module
from entroprobe.probe.calibration import choose_units
from entroprobe.probe.units import Unit
from entroprobe.sources import load_prompts

ALL_TASKS = ("encode", "text-gen", "image-gen")


@pytest.fixture(autouse=True)
def _fake_family():
    fake_adapter.register()


def config(out, **changes) -> ProbeConfig:
    settings = dict(model="fake", out=out, text_prompts="samples", image_prompts="samples", tasks=ALL_TASKS,
                    limit=6, progress=False, match_tokens=4, match_response_tokens=3, match_draws=5)  # fmt: skip
    settings.update(changes)
    return ProbeConfig(**settings)


def unit_seed(prompt, task: str) -> int:
    return Unit(key=f"{prompt.source}/{prompt.id}/{task}", order=0, prompt=prompt, task=task).seed_offset % (2**31)


def test_matched_rows_are_the_estimators_on_the_unit_s_own_subsets(tmp_path):
    summary = run_probe(config(tmp_path / "run"))
    frame = pd.read_parquet(tmp_path / "run" / "results.parquet")
    adapter = fake_adapter.FakeAdapter()
    prompts = [p for p in load_prompts("samples", limit=6) if p.modality == "text"]
    long = next(p for p in prompts if len(p.text.split()) >= 4)
    encode = frame[(frame.prompt_id == long.id) & (frame.task == "encode") & (frame.subsample == 4)]
    expected = renyi_entropy(adapter.encode_text(long.text).states, subsample=4, draws=5, seed=unit_seed(long, "encode"))
    assert encode.sort_values("layer")["value"].tolist() == pytest.approx(expected.tolist(), abs=1e-12)
    assert (encode["draws"] == 5).all() and (encode["max_entropy"] == 2.0).all()
    # a generation unit: the prompt at 4 tokens and the response at 3, the same subsets for every measure
    seed = unit_seed(long, "image-gen")
    response = adapter.respond_image(long.text, seed=seed)
    direct = prompt_response_entropies(response.prompt.states, response.response.states, subsample=(4, 3), draws=5,
                                       seed=seed)  # fmt: skip
    gen = frame[(frame.prompt_id == long.id) & (frame.task == "image-gen") & (frame.subsample == 4)]
    assert set(gen["subsample_response"]) == {3}
    for measure, result in direct.items():
        rows = gen[gen.measure == measure].sort_values("layer")
        assert rows["value"].tolist() == pytest.approx(result.value.tolist(), abs=1e-12), measure
        assert rows["reference"].tolist() == pytest.approx(result.reference.tolist(), abs=1e-12), measure
    # raw rows are there as before, and every unit too short for the matched counts is counted
    raw_units = frame[frame.subsample.eq(0) & frame.subsample_response.eq(0)][["prompt_id", "task"]].drop_duplicates()
    matched_units = frame[frame.subsample.gt(0)][["prompt_id", "task"]].drop_duplicates()
    assert len(raw_units) == summary.succeeded
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    short = manifest["matched"]["units_too_short"]
    assert sum(short.values()) == len(raw_units) - len(matched_units) == summary.too_short > 0
    assert manifest["settings"]["match_tokens"] == 4 and manifest["matched"]["draws"] == 5


def test_matching_off_gives_only_raw_rows_and_kernel_states(tmp_path):
    run_probe(config(tmp_path / "run", match_tokens=0, match_response_tokens=0))
    frame = pd.read_parquet(tmp_path / "run" / "results.parquet")
    assert (frame["subsample"] == 0).all() and (frame["subsample_response"] == 0).all() and (frame["draws"] == 1).all()
    assert set(frame["kernel_state"]) <= {"ok", "structureless", "collapsed", "identical"}
    assert (frame["saturated"] == (frame["kernel_state"] != "ok")).all()


def test_sigma_scales_add_rows_at_each_factor(tmp_path):
    run_probe(config(tmp_path / "run", sigma_scales=(2.0, 0.5), match_tokens=0, match_response_tokens=0))
    frame = pd.read_parquet(tmp_path / "run" / "results.parquet")
    assert sorted(set(frame["sigma_scale"])) == [0.5, 1.0, 2.0]  # 1 is always measured
    prompt = next(p for p in load_prompts("samples", limit=6) if p.modality == "text")
    states = fake_adapter.FakeAdapter().encode_text(prompt.text).states
    rows = frame[(frame.prompt_id == prompt.id) & (frame.task == "encode")]
    for factor in (0.5, 1.0, 2.0):
        at = rows[rows.sigma_scale == factor].sort_values("layer")
        expected = renyi_entropy(states, sigma_scale=factor, return_details=True)
        assert at["value"].tolist() == pytest.approx(expected.value.tolist(), abs=1e-12)
        assert at["sigma"].tolist() == pytest.approx(expected.sigma.tolist(), rel=1e-12)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["settings"]["sigma_scales"] == [0.5, 1.0, 2.0]


def test_pooled_sigma_is_calibrated_once_recorded_and_reused_on_resume(tmp_path, monkeypatch):
    out = tmp_path / "run"
    run_probe(config(out, sigma="pooled", calibration_units=6))
    manifest = json.loads((out / "manifest.json").read_text())
    pooled = manifest["sigma_pooled"]
    assert len(pooled["sigma"]) == fake_adapter.NUM_LAYERS + 1 and len(pooled["units"]) == 6
    frame = pd.read_parquet(out / "results.parquet")
    assert set(frame["sigma_rule"]) == {"pooled"}
    raw = frame[frame.sigma_scale == 1.0]
    for layer, sigma in enumerate(pooled["sigma"]):
        assert raw.loc[raw.layer == layer, "sigma"].to_numpy() == pytest.approx(sigma, rel=1e-12)
    # the calibration is the pooled σ of the chosen units' prompt and response states
    adapter = fake_adapter.FakeAdapter()
    keys = set(pooled["units"])
    sequences = []
    for prompt in load_prompts("samples", limit=6, modality="text") + load_prompts("samples", limit=6, modality="image"):
        for task in ALL_TASKS:
            if f"{prompt.source}/{prompt.id}/{task}" not in keys:
                continue
            image = prompt.load_image() if prompt.modality == "image" else None
            seed = unit_seed(prompt, task)
            if task == "encode":
                sequences.append(adapter.encode_text(prompt.text).states if image is None
                                 else adapter.encode_image(image).states)  # fmt: skip
                continue
            response = (adapter.respond_text(prompt.text, image, max_new_tokens=32, seed=seed) if task == "text-gen"
                        else adapter.respond_image(prompt.text, seed=seed))  # fmt: skip
            sequences += [response.prompt.states, response.response.states]
    assert pooled_sigma(sequences).tolist() == pytest.approx(pooled["sigma"], rel=1e-12)

    # resume: undo the last units and the completion, then run again; the σ must be read back, not recalibrated
    with sqlite3.connect(out / "shards" / "rank-0.sqlite") as db:
        last = [u for (u,) in db.execute("SELECT unit FROM units ORDER BY ord DESC LIMIT 5")]
        db.executemany("DELETE FROM rows WHERE unit = ?", [(u,) for u in last])
        db.executemany("DELETE FROM units WHERE unit = ?", [(u,) for u in last])
    monkeypatch.setattr(calibration_module, "SigmaCalibration", None)  # any recalibration would fail
    resumed = run_probe(config(out, sigma="pooled", calibration_units=6))
    assert resumed.succeeded == 5
    pd.testing.assert_frame_equal(frame, pd.read_parquet(out / "results.parquet"))
    assert json.loads((out / "manifest.json").read_text())["sigma_pooled"] == pooled


def test_pooled_calibration_spreads_over_task_and_modality_and_is_deterministic():
    prompts = load_prompts("samples", limit=6, modality="text") + load_prompts("samples", limit=6, modality="image")
    units = [Unit(key=f"{p.source}/{p.id}/{t}", order=i * 3 + j, prompt=p, task=t)
             for i, p in enumerate(prompts) for j, t in enumerate(ALL_TASKS)
             if not (t == "image-gen" and p.modality == "image")]  # fmt: skip
    chosen = choose_units(units, 10, seed=3)
    groups = pd.Series([(u.task, u.prompt.modality) for u in chosen]).value_counts()
    assert len(groups) == 5 and groups.max() - groups.min() <= 1  # 10 units over 5 groups: 2 each
    assert [u.key for u in chosen] == [u.key for u in choose_units(units, 10, seed=3)]
    assert [u.order for u in chosen] == sorted(u.order for u in chosen)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"match_tokens": -1}, "match_tokens must be a whole number of tokens"),
        ({"match_draws": 0}, "match_draws must be a positive integer"),
        ({"calibration_units": 0}, "calibration_units must be a positive integer"),
        ({"sigma": "wide"}, "Unknown sigma rule 'wide'.*median, pooled"),
        ({"sigma_scales": (1.0, -2.0)}, "sigma_scale must be positive"),
    ],
)
def test_token_count_settings_are_checked_before_loading(tmp_path, changes, message):
    with pytest.raises(InputError, match=message):
        run_probe(config(tmp_path / "run", model="nosuch:model", **changes))
    assert not (tmp_path / "run").exists()


def test_cli_parses_the_token_count_flags():
    args = build_parser().parse_args(["run", "--model", "fake", "--out", "x", "--sigma", "pooled", "--sigma-scale",
                                      "0.5,2", "--match-tokens", "32", "--match-response-tokens", "0",
                                      "--match-draws", "4", "--calibration-units", "12"])  # fmt: skip
    assert args.sigma == "pooled" and args.sigma_scale == (0.5, 2.0)
    assert (args.match_tokens, args.match_response_tokens, args.match_draws, args.calibration_units) == (32, 0, 4, 12)
    assert torch.tensor(args.sigma_scale).shape == (2,)


def test_only_the_units_that_have_a_matched_block_count_as_too_short(tmp_path):
    summary = run_probe(config(tmp_path / "run", match_tokens=0, match_response_tokens=3))
    short = json.loads((tmp_path / "run" / "manifest.json").read_text())["matched"]["units_too_short"]
    assert "encode" not in short  # encode units have no matched block without --match-tokens
    assert sum(short.values()) == summary.too_short


def test_settings_that_change_nothing_do_not_block_a_resume(tmp_path):
    run_probe(config(tmp_path / "run", calibration_units=4))  # the median rule: never calibrates
    again = run_probe(config(tmp_path / "run", calibration_units=9))
    assert again.succeeded == 0 and again.done_before == again.units


def test_a_calibration_unit_whose_states_are_refused_is_recorded_and_skipped():
    from entroprobe.probe.calibration import calibrate

    prompts = load_prompts("samples", limit=3, modality="text")
    units = [Unit(key=f"samples/{p.id}/encode", order=i, prompt=p, task="encode") for i, p in enumerate(prompts)]
    good = torch.randn(2, 6, 4, generator=torch.Generator().manual_seed(0))

    def produce(unit):
        if unit.order == 1:
            return torch.full((2, 6, 4), float("nan")), None  # an fp16 overflow, say
        return good, None

    record = calibrate(units, produce, count=3)
    assert record["units"] == [units[0].key, units[2].key]
    assert len(record["failed"]) == 1 and "NaN" in record["failed"][0]
