"""Two runs of the same prompts compared: how many units gave the same answer, and how far their rows differ.

Used by ``bench_batching.py`` and ``bench_gpu.py`` to hold each batch size's run to the run at B = 1.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from entroprobe.probe.schema import ROW_KEY

UNIT = ["source", "prompt_id", "task"]


def answers(run_dir: Path) -> dict[tuple[str, ...], str]:
    """Each unit's answer, by (source, prompt id, task): its text, or a digest of its picture's file."""
    out = {}
    for line in open(run_dir / "responses.jsonl"):
        record = json.loads(line)
        image = record.get("image")
        out[tuple(record[k] for k in UNIT)] = record.get("text") if image is None else \
            hashlib.sha256((run_dir / image).read_bytes()).hexdigest()
    return out


def equality(base: Path, other: Path) -> dict:
    """Rows and answers of run ``other`` against run ``base`` over the units both ran: ``units``,
    ``same_answer`` (encode units have no answer: they count as the same) and ``max_bits``, the largest
    difference of a row among the units with the same answer (``None`` when there is none)."""
    import pandas as pd

    rows = [pd.read_parquet(d / "results.parquet") for d in (base, other)]
    before, after = answers(base), answers(other)
    units = set.intersection(*(set(r[UNIT].itertuples(index=False, name=None)) for r in rows))
    same = {u for u in units if before.get(u) == after.get(u)}
    joined = rows[0].merge(rows[1], on=ROW_KEY, suffixes=("_1", "_b"))
    joined = joined[[u in same for u in joined[UNIT].itertuples(index=False, name=None)]]
    delta = (joined["value_1"] - joined["value_b"]).abs()
    return {"units": len(units), "same_answer": len(same), "max_bits": float(delta.max()) if len(delta) else None}


def told(same: dict | None) -> str:
    """``same`` as two table cells: "k of n | max Δ bits", or dashes for the base run itself."""
    if same is None:
        return "— | —"
    bits = "—" if same["max_bits"] is None else f"{same['max_bits']:.1e}"
    return f"{same['same_answer']} of {same['units']} | {bits}"
