"""``entroprobe demo``: the main job end to end, offline, on the models that ship with entroprobe.

Probes the built-in ``micro-world`` prompts (text prompts of four types in three lengths, pictures of six image
types, all in the micro models' vocabulary, see :mod:`entroprobe.sources.micro_world`) with ``minilm`` (a real
sentence encoder: text prompts) and the two micro unified models ``micro-ar`` (images by next-token prediction)
and ``micro-mask`` (images by masked prediction) over every task they support, then writes the report and
returns its main findings. Every model reads these prompts: each run's share of unknown tokens is in its
summary and manifest (0 % for all three).

>>> result = run_demo("demo")                  # doctest: +SKIP
>>> result.report, result.findings[:2]         # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from entroprobe.probe import ProbeConfig, RunSummary, run_probe
from entroprobe.report import make_report

__all__ = ["DEMO_MODELS", "DemoResult", "run_demo"]

PROMPTS = "micro-world"  # the built-in ``samples`` are everyday English: the micro models would read half as <unk>

# The shortest prompts have about 10 tokens and the micro models answer in 8–16 tokens: the demo
# compares at counts most of them reach (the run's defaults, 16 and 16, suit benchmarks like T2I-CoReBench).
MATCH_TOKENS = 8
MATCH_RESPONSE_TOKENS = 8

# The demo's matrices are small (at most a few hundred tokens): one thread is as fast as two on a 2-core machine,
# and a second thread that waits by spinning burns CPU that a busy neighbour needs (benchmarks/bench_contention.py:
# with two busy processes beside it, the demo took 5.2× its idle CPU time at two threads, 1.0× at one).
THREADS = 1

# model → tasks it is probed on (each only where the model can: minilm encodes text)
DEMO_MODELS = {
    "minilm": ("encode",),
    "micro-ar": ("encode", "text-gen", "image-gen"),
    "micro-mask": ("encode", "text-gen", "image-gen"),
}


@dataclass
class DemoResult:
    report: Path  # report.html
    runs: list[Path]  # one run directory per model
    summaries: list[RunSummary]  # one per model: what each run computed now and found already done
    findings: list[str]  # the report's main claims, with their numbers


def run_demo(out: str | Path, *, limit: int | None = None, seed: int = 0, max_new_tokens: int = 16,
             progress: bool | None = None) -> DemoResult:  # fmt: skip
    """Probe :data:`PROMPTS` with the demo models into ``out/runs/MODEL`` and write ``out/report/``.

    Re-running with the same arguments resumes (nothing committed is recomputed); ``limit`` caps the prompts
    per modality (spread across types) for a quick look. The models run on :data:`THREADS` CPU threads (the
    caller's thread count is restored after).

    Args:
        out: the demo folder (``runs/`` and ``report/`` go inside).
        limit: at most this many prompts per modality (default: all samples).
        seed: seeds the models' sampling.
        max_new_tokens: length cap of text responses.
        progress: progress bars (default: when stderr is a terminal).
    """
    import torch

    out = Path(out)
    runs, summaries = [], []
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        _probe_all(out, limit, seed, max_new_tokens, progress, runs, summaries)
    finally:
        torch.set_num_threads(threads)
    report = make_report(runs, out / "report")
    claims = json.loads((report.parent / "findings.json").read_text(encoding="utf-8"))["claims"]
    return DemoResult(report=report, runs=runs, summaries=summaries, findings=_main_findings(claims))


def _probe_all(out: Path, limit: int | None, seed: int, max_new_tokens: int, progress: bool | None,
               runs: list[Path], summaries: list[RunSummary]) -> None:  # fmt: skip
    for model, tasks in DEMO_MODELS.items():
        run_dir = out / "runs" / model
        config = ProbeConfig(
            model=model, out=run_dir, text_prompts=PROMPTS, image_prompts=PROMPTS, tasks=tasks,
            limit=limit, seed=seed, max_new_tokens=max_new_tokens, progress=progress,
            match_tokens=MATCH_TOKENS, match_response_tokens=MATCH_RESPONSE_TOKENS,
        )  # fmt: skip
        summaries.append(run_probe(config))
        runs.append(run_dir)


# what the demo puts first: the paper's central contrast (text against image generation, per model), then
# how text and image prompts are encoded, then the length effect
_DEMO_ORDER = ("response", "modality", "length", "scale")


def _main_findings(claims: list[dict], most: int = 3) -> list[str]:
    """The report's claims in :data:`_DEMO_ORDER` of their kinds (models in report order), the first ``most``."""
    ranked = sorted(claims, key=lambda claim: _DEMO_ORDER.index(claim["kind"]))  # stable within a kind
    return [claim["text"] for claim in ranked[:most]]
