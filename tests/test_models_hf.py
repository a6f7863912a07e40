"""causal-lm, encoder and minilm families: tiny checkpoints saved and loaded back by path, the real MiniLM,
teacher-forced response states against hooks during generation, determinism, errors."""

from __future__ import annotations

import shutil

import pytest
import torch
from tiny_models import random_image, tiny_bert, tiny_llama

from entroprobe.errors import CapabilityError, InputError, ItemError, LoadError
from entroprobe.models import load_model
from entroprobe.models.base import stack_hidden_states
from entroprobe.models.hf import load_image, room_to_generate, tokenize_checked
from entroprobe.models.hf_text import CausalLMAdapter, MiniLMAdapter
from entroprobe.models.hooks import capture_layers, concat_calls, to_layer_states

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return tiny_llama(tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="module")
def llama(llama_dir):
    return load_model(f"causal-lm:{llama_dir}", do_sample="true", min_new_tokens="6")


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return tiny_bert(tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="module")
def minilm():
    return load_model("minilm")


# -- causal-lm ---------------------------------------------------------------------------------------------------


def test_causal_lm_loads_by_path(llama, llama_dir):
    assert isinstance(llama, CausalLMAdapter)
    assert llama.name == f"causal-lm:{llama_dir}"
    assert (llama.num_layers, llama.d_model, llama.context) == (2, 16, 64)
    assert llama.generation == {"do_sample": True, "min_new_tokens": 6}
    assert llama.final_norm  # Llama: hidden_states[-1] is after model.norm
    described = llama.describe()
    assert described["family"] == "causal-lm" and described["capabilities"] == ["encode/text", "text-gen/text"]
    assert len(llama.fingerprint()) == 16 and llama.fingerprint() == llama.fingerprint()


def test_causal_lm_encode_text(llama):
    states = llama.encode_text("the cat sat on the mat")
    expected_ids = llama.tokenizer("the cat sat on the mat")["input_ids"]
    assert states.states.shape == (3, len(expected_ids), 16) and states.states.dtype == torch.float32
    assert states.token_ids.tolist() == expected_ids and expected_ids[0] == llama.tokenizer.bos_token_id
    assert states.positions.tolist() == list(range(len(expected_ids)))
    assert states.final_norm


def test_causal_lm_response_equals_hooked_generation(llama):
    """Teacher-forced states == what the decoder layers computed while generating (KV-cached calls)."""
    norm = llama.model.model.norm
    with capture_layers(llama.model, "model.layers") as cap:
        reply = llama.respond_text("the cat sat", max_new_tokens=6, seed=3)
    n_prompt, n_new = reply.prompt.num_tokens, reply.response.num_tokens
    assert n_new == 6 and reply.output_ids.numel() == 6
    assert reply.response.token_ids.tolist() == reply.output_ids.tolist()
    assert reply.response.positions.tolist() == list(range(n_prompt, n_prompt + n_new))
    assert len(cap.calls) == n_new + 1  # prefill, n_new - 1 one-token steps, the teacher-forced pass
    during = to_layer_states(concat_calls(cap.calls[:-1]), slice(None), final_norm=norm)  # P + n - 1 tokens
    assert during.num_tokens == n_prompt + n_new - 1
    assert torch.allclose(during.states[:, :n_prompt], reply.prompt.states, atol=1e-5)
    assert torch.allclose(during.states[:, n_prompt:], reply.response.states[:, :-1], atol=1e-5)
    # the last generated token is in the response too: it is the teacher-forced pass's last position
    forced = to_layer_states(cap.calls[-1].stacked(), slice(n_prompt, None), final_norm=norm)
    assert torch.allclose(forced.states, reply.response.states, atol=1e-6)
    assert reply.output == llama.tokenizer.decode(reply.output_ids, skip_special_tokens=True)


def test_causal_lm_deterministic_under_seed(llama):
    a = llama.respond_text("the red cube", max_new_tokens=6, seed=11)
    b = llama.respond_text("the red cube", max_new_tokens=6, seed=11)
    c = llama.respond_text("the red cube", max_new_tokens=6, seed=12)
    assert torch.equal(a.output_ids, b.output_ids) and torch.equal(a.response.states, b.response.states)
    assert not torch.equal(a.output_ids, c.output_ids)


def test_causal_lm_chat_template(llama):
    plain = llama.respond_text("red cube", max_new_tokens=2, seed=0)
    assert plain.prompt.token_ids.tolist() == llama.tokenizer("red cube")["input_ids"]
    llama.tokenizer.chat_template = "{{ bos_token }}{% for m in messages %}what is {{ m['content'] }}{% endfor %}"
    try:
        chat = llama.respond_text("red cube", max_new_tokens=2, seed=0)
        assert chat.prompt.token_ids.tolist() == llama.tokenizer("what is red cube")["input_ids"]
        llama.chat_template = False
        assert llama.respond_text("red cube", max_new_tokens=2, seed=0).prompt.token_ids.tolist() == (
            plain.prompt.token_ids.tolist()
        )
    finally:
        llama.tokenizer.chat_template = None
        llama.chat_template = "auto"


def test_causal_lm_errors(llama, llama_dir, tmp_path):
    too_long = " ".join(["cat"] * 70)
    with pytest.raises(ItemError, match=r"text prompt 'cat cat .*71 tokens is longer than the model's context of 64"):
        llama.encode_text(too_long)
    with pytest.raises(ItemError, match=r"text prompt 'cat cat .*71 tokens is longer"):
        llama.respond_text(too_long)
    with pytest.raises(ItemError, match=r"the prompt text is empty"):
        llama.encode_text("  ")
    with pytest.raises(CapabilityError, match=r"Model 'causal-lm:.*' \(causal-lm\) cannot do text-gen on image"):
        llama.respond_text("what is this", image=random_image())
    with pytest.raises(CapabilityError, match=r"cannot do image-gen on text prompts"):
        llama.respond_image("a red cube")
    with pytest.raises(CapabilityError, match=r"cannot do encode on image prompts"):
        llama.encode_image(random_image())
    with pytest.raises(InputError, match=r"max_new_tokens must be a positive integer; got 0"):
        llama.respond_text("the cat", max_new_tokens=0)
    with pytest.raises(InputError, match=r"Unknown model argument\(s\) colour; accepted: dtype"):
        load_model(f"causal-lm:{llama_dir}", colour="red")
    with pytest.raises(InputError, match=r"temperature='hot' does not parse"):
        load_model(f"causal-lm:{llama_dir}", temperature="hot")
    with pytest.raises(InputError, match=r"needs a path or hub id"):
        CausalLMAdapter.load(None)
    missing = tmp_path / "nowhere"
    with pytest.raises(LoadError, match=rf"no such directory {missing}"):
        load_model(f"causal-lm:{missing}")


def test_causal_lm_unreadable_weights_and_missing_tokenizer(llama_dir, tmp_path):
    corrupt = tmp_path / "corrupt"
    shutil.copytree(llama_dir, corrupt)
    (corrupt / "model.safetensors").write_bytes(b"not a safetensors file" * 4)
    with pytest.raises(LoadError, match=rf"Cannot load causal LM from '{corrupt}': unreadable weights"):
        load_model(f"causal-lm:{corrupt}")
    bare = tmp_path / "bare"
    shutil.copytree(llama_dir, bare)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (bare / name).unlink()
    with pytest.raises(LoadError, match=rf"Cannot load tokenizer from '{bare}'"):
        load_model(f"causal-lm:{bare}")


def test_shared_input_helpers(llama, tmp_path):
    with pytest.raises(ItemError, match=r"no room to respond in the model's context of 64"):
        room_to_generate(64, 8, 64, "text prompt 'x'")
    assert room_to_generate(60, 8, 64, "x") == 4 and room_to_generate(60, 8, None, "x") == 8
    ids = tokenize_checked(llama.tokenizer, "the cat", limit=3, item="p1")
    assert ids.shape == (1, 3) and ids.dtype == torch.int64
    with pytest.raises(ItemError, match=r"p1: 3 tokens is longer than the model's context of 2 tokens"):
        tokenize_checked(llama.tokenizer, "the cat", limit=2, item="p1")
    with pytest.raises(ItemError, match=r"image prompt: unreadable image: cannot identify image file"):
        load_image(b"definitely not a png")
    missing = tmp_path / "gone.png"
    with pytest.raises(ItemError, match=rf"image prompt '{missing}': unreadable image \({missing}\)"):
        load_image(str(missing), item=f"image prompt '{missing}'")
    with pytest.raises(ItemError, match=r"expected a PIL image, an image path or image bytes; got int"):
        load_image(42)
    (tmp_path / "ok.png").write_bytes(b"")
    random_image(size=(5, 3)).save(tmp_path / "ok.png")
    assert load_image(tmp_path / "ok.png").size == (5, 3)
    truncated = tmp_path / "cut.png"
    truncated.write_bytes((tmp_path / "ok.png").read_bytes()[:40])
    with pytest.raises(ItemError, match=r"unreadable image"):
        load_image(truncated)


def test_stack_hidden_states_gathers_layers_spread_over_devices():
    """With device_map over several GPUs each hidden state is on its layer's device. Without a second GPU,
    "meta" stands in for one: torch.stack refuses to mix it with "cpu" as it refuses cuda:0 with cuda:1."""
    hidden = (torch.zeros(2, 4, 8, device="meta"), torch.ones(2, 4, 8), torch.ones(2, 4, 8))  # (B, T, d) each
    with pytest.raises(RuntimeError, match="not on the expected device"):
        torch.stack(hidden)
    stacked = stack_hidden_states(hidden)  # on the first state's device
    assert stacked.device.type == "meta" and stacked.shape == (3, 4, 8) and stacked.dtype == torch.float32
    on_cpu = [torch.arange(2 * 4 * 8, dtype=torch.float16).reshape(2, 4, 8) + i for i in range(3)]
    assert torch.equal(stack_hidden_states(on_cpu, batch_index=1), torch.stack([h[1] for h in on_cpu]).float())
    assert stack_hidden_states(on_cpu, device="meta").device.type == "meta"  # a given target


# -- encoder and minilm ------------------------------------------------------------------------------------------


def test_encoder_loads_by_path(bert_dir):
    bert = load_model(f"encoder:{bert_dir}")
    assert (bert.num_layers, bert.d_model, bert.context) == (2, 16, 32)
    assert not bert.final_norm  # BERT: the last entry is the last layer's output
    states = bert.encode_text("the red cube")
    assert states.states.shape == (3, 5, 16)
    assert states.token_ids.tolist() == bert.tokenizer("the red cube")["input_ids"]
    assert states.token_ids[0] == bert.tokenizer.cls_token_id and states.token_ids[-1] == bert.tokenizer.sep_token_id
    with torch.no_grad():
        direct = bert.model(input_ids=states.token_ids[None]).last_hidden_state[0]
    assert torch.allclose(states.states[-1], direct, atol=1e-6)
    with pytest.raises(ItemError, match=r"42 tokens is longer than the model's context of 32"):
        bert.encode_text(" ".join(["cat"] * 40))
    with pytest.raises(CapabilityError, match=r"\(encoder\) cannot do text-gen on text prompts"):
        bert.respond_text("the cat")
    with pytest.raises(InputError, match=r"Unknown model argument\(s\) do_sample"):
        load_model(f"encoder:{bert_dir}", do_sample=True)


SENTENCES = ["A man is playing a guitar.", "The cat sat on the mat.", "Entropy measures spread in kernel space."]


def test_minilm_for_real(minilm):
    assert isinstance(minilm, MiniLMAdapter)
    assert (minilm.num_layers, minilm.d_model, minilm.context) == (6, 384, 512)
    assert not minilm.final_norm
    for sentence in SENTENCES:
        states = minilm.encode_text(sentence)
        n = len(minilm.tokenizer(sentence)["input_ids"])
        assert states.states.shape == (7, n, 384)
        assert torch.isfinite(states.states).all()
    a, b = minilm.encode_text(SENTENCES[0]), minilm.encode_text(SENTENCES[1])
    assert not torch.allclose(a.states[-1, 0], b.states[-1, 0])
    assert minilm.fingerprint() == load_model("minilm").fingerprint()
    assert minilm.describe()["name"] == "minilm"


# -- loading safety and precision --------------------------------------------------------------------------------


def test_half_precision_weights_give_float32_states(llama_dir):
    half = load_model(f"causal-lm:{llama_dir}", dtype="bf16", device="cpu")
    assert next(half.model.parameters()).dtype == torch.bfloat16
    states = half.encode_text("the cat sat on the mat")
    assert states.states.dtype == torch.float32 and torch.isfinite(states.states).all()


def test_trust_remote_code_is_off_unless_asked():
    from entroprobe.models.hf_loading import load_pretrained, load_processor

    seen = []

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        @classmethod
        def from_pretrained(cls, path, **kwargs):
            seen.append(kwargs)
            return cls()

    load_pretrained(Recorder, "some/model")
    load_processor(Recorder, "some/model")
    load_pretrained(Recorder, "some/model", trust_remote_code="true")
    assert [kwargs["trust_remote_code"] for kwargs in seen] == [False, False, True]


def test_pickled_weights_cannot_run_code(llama_dir, tmp_path):
    import pathlib

    class Payload:  # what a malicious pytorch_model.bin would hold: unpickling it calls Path.touch
        def __reduce__(self):
            return pathlib.Path.touch, (tmp_path / "pwned",)

    folder = tmp_path / "evil"
    shutil.copytree(llama_dir, folder)
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    torch.save({"model.embed_tokens.weight": Payload()}, folder / "pytorch_model.bin")
    with pytest.raises(LoadError, match=rf"Cannot load causal LM from '{folder}': unreadable weights \(UnpicklingError"):
        load_model(f"causal-lm:{folder}")
    assert not (tmp_path / "pwned").exists()
