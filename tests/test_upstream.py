"""Finding the user's checkout of an authors' repository, importing from it, recording it; the shared shims.

The checkouts here are small folders written by the tests (no upstream code): what is tested is entroprobe's
own logic.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from entroprobe.errors import InputError, LoadError
from entroprobe.models import PAPER_ROWS, families, family_table, parse_spec
from entroprobe.models.compat.transformers5 import default_rope_parameters, ensure_default_rope
from entroprobe.models.defaults import Default
from entroprobe.models.upstream import ENV, Upstream, UpstreamAdapter, checkout, import_from, parse_value, provenance, settings

SPEC = Upstream(name="Thing", github="someone/Thing", marker="thing/model.py", packages=("thing",))


def write_checkout(root, value: str, package: str = "thing"):
    (root / package).mkdir(parents=True)
    (root / package / "__init__.py").write_text(f"VALUE = {value!r}\n")
    (root / package / "model.py").write_text("from . import VALUE\n")
    return root


def test_a_missing_checkout_says_where_and_how_to_get_one(tmp_path):
    with pytest.raises(LoadError, match=r"no Thing checkout at .*nowhere; clone someone/Thing and pass repo=PATH"):
        checkout(SPEC, tmp_path / "nowhere")


def test_a_folder_that_is_no_checkout_names_the_missing_file(tmp_path):
    with pytest.raises(LoadError, match=r"is not a Thing checkout: it lacks thing/model.py; clone someone/Thing"):
        checkout(SPEC, tmp_path)


def test_no_checkout_named_and_no_package(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    with pytest.raises(LoadError, match=r"Thing code is needed and no checkout was named: clone someone/Thing"):
        checkout(SPEC, None)


def test_a_checkout_by_path_by_environment_or_an_installed_package(tmp_path, monkeypatch):
    root = write_checkout(tmp_path / "Thing", "a")
    assert checkout(SPEC, root) == root.resolve()
    monkeypatch.setenv(ENV, str(tmp_path))
    assert checkout(SPEC, None) == root
    monkeypatch.delenv(ENV)
    installed = Upstream(name="Json", github="python/json", marker="x", packages=("json",), package="json")
    assert checkout(installed, None) is None
    nested = Upstream(name="Two", github="someone/Two", marker="thing/model.py", packages=("thing",), subdir="v2")
    write_checkout(tmp_path / "Two" / "v2", "b")
    assert checkout(nested, tmp_path / "Two") == (tmp_path / "Two" / "v2").resolve()
    with pytest.raises(LoadError, match="it lacks v2/thing/model.py"):
        checkout(nested, root)


def test_a_package_of_the_same_name_from_another_checkout_is_set_aside(tmp_path):
    first = write_checkout(tmp_path / "one", "first")
    second = write_checkout(tmp_path / "two", "second")
    try:
        a = import_from(first, "thing.model", SPEC)
        assert a.VALUE == "first"
        b = import_from(second, "thing.model", SPEC)
        assert b.VALUE == "second" and a.VALUE == "first"  # objects of the first stay usable
        assert import_from(second, "thing.model", SPEC) is b  # the same checkout again: nothing re-imported
        # a checkout nested inside another one's folder (Show-o2's show-o2/ inside the Show-o clone)
        inner = write_checkout(second / "v2", "inner")
        assert import_from(inner, "thing.model", SPEC).VALUE == "inner"
        assert import_from(second, "thing.model", SPEC).VALUE == "second"
    finally:
        for key in [k for k in sys.modules if k == "thing" or k.startswith("thing.")]:
            del sys.modules[key]
        for root in (first, second, second / "v2"):
            if str(root.resolve()) in sys.path:
                sys.path.remove(str(root.resolve()))


def test_a_failing_import_names_the_module_and_the_checkout(tmp_path):
    root = tmp_path / "broken"
    (root / "thing").mkdir(parents=True)
    (root / "thing" / "__init__.py").write_text("import a_dependency_nobody_has\n")
    try:
        with pytest.raises(LoadError, match=r"cannot import thing from the checkout at .*broken: No module named "
                                             r"'a_dependency_nobody_has'\. Install the repository's own requirements"):
            import_from(root, "thing", SPEC)
        (root / "thing" / "__init__.py").write_text("raise ValueError('a config attribute moved')\n")
        with pytest.raises(LoadError, match=r"importing thing from the checkout at .*broken failed: ValueError: a "
                                             r"config attribute moved\. The family was tested with the commit"):
            import_from(root, "thing", SPEC)
    finally:
        sys.modules.pop("thing", None)
        sys.path.remove(str(root.resolve()))


def git(root, *args):
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True).stdout.strip()


def test_provenance_records_the_commit_and_local_changes(tmp_path):
    root = write_checkout(tmp_path / "Thing", "a")
    assert provenance(root, SPEC) == {"repository": "someone/Thing", "path": str(root), "commit": None, "dirty": None}
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    head = git(root, "rev-parse", "HEAD")
    assert provenance(root, SPEC) == {"repository": "someone/Thing", "path": str(root), "commit": head, "dirty": False}
    (root / "thing" / "model.py").write_text("# changed\n")
    assert provenance(root, SPEC)["dirty"] is True


def test_values_parse_to_the_type_of_their_default():
    assert parse_value("cfg", "4", 4.0) == 4.0 and isinstance(parse_value("cfg", "4", 4.0), float)
    assert parse_value("steps", "30", 50) == 30
    assert parse_value("think", "False", True) is False and parse_value("think", "yes", False) is True
    assert parse_value("size", "512x768", (1024, 1024)) == (512, 768)
    assert parse_value("size", "512,768", (1024, 1024)) == (512, 768)
    assert parse_value("negative", "blurry", "") == "blurry"
    assert parse_value("cfg", 2, 4.0) == 2.0 and isinstance(parse_value("cfg", 2, 4.0), float)
    assert parse_value("size", [512, 768], (1024, 1024)) == (512, 768)
    assert parse_value("stops", "<|im_end|>;<|endoftext|>", ("<|im_end|>",)) == ("<|im_end|>", "<|endoftext|>")
    assert parse_value("stops", ["x", "y"], ("a",)) == ("x", "y")  # no x-splitting of strings
    with pytest.raises(InputError, match=r"steps='many' does not parse as int"):
        parse_value("steps", "many", 50)
    with pytest.raises(InputError, match=r"steps=2.5 does not parse as int: expected a whole number"):
        parse_value("steps", 2.5, 50)
    with pytest.raises(InputError, match=r"think='maybe' does not parse as bool: expected true or false"):
        parse_value("think", "maybe", True)
    with pytest.raises(InputError, match=r"size=512 does not parse as tuple: expected 2 numbers separated by x"):
        parse_value("size", 512, (1024, 1024))
    with pytest.raises(InputError, match=r"size='512x7.5' does not parse as tuple"):
        parse_value("size", "512x7.5", (1024, 1024))


def test_command_line_model_args_reach_the_settings_typed():
    """What ``--model-args`` gives (numbers already converted, commas taken) parses to every default's type."""
    from entroprobe.probe.run import parse_model_args

    table = {"image_size": Default((1024, 1024), "s"), "cfg_interval": Default((0.4, 1.0), "s"),
             "steps": Default(50, "s"), "cfg": Default(4.0, "s"), "stops": Default(("<|im_end|>",), "s")}  # fmt: skip
    given = parse_model_args("image_size=512x768,cfg_interval=0.2x0.9,steps=30,cfg=3,stops=<|im_end|>;<|img|>")
    values, _ = settings(table, given, what="image-gen")
    assert values == {"image_size": (512, 768), "cfg_interval": (0.2, 0.9), "steps": 30, "cfg": 3.0,
                      "stops": ("<|im_end|>", "<|img|>")}  # fmt: skip
    with pytest.raises(InputError, match=r"image_size=512 does not parse as tuple"):
        settings(table, parse_model_args("image_size=512"), what="image-gen")


def test_settings_put_the_users_values_over_the_defaults():
    table = {"cfg": Default(4.0, "script.py: --cfg 4"), "steps": Default(50, "script.py: --steps 50")}
    values, given = settings(table, {"steps": "30"}, what="image-gen")
    assert values == {"cfg": 4.0, "steps": 30} and given == {"steps": 30}
    with pytest.raises(InputError, match=r"Unknown image-gen setting\(s\) stepz; accepted: cfg, steps"):
        settings(table, {"stepz": "30"}, what="image-gen")


class ThingAdapter(UpstreamAdapter):
    family = "thing"
    upstream = SPEC


def test_an_upstream_adapter_describes_its_checkout_and_defaults(tmp_path):
    root = write_checkout(tmp_path / "Thing", "a")
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "ema.safetensors").write_bytes(b"weights")
    table = {"cfg": Default(4.0, "script.py: --cfg 4")}
    adapter = ThingAdapter(path=str(tmp_path / "ckpt"), root=root, device=torch.device("cpu"), num_layers=2,
                           d_model=8, final_norm=None, tables={"image-gen": (table, {"cfg": 2.0})})  # fmt: skip
    described = adapter.describe()
    assert described["upstream"]["path"] == str(root) and described["final_norm"] is None
    assert described["defaults"] == {"image-gen": {"cfg": {"value": 2.0, "source": "--model-args", "default": 4.0}}}
    before = adapter.fingerprint()
    assert len(before) == 16
    (tmp_path / "ckpt" / "ema.safetensors").write_bytes(b"other weights")
    assert adapter.fingerprint() != before
    with pytest.raises(InputError, match=r"Unknown model argument\(s\) cfgg for thing; accepted: repo, cfg"):
        ThingAdapter.split({"cfgg": 1}, ("cfg",))
    assert ThingAdapter.split({"repo": str(root), "cfg": "2"}, ("cfg",)) == (root.resolve(), {"cfg": "2"})

    assert adapter.read("a cat") is None  # no tokenizer: it cannot say


def test_an_upstream_adapter_reads_with_its_tokenizer(tmp_path):
    from tiny_models import word_tokenizer

    adapter = ThingAdapter(path=str(tmp_path), root=None, device=torch.device("cpu"), num_layers=2, d_model=8,
                           final_norm=True, tables={})  # fmt: skip
    adapter.tokenizer = word_tokenizer(["<pad>", "<unk>", "<s>", "a", "cat"], bos="<s>", add_bos=True)
    reading = adapter.read("a cat zebra sat")  # no BOS counted, two words unknown
    assert (reading.tokens, reading.unknown) == (4, 2)
    assert adapter.read(None) is None


def test_every_paper_row_names_a_registered_family():
    assert len(PAPER_ROWS) == 10
    for row, spec in PAPER_ROWS:
        family, path = parse_spec(spec)
        assert family in families() and path, row
    upstream = {row["family"]: row["upstream"] for row in family_table()}
    for family in ("bagel", "harmon", "show-o", "show-o2", "janusflow", "omnigen2"):
        record = upstream[family]
        assert record is not None and "/" in record.github and record.tested and record.transformers, family


def test_the_default_rope_initialiser_matches_transformers_own_rotary_embedding():
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    config = LlamaConfig(hidden_size=64, num_attention_heads=4, rope_theta=50000.0)
    theirs = LlamaRotaryEmbedding(config).inv_freq  # transformers 5 computes plain RoPE inside the class
    mine, factor = default_rope_parameters(config, "cpu")
    assert factor == 1.0 and torch.allclose(mine, theirs.float(), rtol=1e-6)
    # the 4.x keyword form (base, dim) and a partial rotary factor
    by_keywords, _ = default_rope_parameters(None, "cpu", base=50000.0, dim=16)
    assert torch.allclose(by_keywords, mine, rtol=1e-6)
    config.partial_rotary_factor = 0.5
    assert default_rope_parameters(config, "cpu")[0].shape == (4,)
    # known answer: base 10000, dim 4 → 1, 1/100
    assert default_rope_parameters(None, base=10000.0, dim=4)[0].tolist() == pytest.approx([1.0, 0.01])


def test_the_default_rope_entry_is_added_only_when_missing(monkeypatch):
    from transformers import modeling_rope_utils

    table = dict(modeling_rope_utils.ROPE_INIT_FUNCTIONS)
    table.pop("default", None)
    monkeypatch.setattr(modeling_rope_utils, "ROPE_INIT_FUNCTIONS", table)
    assert ensure_default_rope() is True and table["default"] is default_rope_parameters
    assert ensure_default_rope() is False
    mine = object()
    table["default"] = mine
    assert ensure_default_rope() is False and table["default"] is mine


def test_the_docs_give_every_upstream_family_its_defaults_and_tested_commit():
    """docs/upstream.md has a section per family naming each default it applies and the commit it was tested at."""
    import importlib
    import re

    text = (Path(__file__).parents[1] / "docs" / "upstream.md").read_text()
    sections = {m.group(1): m.group(0) for m in re.finditer(r"(?ms)^### (\S+) — .*?(?=^### |^## )", text)}
    for row in family_table():
        record = row["upstream"]
        if record is None:
            continue
        section = sections.get(row["family"])
        assert section is not None, f"docs/upstream.md has no section for {row['family']}"
        assert record.github in section and record.tested[0][0][:7] in section, row["family"]
        module = importlib.import_module(_module_of(row["family"]))
        for table in ("LOAD_DEFAULTS", "TEXT_DEFAULTS", "IMAGE_DEFAULTS"):
            for key in getattr(module, table, {}):
                assert f"`{key}" in section, f"{row['family']}: docs/upstream.md does not name the default {key}"


def _module_of(family: str) -> str:
    from entroprobe.models import _FAMILIES

    return _FAMILIES[family].split(":")[0]


def test_plain_resizing_asks_for_no_mean_resizing_and_is_undone():
    from transformers import LlamaConfig, LlamaForCausalLM

    from entroprobe.models.compat.transformers5 import plain_resizing

    seen = []

    class Recording(LlamaForCausalLM):
        def resize_token_embeddings(self, new_num_tokens=None, pad_to_multiple_of=None, mean_resizing=True):
            seen.append(mean_resizing)

    model = Recording(LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                  num_attention_heads=2, num_key_value_heads=1))  # fmt: skip
    with plain_resizing(Recording):
        model.resize_token_embeddings(20)
    model.resize_token_embeddings(24)
    assert seen == [False, True] and "resize_token_embeddings" in vars(Recording)
    with plain_resizing(None):
        pass
