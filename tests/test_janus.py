"""The janus family on a tiny random Janus built from config, saved with its processor and loaded back by path.

The tiny model: a 2-layer Llama decoder (d = 32, context 64), a 1-layer vision encoder on 32x32 images with
8x8 patches (16 image tokens), and a VQ model with 64 codes (16 generated tokens per image, 8x8 pixels out).
"""

from __future__ import annotations

import contextlib
import copy
import shutil
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from PIL import Image

from entroprobe.errors import CapabilityError, InputError, ItemError, LoadError
from entroprobe.models import load_model

pytest.importorskip("transformers", minversion="4.52")
pytest.importorskip("tokenizers")

from tiny_models import JANUS_CHAT_TEMPLATE as CHAT_TEMPLATE  # noqa: F401  (the template the tiny model uses)
from tiny_models import JANUS_SHAPE
from tiny_models import tiny_janus as _save_tiny_janus

D_MODEL, N_LAYERS, CONTEXT = JANUS_SHAPE["d_model"], JANUS_SHAPE["layers"], JANUS_SHAPE["context"]
N_IMAGE_TOKENS = JANUS_SHAPE["image_tokens"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny_janus")
    _save_tiny_janus(directory)
    return directory


@pytest.fixture(scope="module")
def janus(tiny_dir):
    return load_model("janus:" + str(tiny_dir), dtype="float32", device="cpu", do_sample="true")


@pytest.fixture(scope="module")
def janus_template(tiny_dir):
    """The same model measuring every prompt token of a response (the template's too)."""
    return load_model("janus:" + str(tiny_dir), dtype="float32", device="cpu", do_sample="true",
                      prompt_tokens="template")  # fmt: skip


@pytest.fixture(scope="module")
def picture():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, size=(40, 30, 3), dtype=np.uint8))


# -- capturing what generation computes, to compare with the teacher-forced pass --------------------------------


@contextlib.contextmanager
def _hooks_during_generate(adapter, monkeypatch) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Record, during ``model.generate`` only, the decoder's input, each layer's output and the final norm's
    output at every call (prefill and each step), all batch rows."""
    lm = adapter.model.model.language_model
    seen: dict[str, list[torch.Tensor]] = {"input": [], "norm": [], **{f"layer{i}": [] for i in range(N_LAYERS)}}

    def keep(key):
        def hook(module, args, output):
            seen[key].append((output[0] if isinstance(output, tuple) else output).detach().clone())

        return hook

    def keep_input(module, args, kwargs):
        seen["input"].append((args[0] if args else kwargs["hidden_states"]).detach().clone())

    def hooked(original):
        def generate(*args, **kwargs):
            handles = [lm.layers[0].register_forward_pre_hook(keep_input, with_kwargs=True)]
            handles += [layer.register_forward_hook(keep(f"layer{i}")) for i, layer in enumerate(lm.layers)]
            handles.append(lm.norm.register_forward_hook(keep("norm")))
            try:
                return original(*args, **kwargs)
            finally:
                for handle in handles:
                    handle.remove()

        return generate

    import entroprobe.models.janus as janus_module

    text_generate = janus_module.janus_text_generate  # text answers go through the compat shim
    monkeypatch.setattr(adapter.model, "generate", hooked(adapter.model.generate))
    monkeypatch.setattr(janus_module, "janus_text_generate", lambda model: hooked(text_generate(model)))
    yield seen


def _hooked_states(seen: dict[str, list[torch.Tensor]], row: int = 0) -> torch.Tensor:
    """Hook records → (L + 1, tokens, d) of one batch row, in the ``hidden_states`` convention
    (embedding output, layers 1..L-1, then the last layer after the final norm)."""
    keys = ["input"] + [f"layer{i}" for i in range(N_LAYERS - 1)] + ["norm"]
    return torch.stack([torch.cat([chunk[row] for chunk in seen[key]], dim=0) for key in keys]).float()


def _joined(response) -> torch.Tensor:
    return torch.cat([response.prompt.states, response.response.states], dim=1)  # (L + 1, P + G, d)


# -- loading and description ------------------------------------------------------------------------------------


def test_load_by_path_describes_the_model(janus, tiny_dir):
    assert janus.family == "janus" and janus.name == "janus:" + str(tiny_dir)
    assert (janus.num_layers, janus.d_model, janus.num_image_tokens) == (N_LAYERS, D_MODEL, N_IMAGE_TOKENS)
    described = janus.describe()
    assert described["final_norm"] is True and described["dtype"] == "torch.float32"
    assert described["capabilities"] == [
        "encode/image", "encode/text", "image-gen/text", "text-gen/image", "text-gen/text"
    ]  # fmt: skip
    fingerprint = janus.fingerprint()
    assert len(fingerprint) == 16 and fingerprint == janus.fingerprint()


def test_boi_token_recovered_when_the_saved_generation_config_lacks_it(janus, tiny_dir):
    saved = (tiny_dir / "generation_config.json").read_text()
    assert "boi_token_id" not in saved  # what a freshly built / reloaded transformers 5.x Janus gives
    assert janus.boi_token_id == janus.processor.tokenizer.convert_tokens_to_ids("<begin_of_image>")


def test_missing_weights_raise_load_error(tiny_dir, tmp_path):
    broken = tmp_path / "no_weights"
    shutil.copytree(tiny_dir, broken, ignore=shutil.ignore_patterns("*.safetensors"))
    with pytest.raises(LoadError, match="Cannot load Janus model from '.*no_weights'"):
        load_model("janus:" + str(broken), device="cpu")
    with pytest.raises(LoadError, match="no such directory .*nowhere"):
        load_model("janus:" + str(tmp_path / "nowhere"), device="cpu")


def test_bad_loading_arguments(tiny_dir):
    with pytest.raises(InputError, match="Unknown model argument\\(s\\) colour"):
        load_model("janus:" + str(tiny_dir), colour="red")
    with pytest.raises(InputError, match="guidance_scale must be a number; got 'strong'"):
        load_model("janus:" + str(tiny_dir), guidance_scale="strong")
    with pytest.raises(InputError, match="needs a path"):
        load_model("janus")


# -- prompts --------------------------------------------------------------------------------------------------


def test_encode_text_shapes_and_tokens(janus):
    states = janus.encode_text("a red cat sat on the mat")
    ids = janus.processor.tokenizer("a red cat sat on the mat").input_ids
    assert states.states.shape == (N_LAYERS + 1, 8, D_MODEL) and states.states.dtype == torch.float32
    assert states.token_ids.tolist() == ids and ids[0] == janus.processor.tokenizer.bos_token_id  # BOS included
    assert states.positions.tolist() == list(range(8)) and states.final_norm is True
    assert torch.isfinite(states.states).all()


def test_encode_image_returns_the_image_token_positions(janus, picture, tmp_path):
    states = janus.encode_image(picture, instruction="what is shown in this picture")
    assert states.states.shape == (N_LAYERS + 1, N_IMAGE_TOKENS, D_MODEL)
    assert states.num_tokens == janus.model.config.vision_config.num_image_tokens
    assert (states.token_ids == janus.model.config.image_token_id).all()
    assert (states.positions.diff() == 1).all()  # one contiguous block
    path = tmp_path / "picture.png"
    picture.save(path)
    from_path = janus.encode_image(str(path), instruction="what is shown in this picture")
    torch.testing.assert_close(from_path.states, states.states)
    # the instruction is context: it changes the image tokens' states only after the image (causal), i.e. not at all
    alone = janus.encode_image(picture)
    torch.testing.assert_close(alone.states, states.states, atol=1e-5, rtol=0)


def test_encode_image_without_a_chat_template(janus, picture, monkeypatch):
    monkeypatch.setattr(janus.processor, "chat_template", None)
    states = janus.encode_image(picture, instruction="what is this")
    assert states.num_tokens == N_IMAGE_TOKENS and states.positions[0].item() == 2  # BOS, begin-of-image


def test_image_states_see_the_image(janus, picture):
    other = Image.fromarray(255 - np.asarray(picture))
    assert (janus.encode_image(picture).states[1:] - janus.encode_image(other).states[1:]).abs().max() > 1e-3


# -- text responses -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_image", [False, True], ids=["text-prompt", "image-prompt"])
def test_text_response_states_equal_generation_states(janus_template, picture, monkeypatch, with_image):
    janus, image = janus_template, picture if with_image else None
    with _hooks_during_generate(janus, monkeypatch) as seen:
        response = janus.respond_text("what is shown in this picture", image=image, max_new_tokens=6, seed=3)
    n_prompt, n_new = response.prompt.num_tokens, response.response.num_tokens
    assert 1 <= n_new <= 6 and response.output_ids.tolist() == response.response.token_ids.tolist()
    assert response.response.positions.tolist() == list(range(n_prompt, n_prompt + n_new))  # the last one too
    assert response.response.states.shape == (N_LAYERS + 1, n_new, D_MODEL) and isinstance(response.output, str)
    hooked = _hooked_states(seen)  # generation never feeds its last token back
    assert hooked.shape == (N_LAYERS + 1, n_prompt + n_new - 1, D_MODEL)
    assert (_joined(response)[:, :-1] - hooked).abs().max() <= 1e-5
    n_image = int((response.prompt.token_ids == janus.image_token_id).sum())
    assert n_image == (N_IMAGE_TOKENS if with_image else 0)


def test_text_response_is_deterministic_under_a_seed(janus):
    first = janus.respond_text("a cat", max_new_tokens=8, seed=11)
    again = janus.respond_text("a cat", max_new_tokens=8, seed=11)
    assert first.output_ids.tolist() == again.output_ids.tolist() and first.output == again.output
    torch.testing.assert_close(first.response.states, again.response.states)
    others = [janus.respond_text("a cat", max_new_tokens=8, seed=s).output_ids.tolist() for s in (12, 13)]
    assert any(ids != first.output_ids.tolist() for ids in others)


# -- image responses ------------------------------------------------------------------------------------------


def test_image_response_states_equal_conditional_generation_states(janus_template, monkeypatch):
    janus = janus_template
    with _hooks_during_generate(janus, monkeypatch) as seen:
        response = janus.respond_image("a red cat", seed=5, guidance_scale=3.0)
    assert all(chunk.shape[0] == 2 for chunk in seen["input"])  # conditional + unconditional rows
    n_prompt = response.prompt.num_tokens
    assert response.prompt.token_ids[-1].item() == janus.boi_token_id
    assert response.response.states.shape == (N_LAYERS + 1, N_IMAGE_TOKENS, D_MODEL)
    assert response.response.positions.tolist() == list(range(n_prompt, n_prompt + N_IMAGE_TOKENS))
    assert response.output_ids.tolist() == response.response.token_ids.tolist()
    conditional, unconditional = _hooked_states(seen, row=0), _hooked_states(seen, row=1)
    assert conditional.shape == (N_LAYERS + 1, n_prompt + N_IMAGE_TOKENS - 1, D_MODEL)
    assert (_joined(response)[:, :-1] - conditional).abs().max() <= 1e-5
    assert (_joined(response)[:, :-1] - unconditional).abs().max() > 1e-3  # the CFG rows are left out
    assert response.extra["guidance_scale"] == 3.0
    assert isinstance(response.output, Image.Image) and response.output.mode == "RGB"
    assert response.output.size == (8, 8)  # 4x4 latent codes, one 2x upsampling


def test_image_response_is_deterministic_under_a_seed(janus):
    first = janus.respond_image("a blue dog", seed=7)
    again = janus.respond_image("a blue dog", seed=7)
    other = janus.respond_image("a blue dog", seed=8)
    assert first.output_ids.tolist() == again.output_ids.tolist()
    assert np.array_equal(np.asarray(first.output), np.asarray(again.output))
    torch.testing.assert_close(first.response.states, again.response.states)
    assert first.output_ids.tolist() != other.output_ids.tolist()


def test_seeding_leaves_the_callers_rng_alone(janus):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    janus.respond_text("a cat", max_new_tokens=2, seed=0)
    assert torch.equal(torch.rand(3), expected)


# -- errors ---------------------------------------------------------------------------------------------------


def test_capability_errors_name_model_and_capability(janus):
    assert all(janus.can(*capability) for capability in janus.capabilities)
    with pytest.raises(CapabilityError, match="janus:.*cannot do image-gen on image prompts"):
        janus.require("image-gen", "image")


def test_unreadable_images_name_the_item(janus, tmp_path):
    fake = tmp_path / "not_an_image.png"
    fake.write_text("plain text")
    with pytest.raises(ItemError, match="image prompt '.*not_an_image.png': unreadable image"):
        janus.encode_image(str(fake))
    with pytest.raises(ItemError, match="image prompt '.*missing.png': unreadable image"):
        janus.respond_text("what is this", image=str(tmp_path / "missing.png"))
    with pytest.raises(ItemError, match="image prompt: unreadable image"):
        janus.encode_image(b"not an image either")
    with pytest.raises(ItemError, match="expected a PIL image, an image path or image bytes; got int"):
        janus.encode_image(42)


def test_over_long_prompts_name_the_item(janus, picture):
    long_text = " ".join(["cat"] * CONTEXT)
    with pytest.raises(ItemError, match="text prompt 'cat cat .*: 65 tokens is longer than the model's context of 64"):
        janus.encode_text(long_text)
    with pytest.raises(ItemError, match="text prompt 'cat cat .*leave no room to respond in the model's context of 64"):
        janus.respond_text(long_text)
    with pytest.raises(ItemError, match="text prompt 'cat cat .*longer than the model's context of 64"):
        janus.respond_image(" ".join(["cat"] * (CONTEXT - N_IMAGE_TOKENS)))
    with pytest.raises(ItemError, match="image prompt: 69 tokens is longer than the model's context of 64"):
        janus.encode_image(picture, instruction=" ".join(["cat"] * (CONTEXT - N_IMAGE_TOKENS)))


def test_responses_are_capped_to_the_context(janus):
    response = janus.respond_text("a cat", max_new_tokens=10 * CONTEXT, seed=1)
    assert response.prompt.num_tokens + response.response.num_tokens <= CONTEXT


def test_bad_requests(janus):
    with pytest.raises(InputError, match="got neither"):
        janus.respond_text()
    with pytest.raises(InputError, match="max_new_tokens must be a positive integer; got 0"):
        janus.respond_text("a cat", max_new_tokens=0)
    with pytest.raises(InputError, match="Unknown generation argument\\(s\\) colour"):
        janus.respond_image("a cat", colour="red")
    with pytest.raises(InputError, match="rejected the arguments .*temperature.*strictly positive"):
        janus.respond_image("a cat", temperature=-1.0)
    with pytest.raises(InputError, match="num_beams and num_return_sequences must be 1; got 2"):
        janus.respond_image("a cat", num_beams=2)
    with pytest.raises(ItemError, match="text prompt '': the prompt text is empty"):
        janus.encode_text("")
    with pytest.raises(ItemError, match="text prompt ' ': the prompt text is empty"):
        janus.respond_image(" ")


def test_load_time_generation_defaults(tiny_dir):
    adapter = load_model("janus:" + str(tiny_dir), device="cpu", guidance_scale="2.5", temperature="0.7")
    assert adapter.generation == {"guidance_scale": 2.5, "temperature": 0.7}
    assert adapter.respond_image("a cat", seed=0).extra["guidance_scale"] == 2.5
    assert adapter.respond_image("a cat", seed=0, guidance_scale=4.0).extra["guidance_scale"] == 4.0
    # without a do_sample default, image generation still samples (as Janus does): seeds give different images
    codes = [adapter.respond_image("a cat", seed=s).output_ids.tolist() for s in (0, 1)]
    assert codes[0] != codes[1]


# -- generation as DeepSeek runs it, and the prompt tokens a response measures -----------------------------------


def _question_ids(janus, text):
    return janus.processor.tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("with_image", [False, True], ids=["text-prompt", "image-prompt"])
def test_a_text_response_measures_the_question_and_keeps_the_template_in_context(janus, janus_template, picture,
                                                                                  with_image):  # fmt: skip
    image = picture if with_image else None
    question = "what is shown in this picture"
    mine = janus.respond_text(question, image=image, max_new_tokens=5, seed=4)
    whole = janus_template.respond_text(question, image=image, max_new_tokens=5, seed=4)
    ids = mine.prompt.token_ids.tolist()
    n_image = N_IMAGE_TOKENS if with_image else 0
    assert ids == [janus.image_token_id] * n_image + _question_ids(janus, question)
    assert whole.prompt.num_tokens > mine.prompt.num_tokens  # <bos>, role markers (and image markers) left out
    # the same pass: the question's states are the template run's at the same positions, the response's equal
    where = [whole.prompt.positions.tolist().index(p) for p in mine.prompt.positions.tolist()]
    torch.testing.assert_close(mine.prompt.states, whole.prompt.states[:, where])
    torch.testing.assert_close(mine.response.states, whole.response.states)
    assert mine.extra["prompt_tokens"] == "question" and whole.extra["prompt_tokens"] == "template"


def test_an_image_response_measures_the_question_without_the_begin_of_image_token(janus, janus_template):
    mine = janus.respond_image("a red cat", seed=2)
    whole = janus_template.respond_image("a red cat", seed=2)
    assert mine.prompt.token_ids.tolist() == _question_ids(janus, "a red cat")
    assert whole.prompt.token_ids[-1].item() == janus.boi_token_id
    torch.testing.assert_close(mine.response.states, whole.response.states)


def test_the_question_is_found_behind_janus_pro_s_real_system_prompt(tmp_path):
    from transformers.models.janus.processing_janus import DEFAULT_SYSTEM_PROMPT

    _save_tiny_janus(tmp_path, system_prompt=True)
    janus = load_model(f"janus:{tmp_path}", device="cpu")
    response = janus.respond_text("what is this", max_new_tokens=3, seed=0)
    assert response.prompt.token_ids.tolist() == _question_ids(janus, "what is this")
    # the system prompt is in the model's context: the question sits after all of its words
    n_system = len(DEFAULT_SYSTEM_PROMPT.split())
    assert response.prompt.positions[0].item() > n_system
    whole = load_model(f"janus:{tmp_path}", device="cpu", prompt_tokens="template")
    assert whole.respond_text("what is this", max_new_tokens=3, seed=0).prompt.num_tokens > n_system + 3
    with pytest.raises(InputError, match="prompt_tokens must be one of question, template; got 'all'"):
        load_model(f"janus:{tmp_path}", device="cpu", prompt_tokens="all")


def _capture_generation(janus, monkeypatch):
    """The generation config and the logits processors of every ``generate`` call."""
    from transformers.generation.utils import GenerationMixin

    seen: dict[str, list] = {"config": [], "processors": []}
    generate, processors = janus.model.generate, GenerationMixin._get_logits_processor

    def spy_generate(*args, **kwargs):
        seen["config"].append(copy.deepcopy(kwargs["generation_config"]))
        seen["given"] = [type(p).__name__ for p in kwargs.get("logits_processor") or []]
        seen["objects"] = list(kwargs.get("logits_processor") or [])
        return generate(*args, **kwargs)

    def spy_processors(self, *args, **kwargs):
        made = processors(self, *args, **kwargs)
        seen["processors"].append([type(p).__name__ for p in made])
        return made

    import entroprobe.models.janus as janus_module

    text_generate = janus_module.janus_text_generate

    def spy_text(model):
        inner = text_generate(model)

        def call(*args, **kwargs):
            seen["config"].append(copy.deepcopy(kwargs["generation_config"]))
            seen["given"] = [type(p).__name__ for p in kwargs["logits_processor"]]
            return inner(*args, **kwargs)

        return call

    monkeypatch.setattr(janus.model, "generate", spy_generate)
    monkeypatch.setattr(janus_module, "janus_text_generate", spy_text)
    monkeypatch.setattr(GenerationMixin, "_get_logits_processor", spy_processors)
    return seen


def janus_sampler(seen):
    (processor,) = seen["objects"]
    assert type(processor).__name__ == "GuidedRowNoise"
    return processor


def test_images_are_sampled_as_deepseek_samples_them(tiny_dir, monkeypatch):
    janus = load_model("janus:" + str(tiny_dir), device="cpu")  # no generation arguments: the authors' defaults
    seen = _capture_generation(janus, monkeypatch)
    janus.respond_image("a red cat", seed=0)
    config = seen["config"][-1]
    # guidance 5, temperature 1, no top-k, no top-p: the per-prompt Gumbel draw on the guided scores
    # (models/hf_generate.py); the model's own guidance step that follows changes nothing
    processor = janus_sampler(seen)
    assert processor.guidance == 5.0 and processor.warpers == [] and config.do_sample is False
    assert janus.respond_image("a red cat", seed=0).extra["guidance_scale"] == 5.0
    used = seen["processors"][-1]
    assert "TopKLogitsWarper" not in used and "TopPLogitsWarper" not in used  # the full softmax
    janus.respond_text("a cat", max_new_tokens=3, seed=0)
    assert seen["config"][-1].do_sample is False and seen["given"] == []  # greedy answers, as in DeepSeek's README


def test_the_defaults_and_the_overrides_are_described_with_their_sources(tiny_dir):
    plain = load_model("janus:" + str(tiny_dir), device="cpu").describe()["defaults"]
    assert plain["image-gen"]["top_k"] == {"value": 0, "source": plain["image-gen"]["top_k"]["source"]}
    assert "generation_inference.py" in plain["image-gen"]["guidance_scale"]["source"]
    assert plain["text-gen"]["do_sample"]["value"] is False and "README" in plain["text-gen"]["do_sample"]["source"]
    assert plain["prompt_tokens"]["value"] == "question"
    tuned = load_model("janus:" + str(tiny_dir), device="cpu", guidance_scale="2.5", top_k="8",
                       prompt_tokens="template").describe()["defaults"]  # fmt: skip
    assert tuned["image-gen"]["guidance_scale"] == {"value": 2.5, "source": "--model-args", "default": 5.0}
    assert tuned["image-gen"]["top_k"] == {"value": 8, "source": "--model-args", "default": 0}
    assert tuned["text-gen"]["top_k"] == {"value": 8, "source": "--model-args"}  # no authors' default for it
    assert "guidance_scale" not in tuned["text-gen"]  # text generation runs without guidance
    assert tuned["prompt_tokens"] == {"value": "template", "source": "--model-args", "default": "question"}


def test_batched_text_encoding_equals_one_at_a_time(janus):
    texts = ["a cat", "the red dog sat on the mat", "what is shown in this picture"]
    for alone, together in zip([janus.encode_text(t) for t in texts], janus.encode_text_batch(texts)):
        assert alone.token_ids.tolist() == together.token_ids.tolist()
        torch.testing.assert_close(alone.states, together.states, atol=1e-5, rtol=1e-4)
