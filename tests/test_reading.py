"""How a model reads a run's prompts: unknown tokens counted per prompt, per run, and said when they are many."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from entroprobe.models import load_model
from entroprobe.models.base import Reading
from entroprobe.probe import ProbeConfig, run_probe
from entroprobe.probe.reading import UNKNOWN_WARN, describe, read_prompts, warning
from entroprobe.sources import load_prompts

from fake_adapter import FakeAdapter
from tiny_models import tiny_bert, tiny_llama


@pytest.fixture(scope="module")
def micro():
    return load_model("micro-ar", device="cpu")


def test_the_micro_models_count_the_words_outside_their_vocabulary(micro):
    reading = micro.read("A red circle, a cozy bookshelf and a cozy chair?")
    # a red circle , a cozy bookshelf and a cozy chair ? — 12 tokens; the comma, cozy ×2, bookshelf and chair unknown
    assert reading == Reading(tokens=12, unknown=5, unknown_words=(",", "cozy", "bookshelf", "chair"))
    assert micro.read("a red circle at the top left") == Reading(tokens=7, unknown=0)


def test_transformers_tokenizers_count_their_unk_token(tmp_path):
    bert = load_model(f"encoder:{tiny_bert(tmp_path / 'bert')}", device="cpu")
    assert bert.read("the cat sat on a zebra") == Reading(tokens=6, unknown=1)  # no [CLS]/[SEP]: prompt text only
    llama = load_model(f"causal-lm:{tiny_llama(tmp_path / 'llama')}", device="cpu")
    assert llama.read("the dog sat") == Reading(tokens=3, unknown=0)  # no <s>
    assert llama.read("the unicorn sat") == Reading(tokens=3, unknown=1)


def test_the_shipped_encoder_reads_everyday_english():
    minilm = load_model("minilm", device="cpu")
    texts = [p.text for p in load_prompts("samples") + load_prompts("micro-world") if p.text]
    assert sum(minilm.read(t).unknown for t in texts) == 0 and minilm.read("☃ ☃").unknown == 2


def test_a_run_records_the_unknown_tokens_and_warns_when_the_model_cannot_read(tmp_path, micro):
    bad = run_probe(ProbeConfig(model="micro-ar", out=tmp_path / "samples", text_prompts="samples",
                                image_prompts="samples", limit=6, progress=False), adapter=micro)  # fmt: skip
    record = json.loads((tmp_path / "samples" / "manifest.json").read_text())["reading"]
    prompts = pd.read_parquet(tmp_path / "samples" / "prompts.parquet")
    # the manifest's totals are the prompts' counts, which are the adapter's own, prompt by prompt
    for row in prompts.itertuples():
        assert (row.n_text_tokens, row.n_unknown_tokens) == (micro.read(row.text).tokens, micro.read(row.text).unknown)
    assert record["text_tokens"] == prompts["n_text_tokens"].sum() and record["prompts"] == 12
    assert record["unknown_tokens"] == prompts["n_unknown_tokens"].sum() > 0
    assert record["unknown_rate"] == pytest.approx(record["unknown_tokens"] / record["text_tokens"])
    assert record["unknown_rate"] > UNKNOWN_WARN
    assert "show" in record["unknown_words"]
    text = bad.describe()
    assert f"unknown tokens: {100 * record['unknown_rate']:.1f} % of {record['text_tokens']:,} prompt text tokens" in text
    assert "reads 47 % of the prompts' text tokens as its unknown token (e.g. " in text and "use prompts in its" in text

    good = run_probe(ProbeConfig(model="micro-ar", out=tmp_path / "world", text_prompts="micro-world",
                                 image_prompts="micro-world", limit=6, progress=False), adapter=micro)  # fmt: skip
    record = json.loads((tmp_path / "world" / "manifest.json").read_text())["reading"]
    assert record["unknown_tokens"] == 0 and record["unknown_rate"] == 0.0 and record["unknown_words"] == []
    assert "unknown tokens: 0.0 %" in good.describe() and "as its unknown token" not in good.describe()


def test_a_model_that_cannot_say_is_recorded_as_not_measured(tmp_path):
    summary = run_probe(ProbeConfig(model="fake", out=tmp_path / "run", text_prompts="samples", limit=2,
                                    progress=False), adapter=FakeAdapter())  # fmt: skip
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["reading"] == {"measured": False}
    assert "unknown tokens" not in summary.describe()
    assert pd.read_parquet(tmp_path / "run" / "prompts.parquet")["n_text_tokens"].isna().all()


def test_the_warning_threshold():
    class Reads:
        def __init__(self, unknown):
            self.unknown = unknown

        def read(self, text):
            return Reading(tokens=100, unknown=self.unknown, unknown_words=("zebra",) if self.unknown else ())

    prompts = load_prompts("samples", limit=1)
    assert warning(read_prompts(Reads(1), prompts)[0], "m") == ""  # 1 % is still read
    assert warning(read_prompts(Reads(2), prompts)[0], "m").startswith("m reads 2 % of the prompts' text tokens")
    assert "(e.g. 'zebra')" in warning(read_prompts(Reads(2), prompts)[0], "m")


def test_a_share_below_a_tenth_of_a_percent_is_not_printed_as_zero():
    record = {"measured": True, "prompts": 1080, "text_tokens": 185_543, "unknown_tokens": 5, "unknown_rate": 5 / 185_543,
              "prompts_with_unknown": 4}
    assert describe(record) == ("unknown tokens: < 0.1 % (5 tokens) of 185,543 prompt text tokens "
                                "(4 of 1080 prompts have some)")
    assert describe({**record, "unknown_tokens": 0, "unknown_rate": 0.0, "prompts_with_unknown": 0}).startswith(
        "unknown tokens: 0.0 % of 185,543")
    assert describe({**record, "unknown_tokens": 93, "unknown_rate": 93 / 185_543}).startswith("unknown tokens: 0.1 % of")
