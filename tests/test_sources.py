"""Prompt sources: the registry, limit spreading, every built-in source and every error path."""

from __future__ import annotations

import base64
import csv
import io
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import entroprobe.sources as src
from entroprobe.errors import InputError, ItemError, LoadError, UnknownNameError
from entroprobe.sources import (
    IMAGE_TYPES,
    TEXT_TYPES,
    Prompt,
    format_summary,
    load_prompts,
    register_source,
    sources,
    summary,
)
from entroprobe.sources.samples import render
from entroprobe.sources.t2i_corebench import FILE_TYPES

REAL_T2I = Path(__file__).parents[2] / "shared/data/t2i-corebench"


def _png(colour: tuple[int, int, int], size: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the source registry, so tests may register sources freely."""
    monkeypatch.setattr(src, "_SOURCES", dict(src._SOURCES))


def _fixed(prompts):
    """A loader returning the given prompts."""
    return lambda arg=None: list(prompts)


def _text(i: str, prompt_type: str, **meta) -> Prompt:
    return Prompt(id=i, source="fake", modality="text", prompt_type=prompt_type, text=f"prompt {i}", meta=meta)


# ---------------------------------------------------------------------------------------------- registry


def test_sources_lists_the_builtins():
    assert sources() == ["images", "jsonl", "micro-world", "mmbench", "samples", "t2i-corebench"]


def test_unknown_source_names_the_closest_and_the_known():
    with pytest.raises(UnknownNameError, match=r"Unknown prompt source 'mmbenc'\. Did you mean 'mmbench'\? Available: images, jsonl"):
        load_prompts("mmbenc:x.tsv")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("t2i-corebench", r"Prompt source 't2i-corebench' needs an argument: 't2i-corebench:PATH'"),
        ("mmbench:", r"Prompt source 'mmbench' needs an argument"),
        ("samples:extra", r"Prompt source 'samples' takes no argument: use 'samples', got 'samples:extra'"),
        ("", r"Prompt source spec must be 'NAME:ARG' or a name, got ''"),
        ("   ", r"Prompt source spec must be"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(InputError, match=message):
        load_prompts(spec)


@pytest.mark.parametrize("limit", [0, -3, True, 2.5, "5"])
def test_bad_limit(limit):
    with pytest.raises(InputError, match=r"limit must be a positive integer or None, got"):
        load_prompts("samples", limit=limit)


def test_bad_types():
    with pytest.raises(UnknownNameError, match=r"Unknown prompt type 'deductiv'\. Did you mean 'deductive'\?"):
        load_prompts("samples", types=["deductiv"])
    with pytest.raises(InputError, match=r"types must be a non-empty list of prompt types, got \[\]"):
        load_prompts("samples", types=[])
    with pytest.raises(InputError, match=r"types must be a non-empty list of prompt types, got 'coarse'"):
        load_prompts("samples", types="coarse")


def test_types_filter_keeps_order_and_allows_absent_paper_types(registry):
    prompts = load_prompts("samples", types=["logical", "inductive"])
    assert [p.prompt_type for p in prompts] == ["inductive"] * 9 + ["logical"] * 4
    register_source("fake", _fixed([_text("a", "x"), _text("b", "y")]))
    assert load_prompts("fake:arg", types=["coarse"]) == []  # a paper type absent from this source: nothing
    assert [p.id for p in load_prompts("fake:arg", types=["y"])] == ["b"]


def test_register_source_callable_string_and_no_arg(registry, tmp_path):
    calls = []

    def loader(arg):
        calls.append(arg)
        return iter([_text("a", "t")])  # any iterable is accepted

    register_source("mine", loader)
    assert [p.id for p in load_prompts("mine:some/where:with:colons")] == ["a"]
    assert calls == ["some/where:with:colons"]
    register_source("bare", _fixed([_text("z", "t")]), takes_arg=False)
    assert [p.id for p in load_prompts("bare")] == ["z"]
    register_source("lazy", "entroprobe.sources.samples:load", takes_arg=False)
    assert len(load_prompts("lazy")) == 60
    assert "mine" in sources() and "lazy" in sources()
    with pytest.raises(InputError, match=r"Prompt source name must be non-empty and without ':', got 'a:b'"):
        register_source("a:b", loader)


def test_unimportable_loader(registry):
    register_source("broken", "entroprobe.no_such_module:load")
    with pytest.raises(LoadError, match=r"Prompt source 'broken': cannot import its loader 'entroprobe.no_such_module:load'"):
        load_prompts("broken:x")
    register_source("missing", "entroprobe.sources.samples:no_such_function", takes_arg=False)
    with pytest.raises(LoadError, match=r"Prompt source 'missing': cannot import"):
        load_prompts("missing")


def test_loader_output_is_checked(registry):
    register_source("dupes", _fixed([_text("a", "t"), _text("a", "u")]))
    with pytest.raises(InputError, match=r"Prompt source 'dupes' returned the id 'a' twice"):
        load_prompts("dupes:x")
    register_source("junk", _fixed(["not a prompt"]))
    with pytest.raises(InputError, match=r"Prompt source 'junk' returned a str, expected Prompt records"):
        load_prompts("junk:x")
    register_source("audio", _fixed([Prompt(id="s", source="audio", modality="audio", prompt_type="t")]))
    with pytest.raises(InputError, match=r"Prompt 's' of source 'audio': modality must be 'text' or 'image', got 'audio'"):
        load_prompts("audio:x")


def test_loaders_are_imported_lazily():
    code = (
        "import sys, entroprobe.sources as s; "
        "print(sorted(m for m in sys.modules if m.startswith('entroprobe.sources.') and m != 'entroprobe.sources.base'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------------------------------------- limit


def test_limit_round_robin_over_types_in_source_order(registry):
    prompts = [_text(f"a{i}", "a") for i in range(10)] + [_text(f"b{i}", "b") for i in range(2)]
    prompts += [_text(f"c{i}", "c") for i in range(5)]
    register_source("fake", _fixed(prompts))
    assert [p.id for p in load_prompts("fake:x", limit=6)] == ["a0", "a1", "b0", "b1", "c0", "c1"]
    assert [p.id for p in load_prompts("fake:x", limit=7)] == ["a0", "a1", "a2", "b0", "b1", "c0", "c1"]
    # b is exhausted after two rounds: the remaining picks go on alternating a and c
    assert [p.id for p in load_prompts("fake:x", limit=9)] == ["a0", "a1", "a2", "a3", "b0", "b1", "c0", "c1", "c2"]
    assert [p.id for p in load_prompts("fake:x", limit=100)] == [p.id for p in prompts]
    # a smaller limit picks a subset of a larger one
    picks = [{p.id for p in load_prompts("fake:x", limit=k)} for k in range(1, len(prompts) + 1)]
    assert all(small < large for small, large in zip(picks, picks[1:]))


def test_limit_spreads_over_sub_groups_inside_a_type(registry):
    prompts = [_text(f"m{i}", "t", sub_class="M") for i in range(4)] + [_text(f"n{i}", "t", sub_class="N") for i in range(4)]
    prompts += [_text(f"k{i}", "u", category="K" if i < 3 else "L") for i in range(4)]
    register_source("fake", _fixed(prompts))
    assert [p.id for p in load_prompts("fake:x", limit=4)] == ["m0", "n0", "k0", "k3"]


def test_limit_covers_every_type_of_samples():
    prompts = load_prompts("samples", limit=20)
    assert len(prompts) == 20
    assert summary(prompts)["prompt_type"] == {t: 2 for t in (*TEXT_TYPES, *IMAGE_TYPES)}
    # inside a text type the two picks are of different lengths
    assert {p.meta["length"] for p in prompts if p.prompt_type == "composition"} == {"short", "medium"}
    assert load_prompts("samples", limit=20) == prompts


def test_types_then_limit():
    prompts = load_prompts("samples", types=["abductive", "relation"], limit=5)
    assert [p.id for p in prompts] == [
        "text/abductive/short-1",
        "text/abductive/medium-1",
        "text/abductive/long-1",
        "image/relation/1",
        "image/relation/2",
    ]


# ---------------------------------------------------------------------------------------------- summary


def test_summary_counts_and_json(registry):
    prompts = [
        _text("a", "composition", sub_class="Multi-Instance"),
        _text("b", "composition", sub_class="Text Rendering"),
        _text("c", "composition", sub_class="Multi-Instance"),
        Prompt(id="i", source="other", modality="image", prompt_type="coarse", meta={"category": "image_scene"}),
    ]
    expected = {
        "total": 4,
        "source": {"fake": 3, "other": 1},
        "modality": {"text": 3, "image": 1},
        "prompt_type": {"composition": 3, "coarse": 1},
        "sub_class": {"composition": {"Multi-Instance": 2, "Text Rendering": 1}},
        "category": {"coarse": {"image_scene": 1}},
    }
    assert summary(prompts) == expected
    assert json.loads(format_summary(prompts)) == expected
    assert summary([]) == {"total": 0, "source": {}, "modality": {}, "prompt_type": {}}


# ---------------------------------------------------------------------------------------------- samples


def test_samples_texts_cover_types_and_lengths():
    texts = [p for p in load_prompts("samples") if p.modality == "text"]
    assert len(texts) == 36
    words = {"short": (1, 14), "medium": (30, 60), "long": (101, 400)}
    for prompt_type in TEXT_TYPES:
        of_type = [p for p in texts if p.prompt_type == prompt_type]
        assert [p.meta["length"] for p in of_type] == ["short"] * 3 + ["medium"] * 3 + ["long"] * 3
        for p in of_type:
            low, high = words[p.meta["length"]]
            n = len(p.text.split())
            assert low <= n <= high, (p.id, n)
            assert p.meta["n_words"] == n  # an integer, as JSON keeps it
    assert len({p.text for p in texts}) == 36


def test_samples_images_are_typed_and_decode():
    images = [p for p in load_prompts("samples") if p.modality == "image"]
    assert [p.prompt_type for p in images] == [t for t in IMAGE_TYPES for _ in range(4)]
    assert len({p.image_bytes for p in images}) == 24
    for p in images:
        assert p.text.endswith("?") and p.meta["answer"]
        assert p.image_bytes.startswith(b"\x89PNG")
        image = p.load_image()
        assert image.mode == "RGB" and image.size == (224, 224)


def test_sample_scenes_show_their_answers():
    by_id = {p.id: p for p in load_prompts("samples") if p.modality == "image"}
    day, night = by_id["image/coarse/1"].load_image(), by_id["image/coarse/2"].load_image()
    assert day.getpixel((10, 10)) == (135, 206, 235) and night.getpixel((10, 10)) == (20, 24, 60)
    circle = by_id["image/single-instance/1"]
    assert circle.meta["answer"] == "red" and circle.load_image().getpixel((112, 112)) == (220, 30, 30)
    corner = by_id["image/single-instance/2"].load_image()  # the green triangle sits top-left
    assert corner.getpixel((56, 70)) == (30, 160, 60) and corner.getpixel((168, 168)) == (255, 255, 255)
    stack = by_id["image/relation/1"]
    assert stack.meta["answer"] == "green" and stack.load_image().getpixel((112, 63)) == (30, 160, 60)


def test_samples_are_deterministic():
    first, second = load_prompts("samples"), load_prompts("samples")
    assert first == second
    assert [p.image_bytes for p in first] == [p.image_bytes for p in second]


def test_render_rejects_unknown_shapes():
    with pytest.raises(ValueError, match=r"Unknown shape kind 'hexagon' in a sample scene"):
        render("white", (("hexagon", "red", 1, 2, 3),))


# ---------------------------------------------------------------------------------------------- t2i-corebench


def _write_t2i(folder: Path, per_file: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for stem in FILE_TYPES:
        records = {
            f"{stem}-{k:03d}": {
                "Main Class": "Composition" if stem.startswith("C-") else "Reasoning",
                "Sub Class": f"sub {stem}",
                "Prompt": f"prompt {k} of {stem}",
                "Checklist": [{"question": "Is it there?", "tags": ["x"]}],
                "Remark": "",
            }
            for k in range(1, per_file + 1)
        }
        (folder / f"{stem}.json").write_text(json.dumps(records), encoding="utf-8")
    (folder / "LICENSE").write_text("not a prompt file")
    return folder


def test_t2i_corebench_types_meta_and_order(tmp_path):
    data = _write_t2i(tmp_path / "data")
    prompts = load_prompts(f"t2i-corebench:{data}")
    assert [p.id for p in prompts] == [f"{stem}-{k:03d}" for stem in FILE_TYPES for k in (1, 2)]
    assert summary(prompts)["prompt_type"] == {"composition": 8, "deductive": 8, "inductive": 4, "abductive": 4}
    first = prompts[0]
    assert (first.source, first.modality, first.text) == ("t2i-corebench", "text", "prompt 1 of C-MI")
    assert first.meta == {"file": "C-MI.json", "main_class": "Composition", "sub_class": "sub C-MI"}
    expected = {"R-LR": "deductive", "R-GR": "inductive", "R-RR": "abductive", "C-TR": "composition"}
    for stem, prompt_type in expected.items():
        assert {p.prompt_type for p in prompts if p.meta["file"] == f"{stem}.json"} == {prompt_type}
    # the repository root (holding data/) works too, and a limit of 4 takes one prompt of each type
    assert load_prompts(f"t2i-corebench:{tmp_path}") == prompts
    assert [p.id for p in load_prompts(f"t2i-corebench:{data}", limit=4)] == ["C-MI-001", "R-LR-001", "R-GR-001", "R-CR-001"]


def test_t2i_corebench_missing_folder_and_files(tmp_path):
    with pytest.raises(LoadError, match=r"T2I-CoReBench folder not found: .*nowhere"):
        load_prompts(f"t2i-corebench:{tmp_path / 'nowhere'}")
    data = _write_t2i(tmp_path / "data")
    (data / "R-CR.json").unlink()
    (data / "R-RR.json").unlink()
    with pytest.raises(LoadError, match=r"lacks 2 of its 12 files: R-CR\.json, R-RR\.json"):
        load_prompts(f"t2i-corebench:{data}")


@pytest.mark.parametrize(
    ("stem", "content", "message"),
    [
        ("C-MA", '{"C-MA-001": {"Prompt": "x"},,}', r"C-MA\.json: malformed JSON at line 1, column 30"),
        ("R-HR", '["a list"]', r"R-HR\.json: expected a JSON object keyed by prompt id, got a list"),
        ("R-GR", '{"R-GR-001": {"Prompt": "ok"}, "R-GR-002": {"Sub Class": "s"}}',
         r"R-GR\.json: record 'R-GR-002' needs a non-empty string \"Prompt\", got no \"Prompt\" field"),
        ("R-AR", '{"R-AR-007": {"Prompt": "  "}}', r"R-AR\.json: record 'R-AR-007' needs a non-empty string \"Prompt\", got \"Prompt\" = '  '"),
        ("R-PR", '{"R-PR-003": "just text"}', r"R-PR\.json: record 'R-PR-003' must be an object, got a str"),
        ("R-BR", '{"C-MI-001": {"Prompt": "again"}}', r"R-BR\.json: prompt id 'C-MI-001' also appears in C-MI\.json"),
    ],
)
def test_t2i_corebench_malformed_files(tmp_path, stem, content, message):
    data = _write_t2i(tmp_path / "data")
    (data / f"{stem}.json").write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=message):
        load_prompts(f"t2i-corebench:{data}")


@pytest.mark.skipif(not REAL_T2I.is_dir(), reason=f"no T2I-CoReBench copy at {REAL_T2I}")
def test_real_t2i_corebench_copy():
    prompts = load_prompts(f"t2i-corebench:{REAL_T2I}")
    counts = summary(prompts)
    assert counts["total"] == 1080
    assert counts["prompt_type"] == {"composition": 360, "deductive": 360, "inductive": 180, "abductive": 180}
    per_file: dict[str, set] = {}
    for p in prompts:
        per_file.setdefault(p.meta["file"], set()).add((p.prompt_type, p.meta["sub_class"]))
        assert p.id.startswith(p.meta["file"][:-5]) and len(p.text) > 20
    assert sorted(per_file) == sorted(f"{stem}.json" for stem in FILE_TYPES)
    for stem, prompt_type in FILE_TYPES.items():
        assert len(per_file[f"{stem}.json"]) == 1  # one type and one sub-class per file
        assert next(iter(per_file[f"{stem}.json"]))[0] == prompt_type
        assert sum(p.meta["file"] == f"{stem}.json" for p in prompts) == 90
    assert counts["sub_class"]["abductive"] == {"Commonsense Reasoning": 90, "Reconstructive Reasoning": 90}
    spread = load_prompts(f"t2i-corebench:{REAL_T2I}", limit=20)
    assert summary(spread)["prompt_type"] == {t: 5 for t in TEXT_TYPES}
    assert len({p.meta["sub_class"] for p in spread}) == 12


# ---------------------------------------------------------------------------------------------- mmbench

_HEADER = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "l2-category", "image", "split"]
_L2 = {
    "coarse_perception": "coarse",
    "finegrained_perception (instance-level)": "single-instance",
    "finegrained_perception (cross-instance)": "cross-instance",
    "attribute_reasoning": "attribute",
    "relation_reasoning": "relation",
    "logic_reasoning": "logical",
}


def _row(index, image, l2="coarse_perception", question="What is shown?", hint="", category="image_scene"):
    return [str(index), question, hint, "a", "b", "c", "d", "A", category, l2, image, "dev"]


def _write_tsv(path: Path, rows, header=_HEADER) -> Path:
    with path.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream, delimiter="\t")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _noise_png(seed: int = 0, size: int = 260) -> bytes:
    rng = random.Random(seed)
    image = Image.frombytes("RGB", (size, size), bytes(rng.randrange(256) for _ in range(size * size * 3)))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_mmbench_types_references_and_circular_copies(tmp_path):
    red, blue, noise = _png((255, 0, 0)), _png((0, 0, 255)), _noise_png()
    assert len(_b64(noise)) > 131072  # over csv's default field size limit
    l2s = list(_L2)
    rows = [
        _row(0, _b64(red), l2s[0]),
        _row(1, "0", l2s[1], question="Which colour?\nPick one.", hint="Look closely."),
        _row(2, _b64(blue), l2s[2], category="spatial_relationship"),
        _row(1_000_000, "0", l2s[0], question="circular copy"),
        _row(3, _b64(noise), l2s[3], hint="nan"),
        _row(4, " 2 ", l2s[4]),
        _row(2_000_000, _b64(red), l2s[0], question="another copy"),
        _row(5, _b64(red), l2s[5]),
        _row(1_000_002, "2", l2s[2]),
    ]
    path = _write_tsv(tmp_path / "mmbench.tsv", rows)
    old_limit = csv.field_size_limit()
    prompts = load_prompts(f"mmbench:{path}")
    assert csv.field_size_limit() == old_limit  # restored after reading
    assert [p.id for p in prompts] == [f"mmbench/{i}" for i in range(6)]
    assert [p.prompt_type for p in prompts] == list(IMAGE_TYPES)
    assert {p.source for p in prompts} == {"mmbench"} and {p.modality for p in prompts} == {"image"}
    assert prompts[0].text == "What is shown?"  # the first row of the circular group is kept
    assert prompts[1].text == "Look closely.\nWhich colour?\nPick one."
    assert prompts[3].text == "What is shown?"  # a "nan" hint is no hint
    assert prompts[1].image_bytes == red and prompts[4].image_bytes == blue and prompts[3].image_bytes == noise
    assert prompts[1].load_image().getpixel((0, 0)) == (255, 0, 0)
    assert prompts[4].load_image().getpixel((3, 3)) == (0, 0, 255)
    assert prompts[2].meta == {
        "index": 2,
        "l2_category": "finegrained_perception (cross-instance)",
        "category": "spatial_relationship",
        "answer": "A",
    }
    assert summary(prompts)["category"]["cross-instance"] == {"spatial_relationship": 1}


def test_mmbench_l2_category_is_normalised(tmp_path):
    path = _write_tsv(tmp_path / "m.tsv", [_row(0, _b64(_png((1, 2, 3))), "  FineGrained_Perception  (Instance-Level) ")])
    assert load_prompts(f"mmbench:{path}")[0].prompt_type == "single-instance"


def test_mmbench_minimal_columns(tmp_path):
    header = ["index", "question", "l2-category", "image"]
    path = _write_tsv(tmp_path / "m.tsv", [["7", "Q?", "logic_reasoning", _b64(_png((0, 0, 0)))]], header)
    [prompt] = load_prompts(f"mmbench:{path}")
    assert (prompt.id, prompt.text, prompt.prompt_type) == ("mmbench/7", "Q?", "logical")
    assert prompt.meta == {"index": 7, "l2_category": "logic_reasoning"}


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        ("!" * 100, r"mmbench/1: row index 1: image cell is not valid base64"),
        ("77", r"mmbench/1: row index 1: image refers to row index 77, which is not in the file"),
        ("2", r"mmbench/1: row index 1: image refers to row index 2, which holds no image of its own"),
        ("seven", r"mmbench/1: row index 1: image cell 'seven' is neither base64 nor a row index"),
        ("", r"mmbench/1: row index 1 has an empty image cell"),
        (_b64(b"not an image at all, just some bytes " * 3), r"mmbench/1: unreadable image"),
    ],
    ids=["bad-base64", "dangling", "reference-to-reference", "not-an-index", "empty", "not-an-image"],
)
def test_mmbench_per_item_image_errors(tmp_path, image, reason):
    rows = [_row(0, _b64(_png((9, 9, 9)))), _row(1, image), _row(2, "0")]
    prompts = load_prompts(f"mmbench:{_write_tsv(tmp_path / 'm.tsv', rows)}")
    assert len(prompts) == 3  # the file loads; only the broken item fails, when its image is read
    assert prompts[0].load_image().size == (8, 8) and prompts[2].load_image().size == (8, 8)
    with pytest.raises(ItemError, match=reason) as caught:
        prompts[1].load_image()
    assert caught.value.item == "mmbench/1"


def test_mmbench_bad_base64_in_a_referenced_row_names_that_row(tmp_path):
    rows = [_row(0, "%" * 80), _row(1, "0")]
    prompts = load_prompts(f"mmbench:{_write_tsv(tmp_path / 'm.tsv', rows)}")
    with pytest.raises(ItemError, match=r"mmbench/1: row index 0: image cell is not valid base64"):
        prompts[1].load_image()


def test_mmbench_fatal_errors(tmp_path):
    good = _b64(_png((0, 0, 0)))
    with pytest.raises(LoadError, match=r"MMBench TSV not found: .*absent\.tsv"):
        load_prompts(f"mmbench:{tmp_path / 'absent.tsv'}")
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    with pytest.raises(InputError, match=r"empty\.tsv: empty file, expected a header with columns index, question"):
        load_prompts(f"mmbench:{empty}")
    no_l2 = _write_tsv(tmp_path / "no_l2.tsv", [["0", "q", good]], ["index", "question", "image"])
    with pytest.raises(InputError, match=r"missing column\(s\) l2-category; the header has index, question, image"):
        load_prompts(f"mmbench:{no_l2}")
    short = _write_tsv(tmp_path / "short.tsv", [_row(0, good), ["1", "q"]])
    with pytest.raises(InputError, match=r"short\.tsv: line 3 has 2 fields, the header has 12"):
        load_prompts(f"mmbench:{short}")
    bad_index = _write_tsv(tmp_path / "bad_index.tsv", [_row(0, good), _row("x7", good)])
    with pytest.raises(InputError, match=r"line 3 has index 'x7', expected an integer"):
        load_prompts(f"mmbench:{bad_index}")
    unknown = _write_tsv(tmp_path / "unknown.tsv", [_row(0, good), _row(4, good, "mystery_reasoning")])
    with pytest.raises(InputError, match=r"row index 4 has l2-category 'mystery_reasoning'; expected one of: coarse_perception"):
        load_prompts(f"mmbench:{unknown}")
    no_question = _write_tsv(tmp_path / "no_question.tsv", [_row(2, good, question="  ")])
    with pytest.raises(InputError, match=r"row index 2 has an empty question"):
        load_prompts(f"mmbench:{no_question}")


# ---------------------------------------------------------------------------------------------- jsonl


def test_jsonl_prompts(tmp_path):
    path = tmp_path / "p.jsonl"
    lines = [
        json.dumps({"id": "a", "text": "first", "type": "deductive", "lang": "en", "level": 2}),
        "",
        json.dumps({"id": 7, "text": "second", "nested": {"skipped": True}}),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    prompts = load_prompts(f"jsonl:{path}")
    assert [(p.id, p.text, p.prompt_type) for p in prompts] == [("a", "first", "deductive"), ("7", "second", "untyped")]
    assert prompts[0].meta == {"lang": "en", "level": 2} and prompts[1].meta == {}
    assert {(p.source, p.modality) for p in prompts} == {("jsonl", "text")}


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"id": "a", "text": "x"}', "{not json"], r"p\.jsonl line 2: not valid JSON \(.* at column 2\)"),
        (['["a", "b"]'], r"p\.jsonl line 1: expected a JSON object with 'id' and 'text', got a list"),
        (['{"text": "x"}'], r"line 1: 'id' must be a non-empty string or an integer, got None"),
        (['{"id": true, "text": "x"}'], r"line 1: 'id' must be a non-empty string or an integer, got True"),
        (['{"id": "a", "text": ""}'], r"line 1: 'text' must be a non-empty string, got ''"),
        (['{"id": "a", "text": "x", "type": 3}'], r"line 1: 'type' must be a non-empty string, got 3"),
        (['{"id": "a", "text": "x"}', "", '{"id": "a", "text": "y"}'], r"line 3: id 'a' already used on line 1"),
        (["", "  "], r"p\.jsonl: no prompts found, expected one JSON object a line with 'id' and 'text'"),
    ],
)
def test_jsonl_errors(tmp_path, lines, message):
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(InputError, match=message):
        load_prompts(f"jsonl:{path}")


def test_jsonl_missing_file(tmp_path):
    with pytest.raises(LoadError, match=r"Cannot read JSONL prompts .*gone\.jsonl"):
        load_prompts(f"jsonl:{tmp_path / 'gone.jsonl'}")


# ---------------------------------------------------------------------------------------------- images


def test_images_folder(tmp_path):
    root = tmp_path / "imgs"
    (root / "coarse").mkdir(parents=True)
    (root / "logical" / "deeper").mkdir(parents=True)
    (root / ".hidden").mkdir()
    (root / "coarse" / "b.JPG").write_bytes(_png((0, 255, 0)))  # the extension decides, in any case
    (root / "coarse" / "a.png").write_bytes(_png((255, 0, 0)))
    (root / "coarse" / "a.txt").write_text("What colour is it?\n", encoding="utf-8")
    (root / "logical" / "deeper" / "c.png").write_bytes(_png((0, 0, 255)))
    (root / "top.png").write_bytes(_png((5, 5, 5)))
    (root / "notes.md").write_text("not an image")
    (root / ".hidden" / "x.png").write_bytes(_png((1, 1, 1)))
    prompts = load_prompts(f"images:{root}")
    assert [(p.id, p.prompt_type) for p in prompts] == [
        ("coarse/a.png", "coarse"),
        ("coarse/b.JPG", "coarse"),
        ("logical/deeper/c.png", "logical"),
        ("top.png", "untyped"),
    ]
    assert prompts[0].text == "What colour is it?" and prompts[1].text is None
    assert prompts[0].load_image().getpixel((0, 0)) == (255, 0, 0)
    assert prompts[2].load_image().getpixel((0, 0)) == (0, 0, 255)
    assert {(p.source, p.modality) for p in prompts} == {("images", "image")}


def test_images_errors(tmp_path):
    with pytest.raises(LoadError, match=r"Image prompt folder not found: .*missing"):
        load_prompts(f"images:{tmp_path / 'missing'}")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "readme.txt").write_text("x")
    with pytest.raises(InputError, match=r"empty: no image files found \(looked for \.png, \.jpg"):
        load_prompts(f"images:{tmp_path / 'empty'}")
    (tmp_path / "bad" / "coarse").mkdir(parents=True)
    (tmp_path / "bad" / "coarse" / "x.png").write_bytes(b"garbage")
    [prompt] = load_prompts(f"images:{tmp_path / 'bad'}")
    with pytest.raises(ItemError, match=r"coarse/x\.png: unreadable image \(.*x\.png\)"):
        prompt.load_image()
