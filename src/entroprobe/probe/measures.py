"""From one unit's layer states to its rows: every measure, raw and at matched token counts, at every σ scale.

A unit's rows come in blocks:

- the raw block (``subsample = subsample_response = 0``): every token the adapter returned;
- the matched block, when the run matches token counts and the unit reaches them: an encode unit's prompt
  entropy at ``match_tokens`` tokens; a generation unit's four measures with the prompt at ``match_tokens``
  and the response at ``match_response_tokens`` tokens (either 0: that side whole). Each is the mean over
  ``draws`` random subsets, seeded by the unit (see :mod:`entroprobe.entropy.subsample`), so a unit's rows do
  not depend on which other units ran, or in which order.

Every block is computed at each σ scale of the run (``sigma_scale`` column; 1 = the rule's own σ).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import torch

from entroprobe.entropy import STATES, EntropyResult, prompt_response_entropies, renyi_entropy

__all__ = ["MeasureSettings", "Block", "unit_blocks", "unit_rows", "parse_layers", "resolve_layers"]


@dataclass(frozen=True)
class MeasureSettings:
    """How a run measures every unit."""

    alpha: float = 1.01
    sigma: str | float | torch.Tensor = "median"  # the rule, a fixed σ, or the pooled σ per layer
    sigma_rule: str = "median"  # median | fixed | pooled
    base: float = 2.0
    scales: tuple[float, ...] = (1.0,)
    match_tokens: int = 0  # prompt tokens of the matched block (0: prompt whole)
    match_response_tokens: int = 0  # response tokens of the matched block (0: response whole)
    draws: int = 8
    layer_spec: str | None = None  # the --layers spec (None: every layer)
    num_layers: int | None = None  # the depth of the states measured (``layers`` and a pooled σ are for it)
    device: torch.device | None = None  # where the estimators compute (the model's device); None: the states'


    @cached_property
    def layers(self) -> tuple[int, ...] | None:
        """The layers measured (0 = embedding output … L), ascending; None: all."""
        return None if self.num_layers is None else resolve_layers(self.layer_spec, self.num_layers)

    @property
    def matching(self) -> bool:
        return self.match_tokens > 0 or self.match_response_tokens > 0

    def at_depth(self, num_layers: int) -> MeasureSettings:
        """These settings for states of ``num_layers`` layers: the same spec resolved again where a task runs in
        another network of the model (OmniGen2's diffusion transformer beside its MLLM).

        Raises:
            InputError: a pooled σ (one per layer of the model's network) for states of another depth, or a layer
                the other network lacks.
        """
        if self.num_layers is None or num_layers == self.num_layers:
            return self
        from entroprobe.errors import InputError

        if isinstance(self.sigma, torch.Tensor):
            raise InputError(f"--sigma pooled was calibrated on {self.num_layers} layers; this task's states come "
                             f"from a network of {num_layers}: use --sigma median or a fixed σ for this model")  # fmt: skip
        resolve_layers(self.layer_spec, num_layers)  # a layer the other network lacks is refused here
        return replace(self, num_layers=num_layers)


@dataclass(frozen=True)
class Block:
    """One block of a unit's measures: at which token counts, and each measure's result (a last scale dim)."""

    subsample: int  # prompt tokens kept per draw (0: all)
    subsample_response: int  # response tokens kept per draw (0: all)
    measures: dict[str, EntropyResult]


def unit_blocks(settings: MeasureSettings, prompt: torch.Tensor, response: torch.Tensor | None,
                seed: int) -> tuple[list[Block], bool]:  # fmt: skip
    """Every block of a unit from its prompt states ``(L, n, d)`` and response states ``(L, m, d)`` (or None).

    Returns:
        The blocks, and whether the unit was too short for the matched block (it then has only the raw one).
    """
    if settings.layers is not None:  # the layers kept, before any kernel is built
        keep = torch.tensor(settings.layers)  # indexed on each side's own device (one may be on the CPU)
        prompt = prompt.index_select(0, keep.to(prompt.device))
        response = None if response is None else response.index_select(0, keep.to(response.device))
    sigma = settings.sigma
    if settings.layers is not None and isinstance(sigma, torch.Tensor):
        sigma = sigma[list(settings.layers)]  # the pooled σ of the kept layers
    common = {"alpha": settings.alpha, "sigma": sigma, "base": settings.base, "device": settings.device,
              "sigma_scale": list(settings.scales)}  # fmt: skip
    k, m = settings.match_tokens, settings.match_response_tokens
    if response is None:
        blocks = [Block(0, 0, {"prompt_entropy": renyi_entropy(prompt, return_details=True, **common)})]
        if k <= 0:
            return blocks, False
        if prompt.shape[-2] < k:
            return blocks, True
        matched = renyi_entropy(prompt, subsample=k, draws=settings.draws, seed=seed, return_details=True, **common)
        return blocks + [Block(k, 0, {"prompt_entropy": matched})], False
    blocks = [Block(0, 0, prompt_response_entropies(prompt, response, **common))]
    if not settings.matching:
        return blocks, False
    if prompt.shape[-2] < k or response.shape[-2] < m:
        return blocks, True
    sides = (k if k > 0 else None, m if m > 0 else None)
    matched = prompt_response_entropies(prompt, response, subsample=sides, draws=settings.draws, seed=seed, **common)
    return blocks + [Block(max(k, 0), max(m, 0), matched)], False


def unit_rows(settings: MeasureSettings, blocks: list[Block], common: dict[str, Any]) -> list[dict[str, Any]]:
    """The results-table rows of a unit's blocks: one per block × measure × layer × σ scale.

    Args:
        common: the columns every row of the unit shares (model, prompt, task, token counts, …).
    """
    rows = []
    base = {**common, "alpha": settings.alpha, "sigma_rule": settings.sigma_rule, "base": settings.base}
    for block in blocks:
        for measure, result in block.measures.items():
            ceiling = math.log(result.n, settings.base) if result.n > 1 else 0.0
            columns = (result.value, result.sigma, result.saturation, result.reference, result.state)
            values, sigmas, saturations, references, states = (c.reshape(-1, len(settings.scales)).tolist()
                                                              for c in columns)  # (layers, scales) each
            for row, layer in enumerate(settings.layers or range(len(values))):
                for at, scale in enumerate(settings.scales):
                    state = STATES[states[row][at]]
                    rows.append({
                        **base, "measure": measure, "layer": layer, "value": values[row][at],
                        "sigma": sigmas[row][at], "saturation": saturations[row][at],
                        "saturated": state != "ok", "kernel_state": state, "reference": references[row][at],
                        "max_entropy": ceiling, "subsample": block.subsample,
                        "subsample_response": block.subsample_response,
                        "draws": result.draws, "sigma_scale": scale,
                    })  # fmt: skip
    return rows



def parse_layers(spec: str | None) -> tuple[str, tuple[int, ...]] | None:
    """``"0,4,8,-1"`` → ``("list", (0, 4, 8, -1))``; ``"every=4"`` → ``("every", (4,))``; None/"" → None.

    Raises:
        InputError: anything else, naming the spec and the two forms.
    """
    from entroprobe.errors import InputError

    if spec is None or not str(spec).strip():
        return None
    text = str(spec).replace(" ", "")
    try:
        if text.startswith("every="):
            step = int(text.removeprefix("every="))
            if step < 1:
                raise ValueError
            return "every", (step,)
        return "list", tuple(int(part) for part in text.split(","))
    except ValueError:
        raise InputError(f"--layers takes layer indices (0,4,8,-1: -1 is the last layer) or every=K (K ≥ 1); "
                         f"got {spec!r}") from None


def resolve_layers(spec: str | None, num_layers: int) -> tuple[int, ...] | None:
    """The layers (0 … ``num_layers``, ascending) a ``--layers`` spec keeps for a model of ``num_layers`` layers;
    ``every=K`` keeps 0, K, 2K, … and always the last layer.

    Raises:
        InputError: a layer outside −(L + 1) … L.
    """
    from entroprobe.errors import InputError

    parsed = parse_layers(spec)
    if parsed is None:
        return None
    kind, values = parsed
    if kind == "every":
        return tuple(sorted({*range(0, num_layers + 1, values[0]), num_layers}))
    bad = [v for v in values if not -(num_layers + 1) <= v <= num_layers]
    if bad:
        raise InputError(f"--layers {spec}: the model has layers 0 … {num_layers} (-1 is {num_layers}); got {bad}")
    return tuple(sorted({v % (num_layers + 1) for v in values}))
