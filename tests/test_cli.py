"""The command line: validation experiments, prompt listings, model listing, help, error exits."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from entroprobe.cli import main


@pytest.mark.parametrize("seed", [0, 1, 2, 7, 123])
def test_validate_checks_each_experiment_against_its_expectation(tmp_path, seed, capsys):
    assert main(["validate", "--out", str(tmp_path), "--seed", str(seed)]) == 0
    text = (tmp_path / "validation.json").read_text()
    result = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in strict JSON"))
    assert result["passed"] and all(result[e]["passed"] for e in ("clusters", "alignment", "length"))
    assert [row["k"] for row in result["clusters"]["rows"]] == [1, 5, 20, 100]
    assert result["clusters"]["rows"][0]["sigma"] is None  # identical tokens: no σ, written as null, not NaN
    entropies = [row["entropy"] for row in result["clusters"]["rows"]]
    assert entropies[0] == 0.0 and all(a < b for a, b in zip(entropies, entropies[1:])), entropies
    conditional = [row["conditional_entropy"] for row in result["alignment"]["rows"]]
    assert abs(conditional[0]) < 1e-6 and conditional[0] < conditional[1] < conditional[2], conditional
    raw, matched = result["length"]["long_minus_short"]["raw"], result["length"]["long_minus_short"]["matched"]
    assert raw["low"] > 0.5 and -0.1 * raw["difference"] < matched["low"] <= matched["high"] < 0.1 * raw["difference"]
    for name in ("clusters.png", "alignment.png", "length.png"):
        with Image.open(tmp_path / name) as image:
            assert image.size[0] > 300 and len(image.convert("L").getcolors(maxcolors=1 << 16) or []) > 10  # drawn, not blank
    out = capsys.readouterr().out
    assert "PASS clusters" in out and "PASS alignment" in out and "PASS length" in out and "k=100" in out


def test_validate_exits_1_when_an_experiment_fails(tmp_path, monkeypatch, capsys):
    from entroprobe import validate

    real = validate.renyi_entropy
    monkeypatch.setattr(validate, "renyi_entropy", lambda x, **kw: real(x, **{**kw, "subsample": None}))
    assert main(["validate", "--out", str(tmp_path)]) == 1  # "matched" is then the raw value: the check fails
    assert "FAIL length" in capsys.readouterr().out
    assert json.loads((tmp_path / "validation.json").read_text())["passed"] is False


def test_validate_is_reproducible(tmp_path):
    main(["validate", "--out", str(tmp_path / "a"), "--seed", "4"])
    main(["validate", "--out", str(tmp_path / "b"), "--seed", "4"])
    assert (tmp_path / "a" / "validation.json").read_text() == (tmp_path / "b" / "validation.json").read_text()


def test_prompts_summary_and_listing(capsys):
    assert main(["prompts", "samples", "--summary"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["modality"] == {"text": 36, "image": 24}
    assert set(summary["prompt_type"]) >= {"composition", "deductive", "inductive", "abductive", "coarse", "logical"}
    assert main(["prompts", "samples", "--limit", "3"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 3 and {"id", "type", "modality", "text"} <= set(lines[0])


def test_models_lists_the_families(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert {"janus", "emu3", "chameleon", "causal-lm", "encoder", "minilm", "micro-ar", "micro-mask", "bagel", "harmon",
            "show-o", "show-o2", "janusflow", "omnigen2"} <= set(out.split())  # fmt: skip
    for row in ("BAGEL-RecA", "Harmon-RecA", "Janus-Pro 7B", "JanusFlow", "Show-o2", "OmniGen2"):
        assert f"  {row} " in out
    assert "ByteDance-Seed/Bagel — tested at" in out and "same family" in out and "docs/upstream.md" in out
    assert "--model bagel:/ckpt/BAGEL-7B-MoT --model-args repo=/src/Bagel" in out
    assert "--model janus:deepseek-community/Janus-Pro-1B\n" in out  # a transformers family needs no checkout


def test_errors_exit_2_with_a_message(tmp_path, capsys):
    assert main(["prompts", "nosuch:x"]) == 2
    assert "Unknown prompt source 'nosuch'" in capsys.readouterr().err
    assert main(["run", "--model", "minilm", "--text-prompts", "samples", "--alpha", "-1", "--out", str(tmp_path)]) == 2
    assert "alpha must be > 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "--model", "minilm", "--sigma", "wide", "--out", str(tmp_path)])
    assert "--sigma takes 'median', 'pooled' or a positive number" in capsys.readouterr().err


def test_every_subcommand_has_an_example_in_its_help(capsys):
    for command in ("demo", "run", "report", "prompts", "validate", "collect", "models", "micro"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "example:" in capsys.readouterr().out, command
