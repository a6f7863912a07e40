"""transformers' ``generate`` for a batch of prompts, each drawing from its own seed, and the batched
teacher-forced pass.

What a prompt generates must not depend on its batch (a run resumed after a kill batches its units otherwise).
transformers samples every row from one global generator, so sampling is done here instead, for one prompt or
many alike: ``generate`` decodes greedily over the scores after transformers' own processors (guidance,
constraints, repetition penalty), the sampling warpers it would have applied (temperature, top-k, top-p, in its
order), and Gumbel noise from the row's own generator — the argmax of ``scores + g``, ``g = −log(−log u)``,
is a draw from ``softmax(scores)``. Greedy settings add no noise.

Prompts are left-padded with an attention mask for generation; the teacher-forced pass over prompt + response
is right-padded (a causal model's tokens never see what follows them).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch

from entroprobe.errors import EntroprobeError
from entroprobe.models.base import LayerStates

__all__ = ["RowNoise", "GuidedRowNoise", "sampling_processors", "generate_rows", "teacher_forced_rows", "Asked",
           "answer_embedded", "forced_states"]

_DEFAULT_TOP_K = 50  # what transformers uses when neither the call nor the checkpoint sets top_k
# generation settings whose processors read the prompt's ids (left padding would change what they do)
_READS_THE_PROMPT = ("repetition_penalty", "no_repeat_ngram_size", "encoder_repetition_penalty")


class RowNoise:
    """A logits processor adding Gumbel noise to row ``b`` from ``generators[b]`` (a CPU generator each)."""

    def __init__(self, generators: list[torch.Generator]):
        self.generators = generators

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        u = torch.stack([torch.rand(scores.shape[-1], generator=g) for g in self.generators])
        noise = -torch.log(-torch.log(u.clamp(1e-10, 1 - 1e-7)))  # (B, V)
        return scores.float() + noise.to(scores.device)


class GuidedRowNoise:
    """Classifier-free guidance and sampling for a ``generate`` that runs the processors it is given *before* its
    own guidance (Janus' image branch), on ``2B`` rows of conditional then unconditional scores.

    It guides itself, ``u + w (c − u)`` (any ``w``), applies the warpers and (when sampling) each row's Gumbel
    noise, and returns the result in both halves: the model's own guidance step that follows, ``u' + w' (c' −
    u')`` with ``c' = u'``, leaves it as it is whatever its ``w'``. Filtered-out scores are a large finite
    negative, not −inf, so that step cannot turn them into NaN (−inf − −inf).
    """

    FILTERED = -1e30

    def __init__(self, guidance: float, warpers: list[Any], generators: list[torch.Generator] | None):
        self.guidance, self.warpers = guidance, warpers
        self.noise = None if generators is None else RowNoise(generators)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        half = scores.shape[0] // 2
        cond, uncond = scores[:half].float(), scores[half:].float()
        guided = uncond + self.guidance * (cond - uncond)  # (B, V)
        for warper in self.warpers:
            guided = warper(input_ids, guided)
        drawn = guided if self.noise is None else self.noise(input_ids, guided)
        drawn = drawn.nan_to_num(nan=self.FILTERED, neginf=self.FILTERED)
        return torch.cat([drawn, drawn])  # (2B, V) float32


def sampling_processors(model: Any, settings: Mapping[str, Any], generators: list[torch.Generator],
                        guidance: float | None = None):  # fmt: skip
    """``(settings without sampling, processors)``: with ``do_sample`` (in ``settings`` or the checkpoint's
    generation config), the warpers transformers would apply and :class:`RowNoise`; greedy otherwise."""
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    stored = getattr(model, "generation_config", None)

    def setting(key: str, default: Any) -> Any:
        value = settings.get(key, getattr(stored, key, None))
        return default if value is None else value

    rest = {k: v for k, v in settings.items() if k not in ("do_sample", "temperature", "top_k", "top_p")}
    if not setting("do_sample", False):
        if guidance is not None:  # greedy, guided here all the same (see GuidedRowNoise)
            return {**rest, "do_sample": False}, LogitsProcessorList([GuidedRowNoise(guidance, [], None)])
        return {**rest, "do_sample": False}, LogitsProcessorList()
    # ``guidance``: the scores come as conditional then unconditional rows, before the model's own guidance
    temperature, top_k, top_p = float(setting("temperature", 1.0)), int(setting("top_k", _DEFAULT_TOP_K)), \
        float(setting("top_p", 1.0))  # fmt: skip
    warpers = []
    if temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(temperature))
    if top_k > 0:
        warpers.append(TopKLogitsWarper(top_k=top_k))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=top_p))
    # the checkpoint's own sampling settings must not come back through its generation config
    neutral = {"do_sample": False, "temperature": None, "top_k": None, "top_p": None}
    if guidance is not None:
        return {**rest, **neutral}, LogitsProcessorList([GuidedRowNoise(guidance, warpers, generators)])
    return {**rest, **neutral}, LogitsProcessorList([*warpers, RowNoise(generators)])


def _eos_ids(config: Any, settings: Mapping[str, Any]) -> set[int]:
    eos = settings.get("eos_token_id", getattr(config, "eos_token_id", None))
    return set() if eos is None else {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])}


def _own_repetition_penalty(settings: dict[str, Any], config: Any, processors: Any) -> None:
    """A repetition penalty over the answer's tokens, for generation from embeddings alone (where transformers' ids
    hold the answer only). transformers' own processor skips each row's left padding counted from the attention
    mask, which over embeddings skips the first tokens of a padded row's answer instead; this one, put first as
    transformers puts its own, reads every id it is given, as transformers does for an unpadded prompt."""
    from transformers import RepetitionPenaltyLogitsProcessor

    penalty = settings.get("repetition_penalty", getattr(config, "repetition_penalty", None))
    if penalty in (None, 1, 1.0):
        return
    settings["repetition_penalty"] = 1.0  # transformers adds none of its own
    processors.insert(0, RepetitionPenaltyLogitsProcessor(float(penalty)))


def left_pad(rows: list[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids (B, T), attention_mask (B, T))`` with the rows right-aligned."""
    width = max(int(r.shape[0]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - row.shape[0] :], mask[i, width - row.shape[0] :] = row.cpu(), 1
    return ids, mask


def generate_rows(model: Any, rows: list[torch.Tensor], *, seeds: list[int], max_new_tokens: int, device: torch.device,
                  generation: Mapping[str, Any] | None = None, generate: Callable[..., Any] | None = None,
                  embeds: list[torch.Tensor] | None = None, **extra: Any) -> list[torch.Tensor]:  # fmt: skip
    """``model.generate`` over the left-padded prompts → each row's new ids, through its first end-of-sequence
    token (kept) or ``max_new_tokens``.

    Args:
        rows: 1-D prompt ids, one per prompt.
        seeds: one per prompt: what a prompt draws depends on its seed alone.
        generation: settings over the checkpoint's generation config (``do_sample``, ``temperature``…).
        generate: what to call instead of ``model.generate`` (a family whose ``generate`` drops
            ``logits_processor``, see :mod:`.compat`).
        embeds: each prompt's input embeddings ``(P_i, d)``, fed instead of its ids (a family that fills prompt
            positions with image features), left-padded. As such a family's script calls ``generate`` with
            ``inputs_embeds`` alone, the ids are not passed: processors that read the ids (a repetition penalty)
            then see the answer's tokens only, as in the script, and never the padding (see
            :func:`_own_repetition_penalty`).
        extra: further ``generate`` keywords, the same for every row (``prefix_allowed_tokens_fn``…).
    """
    settings = dict(generation or {})
    given = extra.pop("generation_config", None)  # a GenerationConfig of the call (Janus): sampling taken from it
    if given is not None:
        given = copy.deepcopy(given)
        settings.update({k: getattr(given, k) for k in ("do_sample", "temperature", "top_k", "top_p")
                         if getattr(given, k, None) is not None})  # fmt: skip
        given.update(do_sample=False, temperature=None, top_k=None, top_p=None)
    config = given or getattr(model, "generation_config", None)
    pad = settings.get("pad_token_id", getattr(config, "pad_token_id", None))
    eos = _eos_ids(config, settings)
    if pad is None:
        pad = min(eos) if eos else 0
        settings["pad_token_id"] = pad
    if len(rows) > 1 and embeds is None:
        for key in _READS_THE_PROMPT:
            value = settings.get(key, getattr(config, key, None))
            if value not in (None, 0, 1, 1.0):  # these read the (padded) prompt ids: padding would change them
                raise EntroprobeError(f"{key}={value} reads the prompt's ids, padding included: each prompt is "
                                      "generated alone")  # fmt: skip
    generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
    settings, processors = sampling_processors(model, settings, generators)
    if embeds is not None:
        _own_repetition_penalty(settings, config, processors)
    ids, mask = left_pad(rows, int(pad))
    inputs = {"input_ids": ids.to(device)}
    if embeds is not None:
        if given is not None:
            raise EntroprobeError("generate_rows takes a generation_config or embeds, not both")
        padded = embeds[0].new_zeros((len(rows), ids.shape[1], embeds[0].shape[-1]))  # (B, T, d); the mask hides 0s
        for i, row in enumerate(embeds):
            padded[i, ids.shape[1] - row.shape[0] :] = row
        inputs = {"inputs_embeds": padded.to(device)}  # generate then returns the new tokens alone
    length: dict[str, Any] = {"max_new_tokens": max_new_tokens}
    if given is not None:  # everything else is in the call's config
        given.max_new_tokens, given.max_length = None, ids.shape[1] + max_new_tokens
        if given.pad_token_id is None:
            given.pad_token_id = int(pad)
        extra["generation_config"], settings, length = given, {}, {}
    with torch.no_grad():
        out = (generate or model.generate)(**inputs, attention_mask=mask.to(device), logits_processor=processors,
                                           **length, **settings, **extra)  # fmt: skip
    sequences = out.sequences if hasattr(out, "sequences") else out  # (B, T + n), or (B, n) from embeddings
    new = (sequences if embeds is not None else sequences[:, ids.shape[1] :]).cpu()
    results = []
    for row in new:
        ends = [i for i, token in enumerate(row.tolist()) if token in eos]
        results.append(row[: ends[0] + 1] if ends else row)
    return results


def teacher_forced_rows(model: Any, prompts: list[torch.Tensor], responses: list[torch.Tensor], *, num_layers: int,
                        final_norm: bool | None, device: torch.device, pad_id: int = 0,
                        embed: Callable[[torch.Tensor], torch.Tensor] | None = None,
                        **extra: Any) -> list[tuple[LayerStates, LayerStates]]:  # fmt: skip
    """ONE forward pass over every prompt + response (right-padded) → per row (prompt states, response states).

    ``embed`` turns the padded ids ``(B, T)`` into the input embeddings ``model`` is given instead (a family
    that fills prompt positions with image features itself).

    Raises:
        EntroprobeError: when the model does not return ``num_layers + 1`` hidden states.
    """
    from entroprobe.models.hf_batch import pad_right, padded_states

    full = [torch.cat([p.cpu(), r.cpu()]) for p, r in zip(prompts, responses)]
    ids, mask = pad_right(full, pad_id)
    states = padded_states(model, num_layers, ids, mask, device, embed, use_cache=False, **extra)  # (L + 1, B, T, d)
    pairs = []
    for i, (prompt, row) in enumerate(zip(prompts, full)):
        n, total = int(prompt.shape[0]), int(row.shape[0])
        positions = torch.arange(total)
        pairs.append((LayerStates(states[:, i, :n], positions[:n], row[:n], final_norm),
                      LayerStates(states[:, i, n:total], positions[n:total], row[n:total], final_norm)))
    return pairs


class Asked(NamedTuple):
    """One prompt of a batch of text replies generated over input embeddings (a family that fills a prompt's image
    positions with features itself): what its script builds, and the room its answer has in the context."""

    text: str | None
    image: Any
    item: str
    templated: str  # the prompt as the template writes it
    render: Callable[[str], str]  # a question → its templated prompt (to find the question's tokens)
    ids: torch.Tensor  # (P,)
    embeds: torch.Tensor  # (P, d)
    budget: int  # the most tokens the answer may have


def answer_embedded(model: Any, asked: list[Asked], *, seeds: list[int], device: torch.device,
                    generation: Mapping[str, Any], **extra: Any) -> list[torch.Tensor]:  # fmt: skip
    """:func:`generate_rows` over the prompts' embeddings, each answer cut to its own budget: the batch generates up
    to the largest, and a row's first tokens are those it draws alone."""
    answers = generate_rows(model, [a.ids for a in asked], seeds=seeds, max_new_tokens=max(a.budget for a in asked),
                            device=device, generation=generation, embeds=[a.embeds for a in asked], **extra)  # fmt: skip
    return [new[: a.budget] for new, a in zip(answers, asked)]


def forced_states(decoder: Any, asked: list[Asked], answers: list[torch.Tensor]) -> list[torch.Tensor]:
    """The teacher-forced pass: ONE pass of ``decoder`` over each prompt's embeddings then its answer's token
    embeddings, right-padded (a row's tokens never see what follows them) → each row's raw states ``(L + 1, P + n,
    d)`` (:func:`entroprobe.models.hf_batch.embedded_passes`)."""
    from entroprobe.models.hf_batch import embedded_passes

    embed = decoder.get_input_embeddings()
    with torch.no_grad():
        rows = [torch.cat([a.embeds, embed(new.to(a.embeds.device)).to(a.embeds.dtype)]) for a, new in zip(asked, answers)]
    return embedded_passes(decoder, rows)
