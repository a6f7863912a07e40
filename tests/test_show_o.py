"""The show-o family: CI checks (no checkout) and upstream checks on a tiny random Show-o built from the checkout.

The tiny model (built from the checkout's own classes, saved as released: ``config.json`` + ``pytorch_model.bin``
for ``Showo``, ``config.json`` + ``pytorch_model.safetensors`` for ``MAGVITv2``, a Phi config and a byte-level
CodeGen tokenizer for ``llm_model_path``): a 2-layer Phi decoder (d = 64), a MAGVIT-v2 of 32 channels with 8×
downsampling and 2⁶ codes (32×32 pixels → 4×4 = 16 image tokens). The CLIP-ViT variant (``w_clip_vit``) keeps
the released widths the authors' code fixes (``mm_projector`` is ``Linear(1024, 2048)``, the understanding mask
expects 576 features): a 1-layer Phi at d = 2048 and a 2-layer CLIP-ViT at d = 1024 with 24×24 patches.
"""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
import torch
from upstream_checks import same_as_alone

from entroprobe.errors import InputError, ItemError, LoadError
from entroprobe.models.compat import show_o as compat
from entroprobe.models.show_o import (
    IMAGE_DEFAULTS,
    LOAD_DEFAULTS,
    TEXT_DEFAULTS,
    ShowOAdapter,
)
from entroprobe.models.upstream import settings

# -- CI: no checkout -------------------------------------------------------------------------------------------


def test_class_attributes_and_capabilities():
    assert ShowOAdapter.family == "show-o"
    assert ShowOAdapter.capabilities == {("encode", "text"), ("encode", "image"), ("text-gen", "text"),
                                         ("text-gen", "image"), ("image-gen", "text")}  # fmt: skip
    spec = ShowOAdapter.upstream
    assert (spec.name, spec.github, spec.subdir, spec.marker) == ("Show-o", "showlab/Show-o", "", "models/modeling_showo.py")
    assert spec.tested[0][0] == "45a5a2de01d1ebd10cd5864d29310a76476cdf23" and spec.transformers == "5.23"


def test_every_default_names_its_source():
    for table in (TEXT_DEFAULTS, IMAGE_DEFAULTS, LOAD_DEFAULTS):
        for key, default in table.items():
            assert default.source.split(":")[0].endswith((".py", ".md", ".yaml")), key
            assert default.source.split(":")[1].split()[0].isdigit(), key  # file:line
    assert IMAGE_DEFAULTS["guidance_scale"].value == 5.0 and IMAGE_DEFAULTS["generation_timesteps"].value == 50
    assert IMAGE_DEFAULTS["mask_schedule"].value == "cosine" and IMAGE_DEFAULTS["max_seq_length"].value == 128
    assert TEXT_DEFAULTS["top_k"].value == 1 and LOAD_DEFAULTS["vq"].value == "showlab/magvitv2"


def test_settings_parse_model_args_strings():
    values, given = settings(IMAGE_DEFAULTS, {"guidance_scale": "1.75", "generation_timesteps": "16"}, what="x")
    assert values["guidance_scale"] == 1.75 and values["generation_timesteps"] == 16 and values["max_seq_length"] == 128
    assert given == {"guidance_scale": 1.75, "generation_timesteps": 16}
    with pytest.raises(InputError, match="generation_timesteps='many' does not parse as int"):
        settings(IMAGE_DEFAULTS, {"generation_timesteps": "many"}, what="x")


def test_loading_errors_without_a_checkout(tmp_path, monkeypatch):
    monkeypatch.delenv("ENTROPROBE_UPSTREAM", raising=False)
    with pytest.raises(LoadError, match="no Show-o checkout at .*nowhere; clone showlab/Show-o and pass repo=PATH"):
        ShowOAdapter.load(str(tmp_path), repo=str(tmp_path / "nowhere"))
    with pytest.raises(LoadError, match="is not a Show-o checkout: it lacks models/modeling_showo.py; clone showlab/Show-o"):
        ShowOAdapter.load(str(tmp_path), repo=str(tmp_path))
    with pytest.raises(LoadError, match="Show-o code is needed and no checkout was named"):
        ShowOAdapter.load(str(tmp_path))
    with pytest.raises(InputError, match="Unknown model argument\\(s\\) colour for show-o"):
        ShowOAdapter.load(str(tmp_path), repo=str(tmp_path), colour="red")
    with pytest.raises(InputError, match="needs a checkpoint folder"):
        ShowOAdapter.load(None, repo=str(tmp_path))


def test_missing_checkpoint_files_are_named(tmp_path):
    fake = tmp_path / "Show-o"
    (fake / "models").mkdir(parents=True)
    (fake / "models" / "modeling_showo.py").write_text("")  # a checkout as far as the marker goes
    ckpt = tmp_path / "show-o-512x512"
    with pytest.raises(LoadError, match="no Show-o checkpoint folder at .*show-o-512x512"):
        ShowOAdapter.load(str(ckpt), repo=str(fake))
    ckpt.mkdir()
    with pytest.raises(LoadError, match="has no config.json \\(the layout of showlab/show-o-512x512"):
        ShowOAdapter.load(str(ckpt), repo=str(fake))
    (ckpt / "config.json").write_text("{}")
    with pytest.raises(LoadError, match="has no weights: expected pytorch_model.bin or pytorch_model.safetensors"):
        ShowOAdapter.load(str(ckpt), repo=str(fake))
    (ckpt / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(LoadError, match="no MAGVIT-v2 folder at .*magvit: download showlab/magvitv2 and pass vq=PATH"):
        ShowOAdapter.load(str(ckpt), repo=str(fake), vq=str(tmp_path / "magvit"))
    (tmp_path / "magvit").mkdir()
    with pytest.raises(LoadError, match="MAGVIT-v2 folder .*magvit has no weights"):
        ShowOAdapter.load(str(ckpt), repo=str(fake), vq=str(tmp_path / "magvit"))


def test_legacy_phi_config():
    config = types.SimpleNamespace(rope_theta=None, partial_rotary_factor=None, use_cache=True,
                                   rope_parameters={"rope_theta": 5e4, "partial_rotary_factor": 0.4, "rope_type": "default"})  # fmt: skip
    config.rope_scaling = config.rope_parameters  # transformers 5: the same dict
    compat.legacy_phi_config(config)
    assert (config.rope_theta, config.partial_rotary_factor, config.rope_scaling, config.use_cache) == (5e4, 0.4, None, False)
    scaled = types.SimpleNamespace(rope_theta=1.0, partial_rotary_factor=0.5, rope_scaling={"type": "linear", "factor": 2})
    assert compat.legacy_phi_config(scaled).rope_scaling == {"type": "linear", "factor": 2}


def test_construction_wraps_and_restores():
    class Llm:
        def resize_token_embeddings(self, n, mean_resizing=True):
            return n, mean_resizing

    class Phi(Llm):
        pass

    auto = types.SimpleNamespace(from_pretrained=lambda path: types.SimpleNamespace(
        rope_parameters={"rope_theta": 7.0}, rope_scaling=None, use_cache=True))  # fmt: skip
    module = types.SimpleNamespace(AutoConfig=auto, PhiForCausalLM=Phi)
    with pytest.raises(RuntimeError, match="boom"), compat.construction(module):
        made = module.AutoConfig.from_pretrained("phi")
        assert (made.rope_theta, made.partial_rotary_factor, made.use_cache) == (7.0, 0.5, False)
        assert Phi().resize_token_embeddings(9) == (9, False)
        raise RuntimeError("boom")
    assert module.AutoConfig is auto and "resize_token_embeddings" not in vars(Phi)
    assert Phi().resize_token_embeddings(9) == (9, True)


def test_vendored_loading_drops_variant_only_when_needed():
    seen = []
    module = types.SimpleNamespace(load_state_dict=lambda checkpoint_file, map_location="cpu": seen.append(checkpoint_file))
    original = module.load_state_dict
    with compat.vendored_loading(module):
        module.load_state_dict("a.bin", variant=None)
    assert seen == ["a.bin"] and module.load_state_dict is original
    older = types.SimpleNamespace(load_state_dict=lambda checkpoint_file, variant=None: (checkpoint_file, variant))
    kept = older.load_state_dict
    with compat.vendored_loading(older):
        assert older.load_state_dict is kept


def _fake_magvit_state(enc, dec, code_dim):
    """A state dict with the keys and shapes ``magvit_sizes`` reads."""
    state = {"encoder.conv_in.weight": torch.zeros(enc["ch"], 3, 3, 3),
             "encoder.conv_out.weight": torch.zeros(enc["z_channels"], 1, 3, 3),
             "decoder.conv_in.weight": torch.zeros(1, dec["z_channels"], 3, 3),
             "quantize.embedding": torch.zeros(2**code_dim, code_dim)}  # fmt: skip
    for level, (mult, blocks) in enumerate(zip(enc["ch_mult"], enc["num_res_blocks"])):
        for j in range(blocks):
            state[f"encoder.down.{level}.block.{j}.conv2.weight"] = torch.zeros(enc["ch"] * mult, 1, 1, 1)
    for level, (mult, blocks) in enumerate(zip(dec["ch_mult"], dec["num_res_blocks"])):
        for j in range(blocks):
            state[f"decoder.up.{level}.block.{j}.conv2.weight"] = torch.zeros(dec["ch"] * mult, 1, 1, 1)
    return state


def test_magvit_sizes_read_the_checkpoint():
    released = compat.RELEASED_MAGVIT
    state = _fake_magvit_state(released["encoder"], released["decoder"], 13)
    assert compat.magvit_sizes(state) == released
    assert compat.magvit_sizes(_fake_magvit_state(ENC, DEC, CODE_DIM)) == TINY_MAGVIT
    with pytest.raises(KeyError):
        compat.magvit_sizes({})


def test_magvit_construction_builds_the_checkpoints_sizes():
    calls = []
    part = lambda name: (lambda **kw: calls.append((name, kw)))
    module = types.SimpleNamespace(VQGANEncoder=part("e"), VQGANDecoder=part("d"), LFQuantizer=part("q"))
    saved = dict(vars(module))
    with compat.magvit_construction(module, compat.RELEASED_MAGVIT):
        assert dict(vars(module)) == saved  # the released sizes: MAGVITv2() as it is
    with compat.magvit_construction(module, TINY_MAGVIT):
        module.VQGANEncoder(), module.VQGANDecoder(), module.LFQuantizer()
    assert calls == [("e", ENC), ("d", DEC), ("q", {"codebook_dim": CODE_DIM})] and dict(vars(module)) == saved


# -- upstream: a tiny Show-o from the checkout ----------------------------------------------------------------

D, LAYERS = 64, 2
ENC = {"ch": 32, "ch_mult": [1, 1, 2, 2], "num_res_blocks": [1, 1, 1, 1], "z_channels": 6}
DEC = {"ch": 32, "ch_mult": [1, 1, 2, 2], "num_res_blocks": [1, 1, 1, 1], "z_channels": 6}
CODE_DIM = 6  # 64 codes
TINY_MAGVIT = {"encoder": ENC, "decoder": DEC, "quantize": {"codebook_dim": CODE_DIM}}
N_IMAGE, RESOLUTION = 16, 32  # (32 / 8)²


def _phi_tokenizer(folder):
    """A CodeGen (Phi-1.5's class) byte-level BPE tokenizer over the 256 byte symbols, two merges and
    ``<|endoftext|>`` as BOS/EOS/UNK, as microsoft/phi-1_5's; returns its length (``llm_vocab_size``)."""
    from transformers import CodeGenTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {symbol: i for i, symbol in enumerate(bytes_to_unicode().values())}
    vocab.update({"Ġc": len(vocab), "at": len(vocab) + 1, "<|endoftext|>": len(vocab) + 2})
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\nĠ c\na t\n")
    tokenizer = CodeGenTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), unk_token="<|endoftext|>",
                                 bos_token="<|endoftext|>", eos_token="<|endoftext|>")  # fmt: skip
    tokenizer.save_pretrained(folder)
    return len(tokenizer)


def _tiny_checkout_model(root, directory, *, w_clip_vit=False):
    """Write a tiny Show-o in the released layout under ``directory``: ``show-o/``, ``magvitv2/``, ``phi/`` (and
    ``clip/`` with ``w_clip_vit``)."""
    from transformers import PhiConfig

    from entroprobe.models.upstream import import_from

    spec = ShowOAdapter.upstream
    compat.ensure_flax_weights_name()
    models = import_from(root, "models", spec)
    showo = import_from(root, "models.modeling_showo", spec)
    magvit = import_from(root, "models.modeling_magvitv2", spec)
    llm = directory / "phi"
    n_text = _phi_tokenizer(llm)
    width, layers, heads = (2048, 1, 32) if w_clip_vit else (D, LAYERS, 4)
    PhiConfig(vocab_size=n_text, hidden_size=width, intermediate_size=64, num_hidden_layers=layers,
              num_attention_heads=heads, max_position_embeddings=1024).save_pretrained(llm)  # fmt: skip
    torch.manual_seed(0)
    codes = 2**CODE_DIM
    with compat.construction(showo):
        model = models.Showo(w_clip_vit=w_clip_vit, vocab_size=n_text + 10 + codes + 1, llm_vocab_size=n_text,
                             llm_model_path=str(llm), codebook_size=codes, num_vq_tokens=N_IMAGE)  # fmt: skip
    # as released: the hub id (llm= names the local copy); load_from_showo=False would read Phi's own weights first
    model.register_to_config(llm_model_path="microsoft/phi-1_5", load_from_showo=False)
    model.save_pretrained(directory / "show-o", safe_serialization=False)
    with compat.magvit_construction(magvit, TINY_MAGVIT):
        models.MAGVITv2().save_pretrained(directory / "magvitv2")
    if w_clip_vit:
        from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

        CLIPVisionModel(CLIPVisionConfig(hidden_size=1024, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, image_size=48, patch_size=2)).save_pretrained(directory / "clip")  # fmt: skip
        CLIPImageProcessor(size={"shortest_edge": 48}, crop_size={"height": 48, "width": 48}).save_pretrained(directory / "clip")
    return directory


@pytest.fixture(scope="module")
def show_o_root():
    from upstream_checks import checkout_or_skip, needs

    root = checkout_or_skip("Show-o")
    needs("diffusers", "einops", "jaxtyping", "typeguard", "omegaconf", "torchvision", "accelerate")
    return root


@pytest.fixture(scope="module")
def tiny(show_o_root, tmp_path_factory):
    return _tiny_checkout_model(show_o_root, tmp_path_factory.mktemp("tiny_show_o"))


def _args(folder, root, **more):
    return {"repo": str(root), "device": "cpu", "llm": str(folder / "phi"), "vq": str(folder / "magvitv2"), **more}


@pytest.fixture(scope="module")
def showo(show_o_root, tiny):
    return ShowOAdapter.load(str(tiny / "show-o"), **_args(tiny, show_o_root))


def _reference(adapter, mask, ids=None, embeds=None):
    """Phi's own ``output_hidden_states`` (the last after ``final_layernorm``) → ``(L + 1, T, d)``."""
    with torch.no_grad():
        out = adapter.model.showo(input_ids=ids, inputs_embeds=embeds, attention_mask=mask, output_hidden_states=True)
    return torch.stack([h[0] for h in out.hidden_states]).float()


def test_load_describes_the_model(showo, tiny):
    described = showo.describe()
    assert (showo.num_layers, showo.d_model, showo.num_image_tokens, showo.resolution) == (LAYERS, D, N_IMAGE, RESOLUTION)
    assert described["final_norm"] is True and described["dtype"] == "torch.float32" and not described["w_clip_vit"]
    assert described["upstream"]["commit"] and len(showo.fingerprint()) == 16
    assert described["defaults"]["load"]["vq"] == {"value": str(tiny / "magvitv2"), "source": "--model-args",
                                                   "default": "showlab/magvitv2"}  # fmt: skip
    assert showo.model.showo.config.use_cache is False and not showo.model.training


def test_missing_weights_raise_load_errors(show_o_root, tiny, tmp_path):
    import shutil

    broken = tmp_path / "show-o"
    shutil.copytree(tiny / "show-o", broken)
    with pytest.raises(LoadError, match="Cannot load the Phi tokenizer|Show-o from"):
        ShowOAdapter.load(str(broken), **_args(tiny, show_o_root, llm=str(tmp_path / "no-phi")))
    state = torch.load(broken / "pytorch_model.bin", weights_only=True)
    del state["showo.model.final_layernorm.weight"]
    torch.save(state, broken / "pytorch_model.bin")
    with pytest.raises(LoadError, match="lacks 1 weight\\(s\\) .*final_layernorm.weight"):
        ShowOAdapter.load(str(broken), **_args(tiny, show_o_root))


def test_encode_text_equals_the_models_own_hidden_states(showo):
    states = showo.encode_text("a red cat")
    ids = [showo.tokenizer.bos_token_id, *showo.tokenizer("a red cat")["input_ids"]]
    assert len(ids) == 8 and states.token_ids.tolist() == ids and states.states.shape == (LAYERS + 1, 8, D)
    causal = torch.full((8, 8), torch.finfo(torch.float32).min).triu(1)[None, None]
    torch.testing.assert_close(states.states, _reference(showo, causal, ids=torch.tensor([ids])), atol=1e-5, rtol=1e-5)
    assert states.final_norm is True
    with pytest.raises(ItemError, match="text prompt '': the prompt text is empty"):
        showo.encode_text("")
    with pytest.raises(ItemError, match="longer than the model's context of 1024"):
        showo.encode_text(" ".join(["cat"] * 600))


def _script_mmu_ids(showo, picture, question):
    """``inference_mmu.py``'s MAGVIT branch, step by step, from the checkout's own functions."""
    uni, data = showo.prompting, showo.code["data"]
    image = data.image_transform(picture, resolution=RESOLUTION)[None]
    image_tokens = showo.vq.get_code(image) + len(uni.text_tokenizer)
    input_ids = torch.tensor(uni.text_tokenizer(["USER: \n" + question + " ASSISTANT:"])["input_ids"])
    sp = uni.sptids_dict
    input_ids = torch.cat([torch.ones(1, 1) * sp["<|mmu|>"], torch.ones(1, 1) * sp["<|soi|>"], image_tokens,
                           torch.ones(1, 1) * sp["<|eoi|>"], torch.ones(1, 1) * sp["<|sot|>"], input_ids], dim=1).long()  # fmt: skip
    mask = showo.code["prompting"].create_attention_mask_for_mmu(input_ids, eoi_id=int(sp["<|eoi|>"]))
    return input_ids, mask, image_tokens


def test_encode_image_returns_the_understanding_image_positions(showo):
    from tiny_models import random_image

    picture = random_image((80, 70), seed=1)
    states = showo.encode_image(picture, instruction="describe this picture")
    ids, mask, image_tokens = _script_mmu_ids(showo, picture, "describe this picture")
    assert image_tokens.shape[1] == showo.model.config.num_vq_tokens == states.num_tokens == N_IMAGE
    assert states.positions.tolist() == list(range(2, 2 + N_IMAGE))  # <|mmu|> <|soi|> image… <|eoi|>
    assert states.token_ids.tolist() == image_tokens[0].tolist()
    reference = _reference(showo, mask, ids=ids)[:, 2 : 2 + N_IMAGE]
    torch.testing.assert_close(states.states, reference, atol=1e-5, rtol=1e-5)
    # the prefix up to <|eoi|> attends bidirectionally and never to the question after it
    torch.testing.assert_close(showo.encode_image(picture).states, states.states)
    other = showo.encode_image(random_image((80, 70), seed=2))
    assert (other.states[1:] - states.states[1:]).abs().max() > 1e-4
    with pytest.raises(ItemError, match="unreadable image"):
        showo.encode_image(b"not an image")


@pytest.mark.parametrize("with_image", [False, True], ids=["text", "image"])
def test_text_response_matches_mmu_generate(showo, with_image):
    from tiny_models import random_image

    from entroprobe.models.base import seeded

    picture = random_image((64, 64), seed=3) if with_image else None
    response = showo.respond_text("what is this", picture, max_new_tokens=5, seed=1)
    again = showo.respond_text("what is this", picture, max_new_tokens=5, seed=1)
    assert response.output_ids.tolist() == again.output_ids.tolist()
    torch.testing.assert_close(response.response.states, again.response.states)
    eot = showo.prompting.sptids_dict["<|eot|>"]
    if with_image:
        ids, mask, _ = _script_mmu_ids(showo, picture, "what is this")
    else:
        asked = showo.tokenizer(["USER: \nwhat is this ASSISTANT:"])["input_ids"][0]
        ids = torch.tensor([[showo.ids["<|mmu|>"], showo.ids["<|sot|>"], *asked]])
        mask = torch.full((ids.shape[1],) * 2, torch.finfo(torch.float32).min).triu(1)[None, None]
    with seeded(1), torch.no_grad():
        script = showo.model.mmu_generate(ids, attention_mask=mask, max_new_tokens=5, top_k=1, eot_token=eot)
    assert response.output_ids.tolist() == [int(t) for t in script]
    n_prompt, n_new = ids.shape[1], response.response.num_tokens
    full = torch.cat([ids, response.output_ids[None]], dim=1)
    if with_image:
        full_mask = showo.code["prompting"].create_attention_mask_for_mmu(full, eoi_id=showo.ids["<|eoi|>"])
    else:
        full_mask = torch.full((full.shape[1],) * 2, torch.finfo(torch.float32).min).triu(1)[None, None]
    reference = _reference(showo, full_mask, ids=full)
    assert response.response.positions.tolist() == list(range(n_prompt, n_prompt + n_new))
    torch.testing.assert_close(response.response.states, reference[:, n_prompt:], atol=1e-5, rtol=1e-5)
    question = showo.tokenizer("what is this")["input_ids"]
    image = list(range(2, 2 + N_IMAGE)) if with_image else []
    start = n_prompt - len(showo.tokenizer(" ASSISTANT:")["input_ids"]) - len(question)
    assert response.prompt.positions.tolist() == image + list(range(start, start + len(question)))
    assert response.prompt.token_ids.tolist()[len(image):] == question
    torch.testing.assert_close(response.prompt.states, reference[:, response.prompt.positions], atol=1e-5, rtol=1e-5)


def test_image_response_is_one_teacher_forced_pass_over_the_final_tokens(showo):
    from upstream_checks import captured, stacked

    from entroprobe.models.base import seeded

    steps, max_seq = 4, 16
    layers = list(showo.model.showo.model.layers)
    with captured(layers) as calls:
        response = showo.respond_image("a red cat", seed=4, generation_timesteps=steps, max_seq_length=max_seq)
    assert len(calls) == steps + 1  # MaskGIT steps (both CFG rows at once), then the teacher-forced pass
    assert calls[0]["input"].shape[0] == 2 and calls[-1]["input"].shape[0] == 1
    # inference_t2i.py (mode='t2i'), step by step, from the checkout's own functions
    uni, sp, prompting = showo.prompting, showo.prompting.sptids_dict, showo.code["prompting"]
    mask_id = showo.model.config.mask_token_id
    uni.max_text_len = max_seq + 1  # UniversalPrompting(max_text_len=max_seq_length)
    image_tokens = torch.ones((1, N_IMAGE), dtype=torch.long) * mask_id
    input_ids, _ = uni((["a red cat"], image_tokens), "t2i_gen")
    uncond, _ = uni(([""], image_tokens), "t2i_gen")
    attention = prompting.create_attention_mask_predict_next(torch.cat([input_ids, uncond]), pad_id=int(sp["<|pad|>"]),
                                                             soi_id=int(sp["<|soi|>"]), eoi_id=int(sp["<|eoi|>"]),
                                                             rm_pad_in_image=True)  # fmt: skip
    condition = input_ids.clone()
    from entroprobe.models.show_o_load import generation_config

    with seeded(4), torch.no_grad():
        script = showo.model.t2i_generate(input_ids=input_ids, uncond_input_ids=uncond, attention_mask=attention,
                                          guidance_scale=5.0, temperature=1.0, timesteps=steps,
                                          noise_schedule=showo.code["sampling"].get_mask_chedule("cosine"),
                                          config=generation_config(showo, max_seq))  # fmt: skip
    assert response.output_ids.tolist() == script[0].tolist()
    final = condition.clone()
    final[:, -(N_IMAGE + 1) : -1] = script + showo.image_offset
    length = final.shape[1]
    assert length == max_seq + 1 + 1 + N_IMAGE + 1
    image = list(range(length - N_IMAGE - 1, length - 1))
    words = showo.tokenizer("a red cat")["input_ids"]
    assert response.response.positions.tolist() == image and response.response.token_ids.tolist() == final[0, image].tolist()
    assert response.prompt.positions.tolist() == list(range(max_seq - len(words), max_seq))
    assert response.prompt.token_ids.tolist() == words
    mask = prompting.create_attention_mask_predict_next(final, pad_id=int(sp["<|pad|>"]), soi_id=int(sp["<|soi|>"]),
                                                        eoi_id=int(sp["<|eoi|>"]), rm_pad_in_image=True)  # fmt: skip
    reference = _reference(showo, mask, ids=final)
    torch.testing.assert_close(response.response.states, reference[:, image], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(response.prompt.states, reference[:, response.prompt.positions], atol=1e-5, rtol=1e-5)
    last = stacked(calls[-1])[:, 0]  # the independent capture of the teacher-forced pass (before the final norm)
    torch.testing.assert_close(response.response.states[:-1], last[:-1, image], atol=1e-5, rtol=1e-5)
    sampling = stacked(calls[-2])[:, 0]  # the last MaskGIT step still saw a masked token
    assert (sampling[0, image] - last[0, image]).abs().max() > 1e-4
    assert response.output.size == (RESOLUTION, RESOLUTION) and response.output.mode == "RGB"
    same = showo.respond_image("a red cat", seed=4, generation_timesteps=steps, max_seq_length=max_seq)
    assert np.array_equal(np.asarray(same.output), np.asarray(response.output))
    other = showo.respond_image("a red cat", seed=5, generation_timesteps=steps, max_seq_length=max_seq)
    assert other.output_ids.tolist() != response.output_ids.tolist()
    with captured(layers) as calls:  # guidance_scale 0: the script's branch without the unconditional row
        plain = showo.respond_image("a red cat", seed=4, guidance_scale="0", generation_timesteps=2, max_seq_length=max_seq)
    assert [c["input"].shape[0] for c in calls] == [1, 1, 1] and plain.response.num_tokens == N_IMAGE
    with pytest.raises(ItemError, match="longer than the 14 text tokens max_seq_length=16"):
        showo.respond_image(" ".join(["cat"] * 20), max_seq_length=max_seq)
    with pytest.raises(InputError, match="Unknown Show-o image-generation setting"):
        showo.respond_image("a cat", steps=3)


@pytest.fixture(scope="module")
def showo_clip(show_o_root, tmp_path_factory):
    folder = _tiny_checkout_model(show_o_root, tmp_path_factory.mktemp("tiny_show_o_clip"), w_clip_vit=True)
    return ShowOAdapter.load(str(folder / "show-o"), **_args(folder, show_o_root, clip=str(folder / "clip")))


def test_clip_vit_understanding(showo_clip):
    from tiny_models import random_image

    from entroprobe.models.base import seeded
    from entroprobe.models.show_o import SYSTEM_PROMPT

    adapter, picture = showo_clip, random_image((60, 50), seed=6)
    assert adapter.describe()["w_clip_vit"] is True
    states = adapter.encode_image(picture, "what is this")
    # inference_mmu.py's CLIP-ViT branch, step by step
    uni, model = adapter.prompting, adapter.model
    conv = adapter.conversation.copy()
    conv.append_message(conv.roles[0], "what is this")
    conv.append_message(conv.roles[1], None)
    system = torch.tensor(uni.text_tokenizer(SYSTEM_PROMPT)["input_ids"])[None]
    question = torch.tensor(uni.text_tokenizer(conv.get_prompt().strip())["input_ids"])[None]
    sp = uni.sptids_dict
    llava = torch.cat([torch.ones(1, 1) * sp["<|mmu|>"], system, torch.ones(1, 1) * sp["<|soi|>"],
                       torch.ones(1, 1) * sp["<|eoi|>"], question], dim=1).long()  # fmt: skip
    pixels = adapter.processor.preprocess(picture, return_tensors="pt")["pixel_values"][0]
    with torch.no_grad():
        features = model.mm_projector(adapter.clip(pixels[None]))
        text = model.showo.model.embed_tokens(llava)
        n_head = 2 + system.shape[1]
        embeds = torch.cat([text[:, :n_head], features, text[:, n_head:]], dim=1)
    mask = adapter.code["prompting"].create_attention_mask_for_mmu_vit(embeds, system_prompt_len=system.shape[1])
    assert features.shape[1] == 576 == states.num_tokens and states.token_ids is None
    assert states.positions.tolist() == list(range(n_head, n_head + 576))
    reference = _reference(adapter, mask, embeds=embeds)
    torch.testing.assert_close(states.states, reference[:, n_head : n_head + 576], atol=1e-4, rtol=1e-4)
    response = adapter.respond_text("what is this", picture, max_new_tokens=3, seed=2)
    with seeded(2), torch.no_grad():
        script = model.mmu_generate(input_embeddings=embeds, attention_mask=mask[0].unsqueeze(0), max_new_tokens=3,
                                    top_k=1, eot_token=uni.text_tokenizer.eos_token_id)  # fmt: skip
    assert response.output_ids.tolist() == [int(t) for t in script]
    assert response.response.positions.tolist() == list(range(embeds.shape[1], embeds.shape[1] + len(script)))
    assert response.prompt.positions[:576].tolist() == list(range(n_head, n_head + 576))


def test_defaults_match_the_checkouts_files(show_o_root):
    import yaml

    config = yaml.safe_load((show_o_root / "configs/showo_demo_512x512.yaml").read_text())
    assert IMAGE_DEFAULTS["max_seq_length"].value == config["dataset"]["preprocessing"]["max_seq_length"]
    assert LOAD_DEFAULTS["vq"].value == config["model"]["vq_model"]["vq_model_name"]
    assert LOAD_DEFAULTS["num_new_special_tokens"].value == config["model"]["showo"]["num_new_special_tokens"]
    assert LOAD_DEFAULTS["cond_dropout_prob"].value == config["training"]["cond_dropout_prob"]
    assert "mask_schedule" not in config and "mask_schedule" not in config["training"]
    for table in (TEXT_DEFAULTS, IMAGE_DEFAULTS, LOAD_DEFAULTS):  # every file:line source points at what it says
        for key, default in table.items():
            file, line = default.source.split()[0].split(":")
            text = (show_o_root / file).read_text().splitlines()[int(line) - 1]
            needle = {"dtype": "Showo.from_pretrained"}.get(key, key)  # float32: from_pretrained sets no dtype
            assert str(default.value).split("/")[-1].removesuffix(".0") in text or needle in text, (key, text)
    readme = (show_o_root / "README.md").read_text()
    assert "guidance_scale=5 generation_timesteps=50" in readme


def test_a_whole_run_records_defaults_and_commit(show_o_root, tiny, tmp_path):
    from upstream_checks import run_all_tasks

    args = {**_args(tiny, show_o_root), "generation_timesteps": "3", "max_seq_length": "256"}  # byte-level prompts
    frame, manifest = run_all_tasks(f"show-o:{tiny / 'show-o'}", args, tmp_path / "run", limit=2, max_new_tokens=3,
                                    batch_size=2)  # fmt: skip
    model = manifest["model"]
    assert model["upstream"]["commit"] == ShowOAdapter.upstream.tested[0][0]
    image = model["defaults"]["image-gen"]
    assert image["guidance_scale"] == {"value": 5.0, "source": IMAGE_DEFAULTS["guidance_scale"].source}
    assert image["generation_timesteps"] == {"value": 3, "source": "--model-args", "default": 50}
    assert model["defaults"]["text-gen"]["top_k"]["value"] == 1
    assert len(frame) > 0


@pytest.mark.parametrize("variant", ["magvit", "clip"])
@pytest.mark.parametrize("top_k", [1, 0])
def test_a_batch_of_text_replies_answers_what_each_prompt_answers_alone(request, variant, top_k, monkeypatch):
    """mmu_generate's loop over several prompts at once (right-padded, the unfinished rows each step), then one
    pass; a sampled answer (top_k=0: the whole distribution) draws from its own seed."""
    from tiny_models import random_image

    showo = request.getfixturevalue("showo" if variant == "magvit" else "showo_clip")
    if not top_k:
        monkeypatch.setitem(showo.text_settings, "top_k", 10**6)  # every token kept
    prompts = [("what is this", random_image((64, 64), seed=3)), ("and this", random_image((64, 64), seed=4)),
               ("a red cube on the mat", None), ("a cat", None)]  # fmt: skip
    seeds = [3, 4, 5, 6]
    for group in (prompts[:2], prompts[2:]):  # the run batches one prompt modality at a time
        batched = showo.respond_text_batch(group, max_new_tokens=4, seeds=seeds[: len(group)])
        for (text, image), seed, response in zip(group, seeds, batched):
            same_as_alone(response, showo.respond_text(text, image, max_new_tokens=4, seed=seed))
    if not top_k:
        answers = {tuple(showo.respond_text("a cat", max_new_tokens=4, seed=s).output_ids.tolist()) for s in range(6)}
        assert len(answers) > 1


@pytest.mark.parametrize("guidance", ["5.0", "0"])
def test_a_batch_of_images_draws_what_each_prompt_draws_alone(showo, guidance):
    """One unmasking loop for prompts of different lengths (the script's padded layout), the conditional rows then
    the unconditional ones, each prompt drawing from its own seed."""
    from upstream_checks import captured, stacked

    texts, seeds = ["a red cat", "the blue dog sat on a mat", "a cube"], [4, 5, 6]
    with captured(list(showo.model.showo.model.layers)) as calls:
        batched = showo.respond_image_batch(texts, seeds=seeds, guidance_scale=guidance)
    rows = 2 * len(texts) if float(guidance) > 0 else len(texts)
    assert {stacked(c).shape[1] for c in calls[:-1]} == {rows} and stacked(calls[-1]).shape[1] == len(texts)
    for text, seed, response in zip(texts, seeds, batched):
        # the same image ids; MAGVIT's decoder, over a batch of them, may round a pixel to the next level (seen
        # on an AMD EPYC's MKL, where a convolution's sums depend on the batch's size)
        same_as_alone(response, showo.respond_image(text, seed=seed, guidance_scale=guidance), pixels=1)
    with pytest.raises(ItemError, match="empty"):
        showo.respond_image_batch(["a cat", " "], seeds=[1, 2])


@pytest.mark.parametrize("variant", ["magvit", "clip"])
def test_a_batch_of_prompts_is_encoded_in_one_pass(request, variant):
    from tiny_models import random_image
    from upstream_checks import check_encode_batches

    showo = request.getfixturevalue("showo" if variant == "magvit" else "showo_clip")
    check_encode_batches(showo, list(showo.model.showo.model.layers), ["a red cat", "the blue dog sat on a mat", "x"],
                         [random_image((64, 64), seed=3), random_image((40, 64), seed=4), random_image((64, 64), seed=5)],
                         ["what is this", None, "and this one here"])  # fmt: skip
