"""The harmon family: Harmon / Harmon-RecA from the user's checkout of wusize/Harmon.

Without a checkout (CI): defaults and their sources, settings, the layout and config checks, the error for a
missing ``repo=``, and the compatibility layers against their own small tests. With ``ENTROPROBE_UPSTREAM`` (a
folder holding ``Harmon/``): a tiny Harmon built from the checkout's classes through a config file of the released
form, saved as the release lays it out (``kl16.ckpt``, ``harmon_*.pth``, the LLM folder), loaded through the
family's loader, checked against independent captures and run through ``entroprobe run``.
"""

from __future__ import annotations

import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from upstream_checks import count_embedded_calls, same_as_alone

from entroprobe.errors import InputError, ItemError, LoadError
from entroprobe.models.compat import harmon as compat
from entroprobe.models.compat.devices import cuda_calls_to
from entroprobe.models.harmon import IMAGE_DEFAULTS, TEXT_DEFAULTS, HarmonAdapter, expand_to_square
from entroprobe.models.harmon_build import find_layout, pick_config
from entroprobe.models.upstream import settings
from tiny_models import byte_level_qwen_tokenizer, random_image

# -- CI: no checkout -------------------------------------------------------------------------------------------


def test_class_attributes_and_capabilities():
    assert HarmonAdapter.family == "harmon"
    assert HarmonAdapter.capabilities == {("encode", "text"), ("encode", "image"), ("text-gen", "text"),
                                          ("text-gen", "image"), ("image-gen", "text")}  # fmt: skip
    spec = HarmonAdapter.upstream
    assert (spec.name, spec.github) == ("Harmon", "wusize/Harmon")
    assert "non-commercial" in spec.licence


def test_defaults_name_the_authors_scripts():
    for table in (TEXT_DEFAULTS, IMAGE_DEFAULTS):
        for key, default in table.items():
            assert default.source.startswith("scripts/"), key
    assert IMAGE_DEFAULTS["cfg"].value == 3.0 and IMAGE_DEFAULTS["num_iter"].value == 64
    assert IMAGE_DEFAULTS["image_size"].value == 512 and TEXT_DEFAULTS["do_sample"].value is False


def test_settings_parse_command_line_strings():
    values, given = settings(IMAGE_DEFAULTS, {"cfg": "1.5", "num_iter": "8"}, what="image-gen")
    assert values["cfg"] == 1.5 and values["num_iter"] == 8 and values["temperature"] == 1.0
    assert set(given) == {"cfg", "num_iter"}
    with pytest.raises(InputError, match="num_iter"):
        settings(IMAGE_DEFAULTS, {"num_iter": "many"}, what="image-gen")


def test_a_missing_or_wrong_checkout_says_how_to_get_one(tmp_path):
    with pytest.raises(LoadError, match="no Harmon checkout at .*clone wusize/Harmon and pass repo=PATH"):
        HarmonAdapter.load(str(tmp_path), repo=str(tmp_path / "nope"))
    with pytest.raises(LoadError, match="clone wusize/Harmon"):
        HarmonAdapter.load(str(tmp_path), repo=str(tmp_path))


def test_an_unknown_keyword_is_named(tmp_path):
    with pytest.raises(InputError, match="bogus"):
        HarmonAdapter.load(str(tmp_path), repo=str(tmp_path), bogus=1)


def test_the_layout_check_names_what_is_missing(tmp_path):
    with pytest.raises(LoadError, match="no Harmon checkpoint folder"):
        find_layout(tmp_path / "absent")
    with pytest.raises(LoadError, match="kl16.ckpt"):
        find_layout(tmp_path)
    (tmp_path / "kl16.ckpt").write_bytes(b"")
    with pytest.raises(LoadError, match="no harmon_"):
        find_layout(tmp_path)
    (tmp_path / "harmon_1.5b.pth").write_bytes(b"")
    assert find_layout(tmp_path)[0].name == "harmon_1.5b.pth"
    (tmp_path / "harmon_0.5b.pth").write_bytes(b"")
    with pytest.raises(LoadError, match="several"):
        find_layout(tmp_path)
    assert find_layout(tmp_path, "harmon_0.5b.pth")[0].name == "harmon_0.5b.pth"
    with pytest.raises(LoadError, match="checkpoint="):
        find_layout(tmp_path, "harmon_7b.pth")


def test_the_config_follows_the_checkpoints_size(tmp_path):
    (tmp_path / "configs" / "models").mkdir(parents=True)
    for name in ("qwen2_5_0_5b_kl16_mar_b.py", "qwen2_5_1_5b_kl16_mar_h.py"):
        (tmp_path / "configs" / "models" / name).write_text("")
    assert pick_config(tmp_path, tmp_path / "harmon_1.5b-o.pth", None).name == "qwen2_5_1_5b_kl16_mar_h.py"
    assert pick_config(tmp_path, tmp_path / "harmon_0.5b.pth", None).name == "qwen2_5_0_5b_kl16_mar_b.py"
    with pytest.raises(LoadError, match="pass config=PATH"):
        pick_config(tmp_path, tmp_path / "harmon_recA.pth", None)
    with pytest.raises(LoadError, match="no Harmon config at"):
        pick_config(tmp_path, tmp_path / "harmon_1.5b.pth", "configs/none.py")


def test_the_builder_shim_builds_type_with_its_keywords(monkeypatch):
    monkeypatch.delitem(sys.modules, compat.BUILDER_MODULE, raising=False)
    assert compat.install_builder(mmengine_present=True) is False
    assert compat.install_builder(mmengine_present=False) is True
    builder = sys.modules[compat.BUILDER_MODULE].BUILDER
    assert builder.build({"type": dict, "a": 1, "inner": {"type": list}}) == {"a": 1, "inner": {"type": list}}
    with pytest.raises(TypeError, match="'type'"):
        builder.build({"a": 1})
    assert compat.install_builder(mmengine_present=False) is False  # already there
    monkeypatch.delitem(sys.modules, compat.BUILDER_MODULE)


def test_the_cache_shim_gives_pairs_that_cut_the_cache_in_place():
    from transformers import DynamicCache

    module = types.SimpleNamespace(DynamicCache=DynamicCache)
    with compat.legacy_cache(module) as swapped:
        cache = module.DynamicCache.from_legacy_cache()
        cache.update(torch.ones(1, 1, 5, 2), torch.ones(1, 1, 5, 2), 0)
        for keys, values in cache:  # Harmon.curtail_cache, as written for transformers 4
            keys.data = keys.data[:, :, :3]
            values.data = values.data[:, :, :3]
        assert cache.get_seq_length() == 3
    assert module.DynamicCache is DynamicCache
    assert swapped == compat.cache_needs_shim(DynamicCache)


class _Head:
    """A stand-in for MAR's diffusion head: a per-token net, its guided form as DiffLoss writes it, and a diffusion
    whose mean and variance depend on the net's output and the step."""

    in_channels, num_timesteps = 3, 4

    def __init__(self):
        self.gen_diffusion = self
        self.net = types.SimpleNamespace(forward=self.forward, forward_with_cfg=self.forward_with_cfg)

    @staticmethod
    def forward(x, t, c):
        eps = torch.tanh(x * 0.7 + c[:, :3] + t[:, None] * 0.1)
        return torch.cat([eps, eps * 0.5], dim=1)

    def forward_with_cfg(self, x, t, c, cfg_scale):
        half = x[: len(x) // 2]
        out = self.forward(torch.cat([half, half]), t, c)
        cond, uncond = out[:, :3].chunk(2)
        eps = uncond + cfg_scale * (cond - uncond)
        return torch.cat([torch.cat([eps, eps]), out[:, 3:]], dim=1)

    @staticmethod
    def p_mean_variance(model, x, t, clip_denoised, denoised_fn, model_kwargs):
        out = model(x, t, **model_kwargs)
        return {"mean": x - 0.3 * out[:, :3], "log_variance": out[:, 3:] - t[:, None].float()}


def _sample_alone(head, z, cfg, temperature):
    """DiffLoss.sample and p_sample_loop as the checkout runs them, written out: torch's global generator."""
    if cfg != 1.0:
        noise = torch.randn(z.shape[0] // 2, head.in_channels)
        x, net, kwargs = torch.cat([noise, noise]), head.net.forward_with_cfg, {"c": z, "cfg_scale": cfg}
    else:
        x, net, kwargs = torch.randn(z.shape[0], head.in_channels), head.net.forward, {"c": z}
    for i in list(range(head.num_timesteps))[::-1]:
        t = torch.tensor([i] * x.shape[0])
        out = head.p_mean_variance(net, x, t, False, None, kwargs)
        noise = torch.randn_like(x)
        x = out["mean"] + (t != 0).float().view(-1, 1) * torch.exp(0.5 * out["log_variance"]) * noise * temperature
    return x


@pytest.mark.parametrize("cfg", [1.0, 2.5])
def test_a_batch_draws_each_prompts_order_and_noise_as_alone(cfg):
    """per_prompt_draws: prompt i of a batch gets the order numpy's global generator gives it alone after
    np.random.seed(seed_i), and the diffusion noise torch's gives it alone after torch.manual_seed(seed_i)."""
    from entroprobe.models.harmon_sample import per_prompt_draws

    head, seeds, k = _Head(), [11, 2**32 + 5, 7], 2
    model = types.SimpleNamespace(mar=types.SimpleNamespace(seq_len=9, diffloss=head))
    halves = 2 if cfg != 1.0 else 1
    z = torch.randn(halves * len(seeds) * k, 5, generator=torch.Generator().manual_seed(0))  # rows: cond, then uncond
    with per_prompt_draws(model, seeds, torch.device("cpu")):
        orders = model.mar.sample_orders(2 * len(seeds))
        tokens = model.mar.diffloss.sample(z, 0.8, cfg)
    assert not hasattr(model.mar, "sample_orders") and not hasattr(head, "sample")
    for i, seed in enumerate(seeds):
        np.random.seed(seed % 2**32)
        order = np.array(list(range(9)))
        np.random.shuffle(order)  # MAR.sample_orders' first row
        assert orders[i].tolist() == orders[len(seeds) + i].tolist() == order.tolist()
        rows = [z[h * len(seeds) * k + i * k:][:k] for h in range(halves)]  # the prompt's rows of z
        torch.manual_seed(seed)
        alone = _sample_alone(head, torch.cat(rows), cfg, 0.8)
        for h in range(halves):
            torch.testing.assert_close(tokens[h * len(seeds) * k + i * k:][:k], alone[h * k:][:k], rtol=0, atol=0)
    with per_prompt_draws(model, seeds, torch.device("cpu")), pytest.raises(RuntimeError, match="5 generation orders"):
        model.mar.sample_orders(5)


def test_cuda_calls_go_to_the_models_device_only_off_the_gpu():
    original = torch.Tensor.cuda
    with cuda_calls_to("cpu") as redirected:
        moved = torch.zeros(2).cuda()
    assert redirected and moved.device.type == "cpu" and torch.Tensor.cuda is original
    with pytest.raises(ValueError), cuda_calls_to("cpu"):
        raise ValueError("inside")
    assert torch.Tensor.cuda is original
    with cuda_calls_to("cuda") as redirected:
        assert not redirected and torch.Tensor.cuda is original


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_cuda_calls_follow_a_model_on_a_second_gpu():
    with cuda_calls_to("cuda:1") as redirected:
        assert redirected and torch.zeros(1).cuda().device == torch.device("cuda:1")


def test_an_image_prompt_is_padded_to_a_grey_square():
    from PIL import Image

    wide = expand_to_square(Image.new("RGB", (8, 4), (255, 0, 0)))
    assert wide.size == (8, 8)
    pixels = np.array(wide)
    assert (pixels[0, 0] == 127).all() and (pixels[4, 4] == [255, 0, 0]).all() and (pixels[7, 7] == 127).all()


# -- upstream: a tiny Harmon from the checkout -----------------------------------------------------------------

D, LAYERS, SIZE, BUFFER = 32, 2, 64, 4  # LLM width and depth, image side, MAR buffer tokens
GRID = SIZE // 16
ARGS = {"prompt_image_size": SIZE, "image_size": SIZE, "num_iter": 2}
CONFIG = '''# a tiny config of the released form (configs/models/qwen2_5_0_5b_kl16_mar_b.py), for tests
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from src.models.mar.mar import MAR
from src.models.mar.vae import AutoencoderKL
from src.models.harmon import Harmon
from xtuner.utils import PROMPT_TEMPLATE

llm_name_or_path = "Qwen/Qwen2.5-tiny"
prompt_template = dict(
    SYSTEM="<|im_start|>system\\n{system}<|im_end|>\\n",
    INSTRUCTION="<|im_start|>user\\n{input}<|im_end|>\\n<|im_start|>assistant\\n",
    SUFFIX="<|im_end|>", SUFFIX_AS_EOS=True, SEP="\\n", STOP_WORDS=["<|im_end|>", "<|endoftext|>"])
tokenizer = dict(type=AutoTokenizer.from_pretrained, pretrained_model_name_or_path=llm_name_or_path,
                 trust_remote_code=True, padding_side="right")
model = dict(
    type=Harmon, tokenizer=tokenizer, prompt_template=prompt_template,
    vae=dict(type=AutoencoderKL, embed_dim=16, ch_mult=(1, 1, 2, 2, 4), ckpt_path="checkpoints/kl16.ckpt"),
    vae_scale=0.2325,
    llm=dict(type=AutoModelForCausalLM.from_pretrained, pretrained_model_name_or_path=llm_name_or_path,
             torch_dtype=torch.float32, attn_implementation="flash_attention_2"),
    mar=dict(type=MAR, img_size=%d, vae_stride=16, patch_size=1, encoder_embed_dim=32, encoder_depth=1,
             encoder_num_heads=2, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2, vae_embed_dim=16,
             buffer_size=%d, diffloss_d=1, diffloss_w=32, num_sampling_steps="4", diffusion_batch_mul=1))
''' % (SIZE, BUFFER)


def _save_tiny_harmon(root, directory):
    """Write a tiny Harmon as the release lays it out: ``kl16.ckpt``, ``harmon_tiny.pth``, the LLM folder named as
    the config's ``llm_name_or_path`` ends, and the config file beside them (returned)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from entroprobe.models.harmon_build import build_harmon
    from entroprobe.models.upstream import import_from

    tokenizer = byte_level_qwen_tokenizer()
    llm = directory / "Qwen2.5-tiny"
    tokenizer.save_pretrained(llm)
    torch.manual_seed(0)
    Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tokenizer) + 1, hidden_size=D, intermediate_size=64,
                                 num_hidden_layers=LAYERS, num_attention_heads=4, num_key_value_heads=2,
                                 max_position_embeddings=512, eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id)).save_pretrained(llm)  # fmt: skip
    vae = import_from(root, "src.models.mar.vae", HarmonAdapter.upstream)
    torch.save({"model": vae.AutoencoderKL(embed_dim=16, ch_mult=(1, 1, 2, 2, 4)).state_dict()}, directory / "kl16.ckpt")
    config = directory / "tiny_config.py"
    config.write_text(CONFIG)
    model, _ = build_harmon(root, HarmonAdapter.upstream, config, directory, directory / "kl16.ckpt", llm=None,
                            dtype=None)  # fmt: skip
    torch.manual_seed(1)
    state = {k: v + 0.02 * torch.randn_like(v) if k.startswith(("proj_", "mar.")) and v.is_floating_point() else v
             for k, v in model.state_dict().items()}  # the checkpoint differs from the fresh build
    torch.save(state, directory / "harmon_tiny.pth")
    return config


@pytest.fixture(scope="module")
def harmon_root():
    from upstream_checks import checkout_or_skip, needs

    root = checkout_or_skip("Harmon")
    needs("einops", "timm")
    return root


@pytest.fixture(scope="module")
def tiny_dir(harmon_root, tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny_harmon")
    _save_tiny_harmon(harmon_root, directory)
    return directory


@pytest.fixture(scope="module")
def harmon(harmon_root, tiny_dir):
    from entroprobe.models import load_model

    return load_model(f"harmon:{tiny_dir}", repo=str(harmon_root), config=str(tiny_dir / "tiny_config.py"), **ARGS)


def _hidden(model, **inputs):
    """transformers' own hidden states of the LLM, ``(L + 1, T, d)`` (the last after the final norm)."""
    with torch.no_grad():
        out = model.llm(**inputs, output_hidden_states=True, use_cache=False)
    return torch.stack(out.hidden_states)[:, 0].float()


def test_load_builds_the_config_and_loads_the_checkpoint(harmon, harmon_root, tiny_dir):
    assert harmon.num_layers == LAYERS and harmon.d_model == D and harmon.weights["missing"] == 0
    saved = torch.load(tiny_dir / "harmon_tiny.pth", weights_only=True)
    assert torch.equal(harmon.model.state_dict()["proj_in.0.weight"], saved["proj_in.0.weight"])
    described = harmon.describe()
    head = subprocess.run(["git", "-C", str(harmon_root), "rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()  # fmt: skip
    assert described["upstream"]["commit"] == head and described["upstream"]["dirty"] is False
    assert described["defaults"]["image-gen"]["num_iter"] == {"value": 2, "source": "--model-args", "default": 64}
    assert harmon.tokenizer.convert_ids_to_tokens(harmon.image_token_id) == "<image>"


def test_encode_text_equals_transformers_hidden_states(harmon):
    states = harmon.encode_text("a red cat")
    ids = harmon.tokenizer("a red cat", return_tensors="pt")["input_ids"]
    assert torch.equal(states.token_ids, ids[0]) and states.final_norm is True
    torch.testing.assert_close(states.states, _hidden(harmon.model, input_ids=ids))


def _script_image_prompt(model, image, question):
    """scripts/image2text.py's prompt for ``image``, written out here: ids and input embeddings."""
    from einops import rearrange

    token = model.tokenizer.encode("<image>", add_special_tokens=False)[-1]
    picture = expand_to_square(image.convert("RGB")).resize((SIZE, SIZE))
    pixels = torch.from_numpy(np.array(picture)).to(model.dtype)
    pixels = 2 * (rearrange(pixels, "h w c -> c h w")[None] / 255) - 1
    prompt = model.prompt_template["INSTRUCTION"].format(input="<image>\n" + question)
    prompt = prompt.replace("<image>", "<image>" * (GRID**2 + BUFFER))
    ids = model.tokenizer.encode(prompt, add_special_tokens=True, return_tensors="pt")
    with torch.no_grad():
        _, z_enc = model.extract_visual_feature(model.encode(pixels))
        embeds = z_enc.new_zeros(*ids.shape, D)
        embeds[ids == token] = z_enc.flatten(0, 1)
        embeds[ids != token] = model.llm.get_input_embeddings()(ids[ids != token])
    return ids, embeds, token


def test_encode_image_returns_the_scripts_image_positions(harmon):
    image = random_image((48, 40), seed=3)
    states = harmon.encode_image(image, "what is this")
    ids, embeds, token = _script_image_prompt(harmon.model, image, "what is this")
    where = torch.nonzero(ids[0] == token).squeeze(1)
    assert where.numel() == GRID**2 + BUFFER  # the script's <image> run: the patches, then MAR's buffer
    assert states.num_tokens == GRID**2 and torch.equal(states.positions, where[: GRID**2])
    torch.testing.assert_close(states.states, _hidden(harmon.model, inputs_embeds=embeds)[:, where[: GRID**2]])


def test_text_response_is_the_greedy_answer_then_one_pass(harmon):
    image = random_image((32, 32), seed=4)
    response = harmon.respond_text("what is this", image, max_new_tokens=5)
    ids, embeds, token = _script_image_prompt(harmon.model, image, "what is this")
    tok = harmon.tokenizer
    with torch.no_grad():
        answer = harmon.model.llm.generate(inputs_embeds=embeds, do_sample=False, max_new_tokens=5,
                                           eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)[0]  # fmt: skip
    assert torch.equal(response.output_ids, answer)
    full = torch.cat([embeds, harmon.model.llm.get_input_embeddings()(answer[None])], dim=1)
    hidden = _hidden(harmon.model, inputs_embeds=full)
    n = ids.shape[1]
    torch.testing.assert_close(response.response.states, hidden[:, n:n + answer.numel()])
    question = tok("what is this", add_special_tokens=False)["input_ids"]
    image_at = torch.nonzero(ids[0] == token).squeeze(1)[: GRID**2]  # the patches, not the buffer after them
    assert response.prompt.num_tokens == image_at.numel() + len(question)
    assert torch.equal(response.prompt.positions[:image_at.numel()], image_at)
    assert response.prompt.token_ids[image_at.numel():].tolist() == question
    torch.testing.assert_close(response.prompt.states, hidden[:, response.prompt.positions])


def test_image_response_is_one_pass_over_prompt_and_final_tokens(harmon):
    from upstream_checks import captured, stacked

    response = harmon.respond_image("a red cat", seed=5)
    tokens = response.extra["tokens"][None]  # (1, m, n, c): what sample() decoded
    with torch.no_grad():
        pixels = harmon.model.decode(tokens.clone())
    picture = torch.clamp(127.5 * pixels[0] + 128.0, 0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(np.array(response.output), picture)
    prompt = harmon.model.prompt_template["INSTRUCTION"].format(input="Generate an image: a red cat")
    ids = harmon.tokenizer.encode(prompt, add_special_tokens=True, return_tensors="pt")
    layers = list(harmon.model.llm.model.layers)
    with captured(layers, first_input=lambda a, k: k["hidden_states"] if "hidden_states" in k else a[0]) as calls, \
            torch.no_grad():  # fmt: skip
        harmon.model.forward_mae_encoder(tokens, torch.zeros(1, GRID**2), input_ids=ids,
                                         attention_mask=torch.ones_like(ids))  # fmt: skip
    raw = stacked(calls[0])[:, 0]  # (L + 1, P + m·n + buffer, d)
    p = ids.shape[1]
    assert raw.shape[1] == p + GRID**2 + BUFFER
    assert torch.equal(response.response.positions, torch.arange(p, p + GRID**2))
    torch.testing.assert_close(response.response.states[:-1], raw[:-1, p:p + GRID**2])
    final = harmon.model.llm.model.norm(raw[-1:, p:p + GRID**2])
    torch.testing.assert_close(response.response.states[-1:], final)
    words = harmon.tokenizer("a red cat", add_special_tokens=False)["input_ids"]
    assert response.prompt.token_ids.tolist() == words


@pytest.mark.parametrize("cfg, schedule", [("3.0", "constant"), ("2.0", "linear"), ("1.0", "constant")])
def test_an_image_alone_is_the_one_the_script_samples(harmon_root, tiny_dir, cfg, schedule):
    """At B = 1 the tokens and picture are those of the checkout's own Harmon.sample under np.random.seed and
    torch.manual_seed, as text2image.py calls it (its rows from prepare_text_conditions)."""
    from entroprobe.models import load_model
    from entroprobe.models.compat.harmon import legacy_cache

    harmon = load_model(f"harmon:{tiny_dir}", repo=str(harmon_root), config=str(tiny_dir / "tiny_config.py"),
                        **ARGS, cfg=cfg, cfg_schedule=schedule)  # fmt: skip
    response = harmon.respond_image("a red cat on a mat", seed=9)
    model = harmon.model
    cond = model.prepare_text_conditions("Generate an image: a red cat on a mat", "Generate an image.")
    ids, mask = cond["input_ids"], cond["attention_mask"]
    if cfg == "1.0":
        ids, mask = ids[:1], mask[:1]
    grabbed, decode = [], model.decode
    state = np.random.get_state()
    try:
        model.decode = lambda z: grabbed.append(z.clone()) or decode(z)
        np.random.seed(9)
        with torch.random.fork_rng(), legacy_cache(harmon.module), cuda_calls_to("cpu"), torch.no_grad():
            torch.manual_seed(9)
            pixels = model.sample(input_ids=ids, attention_mask=mask, num_iter=2, cfg=float(cfg), cfg_schedule=schedule,
                                  temperature=1.0, progress=False, image_shape=(GRID, GRID))  # fmt: skip
    finally:
        del model.decode
        np.random.set_state(state)
    assert torch.equal(response.extra["tokens"], grabbed[-1][0].float())
    picture = torch.clamp(127.5 * pixels[0] + 128.0, 0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(np.array(response.output), picture)


@pytest.mark.parametrize("cfg", ["3.0", "1.0"])
def test_a_batch_of_images_draws_what_each_prompt_draws_alone(harmon_root, tiny_dir, cfg, monkeypatch):
    """One Harmon.sample over every prompt's rows (text2image.py's layout) and one teacher-forced pass, prompts of
    different lengths; each picture, its tokens and its states are those of its prompt alone."""
    from entroprobe.models import load_model

    harmon = load_model(f"harmon:{tiny_dir}", repo=str(harmon_root), config=str(tiny_dir / "tiny_config.py"), **ARGS,
                        cfg=cfg)  # fmt: skip
    texts, seeds = ["a red cat", "the blue dog sat on the mat in the sun", "x"], [3, 4, 5]
    calls = []
    sample, encoder = harmon.model.sample, harmon.model.forward_mae_encoder
    monkeypatch.setattr(harmon.model, "sample", lambda **kw: calls.append(("sample", kw["input_ids"].shape[0]))
                        or sample(**kw))  # fmt: skip

    def forced(x, mask, **kw):
        if kw.get("past_key_values") is None:
            calls.append(("pass", x.shape[0]))
        return encoder(x, mask, **kw)

    monkeypatch.setattr(harmon.model, "forward_mae_encoder", forced)
    batched = harmon.respond_image_batch(texts, seeds=seeds)
    assert calls == [("sample", 3 * (2 if cfg == "3.0" else 1)), ("pass", 3)]
    for text, seed, response in zip(texts, seeds, batched):
        alone = harmon.respond_image(text, seed=seed)
        same_as_alone(response, alone)
        torch.testing.assert_close(response.extra["tokens"], alone.extra["tokens"], atol=1e-4, rtol=1e-4)
    assert not np.array_equal(np.array(batched[0].output), np.array(harmon.respond_image(texts[0], seed=4).output))
    with pytest.raises(InputError, match="3 prompts need as many seeds"):
        harmon.respond_image_batch(texts, seeds=[1, 2])


def test_the_same_seed_draws_the_same_image(harmon):
    one, two = harmon.respond_image("a blue cube", seed=7), harmon.respond_image("a blue cube", seed=7)
    assert np.array_equal(np.array(one.output), np.array(two.output))
    assert not np.array_equal(np.array(one.output), np.array(harmon.respond_image("a blue cube", seed=8).output))


def test_errors_name_the_item(harmon, tiny_dir, harmon_root):
    from entroprobe.models import load_model

    with pytest.raises(ItemError, match="empty"):
        harmon.respond_image("  ")
    with pytest.raises(InputError, match="cfg_schedule"):
        harmon.respond_image("a cat", cfg_schedule="cosine")
    wider = tiny_dir / "wider_config.py"  # a config of another size than the checkpoint's
    wider.write_text(CONFIG.replace("encoder_embed_dim=32", "encoder_embed_dim=48"))
    with pytest.raises(LoadError, match="does not fit the model its config builds"):
        load_model(f"harmon:{tiny_dir}", repo=str(harmon_root), config=str(wider))


def test_a_whole_run_records_defaults_and_the_checkout(harmon_root, tiny_dir, tmp_path):
    from upstream_checks import run_all_tasks

    frame, manifest = run_all_tasks(f"harmon:{tiny_dir}", {"repo": str(harmon_root),
                                                           "config": str(tiny_dir / "tiny_config.py"), **ARGS},
                                    tmp_path / "run", batch_size=2)  # fmt: skip
    model = manifest["model"]
    assert model["upstream"]["repository"] == "wusize/Harmon" and model["upstream"]["path"] == str(harmon_root)
    assert model["defaults"]["image-gen"]["cfg"] == {"value": 3.0, "source": IMAGE_DEFAULTS["cfg"].source}
    assert model["defaults"]["image-gen"]["num_iter"] == {"value": 2, "source": "--model-args", "default": 64}
    image_gen = frame[frame["task"] == "image-gen"]
    assert set(image_gen["num_layers"]) == {LAYERS} and (image_gen["n_response_tokens"] == GRID**2).all()


@pytest.mark.parametrize("sampled", [False, True])
def test_a_batch_of_text_replies_answers_what_each_prompt_answers_alone(harmon_root, tiny_dir, sampled, monkeypatch):
    """One generate over the prompts' embeddings (left-padded) and one teacher-forced pass (right-padded), text and
    image prompts of different lengths; a sampled answer draws from its own seed."""
    from entroprobe.models import load_model

    harmon = load_model(f"harmon:{tiny_dir}", repo=str(harmon_root), config=str(tiny_dir / "tiny_config.py"), **ARGS,
                        do_sample=str(sampled).lower())  # fmt: skip
    prompts = [("a red cat", None), ("what is this", random_image((32, 32), seed=4)),
               ("the blue dog sat on the mat in the sun", None), (None, random_image((32, 32), seed=5))]  # fmt: skip
    seeds = [3, 4, 5, 6]
    calls = count_embedded_calls(monkeypatch, harmon.model.llm, harmon.model.llm.model)
    batched = harmon.respond_text_batch(prompts, max_new_tokens=4, seeds=seeds)
    assert calls[0] == ("generate", 4) and calls[-1] == ("pass", 4)  # the whole batch in each
    assert [kind for kind, _ in calls].count("pass") == 1 and all(n == 4 for _, n in calls)
    for (text, image), seed, response in zip(prompts, seeds, batched):
        same_as_alone(response, harmon.respond_text(text, image, max_new_tokens=4, seed=seed))
    if sampled:  # the seed decides what is drawn
        answers = {tuple(harmon.respond_text("a red cat", max_new_tokens=4, seed=s).output_ids.tolist()) for s in range(6)}
        assert len(answers) > 1


def test_a_batch_of_prompts_is_encoded_in_one_pass(harmon):
    from upstream_checks import check_encode_batches

    check_encode_batches(harmon, list(harmon.model.llm.model.layers), ["a red cat", "the blue dog sat on the mat", "x"],
                         [random_image((32, 32), seed=4), random_image((20, 40), seed=5), random_image((32, 32), seed=6)],
                         ["what is this", None, "and this one here"])  # fmt: skip
