"""models/growing_mask.py (the Show-o authors' mmu_generate loop for a batch), without a checkout: a tiny attention
model under additive masks, against mmu_generate's loop written out here for one prompt."""

from __future__ import annotations

import pytest
import torch

from entroprobe.errors import InputError
from entroprobe.models.growing_mask import forced, generate, padded

D, V = 8, 11
torch.manual_seed(0)
EMBED = torch.randn(V, D)
QKV = torch.randn(3, D, D) / D**0.5
HEAD = torch.randn(D, V)


def hidden(embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One attention layer under an additive mask: (B, T, d), (B, 1, T, T) → (B, T, d)."""
    q, k, v = (embeds @ w for w in QKV)
    weights = torch.softmax(q @ k.transpose(-1, -2) / D**0.5 + mask[:, 0], dim=-1)
    return embeds + weights @ v


def logits_of(embeds: torch.Tensor, mask: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    return hidden(embeds, mask)[torch.arange(embeds.shape[0]), ends] @ HEAD


def one_by_one(embeds: torch.Tensor, mask: torch.Tensor, steps: int, seed: int, top_k: int | None,
               eos: int | None) -> list[int]:  # fmt: skip
    """mmu_generate's loop for one prompt: every step a pass over everything, the mask grown by hstack / vstack."""
    generator, result, floor = torch.Generator().manual_seed(seed), [], torch.finfo(mask.dtype).min
    embeds, mask = embeds[None], mask
    for _ in range(steps):
        logits = (hidden(embeds, mask[None, None]) @ HEAD)[:, -1, :]
        n = mask.shape[-1]
        mask = torch.vstack([torch.hstack([mask, torch.zeros((n, 1)) + floor]),
                             torch.hstack([mask[-1, :], torch.tensor([0.0])]).unsqueeze(0)])  # fmt: skip
        if top_k is not None:
            v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
            logits[logits < v[:, [-1]]] = -float("inf")
        token = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)
        result.append(int(token))
        embeds = torch.cat([embeds, EMBED[token[0]][None]], dim=1)
        if eos is not None and int(token) == eos:
            break
    return result


def prompt(n: int, block: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A prompt of n tokens under a causal mask whose first ``block`` positions see each other (omni-attention)."""
    floor = torch.finfo(torch.float32).min
    keep = torch.tril(torch.ones(n, n, dtype=torch.bool))
    keep[:block, :block] = True
    return EMBED[torch.arange(n) % V], torch.zeros(n, n).masked_fill(~keep, floor)


@pytest.mark.parametrize("top_k", [1, 3, None])
def test_a_batch_draws_what_each_prompt_draws_alone_and_alone_what_mmu_generate_draws(top_k):
    prompts = [prompt(5, block=3), prompt(2), prompt(7, block=4)]
    budgets, seeds = [4, 6, 3], [1, 2, 3]
    embed = lambda token: EMBED[token]  # noqa: E731
    batched = generate(logits_of, embed, prompts, budgets, seeds, top_k=top_k, temperature=1.0, eos=None)
    for (embeds, mask), budget, seed, answer in zip(prompts, budgets, seeds, batched):
        alone = generate(logits_of, embed, [(embeds, mask)], [budget], [seed], top_k=top_k, temperature=1.0, eos=None)
        assert answer == alone[0] == one_by_one(embeds, mask, budget, seed, top_k, None)
    stop = batched[1][1]  # a token the second prompt says second: its answer ends there, kept
    ended = generate(logits_of, embed, prompts, budgets, seeds, top_k=top_k, temperature=1.0, eos=stop)
    assert ended[1] == batched[1][: batched[1].index(stop) + 1]
    with pytest.raises(InputError, match="3 prompts need as many seeds"):
        generate(logits_of, embed, prompts, budgets, seeds[:2], top_k=top_k, temperature=1.0, eos=None)


def test_padding_is_never_seen_and_the_forced_pass_gives_each_row_its_own_states():
    rows = [prompt(5, block=3), prompt(2)]
    embeds, mask = padded([r for r, _ in rows], [m for _, m in rows])
    assert embeds.shape == (2, 5, D) and torch.equal(embeds[1, 2:], torch.zeros(3, D))
    floor = torch.finfo(torch.float32).min
    assert (mask[1, 0, :2, 2:] == floor).all() and torch.equal(mask[1, 0, 2:, 2:].diagonal(), torch.zeros(3))
    states = forced(lambda e, m: hidden(e, m)[None], [r for r, _ in rows], [m for _, m in rows])
    for (row, own), mine in zip(rows, states):
        torch.testing.assert_close(mine[0], hidden(row[None], own[None, None])[0])
