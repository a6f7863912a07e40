"""The probe run end to end on a fast fake adapter: rows, resume after kill -9, settings, errors, torchrun."""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import fake_adapter
from entroprobe import prompt_response_entropies, renyi_entropy
from entroprobe.cli import main
from entroprobe.errors import CapabilityError, EntroprobeError, InputError, LoadError, UnknownNameError
from entroprobe.probe import COLUMNS, ProbeConfig, collect, parse_model_args, run_probe
from entroprobe.sources import load_prompts

HERE = Path(__file__).parent
ALL_TASKS = ("encode", "text-gen", "image-gen")


@pytest.fixture(autouse=True)
def _fake_family():
    fake_adapter.register()


def config(out, **changes) -> ProbeConfig:
    settings = dict(model="fake", out=out, text_prompts="samples", image_prompts="samples", tasks=ALL_TASKS,
                    limit=6, progress=False, match_tokens=0, match_response_tokens=0)  # fmt: skip
    settings.update(changes)
    return ProbeConfig(**settings)


def write_jsonl(path: Path, texts: list[str]) -> str:
    path.write_text("".join(json.dumps({"id": f"p{i}", "text": t, "type": "story"}) + "\n" for i, t in enumerate(texts)))
    return f"jsonl:{path}"


def test_rows_cover_every_unit_layer_and_measure(tmp_path):
    summary = run_probe(config(tmp_path / "run"))
    frame = pd.read_parquet(tmp_path / "run" / "results.parquet")
    assert list(frame.columns) == list(COLUMNS)
    layers = fake_adapter.NUM_LAYERS + 1
    # text prompts: encode (1 measure) + text-gen (4) + image-gen (4); image prompts: encode (1) + text-gen (4)
    assert len(frame) == 6 * layers * (1 + 4 + 4) + 6 * layers * (1 + 4) == summary.rows
    assert summary.failed == 0 and summary.succeeded == 6 * 3 + 6 * 2
    assert not frame.duplicated(["source", "prompt_id", "task", "measure", "layer"]).any()
    assert set(frame["measure"]) == {"prompt_entropy", "response_entropy", "joint_entropy", "conditional_entropy"}
    assert set(frame[frame.task == "encode"]["measure"]) == {"prompt_entropy"}
    assert (frame[frame.task == "encode"]["n_response_tokens"] == 0).all()
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["counts"]["rows"] == len(frame)
    assert manifest["model"]["fingerprint"] == "fake0001" and manifest["settings"]["alpha"] == 1.01
    assert {"torch", "transformers", "entroprobe"} <= set(manifest["versions"])
    responses = [json.loads(line) for line in (tmp_path / "run" / "responses.jsonl").read_text().splitlines()]
    assert len(responses) == 6 * 2 + 6  # text-gen on both modalities, image-gen on text
    image_records = [r for r in responses if "image" in r]
    assert image_records and all((tmp_path / "run" / r["image"]).exists() for r in image_records)


def test_values_equal_the_estimators_on_the_adapters_states(tmp_path):
    run_probe(config(tmp_path / "run", alpha=2.0, base=10.0))
    frame = pd.read_parquet(tmp_path / "run" / "results.parquet")
    prompt = next(p for p in load_prompts("samples", limit=6) if p.modality == "text")
    adapter = fake_adapter.FakeAdapter()
    mine = frame[(frame.prompt_id == prompt.id) & (frame.task == "encode")].sort_values("layer")
    expected = renyi_entropy(adapter.encode_text(prompt.text).states, alpha=2.0, base=10.0, return_details=True)
    assert mine["value"].tolist() == pytest.approx(expected.value.tolist(), abs=1e-12)
    assert mine["sigma"].tolist() == pytest.approx(expected.sigma.tolist(), abs=1e-12)
    assert mine["max_entropy"].tolist() == pytest.approx([math.log10(n) for n in mine["n_tokens"]], abs=1e-12)
    gen = frame[(frame.prompt_id == prompt.id) & (frame.task == "text-gen")]
    seed_rows = gen[gen.measure == "conditional_entropy"].sort_values("layer")
    n_resp = int(seed_rows["n_response_tokens"].iloc[0])
    assert n_resp >= 1 and (seed_rows["max_entropy"] > 0).all()
    # recompute with the same per-unit seed the run used
    from entroprobe.probe.units import Unit as _Unit

    unit = _Unit(key=f"{prompt.source}/{prompt.id}/text-gen", order=0, prompt=prompt, task="text-gen")
    response = adapter.respond_text(prompt.text, max_new_tokens=32, seed=unit.seed_offset % (2**31))
    direct = prompt_response_entropies(response.prompt.states, response.response.states, alpha=2.0, base=10.0)
    assert seed_rows["value"].tolist() == pytest.approx(direct["conditional_entropy"].value.tolist(), abs=1e-12)


def test_same_command_twice_gives_identical_results(tmp_path):
    run_probe(config(tmp_path / "a"))
    run_probe(config(tmp_path / "b"))
    a = pd.read_parquet(tmp_path / "a" / "results.parquet")
    b = pd.read_parquet(tmp_path / "b" / "results.parquet")
    pd.testing.assert_frame_equal(a, b)


def test_rerun_of_a_finished_run_recomputes_nothing(tmp_path):
    run_probe(config(tmp_path / "run"))
    again = run_probe(config(tmp_path / "run"))
    assert again.succeeded == 0 and again.done_before == again.units


def test_other_settings_are_refused_unless_overwrite(tmp_path):
    run_probe(config(tmp_path / "run", limit=2))
    with pytest.raises(InputError, match=r"other settings \(alpha: 1.01 → 2.0\).*--overwrite"):
        run_probe(config(tmp_path / "run", limit=2, alpha=2.0))
    summary = run_probe(config(tmp_path / "run", limit=2, alpha=2.0, overwrite=True))
    assert summary.done_before == 0
    assert (pd.read_parquet(tmp_path / "run" / "results.parquet")["alpha"] == 2.0).all()


def test_item_failures_are_recorded_and_the_run_goes_on(tmp_path):
    source = write_jsonl(tmp_path / "p.jsonl", ["a calm story", f"this one will {fake_adapter.FAIL_WORD}", "fine"])
    summary = run_probe(config(tmp_path / "run", text_prompts=source, image_prompts=None, tasks=("encode",)))
    assert summary.failed == 1 and summary.succeeded == 2
    errors = [json.loads(line) for line in (tmp_path / "run" / "errors.jsonl").read_text().splitlines()]
    assert errors == [{"item": "p1", "source": "jsonl", "task": "encode", "reason": "RuntimeError: the fake model exploded"}]
    assert set(pd.read_parquet(tmp_path / "run" / "results.parquet")["prompt_id"]) == {"p0", "p2"}


def test_unreadable_image_is_an_item_error(tmp_path):
    from PIL import Image

    (tmp_path / "imgs" / "cats").mkdir(parents=True)
    (tmp_path / "imgs" / "cats" / "broken.png").write_bytes(b"not a png")
    Image.new("RGB", (10, 10), (200, 10, 10)).save(tmp_path / "imgs" / "cats" / "red.png")
    summary = run_probe(config(tmp_path / "run", text_prompts=None, image_prompts=f"images:{tmp_path / 'imgs'}",
                               tasks=("encode",)))  # fmt: skip
    assert summary.failed == 1 and summary.succeeded == 1
    (error,) = [json.loads(line) for line in (tmp_path / "run" / "errors.jsonl").read_text().splitlines()]
    assert error["item"] == "cats/broken.png" and error["reason"].startswith("unreadable image")


def test_everything_failing_is_an_error(tmp_path):
    source = write_jsonl(tmp_path / "p.jsonl", [fake_adapter.FAIL_WORD, fake_adapter.FAIL_WORD + " again"])
    with pytest.raises(EntroprobeError, match=r"Every unit failed \(2\); the first: p0: RuntimeError"):
        run_probe(config(tmp_path / "run", text_prompts=source, image_prompts=None, tasks=("encode",)))
    assert main(["run", "--model", "fake", "--text-prompts", source, "--out", str(tmp_path / "run2")]) == 2


def test_capabilities_the_model_lacks_are_skipped_or_refused(tmp_path):
    text_only = fake_adapter.FakeAdapter({("encode", "text")})
    summary = run_probe(config(tmp_path / "run"), adapter=text_only)
    assert "text-gen/text" in summary.skipped and "encode/image" in summary.skipped
    assert set(pd.read_parquet(tmp_path / "run" / "results.parquet")["task"]) == {"encode"}
    with pytest.raises(CapabilityError, match=r"can do none of the requested work"):
        run_probe(config(tmp_path / "run2", tasks=("image-gen",), text_prompts=None), adapter=text_only)


@pytest.mark.parametrize(
    "changes, error, message",
    [
        ({"tasks": ("encode", "dance")}, InputError, r"Unknown task\(s\) dance"),
        ({"text_prompts": None, "image_prompts": None}, InputError, r"Nothing to probe"),
        ({"text_prompts": "nosuch:x"}, UnknownNameError, r"Unknown prompt source 'nosuch'"),
        ({"model": "janos:x"}, UnknownNameError, r"Did you mean 'janus'"),
    ],
)
def test_setup_errors(tmp_path, changes, error, message):
    with pytest.raises(error, match=message):
        run_probe(config(tmp_path / "run", **changes))


def test_collect_without_a_run_is_an_error(tmp_path):
    with pytest.raises(LoadError, match=r"holds no committed results"):
        collect(tmp_path)


def test_parse_model_args():
    assert parse_model_args("dtype=bf16, device=cuda:0,trust_remote_code=true,n=3,x=0.5") == {
        "dtype": "bf16", "device": "cuda:0", "trust_remote_code": True, "n": 3, "x": 0.5,
    }  # fmt: skip
    assert parse_model_args("") == {}
    with pytest.raises(InputError, match=r"key=value pairs.*got 'bf16'"):
        parse_model_args("bf16")


def _committed(run_dir: Path) -> int:
    total = 0
    for path in (run_dir / "shards").glob("rank-*.sqlite"):
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
                total += db.execute("SELECT COUNT(*) FROM units").fetchone()[0]
        except sqlite3.Error:
            pass
    return total


def _cli(out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(HERE / "run_fake.py"), "run", "--model", "fake", "--text-prompts", "samples",
            "--image-prompts", "samples", "--tasks", "encode,text-gen,image-gen", "--limit", "6", "--out", str(out),
            *extra]  # fmt: skip


def test_killed_run_resumes_to_exactly_the_uninterrupted_rows(tmp_path):
    subprocess.run(_cli(tmp_path / "clean"), check=True, capture_output=True)
    env = {**os.environ, "FAKE_SLEEP": "0.05"}
    process = subprocess.Popen(_cli(tmp_path / "killed"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while _committed(tmp_path / "killed") < 5 and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = _committed(tmp_path / "killed")
    assert 5 <= partial < 30, "the run was not killed part-way"
    assert not (tmp_path / "killed" / "results.parquet").exists()
    subprocess.run(_cli(tmp_path / "killed"), check=True, capture_output=True)
    clean = pd.read_parquet(tmp_path / "clean" / "results.parquet")
    resumed = pd.read_parquet(tmp_path / "killed" / "results.parquet")
    pd.testing.assert_frame_equal(clean, resumed)
    manifest = json.loads((tmp_path / "killed" / "manifest.json").read_text())
    assert manifest["status"] == "complete"


def test_torchrun_two_ranks_equal_one_process(tmp_path):
    single = subprocess.run(_cli(tmp_path / "single"), capture_output=True, text=True)
    assert single.returncode == 0, single.stderr
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               *_cli(tmp_path / "ranks")[1:]]  # fmt: skip
    ranks = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert ranks.returncode == 0, ranks.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "ranks" / "shards").glob("*.sqlite")) == ["rank-0.sqlite", "rank-1.sqlite"]
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "single" / "results.parquet"), pd.read_parquet(tmp_path / "ranks" / "results.parquet")
    )
    assert json.loads((tmp_path / "ranks" / "manifest.json").read_text())["world_size"] == 2


def test_minilm_end_to_end_through_the_cli(tmp_path, capsys):
    out = tmp_path / "minilm"
    assert main(["run", "--model", "minilm", "--text-prompts", "samples", "--limit", "4", "--out", str(out)]) == 0
    frame = pd.read_parquet(out / "results.parquet")
    assert frame["layer"].max() == 6 and frame["num_layers"].iloc[0] == 6
    raw = frame[frame["subsample"] == 0]
    assert len(raw) == 4 * 7
    assert ((frame["value"] > 0) & (frame["value"] <= frame["max_entropy"] + 1e-9)).all()
    # the default matched measures: prompts of at least 16 tokens also at 16 tokens, the shorter ones counted
    long_enough = raw.drop_duplicates("prompt_id").query("n_tokens >= 16")["prompt_id"]
    matched = frame[frame["subsample"] == 16]
    assert set(matched["prompt_id"]) == set(long_enough) and len(matched) == 7 * len(long_enough)
    assert (matched["max_entropy"] == 4.0).all() and (matched["draws"] == 8).all()
    err = capsys.readouterr().err
    assert f"rows in results.parquet: {len(frame)}" in err
    assert f"16 prompt / 16 response tokens (8 draws): {4 - len(long_enough)} units too short" in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["matched"]["units_too_short"] == ({"encode": 4 - len(long_enough)} if len(long_enough) < 4 else {})
    assert torch.isfinite(torch.tensor(frame["sigma"].to_numpy())).all()


def test_save_states_keeps_each_units_layer_states(tmp_path):
    from safetensors.torch import load_file

    run_probe(config(tmp_path / "run", limit=1, save_states=True, image_prompts=None))
    files = sorted((tmp_path / "run" / "states").glob("*.safetensors"))
    assert len(files) == 3  # one text prompt × three tasks
    encode = load_file(next(f for f in files if f.name.endswith("~2Fencode.safetensors")))
    assert set(encode) == {"prompt"} and encode["prompt"].shape[0] == fake_adapter.NUM_LAYERS + 1
    generated = load_file(next(f for f in files if f.name.endswith("~2Ftext-gen.safetensors")))
    assert set(generated) == {"prompt", "response"}


def test_collect_on_demand_from_a_partial_run(tmp_path):
    run_probe(config(tmp_path / "run", limit=2))
    (tmp_path / "run" / "results.parquet").unlink()
    assert main(["collect", str(tmp_path / "run")]) == 0
    assert len(pd.read_parquet(tmp_path / "run" / "results.parquet")) > 0


def test_bad_estimator_settings_fail_before_the_model_loads(tmp_path):
    for changes, message in [({"alpha": -1}, r"alpha must be > 0"), ({"sigma": 0.0}, r"sigma must be positive"),
                             ({"base": 1}, r"base must be"), ({"max_new_tokens": 0}, r"max_new_tokens must be"),
                             ({"tasks": ()}, r"No task given")]:  # fmt: skip
        with pytest.raises(InputError, match=message):
            run_probe(config(tmp_path / "run", model="janus:/nonexistent", **changes))
        assert not (tmp_path / "run").exists()


def test_failed_items_are_retried_when_the_run_starts_again(tmp_path, monkeypatch):
    source = write_jsonl(tmp_path / "p.jsonl", ["calm", f"will {fake_adapter.FAIL_WORD}"])
    settings = dict(text_prompts=source, image_prompts=None, tasks=("encode",))
    assert run_probe(config(tmp_path / "run", **settings)).failed == 1
    monkeypatch.setattr(fake_adapter, "FAIL_WORD", "no-such-word")  # the transient failure is gone
    again = run_probe(config(tmp_path / "run", **settings))
    assert again.succeeded == 1 and again.done_before == 1
    assert (tmp_path / "run" / "errors.jsonl").read_text() == ""
    assert set(pd.read_parquet(tmp_path / "run" / "results.parquet")["prompt_id"]) == {"p0", "p1"}


def test_overwrite_with_the_same_settings_resumes(tmp_path):
    run_probe(config(tmp_path / "run", limit=2))
    again = run_probe(config(tmp_path / "run", limit=2, overwrite=True))
    assert again.succeeded == 0 and again.done_before == again.units


def test_device_does_not_count_as_a_setting_but_other_weights_do(tmp_path, monkeypatch):
    run_probe(config(tmp_path / "run", limit=2, model_args={"device": "cpu"}))
    elsewhere = run_probe(config(tmp_path / "run", limit=2, model_args={"device": "cuda:3"}))
    assert elsewhere.succeeded == 0 and elsewhere.done_before == elsewhere.units  # resumed on another device
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["placement"] == {"device": "cuda:3"}
    monkeypatch.setattr(fake_adapter.FakeAdapter, "fingerprint", lambda self: "other-weights")
    with pytest.raises(InputError, match=r"other weights \(fingerprint fake0001, now other-weights\)"):
        run_probe(config(tmp_path / "run", limit=2))
    assert run_probe(config(tmp_path / "run", limit=2, overwrite=True)).done_before == 0
