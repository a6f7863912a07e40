"""emu3 family on a tiny random Emu3ForConditionalGeneration saved with its processor and loaded back by path."""

from __future__ import annotations

import shutil

import pytest
import torch
from tiny_models import random_image, tiny_emu3

from entroprobe.errors import InputError, ItemError, LoadError
from entroprobe.models import load_model
from entroprobe.models.emu3 import Emu3Adapter, visual_constraint
from entroprobe.models.hooks import capture_layers, concat_calls, to_layer_states

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
LAYERS = "model.text_model.layers"


@pytest.fixture(scope="module")
def emu3_dir(tmp_path_factory):
    return tiny_emu3(tmp_path_factory.mktemp("emu3"))


@pytest.fixture(scope="module")
def emu3(emu3_dir):
    """Measuring every prompt token (the layout tests compare whole sequences); the question: see the end."""
    return load_model(f"emu3:{emu3_dir}", do_sample=True, min_new_tokens=5, prompt_tokens="template")


def hooked(adapter: Emu3Adapter, calls, n_tokens: int):
    """Hook-captured states of the generation calls, last entry through the model's final norm."""
    states = to_layer_states(concat_calls(calls), slice(None), final_norm=adapter.model.model.text_model.norm)
    assert states.num_tokens == n_tokens
    return states.states


def test_loads_by_path(emu3, emu3_dir):
    assert isinstance(emu3, Emu3Adapter) and emu3.name == f"emu3:{emu3_dir}"
    assert (emu3.num_layers, emu3.d_model, emu3.context, emu3.final_norm) == (2, 32, 96, True)
    assert len(emu3.describe()["capabilities"]) == 5


def test_encode_text(emu3):
    states = emu3.encode_text("the cat sat on the mat")
    assert states.states.shape == (3, 7, 32)
    assert states.token_ids[0] == emu3.processor.tokenizer.bos_token_id  # the processor prepends <bos>


def test_encode_image_positions_match_the_models_image_tokens(emu3):
    image = random_image((16, 16))
    states = emu3.encode_image(image, "what is this")
    # the image in the reply prompt, BAAI's template string here (the tiny processor has no chat template)
    prompt = "You are a helpful assistant. USER: <image>what is this. ASSISTANT:"
    assert emu3._reply_prompt("what is this", image=True) == prompt
    inputs = emu3.processor(images=[image], text=[prompt], return_tensors="pt")
    with torch.no_grad():
        codes = emu3.model.model.get_image_tokens(inputs["pixel_values"], inputs["image_sizes"])
    assert states.num_tokens == codes.numel() == 2 * (2 + 1)  # a 2x2 grid, each row closed by end-of-line
    assert states.states.shape == (3, 6, 32)
    assert states.token_ids.tolist() == codes.tolist()
    mask = inputs["input_ids"][0] == emu3.model.vocabulary_mapping.image_token_id
    assert states.positions.tolist() == mask.nonzero().flatten().tolist()
    # feeding the VQ token ids is the same as the model's own pixel path
    with torch.no_grad():
        out = emu3.model(**inputs, output_hidden_states=True)
    pixel_path = torch.stack(out.hidden_states)[:, 0, mask]  # (L + 1, 6, d)
    assert torch.allclose(states.states, pixel_path, atol=1e-5)


@pytest.mark.parametrize("with_image", [False, True])
def test_text_response_equals_hooked_generation(emu3, with_image):
    image = random_image((16, 16), seed=1) if with_image else None
    with capture_layers(emu3.model, LAYERS) as cap:
        reply = emu3.respond_text("describe this picture", image=image, max_new_tokens=5, seed=2)
    n_prompt, n_new = reply.prompt.num_tokens, reply.response.num_tokens
    assert n_new == 5 == reply.output_ids.numel()
    assert int(reply.extra["image_mask"].sum()) == (6 if with_image else 0)
    during = hooked(emu3, cap.calls[:-1], n_prompt + n_new - 1)
    assert torch.allclose(during[:, :n_prompt], reply.prompt.states, atol=1e-5)
    assert torch.allclose(during[:, n_prompt:], reply.response.states[:, :-1], atol=1e-5)
    if with_image:
        encoded = emu3.encode_image(image, "describe this picture")
        assert torch.allclose(reply.prompt.select(reply.extra["image_mask"]).states, encoded.states, atol=1e-5)


def test_chat_template_formats_replies_not_encodings(emu3):
    template = (
        "{% for m in messages if m['role'] == 'user' %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>"
        "{% else %}what is {{ c['text'] }}{% endif %}{% endfor %}{% endfor %}"
        "{% if add_generation_prompt %} the{% endif %}"
    )
    tok = emu3.processor.tokenizer
    emu3.processor.chat_template = template
    try:
        reply = emu3.respond_text("red cube", max_new_tokens=2, seed=0)
        assert reply.prompt.token_ids.tolist() == [tok.bos_token_id, *tok("what is red cube the")["input_ids"]]
        assert emu3.encode_text("red cube").token_ids.tolist() == [tok.bos_token_id, *tok("red cube")["input_ids"]]
        reply = emu3.respond_text("red cube", image=random_image(), max_new_tokens=2, seed=0)
        mask = reply.extra["image_mask"]
        assert int(mask.sum()) == 6
        assert reply.prompt.token_ids[-5:].tolist() == tok("what is red cube the")["input_ids"]
    finally:
        emu3.processor.chat_template = None


def test_image_response_layout(emu3):
    reply = emu3.respond_image("a red cube", seed=0, image_area=256)
    height, width = reply.extra["grid"]
    assert (height, width) == (2, 2)
    assert reply.output.size == (16, 16) and reply.output.mode == "RGB"
    ids = reply.output_ids.tolist()
    tok = emu3.processor.tokenizer
    mapping = emu3.model.vocabulary_mapping
    assert len(ids) == height * (width + 1) + 3
    assert ids[2] == ids[5] == mapping.eol_token_id
    assert all(ids[i] in mapping.image_tokens for i in (0, 1, 3, 4))
    assert ids[-3:] == [tok.convert_tokens_to_ids("<|extra_201|>"), tok.convert_tokens_to_ids("<|image end|>"), 3]
    assert reply.response.states.shape == (3, 6, 32)  # the grid, end-of-line markers included
    assert reply.response.token_ids.tolist() == ids[:6]
    assert reply.prompt.token_ids[-1] == tok.convert_tokens_to_ids("<|image token|>")


def test_image_response_with_cfg_keeps_conditional_calls(emu3):
    """With guidance, transformers runs the unconditional prompt in separate calls after each conditional
    one: the response states equal the conditional calls (call 0 of each step) and differ from the others."""
    with capture_layers(emu3.model, LAYERS, calls_per_step=2) as cap:
        reply = emu3.respond_image("a red cube", seed=4, image_area=256, guidance_scale=3.0, negative_prompt="blue")
    n_prompt, n_new = reply.prompt.num_tokens, reply.output_ids.numel()
    assert reply.extra["guidance_scale"] == 3.0
    assert len(cap.calls) == 2 * n_new + 1  # (conditional, unconditional) per token, then the teacher-forced pass
    conditional = [c for c in cap.select(call_in_step=0) if c.step < n_new]
    unconditional = cap.select(call_in_step=1)
    during = hooked(emu3, conditional, n_prompt + n_new - 1)
    assert torch.allclose(during[:, :n_prompt], reply.prompt.states, atol=1e-5)
    grid = reply.response.num_tokens
    assert torch.allclose(during[:, n_prompt : n_prompt + grid], reply.response.states, atol=1e-5)
    assert unconditional[0].stacked().shape[2] != n_prompt  # the negative prompt, not the conditional one
    cond_last, uncond_last = conditional[-1].stacked(), unconditional[-1].stacked()  # the same step
    assert torch.equal(cond_last[0], uncond_last[0])  # both were fed the same token…
    assert not torch.allclose(cond_last[1:], uncond_last[1:], atol=1e-4)  # …in different contexts


def test_image_options_set_at_load_are_defaults_that_calls_override(emu3_dir):
    """``--model-args`` reach image generation: the probe calls respond_image(text, seed=…) only."""
    adapter = load_model(
        f"emu3:{emu3_dir}", image_area="6400", ratio="1:1", guidance_scale="3", negative_prompt="a blue sphere",
        prompt_tokens="template",
    )  # strings, as from the command line
    assert adapter.image_defaults == {
        "image_area": 6400, "ratio": "1:1", "guidance_scale": 3.0, "negative_prompt": "a blue sphere"
    }  # fmt: skip
    assert adapter.describe()["image_defaults"]["image_area"] == 6400
    with pytest.raises(ItemError, match=r"image tokens \(10x10 grid\) exceed the model's context of 96"):
        adapter.respond_image("a red cube")  # the load-time image_area reached generation

    def negative_length(text: str) -> int:
        ids = adapter.processor(text=[text], return_for_image_generation=True, return_tensors="pt", image_area=256)
        return ids["input_ids"].shape[1]

    assert negative_length("a blue sphere") != negative_length("")
    with capture_layers(adapter.model, LAYERS, calls_per_step=2) as cap:
        reply = adapter.respond_image("a red cube", seed=1, image_area=256)  # a per-call value overrides
    assert reply.extra["grid"] == (2, 2) and reply.extra["guidance_scale"] == 3.0  # the load-time guidance
    unconditional = cap.select(call_in_step=1)[0].stacked()  # the load-time negative prompt's tokens
    assert unconditional.shape[2] == negative_length("a blue sphere")
    with capture_layers(adapter.model, LAYERS, calls_per_step=2) as cap:
        reply = adapter.respond_image("a red cube", seed=1, image_area=256, negative_prompt="")
    assert cap.select(call_in_step=1)[0].stacked().shape[2] == negative_length("")
    with capture_layers(adapter.model, LAYERS) as cap:
        reply = adapter.respond_image("a red cube", seed=1, image_area=256, guidance_scale=1.0)
    assert reply.extra["guidance_scale"] == 1.0
    assert len(cap.calls) == reply.output_ids.numel() + 1  # no unconditional calls: guidance is off
    accepted = r"accepted: .*chat_template, system_prompt, prompt_tokens, guidance_scale, negative_prompt, positive_prompt"
    with pytest.raises(InputError, match=rf"Unknown model argument\(s\) steps; {accepted}"):
        load_model(f"emu3:{emu3_dir}", steps=3)
    with pytest.raises(InputError, match=r"Image generation argument image_area='large' is not an integer"):
        load_model(f"emu3:{emu3_dir}", image_area="large")


def test_image_generation_deterministic_under_seed(emu3):
    a = emu3.respond_image("a red cube", seed=5, image_area=256)
    b = emu3.respond_image("a red cube", seed=5, image_area=256)
    c = emu3.respond_image("a red cube", seed=6, image_area=256)
    assert torch.equal(a.output_ids, b.output_ids) and torch.equal(a.response.states, b.response.states)
    assert a.output.tobytes() == b.output.tobytes()
    assert not torch.equal(a.output_ids, c.output_ids)


def test_visual_constraint():
    allowed = visual_constraint(2, 3, start_id=9, visual_ids=[20, 21], eol_id=8, end_ids=(5, 6, 7), pad_id=0)
    prompt = [1, 2, 9]
    expected = [[20, 21]] * 3 + [[8]] + [[20, 21]] * 3 + [[8], [5], [6], [7], [0]]
    sequence = list(prompt)
    for want in expected:
        assert allowed(0, torch.tensor(sequence)) == want
        sequence.append(want[0])


def test_errors(emu3, emu3_dir, tmp_path):
    with pytest.raises(ItemError, match=r"image prompt: unreadable image"):
        emu3.encode_image(b"\x89PNG broken")
    with pytest.raises(ItemError, match=r"image prompt: unreadable image"):
        emu3.respond_text("what is this", image=b"nope")
    with pytest.raises(ItemError, match=r"prompt 'cat cat .*: 101 tokens is longer than the model's context of 96"):
        emu3.encode_text(" ".join(["cat"] * 100))
    with pytest.raises(ItemError, match=r"image tokens \(10x10 grid\) exceed the model's context of 96"):
        emu3.respond_image("a red cube", image_area=80 * 80)
    with pytest.raises(ItemError, match=r"the prompt text is empty"):
        emu3.respond_image("")
    with pytest.raises(InputError, match=r"Unknown image generation argument\(s\) steps; accepted: guidance_scale"):
        emu3.respond_image("a red cube", steps=3)
    with pytest.raises(InputError, match=r"guidance_scale='strong' is not a float"):
        emu3.respond_image("a red cube", guidance_scale="strong")
    with pytest.raises(InputError, match=r"Image size ratio='wide', image_area=256"):
        emu3.respond_image("a red cube", ratio="wide", image_area=256)
    missing = tmp_path / "none"
    with pytest.raises(LoadError, match=rf"no such directory {missing}\. A model directory holds config\.json"):
        load_model(f"emu3:{missing}")
    no_processor = tmp_path / "no_processor"
    shutil.copytree(emu3_dir, no_processor)
    for name in ("processor_config.json", "tokenizer.json", "tokenizer_config.json"):
        (no_processor / name).unlink()
    with pytest.raises(LoadError, match=rf"Cannot load Emu3 processor from '{no_processor}'"):
        load_model(f"emu3:{no_processor}")


# -- generation as BAAI runs it ------------------------------------------------------------------------------


def test_images_follow_baai_s_script_unless_told_otherwise(emu3_dir, monkeypatch):
    from entroprobe.models.emu3 import IMAGE_DEFAULTS

    adapter = load_model(f"emu3:{emu3_dir}", prompt_tokens="template")
    seen = []
    generate = adapter.model.generate

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return generate(*args, **kwargs)

    monkeypatch.setattr(adapter.model, "generate", spy)
    with capture_layers(adapter.model, LAYERS, calls_per_step=2) as cap:
        reply = adapter.respond_image("a red cube", seed=0, image_area=256)
    kwargs = seen[-1]
    # sampled with top-k 2048, each prompt from its own seed (models/hf_generate.py); CFG on
    used = {type(p).__name__: p for p in kwargs["logits_processor"]}
    assert set(used) == {"TopKLogitsWarper", "RowNoise"} and used["TopKLogitsWarper"].top_k == 2048
    assert kwargs["do_sample"] is False and kwargs["guidance_scale"] == 3.0
    negative = IMAGE_DEFAULTS["negative_prompt"].value
    want = adapter.processor(text=[negative], return_for_image_generation=True, return_tensors="pt", image_area=256)
    assert kwargs["negative_prompt_ids"].tolist() == want["input_ids"].tolist()  # BAAI's negative prompt
    assert cap.select(call_in_step=1)[0].stacked().shape[2] == want["input_ids"].shape[1]  # in the CFG row
    positive = IMAGE_DEFAULTS["positive_prompt"].value
    asked = adapter.processor(text=["a red cube" + positive], return_for_image_generation=True, return_tensors="pt",
                              image_area=256)  # fmt: skip
    assert reply.prompt.token_ids.tolist() == asked["input_ids"][0].tolist()  # the quality suffix follows the prompt
    assert reply.extra["positive_prompt"] == positive and reply.extra["negative_prompt"] == negative
    off = adapter.respond_image("a red cube", seed=0, image_area=256, positive_prompt="", guidance_scale=1.0)
    assert off.extra["guidance_scale"] == 1.0 and off.prompt.num_tokens < reply.prompt.num_tokens


def test_replies_have_the_system_line_and_are_greedy(emu3_dir, monkeypatch):
    adapter = load_model(f"emu3:{emu3_dir}")
    assert adapter._reply_prompt("red cube", image=False) == "You are a helpful assistant. USER: red cube. ASSISTANT:"
    seen = []
    generate = adapter.model.generate
    monkeypatch.setattr(adapter.model, "generate", lambda *a, **k: seen.append(k) or generate(*a, **k))
    adapter.respond_text("red cube", max_new_tokens=2, seed=0)
    assert seen[-1]["do_sample"] is False and len(seen[-1]["logits_processor"]) == 0  # greedy: no noise
    quiet = load_model(f"emu3:{emu3_dir}", system_prompt="")
    assert quiet._reply_prompt("red cube", image=False) == "USER: red cube. ASSISTANT:"
    template = "{% for m in messages %}[{{ m['role'] }}: {{ m['content'][0]['text'] }}]{% endfor %}"
    adapter.processor.chat_template = template
    try:
        assert adapter._reply_prompt("red cube", image=False) == \
            "[system: You are a helpful assistant.][user: red cube]"
        adapter.processor.chat_template = ("{% for m in messages %}{% if m['role'] == 'system' %}"
                                           "{{ raise_exception('no system role') }}{% endif %}{% endfor %}")
        with pytest.raises(InputError, match="rejects the system message .*no system role.*system_prompt= to send"):
            adapter._reply_prompt("red cube", image=False)
    finally:
        adapter.processor.chat_template = None
    defaults = load_model(f"emu3:{emu3_dir}", guidance_scale="2").describe()["defaults"]
    assert defaults["image-gen"]["guidance_scale"] == {"value": 2.0, "source": "--model-args", "default": 3.0}
    assert "image_generation.py" in defaults["image-gen"]["top_k"]["source"]
    assert defaults["text-gen"]["system_prompt"]["value"] == "You are a helpful assistant."
    assert defaults["template"].startswith("BAAI's template string")


def test_responses_measure_the_question_with_the_template_in_context(emu3, emu3_dir):
    asker = load_model(f"emu3:{emu3_dir}", do_sample=True, min_new_tokens=5)  # prompt_tokens=question, the default
    tok = asker.processor.tokenizer
    for image in (None, random_image((16, 16), seed=3)):
        mine = asker.respond_text("red cube", image=image, max_new_tokens=3, seed=1)
        whole = emu3.respond_text("red cube", image=image, max_new_tokens=3, seed=1)
        n_image = 0 if image is None else 6
        assert mine.prompt.token_ids[n_image:].tolist() == tok("red cube")["input_ids"]
        assert int(mine.extra["image_mask"].sum()) == n_image and mine.extra["image_mask"][:n_image].all()
        where = [whole.prompt.positions.tolist().index(p) for p in mine.prompt.positions.tolist()]
        torch.testing.assert_close(mine.prompt.states, whole.prompt.states[:, where])
        torch.testing.assert_close(mine.response.states, whole.response.states)
    drawn = asker.respond_image("a red cube", seed=0, image_area=256)
    assert drawn.prompt.token_ids.tolist() == tok("a red cube")["input_ids"]  # not the suffix, not the size marker
    assert asker.describe()["defaults"]["prompt_tokens"]["value"] == "question"
