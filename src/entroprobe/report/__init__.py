"""The report: the paper's Table 1 and figures, with bootstrap intervals, from one or more probe runs.

>>> path = make_report(["runs/janus-1b", "runs/qwen"], "report/")     # doctest: +SKIP
>>> json.loads((path.parent / "findings.json").read_text())["findings"][:3]  # doctest: +SKIP

Importing this package is cheap: pandas and matplotlib load when a report is made. The CLI's
``entroprobe report`` uses :func:`add_arguments` and :func:`run_command`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["make_report", "load_runs", "add_arguments", "run_command"]


def make_report(
    run_dirs: Sequence[str | Path] | str | Path,
    out: str | Path,
    *,
    table_layer: int = 0,
    depth_fraction: bool = False,
    allow_mixed: bool = False,
    n_boot: int = 1000,
    seed: int = 0,
) -> Path:
    """Write ``out/report.html`` (self-contained), the figures (PNG, SVG), Table 1 (CSV, LaTeX), findings.json.

    Args:
        run_dirs: complete run directories (``manifest.json`` + ``results.parquet``); several = several models.
        out: the report folder (created if needed).
        table_layer: the layer of Table 1 and of the length figure; 0 = embedding output, −1 = last layer.
        depth_fraction: draw layers as ``layer / num_layers`` to compare models of different depth.
        allow_mixed: accept runs measured with different α, σ rule or base (refused otherwise).
        n_boot: bootstrap resamples per 95 % interval.
        seed: bootstrap seed.

    Returns:
        The path of ``out/report.html``.

    Raises:
        LoadError: a run directory is missing, partial or unreadable.
        InputError: runs with different settings (unless ``allow_mixed``), a ``table_layer`` a model lacks,
            malformed results.
    """
    from entroprobe.report.build import make_report as _make_report

    return _make_report(run_dirs, out, table_layer=table_layer, depth_fraction=depth_fraction,
                        allow_mixed=allow_mixed, n_boot=n_boot, seed=seed)


def load_runs(run_dirs: Sequence[str | Path] | str | Path, *, allow_mixed: bool = False) -> pd.DataFrame:
    """The rows of one or more complete runs, stacked, with ``run``, ``label`` and ``depth`` columns added.

    Args:
        run_dirs: run directories.
        allow_mixed: accept runs measured with different α, σ rule or base.

    Raises:
        LoadError: a run directory is missing, partial or unreadable.
        InputError: runs with different settings (unless ``allow_mixed``), malformed or duplicated rows.
    """
    from entroprobe.report.runs import load

    return load(run_dirs, allow_mixed=allow_mixed)[0]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``entroprobe report``'s arguments to ``parser`` (the CLI's subcommand parser)."""
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="complete run directories")
    parser.add_argument("--out", required=True, metavar="DIR", help="the report folder to write")
    parser.add_argument("--table-layer", type=int, default=0, metavar="N",
                        help="layer of Table 1 (0 = embedding output, -1 = last layer; default 0)")
    parser.add_argument("--depth-fraction", action="store_true",
                        help="draw layers as layer / num_layers (compare models of different depth)")
    parser.add_argument("--allow-mixed", action="store_true",
                        help="accept runs measured with different alpha, sigma rule or base")
    parser.add_argument("--n-boot", type=int, default=1000, metavar="N", help="bootstrap resamples (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")


def run_command(args: argparse.Namespace) -> int:
    """Run ``entroprobe report`` from parsed arguments: write the report, print its path and main findings.

    Raises:
        LoadError, InputError: as :func:`make_report` (the CLI turns them into a message and exit status).
    """
    import json

    path = make_report(args.run_dirs, args.out, table_layer=args.table_layer, depth_fraction=args.depth_fraction,
                       allow_mixed=args.allow_mixed, n_boot=args.n_boot, seed=args.seed)
    summary = json.loads((path.parent / "findings.json").read_text(encoding="utf-8"))
    print(f"report: {path}")
    for text in summary["findings"][:3]:
        print(f"- {text}")
    if summary["warnings"]:
        print(f"{len(summary['warnings'])} kernel warning(s): see the report's Figure 6.")
    return 0
