"""The generic hook path (models/hooks.py) on small nn.Modules: tuple, tensor and packed outputs, CFG rows,
several calls per step, and hooks removed on error. No transformers model here."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from entroprobe.errors import InputError
from entroprobe.models.hooks import (
    LayerCall,
    LayerCapture,
    capture_layers,
    concat_calls,
    find_layer_lists,
    resolve_layers,
    resolve_module,
    select_rows,
    to_layer_states,
)

D = 8


class TupleLayer(nn.Module):
    """Returns ``(hidden, extra)`` like transformers' older decoder layers."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(D, D)

    def forward(self, hidden):
        return torch.tanh(self.proj(hidden)) + hidden, None


class KeywordLayer(nn.Module):
    """Called with keywords only and returns a tensor (transformers 5.x style)."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(D, D)

    def forward(self, hidden_states, scale=1.0):
        return hidden_states + scale * torch.sin(self.proj(hidden_states))


class PackedLayer(nn.Module):
    """BAGEL-style: ``packed_query_sequence`` of shape (tokens, d), no batch axis; returns (hidden, cache)."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(D, D)

    def forward(self, packed_query_sequence, cache=None):
        return packed_query_sequence + self.proj(packed_query_sequence), cache


class Decoder(nn.Module):
    """embed → layers → norm, with the layers at ``model.layers`` (a transformers-like path)."""

    def __init__(self, layer_cls, n_layers=3, keyword=False):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(20, D)
        self.model = nn.Module()
        self.model.layers = nn.ModuleList([layer_cls() for _ in range(n_layers)])
        self.norm = nn.LayerNorm(D)
        self.keyword = keyword

    def reference(self, ids):
        """Every layer's output computed by hand: (L + 1, *ids.shape, d)."""
        hidden = self.embed(ids)
        out = [hidden]
        for layer in self.model.layers:
            result = layer(hidden_states=hidden) if self.keyword else layer(hidden)
            hidden = result[0] if isinstance(result, tuple) else result
            out.append(hidden)
        return torch.stack(out)

    def forward(self, ids):
        hidden = self.embed(ids)
        for layer in self.model.layers:
            result = layer(hidden_states=hidden) if self.keyword else layer(hidden)
            hidden = result[0] if isinstance(result, tuple) else result
        return self.norm(hidden)


class PackedDecoder(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.layers = nn.ModuleList([PackedLayer() for _ in range(2)])

    def forward(self, packed):
        for layer in self.layers:
            packed, _ = layer(packed_query_sequence=packed, cache=None)
        return packed


class Sampler(nn.Module):
    """A denoising loop: a prefill call, then per step a conditional call and 0–2 guidance calls."""

    def __init__(self):
        super().__init__()
        self.decoder = Decoder(KeywordLayer, n_layers=2, keyword=True)

    def flow_step(self, ids, n_calls):
        for k in range(n_calls):
            self.decoder(ids + k)

    def sample(self, ids, calls_per_step=(3, 1, 2)):
        self.decoder(ids)  # prefill / context
        for n_calls in calls_per_step:
            self.flow_step(ids, n_calls)


IDS = torch.tensor([[1, 2, 3, 4, 5]])


def no_hooks(module: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in module.modules())


# -- outputs of every kind -------------------------------------------------------------------------------------


@torch.no_grad()
def test_tuple_outputs_and_embedding():
    model = Decoder(TupleLayer)
    with capture_layers(model, "model.layers") as cap:
        model(IDS)
    assert len(cap.calls) == 1
    stacked = cap.calls[0].stacked()  # (L + 1, B, T, d)
    assert stacked.shape == (4, 1, 5, D) and stacked.dtype == torch.float32
    assert torch.allclose(stacked, model.reference(IDS), atol=1e-6)


@torch.no_grad()
def test_keyword_calls_and_tensor_outputs():
    model = Decoder(KeywordLayer, keyword=True)
    with capture_layers(model, "model.layers") as cap:
        model(IDS)
    assert cap.calls[0].embedding is not None
    assert torch.allclose(cap.calls[0].stacked(), model.reference(IDS), atol=1e-6)


@torch.no_grad()
def test_packed_outputs_without_batch_axis():
    model = PackedDecoder()
    packed = torch.randn(7, D)  # (tokens, d)
    with capture_layers(model, "layers", input_name="packed_query_sequence") as cap:
        model(packed)
    stacked = cap.calls[0].stacked()  # (L + 1, T, d)
    assert stacked.shape == (3, 7, D)
    assert torch.equal(stacked[0], packed)
    expected = packed + model.layers[0].proj(packed)
    assert torch.allclose(stacked[1], expected, atol=1e-6)
    states = to_layer_states(stacked, positions=[4, 5, 6])
    assert states.states.shape == (3, 3, D) and states.positions.tolist() == [4, 5, 6]


def test_packed_outputs_reject_row_selection():
    model = PackedDecoder()
    with pytest.raises(InputError, match=r"no batch axis"):
        with capture_layers(model, "layers", rows="first-half", input_name="packed_query_sequence"):
            model(torch.randn(7, D))
    assert no_hooks(model)


# -- classifier-free guidance rows -------------------------------------------------------------------------------


@torch.no_grad()
@pytest.mark.parametrize(
    ("rows", "layout"),
    [
        ("first-half", "halves"),
        ("second-half", "halves-swapped"),
        ("even", "interleaved"),
        ("odd", "interleaved-swapped"),
    ],
)
def test_cfg_keeps_only_conditional_rows(rows, layout):
    model = Decoder(TupleLayer)
    cond = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])
    uncond = torch.zeros_like(cond) + 11
    batch = {
        "halves": torch.cat([cond, uncond]),
        "halves-swapped": torch.cat([uncond, cond]),
        "interleaved": torch.stack([cond, uncond], dim=1).flatten(0, 1),
        "interleaved-swapped": torch.stack([uncond, cond], dim=1).flatten(0, 1),
    }[layout]
    with capture_layers(model, "model.layers", rows=rows) as cap:
        model(batch)
    stacked = cap.calls[0].stacked()  # (L + 1, 2, T, d): the conditional rows only
    assert stacked.shape == (4, 2, 5, D)
    assert torch.allclose(stacked, model.reference(cond), atol=1e-6)
    assert not torch.allclose(stacked, model.reference(uncond), atol=1e-3)


def test_row_selection_errors():
    hidden = torch.zeros(3, 4, D)
    with pytest.raises(InputError, match=r"batch 3 into CFG halves"):
        select_rows(hidden, "first-half")
    with pytest.raises(InputError, match=r"Unknown row selection 'middle'"):
        select_rows(hidden, "middle")
    assert select_rows(hidden, 2).shape == (1, 4, D)
    assert select_rows(hidden, [0, 2]).shape == (2, 4, D)
    assert select_rows(hidden, None) is hidden


# -- several calls per step ------------------------------------------------------------------------------------


@torch.no_grad()
def test_steps_tagged_by_step_method():
    sampler = Sampler()
    with capture_layers(sampler.decoder, "model.layers", step_method=(sampler, "flow_step")) as cap:
        sampler.sample(IDS, calls_per_step=(3, 1, 2))
    tags = [(c.step, c.call_in_step) for c in cap.calls]
    assert tags == [(-1, 0), (0, 0), (0, 1), (0, 2), (1, 0), (2, 0), (2, 1)]
    assert cap.last_step == 2
    # the conditional call of each step is call 0; its states are those of the conditional input
    for call in cap.select(call_in_step=0)[1:]:
        assert torch.allclose(call.stacked(), sampler.decoder.reference(IDS), atol=1e-6)
    guidance = cap.select(step=0, call_in_step=2)[0]
    assert torch.allclose(guidance.stacked(), sampler.decoder.reference(IDS + 2), atol=1e-6)
    assert "flow_step" not in vars(sampler)  # the method is restored


@torch.no_grad()
def test_steps_by_calls_per_step_and_keep():
    sampler = Sampler()
    keep = lambda step, call: call == 0  # noqa: E731
    with capture_layers(sampler.decoder, "model.layers", calls_per_step=2, keep=keep, offload="cpu") as cap:
        for _ in range(3):
            sampler.flow_step(IDS, 2)
    assert [(c.index, c.step, c.call_in_step) for c in cap.calls] == [(0, 0, 0), (2, 1, 0), (4, 2, 0)]


@torch.no_grad()
def test_manual_steps():
    sampler = Sampler()
    with capture_layers(sampler.decoder, "model.layers") as cap:
        sampler.flow_step(IDS, 2)
        cap.next_step()
        sampler.flow_step(IDS, 1)
        cap.step = 7
        sampler.flow_step(IDS, 1)
    assert [(c.step, c.call_in_step) for c in cap.calls] == [(0, 0), (0, 1), (1, 0), (7, 0)]


@torch.no_grad()
def test_concat_calls_joins_kv_cached_steps():
    model = Decoder(TupleLayer)
    with capture_layers(model, "model.layers") as cap:
        model(IDS[:, :3])
        model(IDS[:, 3:])
    joined = concat_calls(cap.calls)  # (L + 1, B, 5, d)
    assert joined.shape == (4, 1, 5, D)
    # a position-free toy model: token-wise layers, so the joined calls equal one call over all tokens
    assert torch.allclose(joined, model.reference(IDS), atol=1e-6)


def test_concat_calls_errors():
    with pytest.raises(InputError, match=r"at least one call"):
        concat_calls([])
    model = Decoder(TupleLayer)
    with torch.no_grad(), capture_layers(model, "model.layers") as cap:
        model(IDS)
        model(torch.cat([IDS, IDS]))
    with pytest.raises(InputError, match=r"Cannot join calls with shapes"):
        concat_calls(cap.calls)


def test_concat_calls_passes_running_out_of_memory_on_as_it_is(monkeypatch):
    """Not the shapes' fault: a probe run that meets it halves its batch, so it must stay what torch raised."""
    model = Decoder(TupleLayer)
    with torch.no_grad(), capture_layers(model, "model.layers") as cap:
        model(IDS[:, :3])
        model(IDS[:, 3:])

    def full(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(torch, "cat", full)
    with pytest.raises(torch.OutOfMemoryError):
        concat_calls(cap.calls)


# -- clean-up and errors ---------------------------------------------------------------------------------------


def test_hooks_removed_after_exception():
    sampler = Sampler()
    with pytest.raises(RuntimeError, match="boom"):
        with capture_layers(sampler.decoder, "model.layers", step_method=(sampler, "flow_step")) as cap:
            with torch.no_grad():
                sampler.sample(IDS, calls_per_step=(1,))
            raise RuntimeError("boom")
    assert no_hooks(sampler)
    assert "flow_step" not in vars(sampler)
    assert len(cap.calls) == 2  # what was captured before the error stays readable


def test_hooks_removed_after_error_inside_the_model():
    model = Decoder(TupleLayer)
    with pytest.raises(IndexError):
        with capture_layers(model, "model.layers"):
            model(torch.tensor([[99]]))  # out of the embedding's range
    assert no_hooks(model)


def test_incomplete_call_and_non_tensor_output():
    model = Decoder(TupleLayer)
    layers = list(model.model.layers)
    capture = LayerCapture(layers)
    capture.attach()
    try:
        with torch.no_grad():
            layers[0](model.embed(IDS))  # only the first layer runs
    finally:
        capture.detach()
    with pytest.raises(InputError, match=r"Call 0 \(step 0\) is incomplete: missing layers \[1, 2\]"):
        capture.calls[0].stacked()

    class Weird(nn.Module):
        def forward(self, x):
            return {"hidden": x}

    with pytest.raises(InputError, match=r"returned dict; expected a tensor"):
        with capture_layers(nn.Sequential(Weird()), [nn.Sequential(Weird())[0]]) as cap:
            cap.layers[0](torch.zeros(1, 2, D))


def test_module_paths():
    model = Decoder(TupleLayer)
    assert resolve_module(model, "model.layers.1") is model.model.layers[1]
    assert resolve_layers(model, "model.layers", indices=[0, -1]) == [model.model.layers[0], model.model.layers[2]]
    assert resolve_layers(model, ["embed", "norm"]) == [model.embed, model.norm]
    with pytest.raises(InputError, match=r"'model' has no child 'decoder'; children: layers"):
        resolve_module(model, "model.decoder.layers")
    with pytest.raises(InputError, match=r"is a LayerNorm, not a ModuleList"):
        resolve_layers(model, "norm")
    with pytest.raises(InputError, match=r"Layer indices \[5\] are out of range for 'model.layers' with 3"):
        resolve_layers(model, "model.layers", indices=[5])
    with pytest.raises(InputError, match=r"has no method 'denoise'"):
        with capture_layers(model, "model.layers", step_method=(model, "denoise")):
            pass
    assert no_hooks(model)
    assert find_layer_lists(Sampler()) == [("decoder.model.layers", 2)]
    with pytest.raises(InputError, match=r"calls_per_step must be >= 1; got 0"):
        LayerCapture(layers=list(model.model.layers), calls_per_step=0)
    with pytest.raises(InputError, match=r"needs at least one layer"):
        LayerCapture(layers=[])
    with pytest.raises(InputError, match=r"No calls were captured"):
        _ = LayerCapture(list(model.model.layers)).last_step


# -- to LayerStates --------------------------------------------------------------------------------------------


@torch.no_grad()
def test_to_layer_states_positions_and_final_norm():
    model = Decoder(TupleLayer)
    with capture_layers(model, "model.layers") as cap:
        out = model(IDS)
    stacked = cap.calls[0].stacked()
    mask = torch.tensor([False, True, True, False, True])
    by_mask = to_layer_states(stacked, mask, token_ids=IDS[0, mask])
    by_index = to_layer_states(stacked, [1, 2, 4])
    by_slice = to_layer_states(stacked, slice(1, 3))
    assert by_mask.positions.tolist() == [1, 2, 4] and by_mask.token_ids.tolist() == [2, 3, 5]
    assert torch.equal(by_mask.states, by_index.states)
    assert by_slice.positions.tolist() == [1, 2]
    assert to_layer_states(stacked, slice(-2, None)).positions.tolist() == [3, 4]  # the last tokens of a call
    assert not by_mask.final_norm
    normed = to_layer_states(stacked, slice(None), final_norm=model.norm)
    assert normed.final_norm and normed.num_layers == 3
    assert torch.allclose(normed.states[-1], out[0], atol=1e-6)  # the model's own output, after its norm
    assert torch.equal(normed.states[:-1], stacked[:-1, 0])
    with pytest.raises(InputError, match=r"Positions \[9\] are out of range for 5 captured tokens"):
        to_layer_states(stacked, [9])
    with pytest.raises(InputError, match=r"Expected states \(layers \+ 1, \[rows,\] tokens, d\)"):
        to_layer_states(torch.zeros(3, 4), [0])


# -- devices: layers spread over GPUs by device_map, captures offloaded to the CPU -----------------------------
# Without a second GPU, "meta" stands in for another device: torch.stack and the ops refuse to mix it with
# "cpu" tensors exactly as they refuse to mix cuda:0 and cuda:1 (cpu → meta moves work; meta → cpu does not).


def test_stacked_gathers_layer_outputs_on_the_embeddings_device():
    call = LayerCall(index=0, step=0, call_in_step=0)
    call.embedding = torch.zeros(1, 4, D, device="meta")  # the first GPU
    call.outputs = [torch.ones(1, 4, D), torch.ones(1, 4, D)]  # later layers on another device
    with pytest.raises(RuntimeError, match="not on the expected device"):
        torch.stack([call.embedding, *call.outputs])  # what a plain stack does
    stacked = call.stacked()
    assert stacked.device.type == "meta" and stacked.shape == (3, 1, 4, D) and stacked.dtype == torch.float32
    other = LayerCall(index=1, step=0, call_in_step=0, embedding=torch.ones(1, 2, D), outputs=[torch.ones(1, 2, D)] * 2)
    joined = concat_calls([call, other])  # calls gathered on the first call's device
    assert joined.device.type == "meta" and joined.shape == (3, 1, 6, D)


class RecordingNorm(nn.Module):
    """A norm whose parameters live on ``device`` and which records where its input was.

    Its output is a CPU tensor of ones whatever the device: a meta norm computes no numbers, and the states
    here are CPU states, so what is checked is where the norm was fed and that the result joins the states.
    """

    def __init__(self, device: str, dtype: torch.dtype = torch.float16):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(D, device=device, dtype=dtype))
        self.seen: list[tuple[torch.device, torch.dtype]] = []

    def forward(self, hidden):
        self.seen.append((hidden.device, hidden.dtype))
        return torch.ones(hidden.shape, dtype=hidden.dtype)


def test_final_norm_runs_on_its_own_device_for_offloaded_states():
    offloaded = torch.randn(3, 1, 5, D)  # (L + 1, rows, T, d) captured with offload="cpu"
    norm = RecordingNorm("meta")  # the model's norm, on the GPU
    with pytest.raises(RuntimeError, match="not on the expected device"):
        nn.LayerNorm(D, device="meta")(offloaded[-1, 0])  # what feeding the norm CPU states does
    states = to_layer_states(offloaded, slice(None), final_norm=norm)
    assert norm.seen == [(torch.device("meta"), torch.float16)]  # fed on its device, in its dtype
    assert states.states.device.type == "cpu" and states.states.dtype == torch.float32  # back with the states
    assert torch.equal(states.states[-1], torch.ones(5, D)) and torch.equal(states.states[:-1], offloaded[:-1, 0])
    free = to_layer_states(offloaded, [0, 1], final_norm=nn.Identity())  # a norm without parameters
    assert torch.equal(free.states, offloaded[:, 0, :2]) and free.final_norm


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@torch.no_grad()
def test_final_norm_on_gpu_with_states_offloaded_to_cpu():
    model = Decoder(TupleLayer).cuda()
    with capture_layers(model, "model.layers", offload="cpu") as cap:
        out = model(IDS.cuda())
    states = to_layer_states(cap.calls[0].stacked(), slice(None), final_norm=model.norm)
    assert states.states.device.type == "cpu"
    assert torch.allclose(states.states[-1], out[0].cpu(), atol=1e-5)
