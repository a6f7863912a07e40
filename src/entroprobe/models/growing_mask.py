"""The Show-o authors' text generation (``mmu_generate`` in Show-o and in Show-o2) for several prompts at once.

``mmu_generate`` takes one prompt and has no cache: each step is one pass over the prompt and the answer so far,
under the authors' additive attention mask, grown by one row and one column a step (the new token sees what the
previous last token saw, and itself); the last position's logits are divided by the temperature, cut to the top
k, and sampled with ``torch.multinomial``. :func:`generate` is that loop for a batch: each step one pass over the
rows still answering, right-padded (positions count from 0 in every row, and no position sees the padding), each
row's draw from its own generator on the model's device, so that an answer does not depend on its batch (and a
text prompt alone draws what ``mmu_generate`` draws from torch's global generator under the same seed).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from entroprobe.errors import InputError

__all__ = ["padded", "generate", "forced"]


def padded(rows: list[torch.Tensor], masks: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences ``(T_i, d)`` with their additive masks ``(T_i, T_i)``, right-padded → ``(embeds (B, T, d), mask
    (B, 1, T, T))``: no position sees the padding, and a padding position sees itself (its output is never read)."""
    width, floor = max(r.shape[0] for r in rows), torch.finfo(masks[0].dtype).min
    embeds = rows[0].new_zeros((len(rows), width, rows[0].shape[-1]))
    mask = torch.full((len(rows), 1, width, width), floor, dtype=masks[0].dtype, device=embeds.device)
    mask[:, 0].diagonal(dim1=-2, dim2=-1).zero_()
    for k, (row, own) in enumerate(zip(rows, masks)):
        embeds[k, : row.shape[0]], mask[k, 0, : row.shape[0], : row.shape[0]] = row, own
    return embeds, mask


def generate(logits_of: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
             embed: Callable[[int], torch.Tensor],
             prompts: list[tuple[torch.Tensor, torch.Tensor]], budgets: list[int], seeds: list[int], *,
             top_k: int | None, temperature: float, eos: int | None) -> list[list[int]]:  # fmt: skip
    """Each prompt's answer ids (its end token kept), at most ``budgets[i]`` of them.

    Args:
        logits_of: ``(embeds (b, T, d), mask (b, 1, T, T), last (b,))`` → the logits ``(b, V)`` at each row's
            position ``last`` (the model's forward, its head applied at those positions only: a batch's logits at
            every position would take gigabytes at a 150k vocabulary).
        embed: a token id → its input embedding ``(d,)``.
        prompts: per prompt, its input embeddings ``(P, d)`` and additive mask ``(P, P)``.
        seeds: one per prompt: what it draws depends on its seed alone.
        top_k, temperature, eos: ``mmu_generate``'s ``top_k``, ``temperature`` and end token.
    """
    if len(seeds) != len(prompts) or len(budgets) != len(prompts):
        raise InputError(f"{len(prompts)} prompts need as many seeds and budgets; got {len(seeds)} and {len(budgets)}")
    device = prompts[0][0].device
    generators = [torch.Generator(device=device).manual_seed(int(seed)) for seed in seeds]
    seqs = [embeds for embeds, _ in prompts]
    masks = [mask for _, mask in prompts]
    answers: list[list[int]] = [[] for _ in prompts]
    live = [i for i, budget in enumerate(budgets) if budget > 0]
    while live:
        inputs, mask = padded([seqs[i] for i in live], [masks[i] for i in live])
        ends = torch.tensor([seqs[i].shape[0] - 1 for i in live], device=inputs.device)
        with torch.no_grad():
            logits = logits_of(inputs, mask, ends)  # (b, V)
        for k, i in enumerate(list(live)):
            last = logits[k] / temperature  # (V,), in the dtype mmu_generate sees (the model's head's)
            if top_k is not None:
                last[last < torch.topk(last, min(int(top_k), last.shape[-1])).values[-1]] = -float("inf")
            token = int(torch.multinomial(torch.softmax(last, -1)[None], 1, generator=generators[i])[0, 0])
            answers[i].append(token)
            n, floor = seqs[i].shape[0], torch.finfo(masks[i].dtype).min
            grown = torch.full((n + 1, n + 1), floor, dtype=masks[i].dtype, device=masks[i].device)
            grown[:n, :n], grown[n, :n], grown[n, n] = masks[i], masks[i][-1], 0  # mmu_generate's new row and column
            masks[i] = grown
            with torch.no_grad():
                seqs[i] = torch.cat([seqs[i], embed(token)[None].to(seqs[i].dtype)])
            if token == eos or len(answers[i]) >= budgets[i]:
                live.remove(i)
    return answers


def forced(pass_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], rows: list[torch.Tensor],
           masks: list[torch.Tensor]) -> list[torch.Tensor]:  # fmt: skip
    """The teacher-forced pass: ONE ``pass_of(embeds (B, T, d), mask (B, 1, T, T)) → states (L + 1, B, T, d)`` over
    the sequences ``(T_i, d)`` (prompt + answer) under their masks ``(T_i, T_i)``, right-padded → each row's
    ``(L + 1, T_i, d)``."""
    states = pass_of(*padded(rows, masks))
    return [states[:, k, : row.shape[0]] for k, row in enumerate(rows)]
