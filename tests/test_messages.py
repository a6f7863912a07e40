"""Messages and listings a person can act on: model paths, prompt sources, capabilities, progress in a log."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from entroprobe.cli import main
from entroprobe.errors import CapabilityError, InputError, LoadError
from entroprobe.models import family_table, load_model
from entroprobe.probe import ProbeConfig, run_probe
from entroprobe.probe.progress import LogLines


def test_a_local_model_path_that_does_not_exist_says_so():
    with pytest.raises(LoadError, match=r"no such directory /nonexistent/qwen\. A model directory holds config\.json"):
        load_model("causal-lm:/nonexistent/qwen")
    with pytest.raises(LoadError, match="no such directory ./missing"):
        load_model("janus:./missing")
    with pytest.raises(LoadError, match=rf"no such directory {Path.home()}/no-such-model-here"):
        load_model("causal-lm:~/no-such-model-here")  # the shell leaves this ~ alone; entroprobe expands it


def test_a_relative_path_that_reads_as_a_hub_id_says_both(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LoadError, match="'models/no-such-qwen' \(read as a hub id: there is no local directory "
                                        "'models/no-such-qwen' either"):
        load_model("causal-lm:models/no-such-qwen")


def test_a_bare_directory_as_prompt_source_names_the_spec_it_probably_means(tmp_path, capsys):
    data = tmp_path / "T2I-CoReBench" / "data"
    data.mkdir(parents=True)
    (data / "C-MI.json").write_text("[]")
    assert main(["prompts", str(tmp_path / "T2I-CoReBench"), "--summary"]) == 2
    assert f"did you mean 't2i-corebench:{data}'?" in capsys.readouterr().err
    (tmp_path / "T2I-CoReBench" / "assets").mkdir()
    (tmp_path / "T2I-CoReBench" / "assets" / "logo.png").write_bytes(b"")  # a checkout with pictures too
    assert main(["prompts", str(tmp_path / "T2I-CoReBench")]) == 2
    assert f"did you mean 't2i-corebench:{data}'?" in capsys.readouterr().err
    pictures = tmp_path / "pictures" / "coarse"
    pictures.mkdir(parents=True)
    (pictures / "a.png").write_bytes(b"")
    assert main(["prompts", str(tmp_path / "pictures")]) == 2
    assert f"did you mean 'images:{tmp_path / 'pictures'}'?" in capsys.readouterr().err


def test_a_text_source_given_as_image_prompts_says_to_use_text_prompts(tmp_path):
    source = tmp_path / "p.jsonl"
    source.write_text(json.dumps({"id": "a", "text": "a red ball"}) + "\n")
    with pytest.raises(InputError, match=rf"--image-prompts jsonl:{source} holds no image prompts .* give it as "
                                         r"--text-prompts"):
        run_probe(ProbeConfig(model="minilm", out=tmp_path / "run", image_prompts=f"jsonl:{source}"))
    assert not (tmp_path / "run").exists()


def test_a_model_that_can_do_none_of_the_tasks_is_refused_before_loading(tmp_path, monkeypatch):
    import entroprobe.models as models

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("loaded a model it should have refused"))
    with pytest.raises(CapabilityError, match=r"'minilm' can do none of the requested work \(image-gen/text\); it "
                                              r"can do: encode/text"):
        run_probe(ProbeConfig(model="minilm", out=tmp_path / "run", text_prompts="samples", tasks=("image-gen",)))
    assert not (tmp_path / "run").exists()


def test_models_lists_what_each_family_can_do_and_how_to_load_it(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["family", "encode/text", "encode/image", "text-gen/text", "text-gen/image",
                                "image-gen/text"]  # fmt: skip
    assert next(line for line in lines if line.startswith("minilm ")).split() == ["minilm", "yes", "–", "–", "–", "–"]
    assert next(line for line in lines if line.startswith("janus ")).split()[1:] == ["yes"] * 5
    assert "janus:DIR|HUB_ID — Janus-Pro in Hugging Face format" in out and "minilm — built in" in out
    table = {row["family"]: row for row in family_table()}
    assert table["micro-ar"]["builtin"] and ("image-gen", "text") in table["micro-ar"]["capabilities"]


def test_progress_in_a_log_is_a_line_every_so_often_with_rate_and_time_left():
    now = [0.0]
    stream = io.StringIO()
    lines = LogLines(100, "probing m", every=30, stream=stream, clock=lambda: now[0])
    for _ in range(10):
        now[0] += 5.0
        lines.update(1)  # 10 units in 50 s: one line at 30 s
    lines.close()
    printed = stream.getvalue().splitlines()
    assert printed == ["probing m: 6/100 units (6 %), 0.20 units/s, about 8 min left",
                       "probing m: 10/100 units (10 %), 0.20 units/s, about 8 min left"]  # fmt: skip


def test_a_run_logging_to_a_file_prints_plain_lines_and_no_weight_loading_bar(tmp_path):
    log = tmp_path / "stderr.log"
    with open(log, "w") as handle:
        subprocess.run([sys.executable, "-m", "entroprobe", "run", "--model", "minilm", "--text-prompts", "samples",
                        "--limit", "3", "--out", str(tmp_path / "run")], stderr=handle, check=True)  # fmt: skip
    text = log.read_text()
    assert "Loading weights" not in text and "\r" not in text
    assert text.count("loading minilm") == 1 and "probing minilm: 3/3 units (100 %)" in text
