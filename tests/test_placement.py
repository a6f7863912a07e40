"""Big-model placement and memory: device_map through accelerate, inference mode, no logits for the states."""

from __future__ import annotations

import json

import pytest
import torch

from entroprobe.errors import InputError
from entroprobe.models import load_model
from entroprobe.models.hf import detect_final_norm
from entroprobe.probe import ProbeConfig, run_probe

from fake_adapter import FakeAdapter
from tiny_models import random_image, tiny_chameleon, tiny_emu3, tiny_janus, tiny_llama

pytest.importorskip("accelerate")


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return tiny_llama(tmp_path_factory.mktemp("llama"))


def test_device_maps_place_the_model_and_leave_the_states_alone(llama_dir, tmp_path):
    reference = load_model(f"causal-lm:{llama_dir}", device="cpu")
    want = reference.encode_text("the red cat sat").states
    split = tmp_path / "split.json"  # the second layer offloaded to disk: a model split over two places
    split.write_text(json.dumps({"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
                                 "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}))  # fmt: skip
    for placement in ({"device_map": "cpu"}, {"device_map": "auto"},
                      {"device_map": str(split), "offload_folder": str(tmp_path / "offload")}):  # fmt: skip
        adapter = load_model(f"causal-lm:{llama_dir}", **placement)
        assert adapter.device == torch.device("cpu")
        torch.testing.assert_close(adapter.encode_text("the red cat sat").states, want)
        reply = adapter.respond_text("the cat", max_new_tokens=3, seed=1)
        assert reply.output_ids.tolist() == reference.respond_text("the cat", max_new_tokens=3, seed=1).output_ids.tolist()


def test_a_bad_device_map_says_what_it_takes(llama_dir, tmp_path):
    with pytest.raises(InputError, match="device_map must be one of auto, balanced, .*got 'everywhere'"):
        load_model(f"causal-lm:{llama_dir}", device_map="everywhere")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="must hold a JSON object of module name → device"):
        load_model(f"causal-lm:{llama_dir}", device_map=str(tmp_path / "list.json"))
    with pytest.raises(InputError, match="cannot read the device map"):
        load_model(f"causal-lm:{llama_dir}", device_map=str(tmp_path / "missing.json"))


def test_janus_runs_every_task_under_a_device_map(tmp_path):
    janus = load_model(f"janus:{tiny_janus(tmp_path / 'janus')}", device_map="cpu")
    assert janus.respond_image("a red cat", seed=0).response.num_tokens == 16
    assert janus.encode_image(random_image((32, 32))).num_tokens == 16


def test_teacher_forced_passes_compute_no_logits_for_the_states(tmp_path):
    emu3 = load_model(f"emu3:{tiny_emu3(tmp_path / 'emu3')}", prompt_tokens="template")
    widths = []
    handle = emu3.model.lm_head.register_forward_hook(lambda module, args, out: widths.append(args[0].shape[1]))
    try:
        emu3.encode_text("a red cube")
        reply = emu3.respond_text("a red cube", max_new_tokens=3, seed=0)
    finally:
        handle.remove()
    assert widths[0] == 1 and widths[-1] == 1  # encode and the teacher-forced pass: the last position only
    assert reply.prompt.num_tokens + reply.response.num_tokens > 3


def test_final_norm_is_detected(tmp_path):
    assert load_model(f"emu3:{tiny_emu3(tmp_path / 'emu3')}").describe()["final_norm"] is True
    assert load_model(f"chameleon:{tiny_chameleon(tmp_path / 'ch')}").describe()["final_norm"] is True
    no_layers = torch.nn.Linear(4, 4)  # nothing to hook: the adapter cannot tell, and says so
    assert detect_final_norm(no_layers, 2, torch.device("cpu")) is None


def test_units_run_in_inference_mode(tmp_path):
    seen = []

    class Watching(FakeAdapter):
        def encode_text(self, text):
            seen.append(torch.is_inference_mode_enabled())
            return super().encode_text(text)

    run_probe(ProbeConfig(model="fake", out=tmp_path / "run", text_prompts="samples", limit=3, progress=False),
              adapter=Watching())  # fmt: skip
    assert seen and all(seen)


# -- where a unit's states live (models.placement) ---------------------------------------------------------------


def test_states_stay_where_the_model_put_them_under_any_budget_on_the_cpu():
    from entroprobe.models.placement import current_budget, stack_layers, state_budget

    layers = [torch.randn(2, 5, 4, dtype=torch.bfloat16) for _ in range(3)]
    want = torch.stack(layers).float()
    with state_budget(0):  # everything is "large": on the CPU already, nothing moves
        assert current_budget() == 0 and torch.equal(stack_layers(layers), want)
        assert torch.equal(stack_layers(layers, 1), want[:, 1])
    assert current_budget() is None and stack_layers(layers).dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_large_states_are_moved_to_the_cpu_layer_by_layer_and_measured_on_the_gpu(llama_dir, tmp_path):
    from entroprobe.models.placement import stack_layers, state_budget

    layers = [torch.randn(3, 64, 32, device="cuda") for _ in range(4)]
    with state_budget(1024):  # bytes: these states are larger
        moved = stack_layers(layers, 0)
    assert moved.device.type == "cpu" and torch.equal(moved, torch.stack(layers)[:, 0].cpu())
    assert stack_layers(layers, 0).device.type == "cuda"  # no budget: where the model put them
    adapter = load_model(f"causal-lm:{llama_dir}", device="cuda")
    rows = {}
    for memory in (None, 0.0):
        out = tmp_path / f"m{memory}"
        summary = run_probe(ProbeConfig(model=f"causal-lm:{llama_dir}", out=out, text_prompts="samples", limit=3,
                                        progress=False, state_memory=memory), adapter=adapter)  # fmt: skip
        assert summary.peak_gpu_bytes > 0 and "GPU memory: a unit's (or batch's) model work" in summary.describe()
        rows[memory] = __import__("pandas").read_parquet(out / "results.parquet")
    assert (rows[None]["value"] - rows[0.0]["value"]).abs().max() < 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_a_prompt_on_the_cpu_and_a_response_on_the_gpu_are_measured_together(tmp_path):
    """One side of a unit may have gone to the CPU (models.placement): --layers and the estimators take both."""
    from entroprobe.models import Response

    class Split(FakeAdapter):
        def respond_image(self, text, *, seed=0, **generation):
            made = super().respond_image(text, seed=seed, **generation)
            on_gpu = type(made.response)(made.response.states.cuda(), made.response.positions)
            return Response(prompt=made.prompt, response=on_gpu, output=made.output)

    for kind in (FakeAdapter, Split):
        run_probe(ProbeConfig(model="fake", out=tmp_path / kind.__name__, text_prompts="samples", limit=2,
                              tasks=("image-gen",), layers="0,-1", progress=False), adapter=kind())  # fmt: skip
    read = lambda name: __import__("pandas").read_parquet(tmp_path / name / "results.parquet")  # noqa: E731
    assert (read("FakeAdapter")["value"] - read("Split")["value"]).abs().max() < 1e-5


def test_the_state_memory_setting_is_checked_and_recorded(tmp_path):
    for bad in (-1, float("nan"), float("inf"), True):
        with pytest.raises(InputError, match="state_memory must be a number of GiB ≥ 0"):
            run_probe(ProbeConfig(model="fake", out=tmp_path / "bad", text_prompts="samples", state_memory=bad))
    summary = run_probe(ProbeConfig(model="fake", out=tmp_path / "run", text_prompts="samples", limit=2,
                                    progress=False, state_memory=0.5), adapter=FakeAdapter())  # fmt: skip
    timing = json.loads((tmp_path / "run" / "manifest.json").read_text())["timing"]
    assert timing["state_memory_gib"] == 0.5 and timing["peak_gpu_bytes"] == 0  # no GPU: nothing to watch
    assert "GPU memory" not in summary.describe()
    from entroprobe.models.placement import current_budget

    assert current_budget() is None  # the run's budget ends with the run
