"""The omnigen2 family: CI checks without a checkout, and a tiny random OmniGen2 built from the checkout's own classes
(and transformers' Qwen2.5-VL), saved as the released pipeline folder and loaded back through ``load_model``.

The tiny pipeline: a Qwen2.5-VL MLLM (2 decoder layers, d = 32; a 2-block vision tower with 4-pixel patches merged
2x2), a byte-level BPE tokenizer with Qwen's special tokens and a ChatML template in ``processor/``; an
``OmniGen2Transformer2DModel`` with 2 joint blocks and one block per refiner (d = 32, patch 2); a 2-block diffusers
``AutoencoderKL`` (latent scale 2) and the checkout's Euler flow-matching scheduler. 32x32 images: a 16x16 latent,
8x8 = 64 image patches; 3 denoising steps in the tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import WORDS, random_image
from upstream_checks import captured, checkout_or_skip, needs, run_all_tasks, same_as_alone, stacked

from entroprobe.errors import InputError, ItemError, LoadError
from entroprobe.models import load_model
from entroprobe.models.compat.omnigen2 import torch_rmsnorm_without_cuda
from entroprobe.models.omnigen2 import (
    IMAGE_DEFAULTS,
    NEGATIVE,
    TEXT_DEFAULTS,
    OmniGen2Adapter,
)
from entroprobe.models.omnigen2_load import check_layout
from entroprobe.models.upstream import settings

STEPS, SIZE, PATCHES = 3, 32, 64  # 32x32 pixels → 16x16 latent → 8x8 patches of 2x2
ARGS = {"dtype": "float32", "device": "cpu", "num_inference_steps": str(STEPS), "height": str(SIZE), "width": str(SIZE)}
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
           "<|video_pad|>", "<|img|>"]  # fmt: skip
CHATML = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")  # fmt: skip
INDEX = {"_class_name": "OmniGen2Pipeline", "_diffusers_version": "0.33.1",
         "mllm": ["transformers", "Qwen2_5_VLForConditionalGeneration"],
         "processor": ["transformers", "Qwen2_5_VLProcessor"],
         "scheduler": ["scheduling_flow_match_euler_discrete", "FlowMatchEulerDiscreteScheduler"],
         "transformer": ["transformer_omnigen2", "OmniGen2Transformer2DModel"], "vae": ["diffusers", "AutoencoderKL"]}


# -- CI: no checkout ---------------------------------------------------------------------------------------------


def test_class_attributes_and_capabilities():
    assert OmniGen2Adapter.family == "omnigen2"
    assert OmniGen2Adapter.capabilities == {("encode", "text"), ("encode", "image"), ("text-gen", "text"),
                                            ("text-gen", "image"), ("image-gen", "text")}  # fmt: skip
    spec = OmniGen2Adapter.upstream
    assert (spec.name, spec.github, spec.packages) == ("OmniGen2", "VectorSpaceLab/OmniGen2", ("omnigen2",))
    assert spec.tested[0] == ("0f72fa92564d9f8ba76f53fcc3c05aca2372458f", "2025-07-05")
    import entroprobe.models.omnigen2 as module

    assert "the MLLM's decoder layers" in module.__doc__ and "the diffusion transformer's joint blocks" in module.__doc__


def test_every_default_names_the_authors_script():
    for table in (TEXT_DEFAULTS, IMAGE_DEFAULTS):
        for key, default in table.items():
            assert default.source.split(":")[0].split(" ")[0].endswith((".py", ".sh")), key
    values = {key: default.value for key, default in IMAGE_DEFAULTS.items()}
    assert values == {"num_inference_steps": 50, "text_guidance_scale": 4.0, "image_guidance_scale": 2.0,
                      "cfg_range_start": 0.0, "cfg_range_end": 1.0, "height": 1024, "width": 1024,
                      "scheduler": "euler", "negative_prompt": NEGATIVE, "max_sequence_length": 1024}  # fmt: skip
    assert NEGATIVE.startswith("(((deformed))), blurry") and NEGATIVE.endswith("censored, censor_bar")
    assert TEXT_DEFAULTS["stop_strings"].value == ("<|im_end|>", "<|img|>", "<|endoftext|>")


def test_settings_parse_command_line_strings_to_the_defaults_types():
    values, given = settings(IMAGE_DEFAULTS, {"text_guidance_scale": "5", "num_inference_steps": "10",
                                              "scheduler": "dpmsolver++"}, what="image-gen")  # fmt: skip
    assert (values["text_guidance_scale"], values["num_inference_steps"], values["scheduler"]) == (5.0, 10, "dpmsolver++")
    assert given == {"text_guidance_scale": 5.0, "num_inference_steps": 10, "scheduler": "dpmsolver++"}
    with pytest.raises(InputError, match="height='big' does not parse as int"):
        settings(IMAGE_DEFAULTS, {"height": "big"}, what="image-gen")
    assert settings(TEXT_DEFAULTS, {"stop_strings": "<|im_end|>"}, what="text-gen")[0] == {"stop_strings": ("<|im_end|>",)}


def test_a_missing_checkout_or_a_folder_that_is_not_one_says_how_to_get_it(tmp_path):
    with pytest.raises(LoadError, match="no OmniGen2 checkout at .*nowhere; clone VectorSpaceLab/OmniGen2"):
        OmniGen2Adapter.load(str(tmp_path), repo=str(tmp_path / "nowhere"))
    with pytest.raises(LoadError, match="lacks omnigen2/pipelines/omnigen2/pipeline_omnigen2.py; clone VectorSpaceLab"):
        OmniGen2Adapter.load(str(tmp_path), repo=str(tmp_path))


def test_unknown_keywords_and_bad_values_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="Unknown model argument.*guidance_scale.*accepted: repo, dtype, device"):
        OmniGen2Adapter.load(str(tmp_path), guidance_scale="3")
    with pytest.raises(InputError, match="num_inference_steps must be a positive integer"):
        OmniGen2Adapter.load(str(tmp_path), num_inference_steps="0")
    with pytest.raises(InputError, match="height must be at least 16"):
        OmniGen2Adapter.load(str(tmp_path), height="8")
    with pytest.raises(InputError, match="scheduler must be one of euler, dpmsolver\\+\\+; got 'ddim'"):
        OmniGen2Adapter.load(str(tmp_path), scheduler="ddim")
    with pytest.raises(InputError, match="needs a pipeline folder"):
        OmniGen2Adapter.load(None)


def _fake_release(directory: Path) -> Path:
    """Empty files where the released pipeline folder has them (enough for the layout check)."""
    for name in ("mllm/config.json", "mllm/model.safetensors", "processor/preprocessor_config.json",
                 "processor/tokenizer.json", "transformer/config.json", "transformer/diffusion_pytorch_model.safetensors",
                 "vae/config.json", "vae/diffusion_pytorch_model.safetensors", "scheduler/scheduler_config.json"):
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text("{}")
    (directory / "model_index.json").write_text(json.dumps(INDEX))
    return directory


def test_the_layout_check_names_a_missing_file_and_a_wrong_class(tmp_path):
    assert check_layout(_fake_release(tmp_path / "ok"))["transformer"][1] == "OmniGen2Transformer2DModel"
    for name in ("model_index.json", "mllm/config.json", "scheduler/scheduler_config.json"):
        folder = _fake_release(tmp_path / name.replace("/", "_"))
        (folder / name).unlink()
        with pytest.raises(LoadError, match=f"lacks {name}; expected the released OmniGen2 pipeline folder"):
            check_layout(folder)
    folder = _fake_release(tmp_path / "no_weights")
    (folder / "transformer/diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(LoadError, match="transformer has no weights \\(diffusion_pytorch_model.safetensors"):
        check_layout(folder)
    folder = _fake_release(tmp_path / "wrong")
    (folder / "model_index.json").write_text(json.dumps({**INDEX, "vae": ["diffusers", "AutoencoderTiny"]}))
    with pytest.raises(LoadError, match="vae must be \\[module, 'AutoencoderKL'\\]"):
        check_layout(folder)
    with pytest.raises(LoadError, match="no OmniGen2 pipeline folder at"):
        check_layout(tmp_path / "absent")


def test_an_answer_is_cut_where_generate_s_stop_string_test_ends_it():
    """OmniGen2's batched answers are cut with generate's own stop-string test over prompt + answer: a stop string
    that begins in the prompt's tail ends the answer at its first token, and one inside the answer at its end."""
    from tiny_models import byte_level_qwen_tokenizer

    from entroprobe.models.omnigen2 import _through_stop

    tokenizer = byte_level_qwen_tokenizer()
    prompt = torch.tensor(tokenizer("what is this\n")["input_ids"])
    answer = torch.tensor(tokenizer("\na cat<|im_end|><|endoftext|><|endoftext|>")["input_ids"])
    assert _through_stop(tokenizer, prompt, answer, ["\n\n"]).tolist() == answer[:1].tolist()  # "\n" + "\n"
    cut = _through_stop(tokenizer, prompt, answer, ["<|im_end|>"])
    assert tokenizer.decode(cut.tolist()) == "\na cat<|im_end|>"  # the padding after it goes
    assert _through_stop(tokenizer, prompt, answer, ["dog"]).tolist() == answer.tolist()  # never stopped: all of it


def test_the_rmsnorm_shim_switches_off_triton_only_without_cuda():
    fake = types.SimpleNamespace(_triton_available=True)
    assert torch_rmsnorm_without_cuda(fake, cuda_available=True) is False and fake._triton_available is True
    assert torch_rmsnorm_without_cuda(fake, cuda_available=False) is True and fake._triton_available is False
    assert torch_rmsnorm_without_cuda(fake, cuda_available=False) is False  # idempotent: nothing left to patch
    assert torch_rmsnorm_without_cuda(types.SimpleNamespace(), cuda_available=False) is False


# -- upstream: a tiny OmniGen2 from the checkout -------------------------------------------------------------------


def _tokenizer():
    """A byte-level BPE (Qwen's kind) with Qwen2.5-VL's special tokens and a ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [" ".join(WORDS), "system user assistant You are a helpful assistant that generates images",
              "deformed blurry what is this a red cube"] * 5
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=320, special_tokens=SPECIAL,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))  # fmt: skip
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   chat_template=CHATML)  # fmt: skip


def _save_tiny_omnigen2(root: Path, directory: Path) -> Path:
    from diffusers import AutoencoderKL
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLImageProcessor,
    )

    from entroprobe.models.upstream import import_from

    spec = OmniGen2Adapter.upstream
    torch_rmsnorm_without_cuda(import_from(root, "omnigen2.utils.import_utils", spec))
    model = import_from(root, "omnigen2.models.transformers.transformer_omnigen2", spec)
    schedulers = import_from(root, "omnigen2.schedulers.scheduling_flow_match_euler_discrete", spec)
    tok = _tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL}
    # processor/ as the release has it: tokenizer files, preprocessor_config.json, chat_template.json
    tok.save_pretrained(directory / "processor")
    Qwen2VLImageProcessor(patch_size=4, merge_size=2, temporal_patch_size=2, min_pixels=8 * 8, max_pixels=32 * 32
                          ).save_pretrained(directory / "processor")  # fmt: skip
    (directory / "processor" / "chat_template.json").write_text(json.dumps({"chat_template": CHATML}))
    special = {"eos_token_id": ids["<|im_end|>"], "pad_token_id": ids["<|endoftext|>"], "bos_token_id": ids["<|endoftext|>"]}
    config = Qwen2_5_VLConfig(
        text_config={"vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 2048,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                     **special},
        vision_config={"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "patch_size": 4,
                       "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 16, "out_hidden_size": 32,
                       "fullatt_block_indexes": [1]},
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"], **special)  # fmt: skip
    torch.manual_seed(0)
    mllm = Qwen2_5_VLForConditionalGeneration(config)
    mllm.generation_config.eos_token_id = special["eos_token_id"]
    mllm.generation_config.pad_token_id = special["pad_token_id"]
    mllm.save_pretrained(directory / "mllm")
    model.OmniGen2Transformer2DModel(patch_size=2, in_channels=4, hidden_size=32, num_layers=2, num_refiner_layers=1,
                                     num_attention_heads=2, num_kv_heads=1, multiple_of=16, axes_dim_rope=(4, 6, 6),
                                     axes_lens=(1024, 1024, 1024), text_feat_dim=32
                                     ).save_pretrained(directory / "transformer")  # fmt: skip
    AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8), layers_per_block=1,
                  down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                  norm_num_groups=4, sample_size=SIZE, scaling_factor=0.3611, shift_factor=0.1159
                  ).save_pretrained(directory / "vae")  # fmt: skip
    schedulers.FlowMatchEulerDiscreteScheduler().save_pretrained(directory / "scheduler")
    (directory / "model_index.json").write_text(json.dumps(INDEX, indent=2))
    return directory


@pytest.fixture(scope="module")
def og2_root():
    root = checkout_or_skip("OmniGen2")
    needs("diffusers", "einops")
    return root


@pytest.fixture(scope="module")
def tiny_dir(og2_root, tmp_path_factory):
    return _save_tiny_omnigen2(og2_root, tmp_path_factory.mktemp("tiny_omnigen2"))


@pytest.fixture(scope="module")
def og2(og2_root, tiny_dir):
    return load_model(f"omnigen2:{tiny_dir}", repo=str(og2_root), **ARGS)


def test_load_the_released_folder_with_the_checkouts_classes(og2, og2_root, tiny_dir):
    from safetensors.torch import load_file

    assert (og2.num_layers, og2.d_model) == (2, 32)
    assert type(og2.pipe).__name__ == "OmniGen2Pipeline" and type(og2.chat).__name__ == "OmniGen2ChatPipeline"
    for part in (og2.transformer, og2.pipe.scheduler):  # the two custom components: the checkout's classes
        assert type(part).__module__.startswith("omnigen2.")
        assert sys.modules[type(part).__module__].__file__.startswith(str(og2_root))
    for folder, module, name in (("mllm", og2.mllm, "model.safetensors"),
                                 ("transformer", og2.transformer, "diffusion_pytorch_model.safetensors")):
        saved, loaded = load_file(str(tiny_dir / folder / name)), module.state_dict()
        # every saved tensor is in the model (transformers renames Qwen2.5-VL's keys on loading: compare values)
        digest = lambda tensors: sorted((tuple(t.shape), round(float(t.double().sum()), 6)) for t in tensors)
        assert digest(saved.values()) == digest({id(t): t for t in loaded.values()}.values()) or \
            digest(saved.values()) == digest(loaded.values()), folder  # fmt: skip
    assert og2.chat.mllm is og2.mllm and og2.chat.transformer is og2.transformer  # one set of modules
    description = og2.describe()
    assert description["transformer"] == {"num_layers": 2, "d_model": 32, "patch_size": 2}
    assert description["final_norm_by_task"] == {"encode": True, "text-gen": True, "image-gen": False}
    assert og2.layers_for("image-gen") == len(og2.transformer.layers) and og2.layers_for("encode") == og2.num_layers


def test_encode_text_states_equal_an_independent_capture(og2):
    with captured(list(og2.decoder.layers)) as calls:
        states = og2.encode_text("a red cube")
    ids = og2.tokenizer("a red cube")["input_ids"]
    assert states.token_ids.tolist() == ids and states.states.shape == (3, len(ids), 32) and states.final_norm
    reference = stacked(calls[0])[:, 0]  # (L + 1, T, d) raw
    torch.testing.assert_close(states.states[:-1], reference[:-1])
    torch.testing.assert_close(states.states[-1], og2.decoder.norm(reference[-1]))
    with torch.no_grad():  # and transformers' own hidden states (its last entry is after the final norm)
        hidden = og2.mllm(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
    torch.testing.assert_close(states.states, torch.stack(hidden)[:, 0])


def test_encode_image_returns_the_processors_image_pad_positions(og2):
    picture = random_image((20, 30))
    with captured(list(og2.decoder.layers)) as calls:
        states = og2.encode_image(picture, "what is this")
    prompt = "<img1>: <|vision_start|><|image_pad|><|vision_end|>what is this"
    batch = og2.processor(text=[og2.chat._apply_chat_template("what is this", [picture])], images=[picture],
                          return_tensors="pt")  # fmt: skip
    assert prompt in og2.chat._apply_chat_template("what is this", [picture])
    where = torch.nonzero(batch["input_ids"][0] == og2.image_token_id).squeeze(1)
    merged = int(batch["image_grid_thw"][0].prod()) // og2.processor.image_processor.merge_size**2
    assert states.num_tokens == merged == where.numel() and states.positions.tolist() == where.tolist()
    torch.testing.assert_close(states.states[:-1], stacked(calls[0])[:-1, 0, where])
    assert not torch.allclose(states.states[0], og2.encode_image(random_image((20, 30), seed=1)).states[0])


def test_text_response_is_one_pass_over_prompt_and_greedy_answer(og2):
    picture = random_image((32, 32))
    with captured(list(og2.decoder.layers)) as calls:
        response = og2.respond_text("what is this", picture, max_new_tokens=3, seed=0)
    batch = og2.chat.prepare_inputs_for_text_generation(og2.chat._apply_chat_template("what is this", [picture]),
                                                        [picture], og2.device)  # fmt: skip
    n_prompt, new = batch["input_ids"].shape[1], response.output_ids
    assert 1 <= new.shape[0] <= 3 and response.response.positions.tolist() == list(range(n_prompt, n_prompt + len(new)))
    forced = stacked(calls[-1])[:, 0]  # the teacher-forced pass: prompt + every generated token
    assert forced.shape[1] == n_prompt + len(new)
    # generation's prefill saw the same prompt (float noise between the cached and the one-pass attention paths)
    torch.testing.assert_close(forced[:-1, :n_prompt], stacked(calls[0])[:-1, 0], atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(response.response.states[:-1], forced[:-1, n_prompt:])
    logits = og2.mllm.lm_head(og2.decoder.norm(forced[-1, n_prompt - 1 : n_prompt + len(new) - 1]))
    assert logits.argmax(-1).tolist() == new.tolist()  # greedy: the tiny mllm's generation_config.json
    image = og2.encode_image(picture, "what is this")
    n_image = image.num_tokens
    torch.testing.assert_close(response.prompt.states[:, :n_image], image.states)  # the image tokens, same states
    question = og2.tokenizer("what is this", add_special_tokens=False)["input_ids"]
    assert response.prompt.token_ids[n_image:].tolist() == question
    again = og2.respond_text("what is this", picture, max_new_tokens=3, seed=0)
    assert again.output == response.output and torch.equal(again.response.states, response.response.states)
    text_only = og2.respond_text("what is this", max_new_tokens=2)
    assert text_only.prompt.token_ids.tolist() == question and text_only.extra["model"] == "mllm"


@pytest.mark.parametrize("sampled", [False, True])
def test_a_batch_of_text_replies_answers_what_each_prompt_answers_alone(og2, sampled, monkeypatch):
    """One generate over the processor's left-padded batch (images among the prompts) and one right-padded pass;
    the stop strings end a row as alone; a sampled answer draws from its own seed."""
    if sampled:
        monkeypatch.setattr(og2.mllm.generation_config, "do_sample", True)
    prompts = [("what is this", random_image((32, 32))), ("a red cube on the mat", None),
               ("and this", random_image((32, 32), seed=2)), ("a cat", None)]  # fmt: skip
    seeds = [3, 4, 5, 6]
    with captured(list(og2.decoder.layers)) as calls:
        batched = og2.respond_text_batch(prompts, max_new_tokens=4, seeds=seeds)
    assert {stacked(c).shape[1] for c in calls} == {len(prompts)}  # every call holds the whole batch
    for (text, image), seed, response in zip(prompts, seeds, batched):
        same_as_alone(response, og2.respond_text(text, image, max_new_tokens=4, seed=seed), rtol=1e-3)
    if sampled:  # the seed decides what is drawn
        answers = {tuple(og2.respond_text("a cat", max_new_tokens=4, seed=s).output_ids.tolist()) for s in range(6)}
        assert len(answers) > 1
        return
    stop = og2.tokenizer.convert_ids_to_tokens(int(batched[1].output_ids[1]))  # a token the second answer says
    monkeypatch.setitem(og2.text, "stop_strings", (*og2.text["stop_strings"], stop))
    stopped = og2.respond_text_batch(prompts, max_new_tokens=4, seeds=seeds)
    assert stopped[1].output_ids.tolist() == batched[1].output_ids[:2].tolist()  # ends on the stop string, kept
    for (text, image), seed, response in zip(prompts, seeds, stopped):
        assert torch.equal(response.output_ids, og2.respond_text(text, image, max_new_tokens=4, seed=seed).output_ids)
    spelled = og2.tokenizer.decode(batched[0].output_ids[1:3].tolist())  # a stop string of two tokens' text
    monkeypatch.setitem(og2.text, "stop_strings", (*og2.text["stop_strings"], spelled))
    stopped = og2.respond_text_batch(prompts, max_new_tokens=4, seeds=seeds)  # generate's own test decides
    for (text, image), seed, response in zip(prompts, seeds, stopped):
        assert torch.equal(response.output_ids, og2.respond_text(text, image, max_new_tokens=4, seed=seed).output_ids)


def test_image_response_is_the_transformers_last_conditional_call(og2):
    with captured(list(og2.transformer.layers), first_input=lambda args, kwargs: args[0]) as calls:
        response = og2.respond_image("a red cube", seed=3)
    assert len(calls) == 2 * STEPS  # condition, then the negative prompt (text guidance 4 > 1, no input image)
    templated = og2.pipe._apply_chat_template("a red cube")
    cap_len = len(og2.tokenizer(templated)["input_ids"])
    last = stacked(calls[-2])[:, 0]  # the last step's conditional call
    assert last.shape[1] == cap_len + PATCHES and response.extra["cap_len"] == cap_len
    assert response.response.positions.tolist() == list(range(cap_len, cap_len + PATCHES))
    torch.testing.assert_close(response.response.states, last[:, cap_len:])  # raw: before norm_out
    assert response.response.final_norm is False and response.prompt.final_norm is False
    assert response.prompt.token_ids.tolist() == og2.tokenizer("a red cube", add_special_tokens=False)["input_ids"]
    torch.testing.assert_close(response.prompt.states, last[:, response.prompt.positions])
    assert response.prompt.positions.max() < cap_len and response.response.d_model == og2.transformer.config.hidden_size
    assert response.output.size == (SIZE, SIZE)
    with torch.no_grad():  # the authors' call with the same generator gives the same image
        own = og2.pipe(prompt="a red cube", negative_prompt=NEGATIVE, height=SIZE, width=SIZE, num_inference_steps=STEPS,
                       max_sequence_length=1024, text_guidance_scale=4.0, image_guidance_scale=2.0, cfg_range=(0.0, 1.0),
                       generator=torch.Generator().manual_seed(3), output_type="pil").images[0]  # fmt: skip
    assert np.array_equal(np.asarray(own), np.asarray(response.output))
    again = og2.respond_image("a red cube", seed=3)
    assert np.array_equal(np.asarray(again.output), np.asarray(response.output))
    assert torch.equal(again.response.states, response.response.states)
    other = og2.respond_image("a red cube", seed=4)
    assert not torch.equal(other.response.states, response.response.states)


def test_a_batch_of_images_draws_what_each_prompt_draws_alone(og2, monkeypatch):
    """One pipeline call for prompts of different lengths: each row's instruction tokens then its patches, its noise
    from its own generator; the tokenizer pads on the right there (where the transformer reads a row's tokens) and
    is left as it was."""
    texts, seeds = ["a red cube", "the blue dog sat on the mat", "a cat"], [3, 4, 5]
    tokenizer = og2.pipe.processor.tokenizer
    monkeypatch.setattr(tokenizer, "padding_side", "left")  # a checkpoint whose tokenizer pads on the left
    with captured(list(og2.transformer.layers), first_input=lambda args, kwargs: args[0]) as calls:
        batched = og2.respond_image_batch(texts, seeds=seeds)
    assert len(calls) == 2 * STEPS and all(stacked(c).shape[1] == len(texts) for c in calls)  # one call per branch
    assert tokenizer.padding_side == "left"
    for text, seed, response in zip(texts, seeds, batched):
        alone = og2.respond_image(text, seed=seed)
        assert response.extra["cap_len"] == alone.extra["cap_len"]
        same_as_alone(response, alone)
    with pytest.raises(ItemError, match="empty"):
        og2.respond_image_batch(["a cat", " "], seeds=[1, 2])


def test_cfg_range_and_guidance_decide_the_calls_of_each_step(og2):
    with captured(list(og2.transformer.layers), first_input=lambda args, kwargs: args[0]) as calls:
        response = og2.respond_image("a red cube", seed=3, cfg_range_end=0.0)  # guidance in step 0 only
    assert len(calls) == STEPS + 1
    torch.testing.assert_close(response.response.states, stacked(calls[-1])[:, 0, -PATCHES:])
    with captured(list(og2.transformer.layers), first_input=lambda args, kwargs: args[0]) as calls:
        plain = og2.respond_image("a red cube", seed=3, text_guidance_scale=1.0)
    assert len(calls) == STEPS and plain.extra["text_guidance_scale"] == 1.0
    dpm = og2.respond_image("a red cube", seed=3, scheduler="dpmsolver++")
    assert type(og2.pipe.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert not torch.equal(dpm.response.states, response.response.states)
    with pytest.raises(InputError, match="Unknown image-gen setting"):
        og2.respond_image("a red cube", guidance=3)


def test_errors_name_the_item(og2, tmp_path):
    with pytest.raises(ItemError, match="empty"):
        og2.respond_image("  ")
    with pytest.raises(ItemError, match="longer than max_sequence_length=8"):
        og2.respond_image("a red cube", max_sequence_length=8)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ItemError, match="unreadable image"):
        og2.encode_image(str(bad))
    with pytest.raises(ItemError, match="longer than the model's context"):
        og2.encode_text(" ".join(["cube"] * 2100))
    with pytest.raises(InputError, match="neither"):
        og2.respond_text(None)


def test_a_whole_run_records_defaults_and_the_checkout(og2_root, tiny_dir, tmp_path):
    frame, manifest = run_all_tasks(f"omnigen2:{tiny_dir}", {"repo": str(og2_root), **ARGS}, tmp_path / "run",
                                    batch_size=2)  # fmt: skip
    model = manifest["model"]
    head = subprocess.run(["git", "-C", str(og2_root), "rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout  # fmt: skip
    assert model["upstream"]["commit"] == head.strip() and model["upstream"]["repository"] == "VectorSpaceLab/OmniGen2"
    defaults = model["defaults"]
    assert defaults["image-gen"]["text_guidance_scale"] == {"value": 4.0,
                                                           "source": IMAGE_DEFAULTS["text_guidance_scale"].source}
    assert defaults["image-gen"]["num_inference_steps"] == {"value": STEPS, "source": "--model-args", "default": 50}
    assert defaults["text-gen"]["stop_strings"]["source"] == TEXT_DEFAULTS["stop_strings"].source
    image_rows = frame[frame["task"] == "image-gen"]
    assert len(image_rows) > 0 and set(frame[frame["task"] != "image-gen"]["num_layers"]) == {2}


def test_a_batch_of_prompts_is_encoded_in_one_pass(og2):
    from upstream_checks import check_encode_batches

    check_encode_batches(og2, list(og2.decoder.layers), ["a red cube", "the blue dog sat on the mat", "a cat"],
                         [random_image((32, 32)), random_image((48, 32), seed=2), random_image((32, 32), seed=3)],
                         ["what is this", None, "and this one here"], atol=1e-4)  # fmt: skip
