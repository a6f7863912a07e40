"""The janusflow family: CI checks without a checkout, and a tiny random JanusFlow built from the Janus checkout's
own classes, saved in the released JanusFlow-1.3B layout and loaded back through ``load_model``.

The tiny model keeps the sizes JanusFlow's code hard-codes (d = 2048 decoder, 1024-wide SigLIP features, 768-wide
UViT channels) and shrinks the rest: a 2-layer decoder with one key/value head, a 1-layer SigLIP on 32x32 images
(4 image tokens), UViT encoder/decoder with one middle block / none on a 4x4 latent (2x2 = 4 image tokens), and a
2-block diffusers AutoencoderKL in ``vae/`` (8x8 pixels). Its tokenizer is a byte-level BPE named
``LlamaTokenizerFast`` in tokenizer_config.json, as DeepSeek's is.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import WORDS, random_image
from upstream_checks import (
    captured,
    checkout_or_skip,
    count_embedded_calls,
    needs,
    run_all_tasks,
    same_as_alone,
    stacked,
)

from entroprobe.errors import InputError, ItemError, LoadError
from entroprobe.models import load_model
from entroprobe.models.compat.janusflow import (
    dataclass_safe_configs,
    mutable_defaults_to_factories,
    with_post_init,
)
from entroprobe.models.janusflow import IMAGE_DEFAULTS, TEXT_DEFAULTS, JanusFlowAdapter
from entroprobe.models.upstream import settings

GRID, LATENT, STEPS = 2, 4, 3  # 2x2 image tokens from a 4x4 latent, 3 ODE steps in the tests
SPECIAL = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>", "<image_placeholder>", "<begin_of_image>",
           "<end_of_image>", "<｜begin▁of▁generation｜>"]  # fmt: skip
ARGS = {"dtype": "float32", "device": "cpu", "num_inference_steps": str(STEPS), "latent_size": str(LATENT)}


# -- CI: no checkout ---------------------------------------------------------------------------------------------


def test_class_attributes_and_capabilities():
    assert JanusFlowAdapter.family == "janusflow"
    assert JanusFlowAdapter.capabilities == {("encode", "text"), ("encode", "image"), ("text-gen", "text"),
                                             ("text-gen", "image"), ("image-gen", "text")}  # fmt: skip
    spec = JanusFlowAdapter.upstream
    assert (spec.name, spec.github, spec.package) == ("Janus", "deepseek-ai/Janus", "janus")
    assert spec.tested[0][0] == "1daa72fa409002d40931bd7b36a9280362469ead"


def test_every_default_has_its_source_in_the_authors_scripts():
    for table in (TEXT_DEFAULTS, IMAGE_DEFAULTS):
        for key, default in table.items():
            assert "README" in default.source or "demo/app_janusflow.py" in default.source, key
    assert (IMAGE_DEFAULTS["cfg_weight"].value, IMAGE_DEFAULTS["num_inference_steps"].value) == (2.0, 30)
    assert IMAGE_DEFAULTS["latent_size"].value == 48 and TEXT_DEFAULTS["do_sample"].value is False


def test_settings_parse_command_line_strings_to_the_defaults_types():
    values, given = settings(IMAGE_DEFAULTS, {"cfg_weight": "5", "num_inference_steps": "10"}, what="image-gen")
    assert values == {"cfg_weight": 5.0, "num_inference_steps": 10, "latent_size": 48} and given["cfg_weight"] == 5.0
    with pytest.raises(InputError, match="num_inference_steps='x' does not parse as int"):
        settings(IMAGE_DEFAULTS, {"num_inference_steps": "x"}, what="image-gen")
    assert settings(TEXT_DEFAULTS, {"do_sample": "true"}, what="text-gen")[0] == {"do_sample": True}


def test_a_missing_checkout_or_a_folder_that_is_not_one_says_how_to_get_it(tmp_path):
    with pytest.raises(LoadError, match="clone deepseek-ai/Janus"):
        JanusFlowAdapter.load(str(tmp_path), repo=str(tmp_path / "nowhere"))
    with pytest.raises(LoadError, match="lacks janus/janusflow/models/modeling_vlm.py; clone deepseek-ai/Janus"):
        JanusFlowAdapter.load(str(tmp_path), repo=str(tmp_path))


def test_unknown_keywords_and_bad_values_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="Unknown model argument.*guidance.*accepted: repo, dtype"):
        JanusFlowAdapter.load(str(tmp_path), guidance="3")
    with pytest.raises(InputError, match="num_inference_steps must be a positive integer"):
        JanusFlowAdapter.load(str(tmp_path), num_inference_steps="0")
    with pytest.raises(InputError, match="needs a checkpoint directory"):
        JanusFlowAdapter.load(None)


def test_mutable_config_defaults_become_factories_that_copy():
    class Fake:
        params: dict = {"a": 1}  # noqa: RUF012 (the case under test)
        name: str = ""
        items: list = [1]  # noqa: RUF012

    assert sorted(mutable_defaults_to_factories(Fake)) == ["items", "params"]
    made = dataclasses.dataclass(Fake, kw_only=True)()
    assert made.params == {"a": 1} and made.name == "" and made.items == [1]
    made.params["b"] = 2
    assert dataclasses.dataclass(Fake, kw_only=True)().params == {"a": 1}  # each instance its own copy


def test_dataclass_safe_configs_lets_a_config_with_a_dict_default_be_defined_and_restores():
    from transformers import PretrainedConfig

    before = vars(PretrainedConfig).get("__init_subclass__")
    with dataclass_safe_configs() as patched:

        class WithDict(PretrainedConfig):
            model_type = "entroprobe_fake_with_dict"
            params: dict = {}  # noqa: RUF012

            def __init__(self, **kwargs):
                super().__init__(**kwargs)
                self.params = dict(kwargs.get("params", {}))

    assert vars(PretrainedConfig).get("__init_subclass__") is before
    assert WithDict(params={"x": 1}).params == {"x": 1}
    if patched:  # transformers 5: outside the block such a class is refused
        with pytest.raises(ValueError, match="mutable default"):

            class Refused(PretrainedConfig):
                params: dict = {}  # noqa: RUF012


def test_with_post_init_calls_post_init_once_and_keeps_the_class_name():
    calls = []

    class Model:
        def __init__(self, config):
            self.config = config

        def post_init(self):
            calls.append(1)
            self.all_tied_weights_keys = {}

    wrapped = with_post_init(Model)
    assert with_post_init(Model) is wrapped and wrapped.__name__ == "Model"
    made = wrapped("config")
    if wrapped is not Model:
        assert issubclass(wrapped, Model) and calls == [1] and made.config == "config"


# -- upstream: a tiny JanusFlow from the checkout ------------------------------------------------------------------


def _byte_level_tokenizer(directory: Path) -> None:
    """A byte-level BPE (DeepSeek's kind) with JanusFlow's special tokens, BOS prepended, saved as the release
    saves it: tokenizer.json + a tokenizer_config.json naming LlamaTokenizerFast."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [" ".join(WORDS), "User: Assistant: describe the picture", "what is this a red cube"] * 5
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIAL,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))  # fmt: skip
    bos = SPECIAL[0]
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, tok.token_to_id(bos))])
    tok.save(str(directory / "tokenizer.json"))
    config = {"bos_token": bos, "eos_token": SPECIAL[1], "pad_token": None, "unk_token": None,
              "clean_up_tokenization_spaces": False, "model_max_length": 16384, "tokenizer_class": "LlamaTokenizerFast"}
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    (directory / "special_tokens_map.json").write_text(json.dumps({"bos_token": bos, "eos_token": SPECIAL[1],
                                                                   "additional_special_tokens": SPECIAL[3:]}))


def _save_tiny_janusflow(root: Path, directory: Path) -> Path:
    from diffusers import AutoencoderKL

    from entroprobe.models.upstream import import_from

    with dataclass_safe_configs():
        modeling = import_from(root, "janus.janusflow.models.modeling_vlm", JanusFlowAdapter.upstream)
    _byte_level_tokenizer(directory)
    vocab = len(json.loads((directory / "tokenizer.json").read_text())["model"]["vocab"]) + len(SPECIAL)
    # the released config.json as transformers 4.38 wrote it: only the keys that differ from the defaults
    config = {
        "architectures": ["MultiModalityCausalLM"], "model_type": "multi_modality", "torch_dtype": "float32",
        "language_config": {"model_type": "llama", "hidden_size": 2048, "intermediate_size": 64, "num_hidden_layers": 2,
                            "num_attention_heads": 16, "num_key_value_heads": 1, "max_position_embeddings": 512,
                            "vocab_size": vocab, "torch_dtype": "float32"},
        "vision_und_enc_config": {"cls": "CLIPVisionTower", "model_type": "vision_und_enc",
                                  "params": {"image_size": 32, "model_name": "siglip_large_patch16_384",
                                             "select_feature": "same", "select_layer": 1}},
        "vision_gen_enc_config": {"cls": "ShallowUViTEncoder", "model_type": "vision_gen_enc",
                                  "params": {"input_channels": 4, "stride": 2, "kernel_size": 2, "padding": 0,
                                             "block_out_channels": [768], "layers_in_middle": 1, "hidden_size": 2048,
                                             "use_mid_block": True}},
        "vision_gen_dec_config": {"cls": "ShallowUViTDecoder", "model_type": "vision_gen_dec",
                                  "params": {"in_channels": 768, "out_channels": 4, "block_out_channels": [768],
                                             "upsamples": 1, "hidden_size": 2048, "use_mid_block": False}},
    }  # fmt: skip
    torch.manual_seed(0)
    model = modeling.MultiModalityCausalLM(modeling.MultiModalityConfig(**config))
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "VLMImageProcessor", "image_size": 32, "min_size": 14, "image_mean": [0.5] * 3,
        "image_std": [0.5] * 3, "rescale_factor": 1 / 255, "do_normalize": True, "processor_class": "VLChatProcessor"}))
    (directory / "processor_config.json").write_text(json.dumps({
        "add_special_token": False, "ignore_id": -100, "image_tag": "<image_placeholder>", "mask_prompt": True,
        "num_image_tokens": 4, "processor_class": "VLChatProcessor", "sft_format": "deepseek"}))  # fmt: skip
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8), layers_per_block=1,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=4, sample_size=8, scaling_factor=0.13025)  # fmt: skip
    vae.save_pretrained(directory / "vae")
    return directory


@pytest.fixture(scope="module")
def janus_root():
    root = checkout_or_skip("Janus")
    needs("einops", "timm", "diffusers")  # attrdict imports only after janus/__init__.py patches collections
    return root


@pytest.fixture(scope="module")
def tiny_dir(janus_root, tmp_path_factory):
    return _save_tiny_janusflow(janus_root, tmp_path_factory.mktemp("tiny_janusflow"))


@pytest.fixture(scope="module")
def flow(janus_root, tiny_dir):
    return load_model(f"janusflow:{tiny_dir}", repo=str(janus_root), **ARGS)


def test_load_the_released_layout_and_its_tokenizer_as_written(flow, tiny_dir):
    from tokenizers import Tokenizer

    assert (flow.num_layers, flow.d_model, flow.final_norm) == (2, 2048, True)
    text = "User: describe the picture\n\nAssistant:"
    assert flow.tokenizer.encode(text) == Tokenizer.from_file(str(tiny_dir / "tokenizer.json")).encode(text).ids
    assert flow.vae_source == str(tiny_dir / "vae") and flow.dtype == torch.float32
    from safetensors.torch import load_file

    saved, loaded = load_file(str(tiny_dir / "model.safetensors")), flow.model.state_dict()
    assert set(saved) == set(loaded)  # every weight loaded from the file, none initialised anew
    assert all(torch.equal(saved[key], loaded[key]) for key in saved)


def test_a_missing_file_names_it_and_the_layout(janus_root, tiny_dir, tmp_path):
    for name in ("config.json", "processor_config.json", "model.safetensors"):
        partial = tmp_path / name
        partial.mkdir()
        for item in tiny_dir.iterdir():
            if item.name != name:
                (partial / item.name).symlink_to(item)
        with pytest.raises(LoadError, match=f"{name}|no weights.*model.safetensors"):
            load_model(f"janusflow:{partial}", repo=str(janus_root), **ARGS)
    with pytest.raises(LoadError, match="SDXL VAE.*nowhere"):
        load_model(f"janusflow:{tiny_dir}", repo=str(janus_root), vae=str(tmp_path / "nowhere"), **ARGS)


def test_encode_states_equal_an_independent_capture(flow):
    layers = list(flow.decoder.layers)
    with captured(layers) as calls:
        states = flow.encode_text("a red cube")
    ids = flow.tokenizer.encode("a red cube")
    assert states.token_ids.tolist() == ids and states.states.shape == (3, len(ids), 2048)
    reference = stacked(calls[0])[:, 0]  # (L + 1, T, d) raw
    torch.testing.assert_close(states.states[:-1], reference[:-1])
    torch.testing.assert_close(states.states[-1], flow.decoder.norm(reference[-1]))


def test_encode_image_returns_the_models_own_image_positions(flow):
    with captured(list(flow.decoder.layers)) as calls:
        states = flow.encode_image(random_image((20, 30)), "what is this")
    batch = flow.processor(conversations=[{"role": "User", "content": "<image_placeholder>\nwhat is this"},
                                          {"role": "Assistant", "content": ""}], images=[random_image((20, 30))])  # fmt: skip
    where = torch.nonzero(batch.input_ids[0] == flow.processor.image_id).squeeze(1)
    assert states.num_tokens == flow.processor.num_image_tokens == 4 and states.positions.tolist() == where.tolist()
    torch.testing.assert_close(states.states[1:-1], stacked(calls[0])[1:-1, 0, where])
    assert not torch.allclose(states.states[0], flow.encode_image(random_image((20, 30), seed=1)).states[0])


def test_text_response_is_one_pass_over_prompt_and_greedy_answer(flow):
    picture = random_image()
    with captured(list(flow.decoder.layers)) as calls:
        response = flow.respond_text("what is this", picture, max_new_tokens=3, seed=0)
    batch = flow.processor(conversations=[{"role": "User", "content": "<image_placeholder>\nwhat is this"},
                                          {"role": "Assistant", "content": ""}], images=[picture])  # fmt: skip
    n_prompt, new = batch.input_ids.shape[1], response.output_ids
    assert 1 <= new.shape[0] <= 3 and response.response.positions.tolist() == list(range(n_prompt, n_prompt + len(new)))
    forced = stacked(calls[-1])[:, 0]  # the teacher-forced pass: prompt + every generated token
    assert forced.shape[1] == n_prompt + len(new)
    torch.testing.assert_close(forced[:-1, :n_prompt], stacked(calls[0])[:-1, 0])  # generation's prefill saw the same
    torch.testing.assert_close(response.response.states[:-1], forced[:-1, n_prompt:])
    logits = flow.model.language_model.lm_head(flow.decoder.norm(forced[-1, n_prompt - 1 : n_prompt + len(new) - 1]))
    assert logits.argmax(-1).tolist() == new.tolist()  # greedy, as the README generates
    image = flow.encode_image(picture, "what is this")
    torch.testing.assert_close(response.prompt.states[:, :4], image.states)  # the image tokens, same states
    question = flow.tokenizer("what is this", add_special_tokens=False)["input_ids"]
    assert response.prompt.token_ids[4:].tolist() == question
    again = flow.respond_text("what is this", picture, max_new_tokens=3, seed=0)
    assert again.output == response.output and torch.equal(again.response.states, response.response.states)
    text_only = flow.respond_text("what is this", max_new_tokens=2)
    assert text_only.prompt.token_ids.tolist() == question


def test_the_flow_runs_the_readme_s_time_grid_and_guidance_batch(flow, monkeypatch):
    encoder, seen = flow.model.vision_gen_enc_model, []
    original = encoder.forward

    def recording(x, timesteps):
        seen.append((tuple(x.shape), timesteps.tolist()))
        return original(x, timesteps)

    monkeypatch.setattr(encoder, "forward", recording)
    flow.respond_image("a red cube", seed=0)
    assert [shape for shape, _ in seen] == [(2, 4, LATENT, LATENT)] * STEPS  # conditional + unconditional
    assert [t for _, t in seen] == [[pytest.approx(s / STEPS * 1000)] * 2 for s in range(STEPS)]


def test_the_unconditional_row_sees_bos_the_time_token_and_the_image(flow, monkeypatch):
    """README: ``tokens[batchsize:, 1:] = pad_id`` and ``attention_mask[batchsize:, 1:inputs_embeds.shape[1]] = 0``."""
    seen, forward = [], flow.decoder.forward

    def recording(**inputs):
        seen.append(inputs)
        return forward(**inputs)

    monkeypatch.setattr(flow.decoder, "forward", recording)
    flow.respond_image("a red cube", seed=0)
    ids = flow.tokenizer.encode(flow._template("a red cube", "") + flow.processor.image_gen_tag)
    n_prompt = len(ids) - 1  # the generation tag is not fed
    mask, embeds = seen[0]["attention_mask"], seen[0]["inputs_embeds"]
    assert mask.shape == (2, n_prompt + 1 + GRID * GRID) and bool(mask[0].all())
    assert mask[1, 1:n_prompt].sum() == 0 and bool(mask[1, :1].all()) and bool(mask[1, n_prompt:].all())
    table = flow.decoder.get_input_embeddings()
    torch.testing.assert_close(embeds[0, :n_prompt], table(torch.tensor(ids[:-1])).to(embeds.dtype))
    pad = table(torch.tensor([flow.processor.pad_id])).to(embeds.dtype)
    torch.testing.assert_close(embeds[1, 1:n_prompt], pad.expand(n_prompt - 1, -1))


def test_image_response_is_the_last_steps_conditional_row(flow, monkeypatch):
    layers = list(flow.decoder.layers)
    with captured(layers) as calls:
        response = flow.respond_image("a red cube", seed=3)
    assert len(calls) == STEPS  # one full pass per ODE step, conditional and unconditional rows together
    last = stacked(calls[-1])[:, 0]  # the conditional row of the last step
    total = last.shape[1]
    assert response.response.positions.tolist() == list(range(total - GRID * GRID, total))
    torch.testing.assert_close(response.response.states[:-1], last[:-1, -GRID * GRID:])
    torch.testing.assert_close(response.response.states[-1], flow.decoder.norm(last[-1, -GRID * GRID:]))
    n_prompt = total - 1 - GRID * GRID
    ids = flow.tokenizer.encode(flow._template("a red cube", "") + flow.processor.image_gen_tag)
    assert n_prompt == len(ids) - 1 and response.prompt.positions.max() < n_prompt
    assert response.prompt.token_ids.tolist() == flow.tokenizer("a red cube", add_special_tokens=False)["input_ids"]
    torch.testing.assert_close(response.prompt.states[:-1], last[:-1, response.prompt.positions])
    assert response.output.size == (8, 8)
    again = flow.respond_image("a red cube", seed=3)
    assert np.array_equal(np.asarray(again.output), np.asarray(response.output))
    assert torch.equal(again.response.states, response.response.states)
    other = flow.respond_image("a red cube", seed=4)
    assert not torch.equal(other.response.states, response.response.states)


def test_guidance_changes_the_velocity_as_the_readme_combines_it(flow, monkeypatch):
    """Each Euler step is the README's: ``z += dt * (w * v_cond - (w - 1) * v_uncond)``, both rows seeing the same z."""
    inputs, velocities = [], []
    encoder, decoder = flow.model.vision_gen_enc_model, flow.model.vision_gen_dec_model
    enc_forward, dec_forward = encoder.forward, decoder.forward

    def encode(x, t):  # the latent each step starts from, (2, C, S, S)
        inputs.append(x.clone())
        return enc_forward(x, t)

    def decode(*args):  # the velocity of each row, (2, C, S, S)
        velocities.append(dec_forward(*args))
        return velocities[-1]

    monkeypatch.setattr(encoder, "forward", encode)
    monkeypatch.setattr(decoder, "forward", decode)
    for weight in (2.0, 1.0):
        inputs.clear(), velocities.clear()
        response = flow.respond_image("a red cube", seed=3, cfg_weight=weight)
        assert response.extra["cfg_weight"] == weight and len(inputs) == len(velocities) == STEPS
        for step in range(STEPS - 1):
            z, (cond, uncond) = inputs[step][0], velocities[step]
            assert torch.equal(inputs[step + 1][0], inputs[step + 1][1])  # one z for both rows
            torch.testing.assert_close(inputs[step + 1][0], z + (weight * cond - (weight - 1) * uncond) / STEPS)
    with pytest.raises(InputError, match="Unknown image-gen setting"):
        flow.respond_image("a red cube", guidance=3)


def test_errors_name_the_item(flow, tmp_path):
    with pytest.raises(ItemError, match="empty"):
        flow.respond_image("  ")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ItemError, match="unreadable image"):
        flow.encode_image(str(bad))
    with pytest.raises(ItemError, match="longer than the model's context"):
        flow.encode_text(" ".join(["cube"] * 600))
    with pytest.raises(InputError, match="neither"):
        flow.respond_text(None)


def test_a_whole_run_records_defaults_and_the_checkout(janus_root, tiny_dir, tmp_path):
    frame, manifest = run_all_tasks(f"janusflow:{tiny_dir}", {"repo": str(janus_root), **ARGS}, tmp_path / "run",
                                    batch_size=2)  # fmt: skip
    model = manifest["model"]
    head = subprocess.run(["git", "-C", str(janus_root), "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout
    assert model["upstream"]["commit"] == head.strip() and model["upstream"]["repository"] == "deepseek-ai/Janus"
    defaults = model["defaults"]
    assert defaults["image-gen"]["cfg_weight"] == {"value": 2.0, "source": IMAGE_DEFAULTS["cfg_weight"].source}
    assert defaults["image-gen"]["num_inference_steps"] == {"value": STEPS, "source": "--model-args", "default": 30}
    assert defaults["text-gen"]["do_sample"]["value"] is False
    assert len(frame) > 0


def test_a_batch_of_images_draws_what_each_prompt_draws_alone(flow, monkeypatch):
    """One flow for prompts of different lengths: left-padded with their positions kept, each from its own seed."""
    texts, seeds = ["a red cube", "a cat", "the blue dog sat on the mat"], [3, 4, 5]
    calls = []
    forward = flow.decoder.forward

    def counted(**inputs):
        calls.append(inputs["inputs_embeds"].shape[0])
        return forward(**inputs)

    monkeypatch.setattr(flow.decoder, "forward", counted)
    batched = flow.respond_image_batch(texts, seeds=seeds)
    assert calls == [2 * len(texts)] * STEPS  # every prompt's two rows in each step's one pass
    for text, seed, response in zip(texts, seeds, batched):
        same_as_alone(response, flow.respond_image(text, seed=seed))
    with pytest.raises(ItemError, match="empty"):
        flow.respond_image_batch(["a cat", " "], seeds=[1, 2])


@pytest.mark.parametrize("sampled", [False, True])
def test_a_batch_of_text_replies_answers_what_each_prompt_answers_alone(janus_root, tiny_dir, sampled, monkeypatch):
    """One generate over the prompts' embeddings (left-padded) and one teacher-forced pass (right-padded), text and
    image prompts of different lengths; a sampled answer draws from its own seed."""
    flow = load_model(f"janusflow:{tiny_dir}", repo=str(janus_root), **ARGS, do_sample=str(sampled).lower())
    prompts = [("a red cube", None), ("what is this", random_image()), ("the blue dog sat on the mat", None),
               (None, random_image(seed=2))]  # fmt: skip
    seeds = [3, 4, 5, 6]
    calls = count_embedded_calls(monkeypatch, flow.model.language_model, flow.decoder)
    batched = flow.respond_text_batch(prompts, max_new_tokens=4, seeds=seeds)
    assert calls[0] == ("generate", 4) and calls[-1] == ("pass", 4)  # the whole batch in each
    assert [kind for kind, _ in calls].count("pass") == 1 and all(n == 4 for _, n in calls)
    for (text, image), seed, response in zip(prompts, seeds, batched):
        same_as_alone(response, flow.respond_text(text, image, max_new_tokens=4, seed=seed))
    if sampled:  # the seed decides what is drawn
        answers = {tuple(flow.respond_text("a red cube", max_new_tokens=4, seed=s).output_ids.tolist()) for s in range(6)}
        assert len(answers) > 1
    with pytest.raises(InputError, match="needs a text prompt, an image, or both"):
        flow.respond_text_batch([("a cat", None), (" ", None)], max_new_tokens=2, seeds=[1, 2])


def test_a_batch_of_prompts_is_encoded_in_one_pass(flow):
    from upstream_checks import check_encode_batches

    check_encode_batches(flow, list(flow.decoder.layers), ["a red cube", "the blue dog sat on the mat", "a cat"],
                         [random_image((20, 30)), random_image(seed=2), random_image((40, 40), seed=3)],
                         ["what is this", None, "and this one here"])  # fmt: skip
