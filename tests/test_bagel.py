"""The bagel family: CI checks without a checkout, and a tiny random BAGEL built from the Bagel checkout's own
classes, saved in the released BAGEL-7B-MoT layout and loaded back through ``load_model``.

The tiny model: a 2-layer MoT Qwen2 decoder (d = 64, 4 heads, 2 key/value heads), a SigLIP whose
``vit_config.json`` says 2 layers (the loader drops one, as the authors' does: 1 layer, width 32, patch 14), and a
FLUX-style ``AutoEncoder`` of the checkout's ``modeling/autoencoder.py`` at width 32 with 4 latent channels, whose
``AutoEncoderParams`` go in ``ae_params.json`` (``load_ae`` is full-size only). Its tokenizer is a byte-level BPE
saved as ``vocab.json`` + ``merges.txt`` (what ``Qwen2Tokenizer`` reads); ``add_special_tokens`` adds BAGEL's four
tokens. Images are generated at 64x64 (4x4 = 16 VAE tokens) with 3 timesteps (2 Euler steps).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import WORDS, random_image
from upstream_checks import captured, checkout_or_skip, needs, run_all_tasks, stacked

from entroprobe.errors import InputError, ItemError, LoadError
from entroprobe.models.bagel import IMAGE_DEFAULTS, TEXT_DEFAULTS, BagelAdapter
from entroprobe.models.bagel_load import check_layout
from entroprobe.models.compat import bagel as compat
from entroprobe.models.upstream import settings

STEPS, SIZE = 3, 64
AE = {"resolution": SIZE, "in_channels": 3, "downsample": 8, "ch": 32, "out_ch": 3, "ch_mult": [1, 1, 1, 1],
      "num_res_blocks": 1, "z_channels": 4, "scale_factor": 0.3611, "shift_factor": 0.1159}  # fmt: skip
LLM = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128,
       "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 4096,
       "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "vocab_size": 320, "hidden_act": "silu",
       "tie_word_embeddings": False, "torch_dtype": "bfloat16"}  # fmt: skip
VIT = {"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
       "num_attention_heads": 2, "image_size": 980, "patch_size": 14, "hidden_act": "gelu_pytorch_tanh",
       "layer_norm_eps": 1e-6, "num_channels": 3}  # fmt: skip
ARGS = {"device": "cpu", "dtype": "float32", "num_timesteps": str(STEPS), "image_size": f"{SIZE}x{SIZE}"}


# -- CI: no checkout ---------------------------------------------------------------------------------------------


def test_class_attributes_and_capabilities():
    assert BagelAdapter.family == "bagel"
    assert BagelAdapter.capabilities == {("encode", "text"), ("encode", "image"), ("text-gen", "text"),
                                         ("text-gen", "image"), ("image-gen", "text")}  # fmt: skip
    spec = BagelAdapter.upstream
    assert (spec.name, spec.github, spec.marker) == ("Bagel", "ByteDance-Seed/Bagel", "modeling/bagel/bagel.py")
    assert spec.tested[0] == ("056b5fd51a88c1eb4547318609e25d40080fcf87", "2025-10-27")


def test_every_default_has_its_source_in_the_authors_scripts():
    for table in (TEXT_DEFAULTS, IMAGE_DEFAULTS):
        for key, default in table.items():
            assert any(f in default.source for f in ("inference.ipynb", "app.py", "inferencer.py")), key
    values = {key: default.value for key, default in IMAGE_DEFAULTS.items()}
    assert values == {"cfg_text_scale": 4.0, "cfg_img_scale": 1.0, "cfg_interval": (0.4, 1.0), "timestep_shift": 3.0,
                      "num_timesteps": 50, "cfg_renorm_min": 0.0, "cfg_renorm_type": "global",
                      "image_size": (1024, 1024)}  # fmt: skip
    assert TEXT_DEFAULTS["do_sample"].value is False and TEXT_DEFAULTS["text_temperature"].value == 0.3


def test_settings_parse_command_line_strings_to_the_defaults_types():
    given = {"cfg_interval": "0.2,0.9", "image_size": "512x768", "num_timesteps": "10", "cfg_text_scale": "6"}
    values, parsed = settings(IMAGE_DEFAULTS, given, what="image-gen")
    assert values["cfg_interval"] == (0.2, 0.9) and values["image_size"] == (512, 768)
    assert values["num_timesteps"] == 10 and parsed["cfg_text_scale"] == 6.0 and values["timestep_shift"] == 3.0
    with pytest.raises(InputError, match="num_timesteps='x' does not parse as int"):
        settings(IMAGE_DEFAULTS, {"num_timesteps": "x"}, what="image-gen")
    assert settings(TEXT_DEFAULTS, {"do_sample": "true"}, what="text-gen")[0]["do_sample"] is True


def test_a_missing_checkout_or_a_folder_that_is_not_one_says_how_to_get_it(tmp_path):
    with pytest.raises(LoadError, match=r"no Bagel checkout at .*nowhere; clone ByteDance-Seed/Bagel and pass repo=PATH"):
        BagelAdapter.load(str(tmp_path), repo=str(tmp_path / "nowhere"))
    with pytest.raises(LoadError, match="lacks modeling/bagel/bagel.py; clone ByteDance-Seed/Bagel"):
        BagelAdapter.load(str(tmp_path), repo=str(tmp_path))


def test_unknown_keywords_and_bad_values_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="Unknown model argument.*guidance.*accepted: repo, dtype"):
        BagelAdapter.load(str(tmp_path), guidance="3")
    with pytest.raises(InputError, match="num_timesteps must be at least 2"):
        BagelAdapter.load(str(tmp_path), num_timesteps="1")
    with pytest.raises(InputError, match="cfg_renorm_type must be one of global, channel, text_channel"):
        BagelAdapter.load(str(tmp_path), cfg_renorm_type="norm")
    with pytest.raises(InputError, match="image_size must be HEIGHTxWIDTH"):
        BagelAdapter.load(str(tmp_path), image_size="64")
    with pytest.raises(InputError, match="prompt_tokens must be one of question, template"):
        BagelAdapter.load(str(tmp_path), prompt_tokens="all", repo=str(tmp_path / "nowhere"))
    with pytest.raises(InputError, match="needs a checkpoint directory"):
        BagelAdapter.load(None)


def test_each_missing_file_of_the_released_layout_is_named(tmp_path):
    names = ["llm_config.json", "vit_config.json", "ae.safetensors", "vocab.json", "merges.txt", "ema.safetensors"]
    for name in names:
        folder = tmp_path / name
        folder.mkdir()
        for other in names:
            if other != name:
                (folder / other).write_text("{}")
        with pytest.raises(LoadError, match=f"lacks {name}.*released BAGEL-7B-MoT layout"):
            check_layout(folder)
    full = tmp_path / "full"
    full.mkdir()
    for name in names:
        (full / name).write_text("{}")
    assert check_layout(full) == full / "ema.safetensors"
    (full / "model_bf16.safetensors").write_text("{}")
    assert check_layout(full, "model_bf16.safetensors") == full / "model_bf16.safetensors"
    with pytest.raises(LoadError, match="lacks other.safetensors; expected"):
        check_layout(full, "other.safetensors")
    with pytest.raises(LoadError, match="no BAGEL checkpoint directory"):
        check_layout(tmp_path / "absent")


def _reference_attention(q, k, v, cu_q, cu_k, causal):
    """Plain softmax attention per packed sequence, heads repeated for grouped keys, flash-attn's bottom-right
    causal alignment, written out with matmuls."""
    out = torch.zeros_like(q)
    groups = q.shape[1] // k.shape[1]
    for i in range(len(cu_q) - 1):
        qs, ks, vs = q[cu_q[i]:cu_q[i + 1]], k[cu_k[i]:cu_k[i + 1]], v[cu_k[i]:cu_k[i + 1]]
        ks, vs = ks.repeat_interleave(groups, 1), vs.repeat_interleave(groups, 1)
        scores = torch.einsum("qhd,khd->hqk", qs, ks) / math.sqrt(q.shape[-1])
        if causal:
            lq, lk = qs.shape[0], ks.shape[0]
            allowed = torch.arange(lk)[None] <= torch.arange(lq)[:, None] + (lk - lq)
            scores = scores.masked_fill(~allowed, float("-inf"))
        out[cu_q[i]:cu_q[i + 1]] = torch.einsum("hqk,khd->qhd", scores.softmax(-1), vs)
    return out


@pytest.mark.parametrize("causal", [False, True])
def test_the_flash_attn_stand_in_equals_plain_attention_over_packed_sequences(causal):
    torch.manual_seed(0)
    lens_q, lens_k = [3, 1, 5], [3, 4, 9]  # a prompt, a cached one-token step, a chunk after a cache
    cu_q = torch.tensor([0, *np.cumsum(lens_q)], dtype=torch.int32)
    cu_k = torch.tensor([0, *np.cumsum(lens_k)], dtype=torch.int32)
    q = torch.randn(sum(lens_q), 4, 8)
    k, v = torch.randn(sum(lens_k), 2, 8), torch.randn(sum(lens_k), 2, 8)
    got = compat.flash_attn_varlen_func(q=q, k=k, v=v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=5,
                                        max_seqlen_k=9, causal=causal)  # fmt: skip
    torch.testing.assert_close(got, _reference_attention(q, k, v, cu_q.tolist(), cu_k.tolist(), causal))
    assert got.dtype == q.dtype and got.shape == q.shape
    half = compat.flash_attn_varlen_func(q.bfloat16(), k.bfloat16(), v.bfloat16(), cu_q, cu_k, 5, 9, causal=causal)
    assert half.dtype == torch.bfloat16
    if causal:  # one query past its keys under a causal mask sees none: zeros, as flash-attn
        lone = compat.flash_attn_varlen_func(q[:3], k[:2], v[:2], torch.tensor([0, 3]), torch.tensor([0, 2]), causal=True)
        assert torch.equal(lone[0], torch.zeros_like(lone[0])) and torch.isfinite(lone).all()


def test_the_stand_in_module_exists_only_while_the_checkout_imports(monkeypatch):
    monkeypatch.delitem(sys.modules, "flash_attn", raising=False)
    monkeypatch.setattr(compat, "_flash_attn_installed", lambda: False)
    with compat.provide_flash_attn() as installed:
        import importlib.util

        from flash_attn import flash_attn_varlen_func  # type: ignore[import-not-found]

        assert installed and flash_attn_varlen_func is compat.flash_attn_varlen_func
        assert importlib.util.find_spec("flash_attn") is not None  # transformers' probes must not fail on it
    assert "flash_attn" not in sys.modules
    monkeypatch.setattr(compat, "_flash_attn_installed", lambda: True)
    with compat.provide_flash_attn() as installed:
        assert not installed and "flash_attn" not in sys.modules  # a real flash-attn is left to be imported


def test_on_device_moves_inputs_of_the_running_methods():
    seen = {}

    class Model:
        config = "config"

        def generate_text(self, past, ids, steps=3):
            seen.update(past=past, ids=ids, steps=steps)
            return ids[:, None]

        def prepare_prompts(self, ids):
            return ids

    proxy = compat.OnDevice(Model(), torch.device("meta"))
    out = proxy.generate_text("cache", torch.arange(3), steps=torch.tensor(2))
    assert seen["past"] == "cache" and seen["ids"].device.type == "meta" and seen["steps"].device.type == "meta"
    assert out.shape == (3, 1) and out.device.type == "meta" and proxy.config == "config"  # the result as it is
    assert proxy.prepare_prompts(torch.arange(2)).device.type == "cpu"  # preparing stays where the authors' does


def test_legacy_llm_config_sets_only_a_missing_pad_token_id():
    class Strict:
        def __getattr__(self, name):
            raise AttributeError(name)

    assert compat.legacy_llm_config(Strict()).pad_token_id is None
    assert compat.legacy_llm_config(types.SimpleNamespace(pad_token_id=7)).pad_token_id == 7


# -- upstream: a tiny BAGEL from the checkout ----------------------------------------------------------------------


def _tokenizer(directory: Path) -> None:
    """A byte-level BPE saved as Qwen2Tokenizer reads it (vocab.json, merges.txt)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    corpus = [" ".join(WORDS), "what is this describe the picture a red cube"] * 5
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))  # fmt: skip
    tok.model.save(str(directory))
    (directory / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "Qwen2Tokenizer",
                                                                 "model_max_length": 4096}))  # fmt: skip


def _save_tiny_bagel(root: Path, directory: Path) -> Path:
    """The released layout, written from the checkout's own classes built as app.py builds them."""
    from safetensors.torch import save_file

    from entroprobe.models.bagel_load import BUILD, import_checkout
    from entroprobe.models.compat.bagel import legacy_llm_config

    code = import_checkout(root, BagelAdapter.upstream)
    _tokenizer(directory)
    (directory / "llm_config.json").write_text(json.dumps(LLM))
    (directory / "vit_config.json").write_text(json.dumps(VIT))
    (directory / "ae_params.json").write_text(json.dumps(AE))
    bagel = code.bagel
    llm = legacy_llm_config(bagel.Qwen2Config.from_json_file(str(directory / "llm_config.json")))
    llm.qk_norm, llm.tie_word_embeddings, llm.layer_module = True, False, "Qwen2MoTDecoderLayer"
    vit = bagel.SiglipVisionConfig.from_json_file(str(directory / "vit_config.json"))
    vit.rope, vit.num_hidden_layers = False, vit.num_hidden_layers - 1
    torch.manual_seed(0)
    params = code.autoencoder.AutoEncoderParams(**AE)
    vae = code.autoencoder.AutoEncoder(params)
    config = bagel.BagelConfig(llm_config=llm, vit_config=vit, vae_config=params, **BUILD.value)
    model = bagel.Bagel(bagel.Qwen2ForCausalLM(llm), bagel.SiglipVisionModel(vit), config)
    model.vit_model.vision_model.embeddings.convert_conv2d_to_linear(vit, meta=False)
    torch.nn.init.normal_(model.llm2vae.weight, std=0.05)  # Bagel zero-initialises it: give the flow a velocity
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(directory / "ema.safetensors"))
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(directory / "ae.safetensors"))
    return directory


@pytest.fixture(scope="module")
def bagel_root():
    root = checkout_or_skip("Bagel")
    needs("accelerate", "cv2", "torchvision", "safetensors")
    return root


@pytest.fixture(scope="module")
def tiny_dir(bagel_root, tmp_path_factory):
    return _save_tiny_bagel(bagel_root, tmp_path_factory.mktemp("tiny_bagel"))


def _args(tiny_dir: Path, **more: str) -> dict[str, str]:
    return {"ae_params": str(tiny_dir / "ae_params.json"), **ARGS, **more}


@pytest.fixture(scope="module")
def bagel(bagel_root, tiny_dir):
    return BagelAdapter.load(str(tiny_dir), repo=str(bagel_root), **_args(tiny_dir))


def _first(args, kwargs):
    return kwargs["packed_query_sequence"]


def test_load_the_released_layout_as_the_authors_do(bagel, tiny_dir):
    from safetensors.torch import load_file

    assert (bagel.num_layers, bagel.d_model, bagel.final_norm) == (2, 64, True)
    assert len(bagel.model.vit_model.vision_model.encoder.layers) == VIT["num_hidden_layers"] - 1
    saved, loaded = load_file(str(tiny_dir / "ema.safetensors")), bagel.model.state_dict()
    assert set(saved) == set(loaded) and all(torch.equal(saved[k], loaded[k]) for k in saved)
    ids = bagel.new_token_ids
    assert [bagel.tokenizer.convert_ids_to_tokens(ids[k]) for k in ("bos_token_id", "eos_token_id", "start_of_image",
            "end_of_image")] == ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>"]  # fmt: skip
    assert bagel.model.latent_downsample == 16 and bagel.model.use_moe
    assert "flash_attn" not in sys.modules or not getattr(sys.modules["flash_attn"], "__entroprobe_shim__", False)


def test_the_authors_bfloat16_loads_and_runs(bagel_root, tiny_dir):
    args = {k: v for k, v in _args(tiny_dir).items() if k != "dtype"}  # the default: bfloat16, as app.py loads it
    half = BagelAdapter.load(str(tiny_dir), repo=str(bagel_root), **args)
    assert half.dtype == torch.bfloat16 and next(half.model.parameters()).dtype == torch.bfloat16
    assert half.describe()["dtype"] == "bfloat16" and "app.py" in half.describe()["dtype_source"]
    image = half.respond_image("a red cube", seed=0)
    assert torch.isfinite(image.response.states).all() and image.response.states.dtype == torch.float32
    assert torch.isfinite(half.encode_text("a red cube").states).all()


def test_missing_files_wrong_sizes_and_another_weights_name(bagel_root, tiny_dir, tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    for item in tiny_dir.iterdir():
        if item.name != "vit_config.json":
            (partial / item.name).symlink_to(item)
    with pytest.raises(LoadError, match="lacks vit_config.json"):
        BagelAdapter.load(str(partial), repo=str(bagel_root), **_args(tiny_dir))
    with pytest.raises(LoadError, match="does not fit load_ae's VAE.*ae_params"):
        BagelAdapter.load(str(tiny_dir), repo=str(bagel_root), **ARGS)  # the tiny VAE is not load_ae's size
    renamed = tmp_path / "reca"
    renamed.mkdir()
    for item in tiny_dir.iterdir():
        (renamed / ("model.safetensors" if item.name == "ema.safetensors" else item.name)).symlink_to(item)
    with pytest.raises(LoadError, match="lacks ema.safetensors.*weights=FILE .*; it has model.safetensors"):
        BagelAdapter.load(str(renamed), repo=str(bagel_root), **_args(tiny_dir))
    other = BagelAdapter.load(str(renamed), repo=str(bagel_root), weights="model.safetensors", **_args(tiny_dir))
    assert other.describe()["weights"].endswith("model.safetensors")


def test_encode_text_is_the_context_update_call(bagel):
    with captured(list(bagel.llm.layers), _first) as calls:
        states = bagel.encode_text("a red cube")
    ids = [bagel.new_token_ids["bos_token_id"], *bagel.tokenizer.encode("a red cube"), bagel.new_token_ids["eos_token_id"]]
    assert len(calls) == 1 and states.token_ids.tolist() == ids and states.positions.tolist() == list(range(len(ids)))
    reference = stacked(calls[0])  # (L + 1, T, d), packed: no batch axis
    torch.testing.assert_close(states.states[:-1], reference[:-1])
    torch.testing.assert_close(states.states[-1], bagel.llm.norm(reference[-1]))


def test_encode_image_returns_the_models_own_vit_positions(bagel):
    picture = random_image((40, 30))
    with captured(list(bagel.llm.layers), _first) as calls:
        states = bagel.encode_image(picture, "what is this")
    resized = bagel.parts.vae_transform.resize_transform(picture)
    own, _, _ = bagel.model.prepare_vit_images([0], [0], [resized], bagel.parts.vit_transform, bagel.new_token_ids)
    n = int(own["vit_token_seqlens"][0])
    assert states.num_tokens == n and states.positions.tolist() == own["packed_vit_token_indexes"].tolist()
    assert len(calls) == 1 and stacked(calls[0]).shape[1] == n + 2  # <|vision_start|>, the ViT tokens, <|vision_end|>
    torch.testing.assert_close(states.states[:-1], stacked(calls[0])[:-1, 1 : n + 1])
    assert states.token_ids is None
    assert not torch.allclose(states.states[0], bagel.encode_image(random_image((40, 30), seed=1)).states[0])


def test_text_response_is_one_teacher_forced_call_on_the_prompt_cache(bagel):
    picture = random_image((30, 30))
    with captured(list(bagel.llm.layers), _first) as calls:
        response = bagel.respond_text("what is this", picture, max_new_tokens=3, seed=0)
    n_image = calls[0]["input"].shape[0]  # the image block: start, ViT tokens, end
    question = bagel.tokenizer.encode("what is this")
    start = n_image + len(question) + 2
    new = response.output_ids.tolist()
    assert 1 <= len(new) <= 4 and response.response.positions.tolist() == list(range(start + 1, start + 1 + len(new)))
    forced = stacked(calls[-1])  # <|im_start|> + the answer, one causal call after the cached prompt
    assert forced.shape[1] == 1 + len(new)
    steps = [stacked(c) for c in calls[2:-1]]  # generate_text's one-token calls
    torch.testing.assert_close(forced[:-1, : len(steps)], torch.cat(steps, dim=1)[:-1], atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(response.response.states[:-1], forced[:-1, 1:])
    logits = bagel.model.language_model.lm_head(bagel.llm.norm(forced[-1, :-1]))
    assert logits.argmax(-1).tolist() == new[: forced.shape[1] - 1]  # greedy, as generate_text
    assert response.prompt.num_tokens == n_image - 2 + len(question)
    torch.testing.assert_close(response.prompt.states[:, : n_image - 2], bagel.encode_image(picture).states)
    assert response.prompt.positions[n_image - 2 :].tolist() == list(range(n_image + 1, n_image + 1 + len(question)))
    again = bagel.respond_text("what is this", picture, max_new_tokens=3, seed=0)
    assert again.output == response.output and torch.equal(again.response.states, response.response.states)
    text_only = bagel.respond_text("what is this", max_new_tokens=2)
    assert text_only.prompt.token_ids.tolist() == question and text_only.prompt.positions.tolist() == [1, 2, 3][: len(question)]


def test_image_response_is_the_last_steps_conditional_call(bagel):
    layers = list(bagel.llm.layers)
    with captured(layers, _first) as calls:
        response = bagel.respond_image("a red cube", seed=3)
    n_image = (SIZE // 16) ** 2
    # one text context update (the image-CFG context is a copy of it), then per step the conditional call and the
    # text-CFG call (both t in (0.4, 1])
    assert len(calls) == 1 + 2 * (STEPS - 1) and all(stacked(c).shape[1] == n_image + 2 for c in calls[1:])
    last = stacked(calls[-2])  # the last step's conditional call
    ids = bagel.tokenizer.encode("a red cube")
    start = len(ids) + 2
    assert response.response.positions.tolist() == list(range(start + 1, start + 1 + n_image))
    torch.testing.assert_close(response.response.states[:-1], last[:-1, 1 : n_image + 1])
    torch.testing.assert_close(response.response.states[-1], bagel.llm.norm_moe_gen(last[-1, 1 : n_image + 1]))
    assert response.prompt.token_ids.tolist() == ids and response.prompt.positions.tolist() == list(range(1, len(ids) + 1))
    torch.testing.assert_close(response.prompt.states[:-1], stacked(calls[0])[:-1, 1 : len(ids) + 1])
    assert response.output.size == (SIZE, SIZE) and response.extra["step"] == STEPS - 2
    again = bagel.respond_image("a red cube", seed=3)
    assert np.array_equal(np.asarray(again.output), np.asarray(response.output))
    assert torch.equal(again.response.states, response.response.states)
    assert not torch.equal(bagel.respond_image("a red cube", seed=4).response.states, response.response.states)
    plain = bagel.respond_image("a red cube", seed=3, cfg_text_scale=1.0)  # no CFG: one call per step
    assert not torch.equal(plain.response.states, response.response.states)


def test_prompt_tokens_template_measures_every_context_token(bagel, monkeypatch):
    monkeypatch.setattr(bagel, "prompt_tokens", "template")
    picture = random_image((30, 30))
    answer = bagel.respond_text("what is this", picture, max_new_tokens=2)
    start = int(answer.response.positions[0]) - 1  # the answer's <|im_start|>
    assert answer.prompt.positions.tolist() == list(range(start + 1)) and answer.extra["prompt_tokens"] == "template"
    image = bagel.respond_image("a red cube")
    ids = bagel.tokenizer.encode("a red cube")
    assert image.prompt.positions.tolist() == list(range(len(ids) + 2))
    question = bagel.tokenizer.encode("what is this")  # image block: 2 markers; text block: 2; the answer's start: 1
    assert bagel.encode_image(picture).num_tokens == answer.prompt.num_tokens - len(question) - 5  # ViT tokens only


def test_outputs_equal_the_authors_interleave_inference(bagel):
    """The inferencer's own entry point (``InterleaveInferencer.__call__``), run with the same settings and seed, gives
    the same image and the same answer as the adapter."""
    from entroprobe.models.base import seeded
    from entroprobe.models.compat.bagel import autocast

    hyper = {k: bagel.image[k] for k in ("cfg_text_scale", "cfg_img_scale", "timestep_shift", "num_timesteps",
                                          "cfg_renorm_min", "cfg_renorm_type")}  # fmt: skip
    hyper.update(cfg_interval=list(bagel.image["cfg_interval"]), image_shapes=tuple(bagel.image["image_size"]))
    picture = random_image((30, 30))
    with seeded(5), torch.no_grad(), autocast(bagel.device), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # its autocast("cuda") on a machine without CUDA
        image = bagel.inferencer(text="a red cube", **hyper)["image"]
        answer = bagel.inferencer(image=picture, text="what is this", understanding_output=True, max_think_token_n=4,
                                  do_sample=False)["text"]  # fmt: skip
    assert np.array_equal(np.asarray(image), np.asarray(bagel.respond_image("a red cube", seed=5).output))
    assert answer == bagel.respond_text("what is this", picture, max_new_tokens=3).output


def _authors_image(bagel, text, seed, **settings):
    """``InterleaveInferencer.__call__``'s image for ``text`` under ``seed``, with the adapter's settings over which
    ``settings`` are written (the inferencer's own names)."""
    from entroprobe.models.base import seeded
    from entroprobe.models.compat.bagel import autocast

    hyper = {k: bagel.image[k] for k in ("cfg_text_scale", "cfg_img_scale", "timestep_shift", "num_timesteps",
                                          "cfg_renorm_min", "cfg_renorm_type")}  # fmt: skip
    hyper.update(cfg_interval=list(bagel.image["cfg_interval"]), image_shapes=tuple(bagel.image["image_size"]))
    hyper.update(settings)
    with seeded(seed), torch.no_grad(), autocast(bagel.device), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return bagel.inferencer(text=text, **hyper)["image"]


@pytest.mark.parametrize("settings", [
    {"cfg_renorm_type": "channel", "cfg_interval": [0.0, 1.0]},
    {"cfg_renorm_type": "global", "cfg_renorm_min": 0.9, "cfg_img_scale": 2.0, "num_timesteps": 4},
    {"cfg_renorm_type": "text_channel", "cfg_renorm_min": 0.5, "cfg_img_scale": 1.5, "timestep_shift": 1.0},
    {"cfg_text_scale": 1.0, "cfg_img_scale": 2.0},
])  # fmt: skip
def test_each_setting_draws_the_image_the_authors_generate_image_draws(bagel, settings):
    """The adapter writes generate_image's loop out for a batch; under each setting (renormalisations, image CFG,
    the interval, the grid) its image is the inferencer's own."""
    given = {k: ",".join(map(str, v)) if isinstance(v, list) else str(v) for k, v in settings.items()}
    mine = bagel.respond_image("a red cube", seed=6, **given)
    theirs = _authors_image(bagel, "a red cube", 6, **settings)
    assert np.array_equal(np.asarray(mine.output), np.asarray(theirs))
    assert mine.extra["step"] == settings.get("num_timesteps", STEPS) - 2
    with pytest.raises(InputError, match="multiple of 16"):
        bagel.respond_image("a red cube", image_size="60x64")
    with pytest.raises(InputError, match="Unknown image-gen setting"):
        bagel.respond_image("a red cube", guidance=3)


def test_errors_name_the_item(bagel, tmp_path):
    with pytest.raises(ItemError, match="empty"):
        bagel.respond_image("  ")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ItemError, match="unreadable image"):
        bagel.encode_image(str(bad))
    with pytest.raises(ItemError, match="longer than the model's context"):
        bagel.encode_text(" ".join(["cube"] * 5000))
    with pytest.raises(InputError, match="neither"):
        bagel.respond_text(None)


def test_a_whole_run_records_defaults_and_the_checkout(bagel_root, tiny_dir, tmp_path):
    frame, manifest = run_all_tasks(f"bagel:{tiny_dir}", {"repo": str(bagel_root), **_args(tiny_dir)}, tmp_path / "run",
                                    batch_size=2)  # fmt: skip
    model = manifest["model"]
    head = subprocess.run(["git", "-C", str(bagel_root), "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout
    assert model["upstream"]["commit"] == head.strip() and model["upstream"]["repository"] == "ByteDance-Seed/Bagel"
    defaults = model["defaults"]
    assert defaults["image-gen"]["cfg_text_scale"] == {"value": 4.0, "source": IMAGE_DEFAULTS["cfg_text_scale"].source}
    assert defaults["image-gen"]["num_timesteps"] == {"value": STEPS, "source": "--model-args", "default": 50}
    assert defaults["text-gen"]["do_sample"]["value"] is False
    assert len(frame) > 0


# -- batches: several prompts packed side by side in each call ----------------------------------------------------


def test_a_batch_of_prompts_is_encoded_in_one_packed_call(bagel):
    texts = ["a red cube", "the blue dog sat on the mat in the sun", "x"]
    pictures = [random_image((40, 30), seed=1), random_image((64, 64), seed=2), random_image((30, 30), seed=3)]
    for batch, alone in ((lambda: bagel.encode_text_batch(texts), [bagel.encode_text(t) for t in texts]),
                         (lambda: bagel.encode_image_batch(pictures, ["what", None, "this"]),
                          [bagel.encode_image(p) for p in pictures])):  # fmt: skip
        with captured(list(bagel.llm.layers), _first) as calls:
            batched = batch()
        assert len(calls) == 1  # one packed call holds every prompt (and each image's two markers)
        assert stacked(calls[0]).shape[1] >= sum(a.num_tokens for a in alone)
        for mine, theirs in zip(batched, alone):
            assert torch.equal(mine.positions, theirs.positions)
            assert (mine.token_ids is None) == (theirs.token_ids is None)
            assert mine.token_ids is None or torch.equal(mine.token_ids, theirs.token_ids)
            torch.testing.assert_close(mine.states, theirs.states, atol=1e-4, rtol=1e-4)


class _StopsAt(torch.nn.Module):
    """An lm_head whose logits pick ``<|im_end|>`` wherever the model's would pick ``token``: answers then end at
    different steps, as a real model's do. Ids from ``words`` on (the tiny LLM's rows the tokenizer has no token
    for, which the inferencer could not decode) are never drawn."""

    def __init__(self, head, token, end, words):
        super().__init__()
        self.head, self.token, self.end, self.words = head, token, end, words

    def forward(self, x):
        logits = self.head(x)
        logits[..., self.words :] = -math.inf
        hit = logits.argmax(-1) == self.token
        logits[hit, self.end] = logits[hit].max(-1).values + 50.0
        return logits


@pytest.mark.parametrize("sampled", [False, True])
def test_a_batch_of_text_replies_answers_what_each_prompt_answers_alone(bagel_root, tiny_dir, sampled, monkeypatch):
    """Prompts of each kind (text, image and question, image alone), answers that end at different steps; a sampled
    answer draws from its own seed, and alone is what the inferencer's own gen_text draws under that seed."""
    from entroprobe.models.base import seeded
    from entroprobe.models.compat.bagel import autocast

    adapter = BagelAdapter.load(str(tiny_dir), repo=str(bagel_root), **_args(tiny_dir, do_sample=str(sampled).lower(),
                                                                                  text_temperature="1.0"))  # fmt: skip
    pictures = [random_image((30, 30), seed=4), random_image((40, 30), seed=5)]
    prompts = [("what is this", pictures[0]), ("a red cube on a table", None), (None, pictures[1]),
               ("and this one", pictures[1]), ("x", None)]  # fmt: skip
    seeds = [3, 4, 5, 6, 7]
    head = _StopsAt(adapter.model.language_model.lm_head, -1, adapter.new_token_ids["eos_token_id"], len(adapter.tokenizer))
    monkeypatch.setattr(adapter.model.language_model, "lm_head", head)
    first = adapter.respond_text(*prompts[1], max_new_tokens=5, seed=4).output_ids.tolist()
    head.token = first[1]  # the second prompt's answer now ends after one token
    with captured(list(adapter.llm.layers), _first) as calls:
        batched = adapter.respond_text_batch(prompts, max_new_tokens=5, seeds=seeds)
    alone = [adapter.respond_text(text, image, max_new_tokens=5, seed=seed) for (text, image), seed in zip(prompts, seeds)]
    if not sampled:  # a sampled answer draws past the argmax; greedy ones end at different steps
        assert len({len(a.output_ids) for a in alone}) > 1
        assert alone[1].output_ids.tolist() == [first[0], adapter.new_token_ids["eos_token_id"]]
    # three kinds: per kind its context calls, then each step one call for the kind's prompts, then one forced call
    steps = [c for c in calls if stacked(c).shape[1] in (1, 2)]
    assert len(calls) - len(steps) <= 3 * 3 and len(steps) <= 3 * 6
    for mine, theirs in zip(batched, alone):
        from upstream_checks import same_as_alone

        same_as_alone(mine, theirs)
    if sampled:  # alone is the inferencer's own draw under the seed
        with seeded(6), torch.no_grad(), autocast(adapter.device), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            theirs = adapter.inferencer(image=pictures[1], text="and this one", understanding_output=True,
                                        max_think_token_n=6, do_sample=True, text_temperature=1.0)["text"]  # fmt: skip
        assert theirs == alone[3].output
        assert len({tuple(adapter.respond_text("x", max_new_tokens=5, seed=s).output_ids.tolist()) for s in range(6)}) > 1
    with pytest.raises(InputError, match="5 prompts need as many seeds"):
        adapter.respond_text_batch(prompts, max_new_tokens=2, seeds=[1])


def test_a_batch_of_images_draws_what_each_prompt_draws_alone(bagel):
    """One packed call per step and branch for every prompt; each image its own noise and its own renormalisation
    (the default global norm over a batch would mix the images)."""
    texts, seeds = ["a red cube", "the blue dog sat on the mat in the sun", "x"], [3, 4, 5]
    with captured(list(bagel.llm.layers), _first) as calls:
        batched = bagel.respond_image_batch(texts, seeds=seeds, cfg_img_scale="2.0")
    n_image = (SIZE // 16) ** 2
    assert len(calls) == 1 + 3 * (STEPS - 1)  # the texts, then each step's conditional, text-CFG and image-CFG calls
    assert all(stacked(c).shape[1] == 3 * (n_image + 2) for c in calls[1:])
    for text, seed, mine in zip(texts, seeds, batched):
        theirs = bagel.respond_image(text, seed=seed, cfg_img_scale="2.0")
        from upstream_checks import same_as_alone

        same_as_alone(mine, theirs, pixels=0)
    assert not np.array_equal(np.asarray(batched[0].output), np.asarray(bagel.respond_image(texts[0], seed=4).output))
    with pytest.raises(InputError, match="3 prompts need as many seeds"):
        bagel.respond_image_batch(texts, seeds=[1])
