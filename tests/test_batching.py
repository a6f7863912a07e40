"""``--batch-size``: several prompts per forward pass and generate call, the same rows as one at a time."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from entroprobe.models import load_model
from entroprobe.probe import ProbeConfig, run_probe
from entroprobe.probe.batching import batches
from entroprobe.probe.units import Unit
from entroprobe.sources import load_prompts

from tiny_models import tiny_bert, tiny_llama

ALL = ("encode", "text-gen", "image-gen")


def _rows(run_dir):
    frame = pd.read_parquet(run_dir / "results.parquet")
    return frame.sort_values(["source", "prompt_id", "task", "measure", "layer", "subsample", "subsample_response"])


def _assert_same_rows(a, b, tolerance=1e-4):
    key = ["prompt_id", "task", "measure", "layer", "subsample", "subsample_response", "n_tokens", "n_response_tokens"]
    assert a[key].values.tolist() == b[key].values.tolist()
    assert np.abs(a["value"].values - b["value"].values).max() <= tolerance  # bits


@pytest.mark.parametrize("model", ["micro-ar", "micro-mask"])
def test_batched_rows_equal_one_at_a_time_for_every_task(tmp_path, model):
    adapter = load_model(model, device="cpu")
    runs = {}
    for size in (1, 5):
        config = ProbeConfig(model=model, out=tmp_path / f"b{size}", text_prompts="micro-world",
                             image_prompts="micro-world", tasks=ALL, limit=12, batch_size=size, progress=False,
                             max_new_tokens=12)  # fmt: skip
        assert run_probe(config, adapter=adapter).failed == 0
        runs[size] = _rows(tmp_path / f"b{size}")
    _assert_same_rows(runs[1], runs[5])
    # the same answers and the same pictures: sampling is seeded per unit, not per batch
    answers = [[json.loads(line) for line in (tmp_path / f"b{s}" / "responses.jsonl").open()] for s in (1, 5)]
    assert [a.get("text") for a in answers[0]] == [a.get("text") for a in answers[1]]
    for record in (r for r in answers[0] if "image" in r):
        assert (tmp_path / "b1" / record["image"]).read_bytes() == (tmp_path / "b5" / record["image"]).read_bytes()
    # the order of results.parquet is the units' own
    order = pd.read_parquet(tmp_path / "b5" / "results.parquet")[["prompt_id", "task"]].drop_duplicates()
    assert order.values.tolist() == pd.read_parquet(tmp_path / "b1" / "results.parquet")[
        ["prompt_id", "task"]].drop_duplicates().values.tolist()  # fmt: skip


def test_batched_encoding_of_transformers_models_equals_one_at_a_time(tmp_path):
    texts = ["a cat", "the red dog sat on the mat", "blue", "what is this picture of the cat"]
    for spec in (f"causal-lm:{tiny_llama(tmp_path / 'llama')}", f"encoder:{tiny_bert(tmp_path / 'bert')}", "minilm"):
        adapter = load_model(spec, device="cpu")
        alone = [adapter.encode_text(t) for t in texts]
        together = adapter.encode_text_batch(texts)
        for a, b in zip(alone, together):
            assert a.token_ids.tolist() == b.token_ids.tolist() and a.positions.tolist() == b.positions.tolist()
            torch.testing.assert_close(a.states, b.states, atol=1e-5, rtol=1e-4)


def test_a_batch_with_one_failing_item_retries_the_others_one_by_one(tmp_path):
    adapter = load_model("micro-ar", device="cpu")
    prompts = tmp_path / "p.jsonl"
    lines = [{"id": f"ok{i}", "text": "a red circle at the top . what is in the picture?"} for i in range(3)]
    lines.insert(1, {"id": "long", "text": " ".join(["red"] * 400)})  # longer than the model's context
    prompts.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "run"
    summary = run_probe(ProbeConfig(model="micro-ar", out=out, text_prompts=f"jsonl:{prompts}", tasks=ALL,
                                    batch_size=4, progress=False, max_new_tokens=8), adapter=adapter)  # fmt: skip
    assert (summary.succeeded, summary.failed) == (9, 3)
    errors = [json.loads(line) for line in (out / "errors.jsonl").open()]
    assert {e["item"] for e in errors} == {"long"} and {e["task"] for e in errors} == set(ALL)
    assert all("too long" in e["reason"] for e in errors)
    alone = run_probe(ProbeConfig(model="micro-ar", out=tmp_path / "alone", text_prompts=f"jsonl:{prompts}",
                                  tasks=ALL, progress=False, max_new_tokens=8), adapter=adapter)  # fmt: skip
    assert alone.failed == 3
    _assert_same_rows(_rows(out), _rows(tmp_path / "alone"))


def test_batches_group_one_task_and_modality_by_length():
    prompts = load_prompts("micro-world", limit=12)
    units = [Unit(key=f"{p.id}/{t}", order=i * 2 + j, prompt=p, task=t)
             for i, p in enumerate(prompts) for j, t in enumerate(("encode", "text-gen"))]  # fmt: skip
    made = batches(units, 4)
    assert sorted(u.key for b in made for u in b) == sorted(u.key for u in units)  # every unit once
    for batch in made:
        assert len(batch) <= 4 and len({(u.task, u.prompt.modality) for u in batch}) == 1
        lengths = [len(u.prompt.text) for u in batch]
        assert lengths == sorted(lengths)
    assert [min(u.order for u in b) for b in made] == sorted(min(u.order for u in b) for b in made)


def test_batch_size_is_checked_and_recorded(tmp_path):
    with pytest.raises(Exception, match="batch_size must be a positive integer; got 0"):
        run_probe(ProbeConfig(model="micro-ar", out=tmp_path / "x", text_prompts="micro-world", batch_size=0))
    adapter = load_model("micro-ar", device="cpu")
    config = ProbeConfig(model="micro-ar", out=tmp_path / "r", text_prompts="micro-world", limit=4, batch_size=2,
                         progress=False)  # fmt: skip
    run_probe(config, adapter=adapter)
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert manifest["batch_size"] == 2 and manifest["invocations"][-1]["batch_size"] == 2
    assert "batch_size" not in manifest["settings"]  # not part of the run's identity: a resume may change it
    config.batch_size = 3
    resumed = run_probe(config, adapter=adapter)
    assert any("batch size 3, the run began with 2" in n for n in resumed.notices)


def _family_specs(tmp_path):
    from tiny_models import tiny_chameleon, tiny_emu3, tiny_janus

    return {
        "causal-lm": (f"causal-lm:{tiny_llama(tmp_path / 'llama')}", {"do_sample": True}),
        "encoder": (f"encoder:{tiny_bert(tmp_path / 'bert')}", {}),
        "janus": (f"janus:{tiny_janus(tmp_path / 'janus')}", {"do_sample": True}),
        "emu3": (f"emu3:{tiny_emu3(tmp_path / 'emu3')}", {"do_sample": True, "image_area": 256}),
        "chameleon": (f"chameleon:{tiny_chameleon(tmp_path / 'chameleon')}", {"do_sample": True}),
    }


@pytest.mark.parametrize("family", ["causal-lm", "encoder", "janus", "emu3", "chameleon"])
def test_every_family_gives_the_same_rows_in_batches(tmp_path, family):
    spec, args = _family_specs(tmp_path)[family]
    adapter = load_model(spec, device="cpu", **args)
    prompts = tmp_path / "prompts.jsonl"
    texts = ["a cat", "the red dog sat on the mat", "blue", "a red cat sat", "the dog"]
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    images = tmp_path / "images"
    images.mkdir()
    from tiny_models import random_image

    for i in range(3):
        random_image((32, 32), seed=i).save(images / f"{i}.png")
    tasks = tuple(t for t in ALL if any(adapter.can(t, m) for m in ("text", "image")))
    runs = {}
    for size in (1, 3):
        config = ProbeConfig(model=spec, out=tmp_path / f"b{size}", text_prompts=f"jsonl:{prompts}",
                             image_prompts=f"images:{images}", tasks=tasks, batch_size=size, progress=False,
                             max_new_tokens=4, match_tokens=2, match_response_tokens=2)  # fmt: skip
        summary = run_probe(config, adapter=adapter)
        assert summary.failed == 0, json.loads((tmp_path / f"b{size}" / "errors.jsonl").read_text().splitlines()[0])
        assert not any("one prompt at a time" in note for note in summary.notices), summary.notices  # batched
        runs[size] = _rows(tmp_path / f"b{size}")
    _assert_same_rows(runs[1], runs[3])
    answers = [[json.loads(line).get("text") for line in (tmp_path / f"b{s}" / "responses.jsonl").open()] for s in (1, 3)]
    assert answers[0] == answers[1]


@pytest.mark.parametrize("family", ["janus", "emu3", "chameleon"])
def test_image_prompts_are_encoded_in_one_pass_per_batch(tmp_path, family):
    """Three image prompts (one with an instruction): one forward pass, each row as the image alone gives it."""
    from tiny_models import random_image

    spec, args = _family_specs(tmp_path)[family]
    adapter = load_model(spec, device="cpu", **args)
    decoder = adapter.model.model if family == "janus" else adapter.model
    images = [random_image((32, 32), seed=i) for i in range(3)]
    instructions = [None, "what is this", None]
    calls = []
    handle = decoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        batched = adapter.encode_image_batch(images, instructions)
    finally:
        handle.remove()
    assert len(calls) == 1
    for image, instruction, states in zip(images, instructions, batched):
        alone = adapter.encode_image(image, instruction)
        assert torch.equal(states.positions, alone.positions) and torch.equal(states.token_ids, alone.token_ids)
        torch.testing.assert_close(states.states, alone.states, atol=1e-5, rtol=1e-5)
    texts = ["a cat", "the red dog sat on the mat"]
    for text, states in zip(texts, adapter.encode_text_batch(texts)):
        torch.testing.assert_close(states.states, adapter.encode_text(text).states, atol=1e-5, rtol=1e-5)


def test_emu3_images_are_generated_in_one_call_with_guidance_per_row(tmp_path):
    """Emu3's images in a batch: one ``generate`` (CFG on, BAAI's negative prompt in every row's unconditional
    branch), each image the one its prompt draws alone from its seed."""
    spec, args = _family_specs(tmp_path)["emu3"]
    adapter = load_model(spec, device="cpu", **args)
    texts, seeds = ["a cat", "the red dog sat on the mat", "blue"], [3, 4, 5]
    calls = []
    generate = adapter.model.generate

    def counted(*a, **k):
        calls.append(k.get("negative_prompt_ids"))
        return generate(*a, **k)

    adapter.model.generate = counted
    try:
        batched = adapter.respond_image_batch(texts, seeds=seeds)
    finally:
        del adapter.model.generate
    assert len(calls) == 1 and calls[0].shape[0] == 3 and (calls[0] == calls[0][:1]).all()
    for text, seed, response in zip(texts, seeds, batched):
        alone = adapter.respond_image(text, seed=seed)
        assert response.extra["guidance_scale"] > 1 and torch.equal(response.output_ids, alone.output_ids)
        torch.testing.assert_close(response.response.states, alone.response.states, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(response.prompt.states, alone.prompt.states, atol=1e-5, rtol=1e-5)
        assert np.array_equal(np.asarray(response.output), np.asarray(alone.output))


class _Cramped:
    """micro-ar on a device too small for batches of more than ``fits`` prompts, and for the prompts in ``never``
    at any size: its batched calls raise CUDA's out-of-memory error there, as a full GPU would."""

    def __init__(self, inner, fits, never=()):
        self.inner, self.fits, self.never, self.calls = inner, fits, set(never), []
        self.holding = 0  # units whose states the last call returned

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def _check(self, name, texts):
        if len(texts) > self.fits or self.never & {t for t in texts if isinstance(t, str)}:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate 2.00 GiB ({name} of {len(texts)})")

    def _batched(self, name, key, items, *args, **kwargs):
        self.calls.append((key, len(items)))
        self._check(name, [item[0] if isinstance(item, tuple) else item for item in items])
        self.holding = len(items)
        return getattr(self.inner, name)(items, *args, **kwargs)

    def encode_text_batch(self, texts, *args, **kwargs):
        return self._batched("encode_text_batch", "encode/text", texts, *args, **kwargs)

    def encode_image_batch(self, images, *args, **kwargs):
        return self._batched("encode_image_batch", "encode/image", images, *args, **kwargs)

    def respond_text_batch(self, prompts, *args, **kwargs):
        modality = "image" if prompts[0][1] is not None else "text"
        return self._batched("respond_text_batch", f"text-gen/{modality}", prompts, *args, **kwargs)

    def respond_image_batch(self, texts, *args, **kwargs):
        return self._batched("respond_image_batch", "image-gen/text", texts, *args, **kwargs)

    def _alone(self, name, item, *args, **kwargs):
        self._check(name, [item])
        self.holding = 1
        return getattr(self.inner, name)(item, *args, **kwargs)

    def encode_text(self, text, *args, **kwargs):
        return self._alone("encode_text", text, *args, **kwargs)

    def encode_image(self, image, *args, **kwargs):
        return self._alone("encode_image", image, *args, **kwargs)

    def respond_text(self, text, *args, **kwargs):
        return self._alone("respond_text", text, *args, **kwargs)

    def respond_image(self, text, *args, **kwargs):
        return self._alone("respond_image", text, *args, **kwargs)

def test_a_batch_that_runs_out_of_memory_is_halved_and_later_batches_stay_small(tmp_path):
    inner = load_model("micro-ar", device="cpu")
    cramped = _Cramped(inner, fits=3)
    configs = {size: ProbeConfig(model="micro-ar", out=tmp_path / f"b{size}", text_prompts="micro-world",
                                 image_prompts="micro-world", tasks=ALL, limit=12, batch_size=size, progress=False,
                                 max_new_tokens=8)  # fmt: skip
               for size in (1, 8)}
    summary = run_probe(configs[8], adapter=cramped)
    assert (summary.succeeded, summary.failed) == (summary.units, 0)  # each unit done once, none lost
    assert run_probe(configs[1], adapter=inner).failed == 0
    _assert_same_rows(_rows(tmp_path / "b1"), _rows(tmp_path / "b8"))
    keys = sorted({key for key, _ in cramped.calls})
    assert keys == ["encode/image", "encode/text", "image-gen/text", "text-gen/image", "text-gen/text"]
    for key in keys:  # 8 ran out, then 4 of it; from then on batches of 2 only, never 3 or 4 tried again
        sizes = [n for k, n in cramped.calls if k == key]
        assert sizes[:2] == [8, 4] and sizes[2:] and set(sizes[2:]) == {2}, (key, sizes)
    lowered = [n for n in summary.notices if "ran out of memory" in n]
    assert len(lowered) == 5 and all("a batch of 4 ran out of memory; batches of at most 2" in n for n in lowered)
    assert not any("one prompt at a time" in n for n in summary.notices)  # halving is not the one-by-one fallback
    manifest = json.loads((tmp_path / "b8" / "manifest.json").read_text())
    assert manifest["invocations"][-1]["batch_sizes_lowered"] == dict.fromkeys(keys, 2)
    assert "batch_sizes_lowered" not in json.loads((tmp_path / "b1" / "manifest.json").read_text())["invocations"][-1]


def test_a_prompt_too_big_even_alone_fails_by_itself_and_keeps_the_batch_size(tmp_path):
    inner = load_model("micro-ar", device="cpu")
    prompts = tmp_path / "p.jsonl"
    lines = [{"id": f"ok{i}", "text": f"a red circle at the top {i} . what is in the picture?"} for i in range(9)]
    lines.insert(2, {"id": "huge", "text": "a blue square . what is in the picture?"})
    prompts.write_text("".join(json.dumps(line) + "\n" for line in lines))
    cramped = _Cramped(inner, fits=100, never={lines[2]["text"]})
    runs = {}
    for size, adapter in ((4, cramped), (1, cramped)):
        out = tmp_path / f"b{size}"
        runs[size] = run_probe(ProbeConfig(model="micro-ar", out=out, text_prompts=f"jsonl:{prompts}", tasks=ALL,
                                           batch_size=size, progress=False, max_new_tokens=8), adapter=adapter)
    summary = runs[4]
    assert (summary.succeeded, summary.failed) == (27, 3) and runs[1].failed == 3
    errors = [json.loads(line) for line in (tmp_path / "b4" / "errors.jsonl").open()]
    assert {e["item"] for e in errors} == {"huge"} and all("OutOfMemoryError" in e["reason"] for e in errors)
    assert not any("ran out of memory" in n for n in summary.notices)  # one prompt's size says nothing of B
    assert "batch_sizes_lowered" not in json.loads((tmp_path / "b4" / "manifest.json").read_text())["invocations"][-1]
    for key in ("encode/text", "text-gen/text", "image-gen/text"):  # its batch of 4, then its half, then on at 4
        assert [n for k, n in cramped.calls if k == key] == [4, 2, 2, 4, 2], key
    _assert_same_rows(_rows(tmp_path / "b1"), _rows(tmp_path / "b4"))


def test_out_of_memory_is_told_from_other_failures():
    from entroprobe.probe.batching import out_of_memory

    assert out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB"))
    assert out_of_memory(MemoryError())
    assert out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate "
                                      "memory: you tried to allocate 1099511627776 bytes"))  # fmt: skip
    assert out_of_memory(RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"))
    with pytest.raises(RuntimeError) as too_big:  # the host's allocator, for real: 1 PiB is refused at once
        torch.empty(2**50, dtype=torch.uint8)
    assert out_of_memory(too_big.value)
    assert not out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not out_of_memory(ValueError("out of memory"))  # only the allocator's own errors count


def test_a_batch_whose_states_leave_too_little_memory_to_measure_is_made_again_smaller(tmp_path, monkeypatch):
    """The estimators run beside the states their batch still holds: where that runs out of memory, the units not
    yet measured are made again in smaller batches, and later batches stay small."""
    from entroprobe.probe import units

    inner = load_model("micro-ar", device="cpu")
    cramped = _Cramped(inner, fits=100)
    measure = units.measure

    def crowded(*args, **kwargs):
        if cramped.holding > 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 512.00 MiB")
        return measure(*args, **kwargs)

    monkeypatch.setattr(units, "measure", crowded)
    common = dict(model="micro-ar", text_prompts="micro-world", tasks=("encode", "image-gen"), limit=12,
                  progress=False, max_new_tokens=8)  # fmt: skip
    summary = run_probe(ProbeConfig(out=tmp_path / "b8", batch_size=8, **common), adapter=cramped)
    assert summary.failed == 0
    for key in ("encode/text", "image-gen/text"):  # measuring 8 ran out, then 4; batches of 2 from then on
        sizes = [n for k, n in cramped.calls if k == key]
        assert sizes[:3] == [8, 4, 2] and set(sizes[3:]) == {2}, (key, sizes)
    assert [n for n in summary.notices if "ran out of memory" in n] == [  # 8 → 4 came after 4 → 2: no news
        f"{key}: a batch of 4 ran out of memory while measured beside its batch's states; batches of at most 2 "
        "from then on" for key in ("encode/text", "image-gen/text")]  # fmt: skip
    monkeypatch.setattr(units, "measure", measure)
    assert run_probe(ProbeConfig(out=tmp_path / "b1", batch_size=1, **common), adapter=inner).failed == 0
    _assert_same_rows(_rows(tmp_path / "b1"), _rows(tmp_path / "b8"))


def _growing_prompts(path, n):
    """``p0 … p{n-1}``, each longer than the one before: batches sorted by length keep this order."""
    lines = [{"id": f"p{i}", "text": "a red circle at the top" + " ." * i + " what is in the picture?"}
             for i in range(n)]  # fmt: skip
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return lines


@pytest.mark.parametrize("alone_too", [False, True], ids=["fits-alone", "too-big-alone"])
def test_a_unit_that_runs_out_of_memory_measured_inside_its_batch_leaves_the_units_before_it_done(
        tmp_path, monkeypatch, alone_too):  # fmt: skip
    """``p5`` is measured second in its batch of 4: beside the states of more than 2 units it runs out of memory.
    ``p4`` before it stays committed once; ``p5``, ``p6`` and ``p7`` are made again in halves. Where ``p5`` runs out
    of memory even alone, it alone fails and the batch size stays."""
    from entroprobe.probe import units

    inner = load_model("micro-ar", device="cpu")
    lines = _growing_prompts(tmp_path / "p.jsonl", 8)
    cramped = _Cramped(inner, fits=100)
    measure = units.measure

    def crowded(config, unit, *args, **kwargs):
        if unit.prompt.id == "p5" and (alone_too or cramped.holding > 2):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 512.00 MiB")
        return measure(config, unit, *args, **kwargs)

    monkeypatch.setattr(units, "measure", crowded)
    common = dict(model="micro-ar", text_prompts=f"jsonl:{tmp_path / 'p.jsonl'}", tasks=("encode",),
                  progress=False)  # fmt: skip
    summary = run_probe(ProbeConfig(out=tmp_path / "b4", batch_size=4, **common), adapter=cramped)
    monkeypatch.setattr(units, "measure", measure)
    assert run_probe(ProbeConfig(out=tmp_path / "b1", batch_size=1, **common), adapter=inner).failed == 0
    sizes = [n for _, n in cramped.calls]
    one, four = _rows(tmp_path / "b1"), _rows(tmp_path / "b4")
    if alone_too:
        assert (summary.succeeded, summary.failed) == (7, 1)
        assert sizes == [4, 4, 2] and not [n for n in summary.notices if "ran out of memory" in n]
        errors = [json.loads(line) for line in (tmp_path / "b4" / "errors.jsonl").open()]
        assert [e["item"] for e in errors] == ["p5"] and "OutOfMemoryError" in errors[0]["reason"]
        one = one[one["prompt_id"] != "p5"]
    else:
        assert (summary.succeeded, summary.failed) == (8, 0) and sizes == [4, 4, 2]  # p7 alone: no batch call
        assert summary.notices[-1] == ("encode/text: a batch of 4 ran out of memory while measured beside its "
                                       "batch's states; batches of at most 2 from then on")  # fmt: skip
    # every unit's rows once, in the units' order, equal to those made one at a time
    assert four.groupby("prompt_id").size().to_dict() == one.groupby("prompt_id").size().to_dict()
    _assert_same_rows(one, four)
    order = pd.read_parquet(tmp_path / "b4" / "results.parquet")["prompt_id"].drop_duplicates().tolist()
    assert order == [line["id"] for line in lines if not (alone_too and line["id"] == "p5")]


def test_a_failure_other_than_memory_inside_a_half_falls_back_to_one_by_one(tmp_path):
    """A batch that ran out of memory is halved; a half that then fails otherwise is done prompt by prompt, and
    only its faulty prompt is recorded."""
    inner = load_model("micro-ar", device="cpu")
    lines = _growing_prompts(tmp_path / "p.jsonl", 4)
    lines.append({"id": "long", "text": " ".join(["red"] * 400)})  # longer than the model's context: last by length
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    cramped = _Cramped(inner, fits=3)
    summary = run_probe(ProbeConfig(model="micro-ar", out=tmp_path / "b5", text_prompts=f"jsonl:{tmp_path / 'p.jsonl'}",
                                    tasks=("encode",), batch_size=5, progress=False), adapter=cramped)  # fmt: skip
    assert (summary.succeeded, summary.failed) == (4, 1)
    assert [n for _, n in cramped.calls] == [5, 3, 2]  # 5 out of memory; 3 fine; [p3, long] fails: one by one
    errors = [json.loads(line) for line in (tmp_path / "b5" / "errors.jsonl").open()]
    assert [e["item"] for e in errors] == ["long"] and "too long" in errors[0]["reason"]
    assert any("one prompt at a time" in n for n in summary.notices)
    assert any("a batch of 5 ran out of memory; batches of at most 3" in n for n in summary.notices)


def test_lowered_batch_sizes_are_in_the_manifest_before_the_run_ends(tmp_path):
    """Written as they are lowered: a run stopped (Ctrl-C, a job's time limit) still says what fitted."""
    inner = load_model("micro-ar", device="cpu")
    cramped = _Cramped(inner, fits=3)
    stop_at = 4  # batched calls: 8 (out of memory), 4 (out of memory), 2, 2, then the stop

    def respond(texts, *args, **kwargs):
        if len(cramped.calls) >= stop_at:
            raise KeyboardInterrupt
        return cramped._batched("respond_image_batch", "image-gen/text", texts, *args, **kwargs)

    cramped.respond_image_batch = respond
    config = ProbeConfig(model="micro-ar", out=tmp_path / "run", text_prompts="micro-world", tasks=("image-gen",),
                         limit=12, batch_size=8, progress=False)  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        run_probe(config, adapter=cramped)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "running" and [n for _, n in cramped.calls] == [8, 4, 2, 2]
    assert manifest["invocations"][-1]["batch_sizes_lowered"] == {"image-gen/text": 2}


def test_a_failed_units_exception_keeps_no_frame_of_the_chain_it_came_from():
    from entroprobe.probe.batching import _bare

    def frames(exc):
        return [exc.__traceback__, exc.__cause__.__traceback__, exc.__context__.__traceback__]

    try:
        try:
            raise ValueError("first")
        except ValueError:
            raise RuntimeError("second") from KeyError("cause")
    except RuntimeError as exc:
        exc.__cause__.__traceback__ = exc.__traceback__  # a cause that was raised, as one from a callee is
        assert all(f is not None for f in frames(exc))
        assert _bare(exc) is exc and frames(exc) == [None, None, None]


def test_a_run_stopped_inside_a_batch_lets_its_states_go(tmp_path, monkeypatch):
    """Stopped while a batch's states are held (Ctrl-C as its first unit is committed, or a full disk): the
    traceback, which a notebook keeps, holds none of them."""
    import gc
    import weakref

    from entroprobe.probe import store

    inner = load_model("micro-ar", device="cpu")
    held = []

    class Watched(_Cramped):
        def encode_text_batch(self, texts, *args, **kwargs):
            made = super().encode_text_batch(texts, *args, **kwargs)
            held.extend(weakref.ref(m.states) for m in made)
            return made

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(store.ShardStore, "commit_unit", stop)
    config = ProbeConfig(model="micro-ar", out=tmp_path / "run", text_prompts="micro-world", tasks=("encode",),
                         limit=8, batch_size=4, progress=False)  # fmt: skip
    with pytest.raises(KeyboardInterrupt) as stopped:
        run_probe(config, adapter=Watched(inner, fits=8))
    gc.collect()
    assert stopped.value.__traceback__ is not None and len(held) == 4
    assert [ref() for ref in held] == [None] * 4
