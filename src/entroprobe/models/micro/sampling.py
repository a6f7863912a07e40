"""The micro models' generation for a batch of prompts, each row drawn from its own random generator.

A row's output must not depend on the batch it is in (a run resumed after a kill batches its units otherwise),
so every draw is Gumbel-max with noise from the row's own ``torch.Generator``: ``argmax(logits / T + g)``, with
``g = −log(−log u)`` and ``u ~ U(0, 1)``, is a draw from ``softmax(logits / T)``. Prompts of different lengths are
left-padded (see ``MicroUMM._inputs``): a row sees only its own tokens, at its own positions.

Each function takes the model, the prompts as lists of ids, and one generator per row (CPU generators: the
noise is drawn there and moved to the model's device, the same on every device).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from entroprobe.models.micro.model import KVCache, MicroUMM

__all__ = ["PAD", "left_pad", "generate_text", "generate_image_ar", "generate_image_mask"]

PAD = 0  # <pad>, the first of the micro vocabulary's specials


def left_pad(prompts: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids (B, T), pad (B,))``: the prompts right-aligned, ``pad_id`` before the shorter ones."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt)
    pad = torch.tensor([width - len(p) for p in prompts])
    return ids.to(device), pad.to(device)


def _gumbel(shape: tuple[int, ...], generators: list[torch.Generator], device: torch.device) -> torch.Tensor:
    """Gumbel noise ``(B, *shape)``, row ``b`` from ``generators[b]``."""
    u = torch.stack([torch.rand(shape, generator=g) for g in generators]).clamp(1e-10, 1 - 1e-7)
    return (-torch.log(-torch.log(u))).to(device)


def _pick(logits: torch.Tensor, temperature: float, generators: list[torch.Generator]) -> torch.Tensor:
    """One draw per row of ``logits`` (B, …, V) at ``temperature`` (0 = argmax) → (B, …)."""
    if temperature <= 0:
        return logits.argmax(-1)
    return (logits / temperature + _gumbel(tuple(logits.shape[1:]), generators, logits.device)).argmax(-1)


@torch.no_grad()
def generate_text(model: MicroUMM, prompts: list[list[int]], max_new_tokens: int, temperature: float,
                  generators: list[torch.Generator]) -> list[list[int]]:  # fmt: skip
    """Each prompt continued with words until its ``<eos>`` (kept) or ``max_new_tokens``; one list per row."""
    cfg = model.config
    device = next(model.parameters()).device
    idx, pad = left_pad(prompts, PAD, device)
    allowed = torch.zeros(cfg.vocab_size, dtype=torch.bool, device=device)
    allowed[cfg.mask_id + 1 : cfg.code_offset] = True  # the words (and <unk>, <ans>)
    allowed[cfg.eos_id] = True
    cache, out = KVCache(cfg.n_layer), []
    done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    for _ in range(max_new_tokens):
        logits = model._next_logits(idx, cache, pad).masked_fill(~allowed, float("-inf"))  # (B, V)
        token = torch.where(done, cfg.eos_id, _pick(logits, temperature, generators))  # (B,)
        out.append(token)
        done |= token == cfg.eos_id
        if done.all():
            break
        idx = torch.cat([idx, token[:, None]], dim=1)  # (B, T + 1)
    rows = torch.stack(out, dim=1).tolist()  # (B, n)
    return [row[: row.index(cfg.eos_id) + 1] if cfg.eos_id in row else row for row in rows]


@torch.no_grad()
def generate_image_ar(model: MicroUMM, prompts: list[list[int]], temperature: float,
                      generators: list[torch.Generator]) -> torch.Tensor:  # fmt: skip
    """A picture after each prompt, code by code (micro-ar): ``(B, image_tokens)`` code ids."""
    cfg = model.config
    idx, pad = left_pad([[*p, cfg.boi_id] for p in prompts], PAD, next(model.parameters()).device)
    cache, codes = KVCache(cfg.n_layer), []
    for _ in range(cfg.image_tokens):
        logits = model._next_logits(idx, cache, pad)[:, cfg.code_offset :]  # (B, num_codes)
        code = _pick(logits, temperature, generators) + cfg.code_offset  # (B,)
        codes.append(code)
        idx = torch.cat([idx, code[:, None]], dim=1)
    return torch.stack(codes, dim=1)  # (B, image_tokens)


@torch.no_grad()
def generate_image_mask(model: MicroUMM, prompts: list[list[int]], steps: int, temperature: float,
                        generators: list[torch.Generator]) -> torch.Tensor:  # fmt: skip
    """A picture after each prompt by iterative masked prediction (micro-mask), as ``MicroUMM.generate_image_mask``
    (cosine schedule, confidence plus fading Gumbel noise) with every draw from the row's own generator."""
    cfg = model.config
    device = next(model.parameters()).device
    idx, pad = left_pad([[*p, cfg.boi_id] for p in prompts], PAD, device)
    B, N = idx.size(0), cfg.image_tokens
    image = torch.full((B, N), cfg.mask_id, dtype=idx.dtype, device=device)  # (B, N)
    for step in range(1, steps + 1):
        masked = image == cfg.mask_id  # (B, N)
        x, _ = model._trunk(torch.cat([idx, image], dim=1), pad=pad)  # (B, T + N, C)
        logits = model.lm_head(model.transformer.ln_f(x[:, -N:]))[..., cfg.code_offset :]  # (B, N, codes)
        drawn = _pick(logits, temperature, generators)  # (B, N)
        probs = F.softmax(logits / max(temperature, 1e-6), dim=-1)
        confidence = probs.gather(-1, drawn.unsqueeze(-1)).squeeze(-1).log()  # (B, N)
        if temperature > 0:
            confidence = confidence + temperature * (1 - step / steps) * _gumbel((N,), generators, device)
        confidence = confidence.masked_fill(~masked, float("inf"))  # placed codes stay placed
        keep_masked = 0 if step == steps else int(N * math.cos(math.pi / 2 * step / steps))
        order = confidence.argsort(dim=1)  # (B, N) least confident first
        still = torch.zeros_like(masked).scatter(1, order[:, :keep_masked], True) & masked
        image = torch.where(masked & ~still, drawn + cfg.code_offset, image)
    return image  # (B, N)
