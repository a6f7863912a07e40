"""One σ per layer for a whole run: the median rule over token pairs pooled from many sequences.

The per-sequence median rule re-measures every sequence with its own ruler, so a value cannot tell a spread-out
sequence from a tight one (the rule rescales both to the same typical kernel entry, e^-1). A pooled σ is one
ruler: the median squared distance of token pairs taken from a calibration sample of sequences (text and image
prompts, responses, together), each sequence weighing the same whatever its length, σ = sqrt(median / 2).
Pass it as ``sigma=`` (a per-layer tensor) to every estimator.

>>> calibration = SigmaCalibration()
>>> for states in (torch.randn(3, 20, 8), torch.randn(3, 300, 8)):  # (layers, tokens, d) each
...     calibration.add(states)
>>> calibration.sigma().shape
torch.Size([3])
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from entroprobe.entropy import _checks
from entroprobe.errors import InputError

__all__ = ["SigmaCalibration", "pooled_sigma"]

_CHUNK = 1 << 22  # elements of pair differences at once


class SigmaCalibration:
    """Collects token-pair squared distances per layer from sequences, then gives the pooled σ per layer.

    Args:
        pairs_per_sequence: at most this many token pairs per sequence (all pairs when it has fewer; else a
            random sample, drawn from ``seed`` and the sequence's place in the order of :meth:`add`).
        seed: seeds the pair samples.
    """

    def __init__(self, pairs_per_sequence: int = 4096, seed: int = 0):
        if isinstance(pairs_per_sequence, bool) or not isinstance(pairs_per_sequence, int) or pairs_per_sequence < 1:
            raise InputError(f"pairs_per_sequence must be a positive integer; got {pairs_per_sequence!r}")
        self.pairs_per_sequence = pairs_per_sequence
        self.seed = seed
        self._distances: list[torch.Tensor] = []  # (L, P) float64 per sequence
        self._weights: list[torch.Tensor] = []  # (P,) per sequence, summing to 1
        self.sequences = 0  # sequences added (with at least two tokens)
        self.skipped = 0  # sequences of fewer than two tokens (no pair)

    def __repr__(self) -> str:
        return f"SigmaCalibration(pairs_per_sequence={self.pairs_per_sequence}, seed={self.seed})"

    @property
    def layers(self) -> int | None:
        return self._distances[0].shape[0] if self._distances else None

    def add(self, states: Any) -> None:
        """Add one sequence's states, ``(layers, n, d)`` or ``(n, d)`` (one layer)."""
        x = _checks.as_points(states, "states")
        if x.dim() == 2:
            x = x[None]
        if x.dim() != 3:
            raise InputError(f"states must be (layers, n, d) or (n, d); got shape {tuple(x.shape)}")
        layers, n, _ = x.shape
        if self.layers is not None and layers != self.layers:
            raise InputError(f"states have {layers} layers; the sequences added before have {self.layers}")
        if n < 2:
            self.skipped += 1
            return
        i, j = self._pairs(n)
        per_chunk = max(1, _CHUNK // (x.shape[-1] * layers))
        parts = []
        for start in range(0, i.numel(), per_chunk):
            a, b = i[start : start + per_chunk].to(x.device), j[start : start + per_chunk].to(x.device)
            parts.append((x[:, a].double() - x[:, b].double()).square().sum(dim=-1).cpu())  # (L, p), exact pairs
        distances = torch.cat(parts, dim=1)  # (L, P)
        self._distances.append(distances)
        self._weights.append(torch.full((distances.shape[1],), 1.0 / distances.shape[1], dtype=torch.float64))
        self.sequences += 1

    def _pairs(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        total = n * (n - 1) // 2
        if total <= self.pairs_per_sequence:
            i, j = torch.triu_indices(n, n, offset=1)
            return i, j
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.sequences)
        i = torch.randint(0, n, (self.pairs_per_sequence,), generator=generator)
        shift = torch.randint(1, n, (self.pairs_per_sequence,), generator=generator)
        return i, (i + shift) % n  # a uniformly random other token

    def sigma(self) -> torch.Tensor:
        """σ per layer, ``(layers,)`` float64: ``sqrt(weighted median of the pairs' squared distances / 2)``.

        Each sequence's pairs weigh 1 / (its number of pairs): every sequence counts the same. Where the median
        is 0 the median of the non-zero distances is used, as in the per-sequence rule.

        Raises:
            InputError: nothing was added, or every pair of a layer coincides (no σ is defined there).
        """
        if not self._distances:
            raise InputError("no sequence of at least two tokens was added: the pooled σ needs token pairs")
        distances = torch.cat(self._distances, dim=1)  # (L, P)
        weights = torch.cat(self._weights)  # (P,)
        out = []
        for layer, row in enumerate(distances):
            median = _weighted_median(row, weights)
            if median == 0:
                keep = row > 0
                if not bool(keep.any()):
                    raise InputError(f"every token pair of the calibration coincides at layer {layer}: no σ")
                median = _weighted_median(row[keep], weights[keep])
            out.append((median / 2) ** 0.5)
        return torch.tensor(out, dtype=torch.float64)


def _weighted_median(values: torch.Tensor, weights: torch.Tensor) -> float:
    """The smallest value whose cumulative weight reaches half of the total."""
    order = torch.argsort(values)
    cumulative = weights[order].cumsum(0)
    at = int(torch.searchsorted(cumulative, cumulative[-1] / 2).clamp_max(len(values) - 1))
    return float(values[order][at])


def pooled_sigma(sequences: Iterable[Any], *, pairs_per_sequence: int = 4096, seed: int = 0) -> torch.Tensor:
    """The pooled median-rule σ per layer of ``sequences`` (each ``(layers, n, d)``), see :class:`SigmaCalibration`.

    Example:
        >>> sigma = pooled_sigma([torch.randn(2, 30, 4), torch.randn(2, 50, 4)])
        >>> from entroprobe import renyi_entropy
        >>> renyi_entropy(torch.randn(2, 40, 4), sigma=sigma).shape  # the same ruler for every sequence
        torch.Size([2])
    """
    calibration = SigmaCalibration(pairs_per_sequence=pairs_per_sequence, seed=seed)
    for states in sequences:
        calibration.add(states)
    return calibration.sigma()
