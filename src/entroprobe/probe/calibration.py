"""``--sigma pooled``: one σ per layer for the whole run, fixed before the first unit.

A deterministic calibration sample of the run's units (spread evenly over its task × prompt-modality groups,
so text and image prompts, and generated responses, weigh alike) goes through the model; each sequence's token
pairs (prompt and response states separately) feed :class:`~entroprobe.entropy.SigmaCalibration`, and the
median rule over the pooled pairs gives σ per layer. The run records it in ``manifest.json`` and reuses it on
resume; every row then carries it in ``sigma`` with ``sigma_rule = pooled``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import torch

from entroprobe.entropy import SigmaCalibration
from entroprobe.errors import EntroprobeError, InputError

__all__ = ["choose_units", "calibrate", "DEFAULT_CALIBRATION_UNITS"]

DEFAULT_CALIBRATION_UNITS = 32


def choose_units(units: Sequence[Any], count: int, seed: int) -> list[Any]:
    """Up to ``count`` units, as evenly as possible over their ``(task, prompt modality)`` groups.

    Within a group the units are shuffled by ``seed``; the result keeps the run's order.
    """
    groups: dict[tuple[str, str], list[Any]] = {}
    for unit in units:
        groups.setdefault((unit.task, unit.prompt.modality), []).append(unit)
    rng = random.Random(seed)
    queues = {key: rng.sample(members, len(members)) for key, members in sorted(groups.items())}
    chosen: list[Any] = []
    while len(chosen) < count and any(queues.values()):
        for key in sorted(queues):
            if queues[key] and len(chosen) < count:
                chosen.append(queues[key].pop())
    return sorted(chosen, key=lambda unit: unit.order)


def calibrate(units: Sequence[Any], produce: Callable[[Any], tuple[torch.Tensor, torch.Tensor | None]], *,
              count: int = DEFAULT_CALIBRATION_UNITS, seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """The pooled σ of a calibration sample of ``units``, as the manifest records it.

    Args:
        units: the run's units (each with ``key``, ``order``, ``task`` and ``prompt.modality``).
        produce: a unit → its prompt states ``(L, n, d)`` and response states ``(L, m, d)`` or None.
        count: calibration units; seed: which ones.

    Returns:
        ``{"sigma": [σ per layer], "units": [keys], "sequences": …, "failed": [keys]}``.

    Raises:
        EntroprobeError: no calibration unit gave states (each one's error named).
    """
    calibration = SigmaCalibration(seed=seed)
    chosen = choose_units(units, count, seed)
    used, failed = [], []
    for unit in chosen:
        try:
            prompt, response = produce(unit)
            for states in (prompt, response):  # NaN states or a layer count unlike the others' fail here
                if states is not None:
                    calibration.add(states)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # a unit that fails here fails in the run too, and is recorded there
            failed.append(f"{unit.key}: {type(exc).__name__}: {exc}")
            continue
        used.append(unit.key)
    try:
        sigma = calibration.sigma()
    except InputError as exc:
        detail = "; ".join(failed[:3]) or str(exc)
        raise EntroprobeError(f"--sigma pooled could not be calibrated on {len(chosen)} units: {detail}") from None
    return {"sigma": sigma.tolist(), "units": used, "sequences": calibration.sequences,
            "pairs_per_sequence": calibration.pairs_per_sequence, "failed": failed}  # fmt: skip
