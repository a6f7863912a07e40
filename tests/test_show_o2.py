"""The show-o2 family: CI checks (no checkout) and upstream checks on a tiny random Show-o2 built from the checkout.

The tiny model (built from ``show-o2/models``' own classes, saved as released: ``config.json`` +
``pytorch_model.bin`` + ``Wan2.1_VAE.pth``): a 2-layer Qwen2 decoder (d = 32), a 2-layer SigLIP (one is kept),
4×4 image tokens over 8×8 latents (64×64 pixels), one flow-head block, a Wan VAE of width 8.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from upstream_checks import same_as_alone

from entroprobe.errors import InputError, ItemError, LoadError
from entroprobe.models import load_model
from entroprobe.models.compat import show_o2 as compat
from entroprobe.models.show_o2 import IMAGE_DEFAULTS, TEXT_DEFAULTS, ShowO2Adapter
from entroprobe.models.upstream import settings
from tiny_models import byte_level_qwen_tokenizer

# -- CI: no checkout -------------------------------------------------------------------------------------------


def test_class_attributes_and_capabilities():
    assert ShowO2Adapter.family == "show-o2"
    assert ShowO2Adapter.capabilities == {("encode", "text"), ("encode", "image"), ("text-gen", "text"),
                                          ("text-gen", "image"), ("image-gen", "text")}  # fmt: skip
    spec = ShowO2Adapter.upstream
    assert (spec.name, spec.github, spec.subdir) == ("Show-o", "showlab/Show-o", "show-o2")
    assert spec.tested[0][0] == "45a5a2de01d1ebd10cd5864d29310a76476cdf23"


def test_every_default_names_its_source():
    for table in (TEXT_DEFAULTS, IMAGE_DEFAULTS):
        for key, default in table.items():
            assert default.source.split(":")[0].endswith((".py", ".md", ".yaml")), key
    assert IMAGE_DEFAULTS["guidance_scale"].value == 7.5 and IMAGE_DEFAULTS["num_inference_steps"].value == 50
    assert TEXT_DEFAULTS["top_k"].value == 1


def test_settings_parse_model_args_strings():
    values, given = settings(IMAGE_DEFAULTS, {"guidance_scale": "5", "num_inference_steps": "3"}, what="x")
    assert values["guidance_scale"] == 5.0 and values["num_inference_steps"] == 3 and values["atol"] == 1e-6
    assert given == {"guidance_scale": 5.0, "num_inference_steps": 3}
    with pytest.raises(InputError, match="num_inference_steps='many' does not parse as int"):
        settings(IMAGE_DEFAULTS, {"num_inference_steps": "many"}, what="x")


def test_loading_errors_without_a_checkout(tmp_path, monkeypatch):
    monkeypatch.delenv("ENTROPROBE_UPSTREAM", raising=False)
    with pytest.raises(LoadError, match="no Show-o checkout at .*nowhere; clone showlab/Show-o"):
        load_model(f"show-o2:{tmp_path}", repo=str(tmp_path / "nowhere"))
    with pytest.raises(LoadError, match="is not a Show-o checkout: it lacks show-o2/models/modeling_showo2_qwen2_5.py; "
                                        "clone showlab/Show-o"):  # fmt: skip
        load_model(f"show-o2:{tmp_path}", repo=str(tmp_path))
    with pytest.raises(InputError, match="Unknown model argument\\(s\\) colour for show-o2"):
        load_model(f"show-o2:{tmp_path}", repo=str(tmp_path), colour="red")
    with pytest.raises(InputError, match="needs a checkpoint folder"):
        ShowO2Adapter.load(None, repo=str(tmp_path))


def test_flax_name_shim_adds_only_what_is_missing(monkeypatch):
    fake = types.SimpleNamespace()
    monkeypatch.setitem(__import__("sys").modules, "diffusers", types.SimpleNamespace(utils=fake))
    monkeypatch.setitem(__import__("sys").modules, "diffusers.utils", fake)
    assert compat.ensure_flax_weights_name() is True and fake.FLAX_WEIGHTS_NAME == "diffusion_flax_model.msgpack"
    fake.FLAX_WEIGHTS_NAME = "kept"
    assert compat.ensure_flax_weights_name() is False and fake.FLAX_WEIGHTS_NAME == "kept"


def test_legacy_llm_config_and_construction_restore():
    config = types.SimpleNamespace(rope_parameters={"rope_theta": 1e6}, use_cache=True)
    assert compat.legacy_llm_config(config).rope_theta == 1e6 and config.use_cache is False
    kept = types.SimpleNamespace(rope_theta=5.0, use_cache=True)
    assert compat.legacy_llm_config(kept).rope_theta == 5.0

    class Siglip:
        class config_class:  # noqa: N801
            @staticmethod
            def from_pretrained(path):
                return {"from": path}

        def __init__(self, config):
            self.config = config

    auto = types.SimpleNamespace(from_pretrained=lambda path: types.SimpleNamespace(rope_parameters={}, use_cache=True))
    module = types.SimpleNamespace(AutoConfig=auto, SiglipModel=Siglip)
    with pytest.raises(RuntimeError, match="boom"), compat.construction(module):
        assert module.AutoConfig.from_pretrained("q").rope_theta == 10000.0
        assert module.SiglipModel.from_pretrained("s", attn_implementation="sdpa").config == {"from": "s"}
        raise RuntimeError("boom")
    assert module.AutoConfig is auto and module.SiglipModel is Siglip


def test_weight_files_name_the_layout(tmp_path):
    with pytest.raises(LoadError, match="has no weights: expected pytorch_model.bin"):
        compat.weight_files(tmp_path)
    (tmp_path / "model.bin.index.json").write_text('{"weight_map": {"a": "one.bin", "b": "two.bin"}}')
    (tmp_path / "one.bin").write_bytes(b"")
    with pytest.raises(LoadError, match="names missing shard\\(s\\) two.bin"):
        compat.weight_files(tmp_path)
    (tmp_path / "two.bin").write_bytes(b"")
    assert [p.name for p in compat.weight_files(tmp_path)] == ["one.bin", "two.bin"]


def test_wan_vae_width_comes_from_the_checkpoint(tmp_path):
    seen = {}

    def builder(pretrained_path=None, z_dim=None, device="cpu", **kwargs):
        seen.update(kwargs)
        return "model"

    module = types.SimpleNamespace(_video_vae=builder)
    module.WanVAE = lambda vae_pth, dtype, device: (module._video_vae(pretrained_path=vae_pth, z_dim=16), seen)
    for width, expected in ((8, {"dim": 8}), (96, {})):
        seen.clear()
        torch.save({"encoder.conv1.weight": torch.zeros(width, 3, 1, 1, 1)}, tmp_path / "vae.pth")
        compat.wan_vae(module, tmp_path / "vae.pth", dtype=torch.float32, device=torch.device("cpu"))
        assert seen == expected and module._video_vae is builder
    with pytest.raises(LoadError, match="no Wan2.1 VAE at .*missing.pth"):
        compat.wan_vae(module, tmp_path / "missing.pth", dtype=torch.float32, device=torch.device("cpu"))


# -- upstream: a tiny Show-o2 from the checkout ----------------------------------------------------------------

D, LAYERS, LATENT = 32, 2, 4  # decoder width and depth; image tokens per side
N_IMAGE = LATENT * LATENT
SPECIAL = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>",
           "<|endoftext|>"]  # fmt: skip
CONTEXT = 256


def _tiny_checkout_model(root, directory):
    """Write the tiny Show-o2 in the released layout under ``directory``; returns the folder."""
    from transformers import Qwen2Config, SiglipConfig, SiglipModel

    from entroprobe.models.compat.transformers5 import ensure_default_rope
    from entroprobe.models.show_o2 import ShowO2Adapter
    from entroprobe.models.upstream import import_from

    spec = ShowO2Adapter.upstream
    ensure_default_rope()
    compat.ensure_flax_weights_name()
    base = root / spec.subdir
    showo = import_from(base, "models.modeling_showo2_qwen2_5", spec)
    wan = import_from(base, "models.wan21_vae", spec)
    llm, siglip, ckpt = directory / "qwen", directory / "siglip", directory / "show-o2"
    tokenizer = byte_level_qwen_tokenizer(SPECIAL)
    tokenizer.save_pretrained(llm)
    Qwen2Config(vocab_size=len(tokenizer), hidden_size=D, intermediate_size=64, num_hidden_layers=LAYERS,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=CONTEXT).save_pretrained(llm)  # fmt: skip
    torch.manual_seed(0)
    SiglipModel(SiglipConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=64, max_position_embeddings=16, bos_token_id=1, eos_token_id=2, pad_token_id=0),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=16, patch_size=4))).save_pretrained(siglip)  # fmt: skip
    from transformers import AutoTokenizer

    vocab = len(AutoTokenizer.from_pretrained(llm)) + 4  # get_text_tokenizer adds [PAD], <image>, video markers
    with compat.construction(showo):
        model = showo.Showo2Qwen2_5(llm_vocab_size=vocab, llm_model_path=str(llm), load_from_showo=True,
                                    image_latent_dim=16, image_latent_height=LATENT, image_latent_width=LATENT,
                                    video_latent_height=LATENT, video_latent_width=LATENT, patch_size=2, hidden_size=D,
                                    clip_latent_dim=32, num_diffusion_layers=1, add_time_embeds=True, add_qk_norm=True,
                                    clip_pretrained_model_path=str(siglip))  # fmt: skip
    with torch.no_grad():  # the flow head's output layers start at zero: give them weights
        for param in model.diffusion_head_b.parameters():
            param.normal_(0, 0.02)
    model.save_config(ckpt)
    torch.save({k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}, ckpt / "pytorch_model.bin")
    vae = wan.WanVAE_(dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                      temperal_downsample=[False, True, True], dropout=0.0)  # fmt: skip
    torch.save(vae.state_dict(), ckpt / "Wan2.1_VAE.pth")
    return ckpt


@pytest.fixture(scope="module")
def show_o_root():
    from upstream_checks import checkout_or_skip, needs

    root = checkout_or_skip("Show-o")
    needs("diffusers", "einops", "timm", "torchdiffeq", "torchvision", "accelerate")
    return root


@pytest.fixture(scope="module")
def tiny(show_o_root, tmp_path_factory):
    return _tiny_checkout_model(show_o_root, tmp_path_factory.mktemp("tiny_show_o2"))


MODEL_ARGS = {"max_seq_length": "48", "num_inference_steps": "4"}


@pytest.fixture(scope="module")
def showo2(show_o_root, tiny):
    return load_model(f"show-o2:{tiny}", repo=str(show_o_root), device="cpu", **MODEL_ARGS)


def _reference(adapter, embeds, mask):
    """The vendored Qwen2's own ``output_hidden_states`` (after the final norm) → ``(L + 1, T, d)``."""
    with torch.no_grad():
        out = adapter.model.showo(inputs_embeds=embeds, attention_mask=mask, output_hidden_states=True)
    return torch.stack([h[0] for h in out.hidden_states]).float()


def test_load_describes_the_model(showo2, tiny):
    described = showo2.describe()
    assert (showo2.num_layers, showo2.d_model, showo2.num_image_tokens, showo2.resolution) == (LAYERS, D, N_IMAGE, 64)
    assert described["final_norm"] is True and described["dtype"] == "torch.float32"
    assert described["upstream"]["commit"] and len(showo2.fingerprint()) == 16


def test_missing_files_raise_load_errors(show_o_root, tiny, tmp_path):
    import shutil

    broken = tmp_path / "no_vae"
    shutil.copytree(tiny, broken, ignore=shutil.ignore_patterns("Wan2.1_VAE.pth"))
    with pytest.raises(LoadError, match="no Wan2.1 VAE at .*no_vae/Wan2.1_VAE.pth"):
        load_model(f"show-o2:{broken}", repo=str(show_o_root), device="cpu")
    (broken / "pytorch_model.bin").unlink()
    with pytest.raises(LoadError, match="has no weights: expected pytorch_model.bin"):
        load_model(f"show-o2:{broken}", repo=str(show_o_root), device="cpu")


def test_encode_text_equals_the_models_own_hidden_states(showo2):
    states = showo2.encode_text("a red cat")
    ids = [showo2.ids["bos_id"], *showo2.tokenizer("a red cat", add_special_tokens=False)["input_ids"]]
    n = len(ids)
    assert n == 8 and states.token_ids.tolist() == ids and states.states.shape == (LAYERS + 1, n, D)
    reference = _reference(showo2, showo2._embed(ids), showo2._mask(n, None))
    torch.testing.assert_close(states.states, reference, atol=1e-5, rtol=1e-5)
    with pytest.raises(ItemError, match="text prompt '': the prompt text is empty"):
        showo2.encode_text("")
    with pytest.raises(ItemError, match="longer than the model's context of 256"):
        showo2.encode_text(" ".join(["cat"] * 200))


def _script_mmu(adapter, picture, question):
    """``show-o2/inference_mmu.py``'s understanding input for one image and question, written out here from the
    script (its lines 100-158) with the checkout's modules: ``(input embeds, modality_positions, attention mask)``."""
    from torchvision import transforms

    from entroprobe.models.base import seeded

    model, tok, ids = adapter.model, adapter.tokenizer, adapter.ids
    sys_prompt_ids = tok("system\nYou are a helpful assistant.<|im_end|>", add_special_tokens=False)["input_ids"]
    role_a = tok("\n<|im_start|>user\n", add_special_tokens=False)["input_ids"]
    role_b = tok("\n<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    image = transforms.Compose([transforms.Resize(64, interpolation=transforms.InterpolationMode.BICUBIC),
                                transforms.CenterCrop((64, 64)), transforms.ToTensor(),
                                transforms.Normalize([0.5] * 3, [0.5] * 3)])(picture)[None]  # image_transform
    with seeded(0), torch.no_grad():
        latents = adapter.vae.sample(image.unsqueeze(2)).squeeze(2)
        und = model.und_trans(model.image_embedder_und(latents)
                              + model.position_embedding(model.image_position_ids))["last_hidden_state"]
        image_embeds = model.fusion_proj(torch.cat([und, model.image_embedder_gen(latents)], dim=-1))
        text_a = torch.tensor([ids["bos_id"]] + sys_prompt_ids + role_a)[None]
        text_b = torch.tensor([ids["boi_id"], ids["eoi_id"]] + tok(question, add_special_tokens=False)["input_ids"]
                              + role_b)[None]  # fmt: skip
        embeds_a, embeds_b = model.showo.model.embed_tokens(text_a), model.showo.model.embed_tokens(text_b)
        time = model.time_embed(torch.Tensor([[1.0]]), embeds_a.dtype)
        if hasattr(model, "time_embed_proj"):
            time = model.time_embed_proj(time)
        embeds = torch.cat([embeds_a, embeds_b[:, :1], time, image_embeds, embeds_b[:, 1:]], dim=1)
    positions = torch.tensor([text_a.shape[1] + 2, N_IMAGE + 1])[None, None]  # num_mmu_image_tokens += 1
    mask = adapter.code["omni"].omni_attn_mask_naive(B=1, LEN=embeds.shape[1], modalities=positions, device="cpu",
                                                     inverted=True).to(embeds.dtype)  # fmt: skip
    return embeds, positions, mask


def test_encode_image_returns_the_understanding_image_positions(showo2):
    from tiny_models import random_image

    picture = random_image((80, 70), seed=1)
    states = showo2.encode_image(picture, instruction="describe this picture")
    embeds, positions, mask = _script_mmu(showo2, picture, "describe this picture")
    # inference_mmu.py: [bos, system, user] [boi] [time] image… [eoi] question [assistant]; its modality block
    # starts at the first image feature (len(text_tokens_a) + 2)
    start = int(positions[0, 0, 0])
    where = list(range(start, start + N_IMAGE))
    assert states.positions.tolist() == where and states.num_tokens == N_IMAGE
    reference = _reference(showo2, embeds, mask)[:, where]
    torch.testing.assert_close(states.states, reference, atol=1e-5, rtol=1e-5)
    # the omni-attention block ends at eoi: the instruction after it leaves the image states alone
    torch.testing.assert_close(showo2.encode_image(picture).states, states.states)
    other = showo2.encode_image(random_image((80, 70), seed=2))
    assert (other.states[1:] - states.states[1:]).abs().max() > 1e-4
    with pytest.raises(ItemError, match="unreadable image"):
        showo2.encode_image(b"not an image")


def test_a_checkpoint_trained_at_another_grid_interpolates_its_position_embeddings(showo2):
    """The 512² / 1024² checkpoints: a position table of another grid than the image's, interpolated as
    ``Showo2Qwen2_5.forward`` does it (``models.misc.interpolate_pos_encoding``)."""
    from tiny_models import random_image

    model, picture = showo2.model, random_image((64, 64), seed=5)
    table = model.position_embedding
    wider = torch.nn.Embedding(36, table.weight.shape[1])  # a 6 × 6 grid for the image's 4 × 4
    model.position_embedding = wider
    try:
        states = showo2.encode_image(picture)
    finally:
        model.position_embedding = table
    assert states.num_tokens == N_IMAGE and torch.isfinite(states.states).all()
    from entroprobe.models.base import seeded

    with seeded(0), torch.no_grad():
        latents = showo2.vae.sample(torch.zeros(1, 3, 1, 64, 64)).squeeze(2)  # the shapes the image path sees
    p = int(model.config.patch_size)
    grid = showo2.code["misc"].interpolate_pos_encoding(int(model.config.clip_latent_dim), wider,
                                                        latents.shape[-2] // p, latents.shape[-1] // p, 1)  # fmt: skip
    assert grid.shape[-2] == N_IMAGE  # one position per image token
    assert not torch.allclose(showo2.encode_image(picture).states, states.states)


@pytest.mark.parametrize("with_image", [False, True], ids=["text", "image"])
def test_text_response_matches_generation(showo2, with_image):
    from tiny_models import random_image

    picture = random_image((64, 64), seed=3) if with_image else None
    response = showo2.respond_text("what is this", picture, max_new_tokens=5, seed=1)
    again = showo2.respond_text("what is this", picture, max_new_tokens=5, seed=1)
    assert response.output_ids.tolist() == again.output_ids.tolist()
    torch.testing.assert_close(response.response.states, again.response.states)
    n_new = response.response.num_tokens
    assert 1 <= n_new <= 5 and response.response.token_ids.tolist() == response.output_ids.tolist()
    question = showo2.tokenizer("what is this", add_special_tokens=False)["input_ids"]
    pad = showo2.ids["img_pad_id"]
    assert response.prompt.token_ids.tolist() == [pad] * (N_IMAGE if with_image else 0) + question
    # the generated ids are what greedy decoding of the teacher-forced pass predicts
    with torch.no_grad(), __import__("entroprobe.models.base", fromlist=["seeded"]).seeded(1):
        embeds, _, _, block = showo2._understanding("what is this", picture)
    joined = torch.cat([embeds, showo2._embed(response.output_ids.tolist())], dim=1)
    logits = showo2.model.showo(inputs_embeds=joined, attention_mask=showo2._mask(joined.shape[1], block)).logits
    n_prompt = embeds.shape[1]
    assert logits[0, n_prompt - 1:n_prompt - 1 + n_new].argmax(-1).tolist() == response.output_ids.tolist()
    reference = _reference(showo2, joined, showo2._mask(joined.shape[1], block))
    torch.testing.assert_close(response.response.states, reference[:, n_prompt:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(response.prompt.states, reference[:, response.prompt.positions], atol=1e-5, rtol=1e-5)
    assert response.response.positions.tolist() == list(range(n_prompt, n_prompt + n_new))


@pytest.mark.parametrize("top_k", [1, 0])
def test_a_batch_of_text_replies_answers_what_each_prompt_answers_alone(showo2, top_k, monkeypatch):
    """mmu_generate's loop over several prompts at once (right-padded, the unfinished rows each step), then one
    pass; at B = 1 the answer is mmu_generate's own (top-k 1, the authors' setting); a sampled answer (top_k=0:
    the whole distribution) draws from its own seed."""
    from tiny_models import random_image

    from entroprobe.models.base import seeded

    monkeypatch.setitem(showo2.text_settings, "top_k", top_k or None)
    prompts = [("what is this", random_image((64, 64), seed=3)), ("a red cube on the mat", None), ("a cat", None),
               ("and this", random_image((64, 64), seed=4))]  # fmt: skip
    seeds = [3, 4, 5, 6]
    batched = showo2.respond_text_batch(prompts, max_new_tokens=4, seeds=seeds)
    for (text, image), seed, response in zip(prompts, seeds, batched):
        same_as_alone(response, showo2.respond_text(text, image, max_new_tokens=4, seed=seed))
        if top_k == 1:  # the authors' own call gives the same answer
            with seeded(seed, showo2.device), torch.no_grad():
                embeds, _, _, block = showo2._understanding(text, image)
                own = showo2.model.mmu_generate(input_embeds=embeds, attention_mask=showo2._mask(embeds.shape[1], block),
                                                top_k=1, temperature=1.0, max_new_tokens=4,
                                                eos_token=showo2.tokenizer.eos_token_id)  # fmt: skip
            assert [int(t) for t in own] == response.output_ids.tolist()
    if not top_k:
        answers = {tuple(showo2.respond_text("a cat", max_new_tokens=4, seed=s).output_ids.tolist()) for s in range(6)}
        assert len(answers) > 1


def test_image_response_is_the_last_sampler_calls_conditional_row(showo2, show_o_root):
    from upstream_checks import captured, stacked

    layers = list(showo2.model.showo.model.layers)
    with captured(layers) as calls:
        response = showo2.respond_image("a red cat", seed=4)
    assert len(calls) == 3  # 4 Euler grid points → 3 velocity calls
    last = stacked(calls[-1])  # (L + 1, 2, T, d): conditional row first
    norm = showo2.model.showo.model.norm
    words = showo2.tokenizer("a red cat", add_special_tokens=False)["input_ids"]
    offset = 1 + len(words) + 1  # prepare_gen_input: [bos] text [boi] then the time embedding
    image = list(range(offset + 1, offset + 1 + N_IMAGE))
    text = list(range(1, 1 + len(words)))
    assert response.response.positions.tolist() == image and response.prompt.positions.tolist() == text
    assert response.prompt.token_ids.tolist() == words
    with torch.no_grad():
        raw = last[:, 0]
        expected = torch.cat([raw[:-1], norm(raw[-1])[None]])
    torch.testing.assert_close(response.response.states, expected[:, image], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(response.prompt.states, expected[:, text], atol=1e-5, rtol=1e-5)
    unconditional = stacked(calls[-1])[:, 1]
    assert (unconditional[1:, image] - raw[1:, image]).abs().max() > 1e-4  # the CFG row is left out
    first = stacked(calls[0])[:, 0]
    assert (first[0, image] - raw[0, image]).abs().max() > 1e-4  # not the first step's (noise) states
    assert response.output.size == (64, 64) and response.output.mode == "RGB"
    same = showo2.respond_image("a red cat", seed=4)
    assert np.array_equal(np.asarray(same.output), np.asarray(response.output))
    assert not np.array_equal(np.asarray(showo2.respond_image("a red cat", seed=5).output), np.asarray(response.output))
    with pytest.raises(ItemError, match="longer than the 27 text tokens max_seq_length=48"):
        showo2.respond_image(" ".join(["cat"] * 30))


def test_a_batch_of_images_draws_what_each_prompt_draws_alone(showo2, monkeypatch):
    """One sampler run for prompts of different lengths (the script's batch layout: conditional rows, then the
    unconditional ones), each row's noise from its own seed; an adaptive solver runs them one at a time."""
    from upstream_checks import captured, stacked

    texts, seeds = ["a red cat", "the blue dog sat on a mat", "a cube"], [4, 5, 6]
    with captured(list(showo2.model.showo.model.layers)) as calls:
        batched = showo2.respond_image_batch(texts, seeds=seeds)
    assert len(calls) == 3 and all(stacked(c).shape[1] == 2 * len(texts) for c in calls)  # both rows of each prompt
    for text, seed, response in zip(texts, seeds, batched):
        same_as_alone(response, showo2.respond_image(text, seed=seed))
    with captured(list(showo2.model.showo.model.layers)) as calls:
        showo2.respond_image_batch(texts[:2], seeds=seeds[:2], sampling_method="dopri5")
    assert {stacked(c).shape[1] for c in calls} == {2}  # adaptive steps: each prompt alone
    with pytest.raises(ItemError, match="empty"):
        showo2.respond_image_batch(["a cat", " "], seeds=[1, 2])


def test_defaults_match_the_checkouts_configs(show_o_root):
    import yaml

    config = yaml.safe_load((show_o_root / "show-o2/configs/showo2_7b_demo_432x432.yaml").read_text())
    transport = config["transport"]
    for key in ("sampling_method", "time_shifting_factor", "atol", "rtol"):
        assert float(IMAGE_DEFAULTS[key].value) == float(transport[key]) if key != "sampling_method" else \
            IMAGE_DEFAULTS[key].value == transport[key]  # fmt: skip
    assert IMAGE_DEFAULTS["max_seq_length"].value == config["dataset"]["preprocessing"]["max_seq_length"]
    readme = (show_o_root / "show-o2/README.md").read_text()
    assert "guidance_scale=7.5 num_inference_steps=50" in readme
    script = (show_o_root / "show-o2/inference_mmu.py").read_text()
    assert "top_k = 1" in script and "temperature = 1.0" in script


def test_a_whole_run_records_defaults_and_commit(show_o_root, tiny, tmp_path):
    from upstream_checks import run_all_tasks

    args = {"repo": str(show_o_root), "device": "cpu", **MODEL_ARGS, "max_seq_length": "192"}  # byte-level prompts
    frame, manifest = run_all_tasks(f"show-o2:{tiny}", args,
                                    tmp_path / "run", limit=2, max_new_tokens=3, batch_size=2)  # fmt: skip
    model = manifest["model"]
    assert model["upstream"]["commit"] == ShowO2Adapter.upstream.tested[0][0]
    image = model["defaults"]["image-gen"]
    assert image["guidance_scale"] == {"value": 7.5, "source": IMAGE_DEFAULTS["guidance_scale"].source}
    assert image["num_inference_steps"] == {"value": 4, "source": "--model-args", "default": 50}
    assert model["defaults"]["text-gen"]["top_k"]["value"] == 1
    assert len(frame) > 0


def test_a_batch_of_prompts_is_encoded_in_one_pass(showo2):
    from tiny_models import random_image
    from upstream_checks import check_encode_batches

    check_encode_batches(showo2, list(showo2.model.showo.model.layers), ["a red cat", "the blue dog sat on a mat", "x"],
                         [random_image((64, 64), seed=3), random_image((40, 64), seed=4), random_image((64, 64), seed=5)],
                         ["what is this", None, "and this one here"])  # fmt: skip
