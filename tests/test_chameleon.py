"""chameleon family on a tiny random ChameleonForConditionalGeneration saved with its processor and loaded back
by path."""

from __future__ import annotations

import shutil

import pytest
import torch
from tiny_models import CHAMELEON_IMAGE_TOKENS, random_image, tiny_chameleon

from entroprobe.errors import CapabilityError, ItemError, LoadError
from entroprobe.models import load_model
from entroprobe.models.chameleon import ChameleonAdapter
from entroprobe.models.hooks import capture_layers, concat_calls, to_layer_states

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def chameleon_dir(tmp_path_factory):
    return tiny_chameleon(tmp_path_factory.mktemp("chameleon"))


@pytest.fixture(scope="module")
def chameleon(chameleon_dir):
    return load_model(f"chameleon:{chameleon_dir}", do_sample="yes", min_new_tokens=4)


def test_loads_by_path(chameleon, chameleon_dir):
    assert isinstance(chameleon, ChameleonAdapter) and chameleon.name == f"chameleon:{chameleon_dir}"
    assert (chameleon.num_layers, chameleon.d_model, chameleon.context, chameleon.final_norm) == (2, 32, 64, True)
    assert not chameleon.can("image-gen", "text")


def test_encode_text(chameleon):
    states = chameleon.encode_text("the cat sat")
    assert states.states.shape == (3, 4, 32)
    assert states.token_ids.tolist() == chameleon.processor.tokenizer("the cat sat")["input_ids"]


def test_encode_image_positions_match_the_models_image_tokens(chameleon):
    image = random_image((20, 24), seed=3)
    states = chameleon.encode_image(image, "what is this")
    inputs = chameleon.processor(images=[image], text=["what is this<image>"], return_tensors="pt")
    with torch.no_grad():
        codes = chameleon.model.model.get_image_tokens(inputs["pixel_values"])  # (1, n)
    assert states.num_tokens == codes.numel() == CHAMELEON_IMAGE_TOKENS == chameleon.processor.image_seq_length
    assert states.states.shape == (3, CHAMELEON_IMAGE_TOKENS, 32)
    assert states.token_ids.tolist() == codes[0].tolist()
    mask = inputs["input_ids"][0] == chameleon.model.model.vocabulary_mapping.image_token_id
    assert states.positions.tolist() == mask.nonzero().flatten().tolist()
    with torch.no_grad():
        out = chameleon.model(**inputs, output_hidden_states=True)
    pixel_path = torch.stack(out.hidden_states)[:, 0, mask]  # the model's own pixel path
    assert torch.allclose(states.states, pixel_path, atol=1e-5)


@pytest.mark.parametrize("with_image", [False, True])
def test_text_response_equals_hooked_generation(chameleon, with_image):
    image = random_image((16, 16), seed=5) if with_image else None
    with capture_layers(chameleon.model, "model.layers") as cap:
        reply = chameleon.respond_text("describe this", image=image, max_new_tokens=4, seed=1)
    n_prompt, n_new = reply.prompt.num_tokens, reply.response.num_tokens
    assert n_new == 4 == reply.output_ids.numel()
    sep = chameleon.processor.tokenizer.sep_token_id
    assert reply.prompt.token_ids[-1] == sep  # chat mode: the separator closes the prompt
    assert int(reply.extra["image_mask"].sum()) == (CHAMELEON_IMAGE_TOKENS if with_image else 0)
    during = to_layer_states(concat_calls(cap.calls[:-1]), slice(None), final_norm=chameleon.model.model.norm)
    assert during.num_tokens == n_prompt + n_new - 1
    assert torch.allclose(during.states[:, :n_prompt], reply.prompt.states, atol=1e-5)
    assert torch.allclose(during.states[:, n_prompt:], reply.response.states[:, :-1], atol=1e-5)


def test_deterministic_under_seed(chameleon):
    image = random_image((16, 16), seed=8)
    a = chameleon.respond_text("what is this", image=image, max_new_tokens=5, seed=21)
    b = chameleon.respond_text("what is this", image=image, max_new_tokens=5, seed=21)
    c = chameleon.respond_text("what is this", image=image, max_new_tokens=5, seed=22)
    assert torch.equal(a.output_ids, b.output_ids) and torch.equal(a.response.states, b.response.states)
    assert a.output == b.output
    assert not torch.equal(a.output_ids, c.output_ids)


def test_errors(chameleon, chameleon_dir, tmp_path):
    with pytest.raises(CapabilityError, match=r"Model 'chameleon:.*' \(chameleon\) cannot do image-gen on text"):
        chameleon.respond_image("a red cube")
    with pytest.raises(ItemError, match=r"image prompt: unreadable image"):
        chameleon.encode_image(b"GIF89a broken")
    missing = tmp_path / "missing.png"
    with pytest.raises(ItemError, match=rf"image prompt '{missing}': unreadable image \({missing}\)"):
        chameleon.respond_text("what is this", image=str(missing))
    with pytest.raises(ItemError, match=r"text prompt 'cat cat .*: 81 tokens is longer than the model's context of 64"):
        chameleon.respond_text(" ".join(["cat"] * 79))
    with pytest.raises(ItemError, match=r"the prompt text is empty"):
        chameleon.encode_text("")
    corrupt = tmp_path / "corrupt"
    shutil.copytree(chameleon_dir, corrupt)
    (corrupt / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(LoadError, match=rf"Cannot load Chameleon model from '{corrupt}': unreadable weights"):
        load_model(f"chameleon:{corrupt}")
