"""``entroprobe demo``: the main job end to end, offline, on the models that ship with entroprobe.

Probes the built-in ``samples`` (text prompts of four types in three lengths, generated scenes of six image
types) with ``minilm`` (a real sentence encoder: text prompts) and the two micro unified models
``micro-ar`` (images by next-token prediction) and ``micro-mask`` (images by masked prediction) over every
task they support, then writes the report and returns its main findings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from entroprobe.probe import ProbeConfig, run_probe
from entroprobe.report import make_report

__all__ = ["DEMO_MODELS", "DemoResult", "run_demo"]

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
    findings: list[str]  # the report's main claims, with their numbers


def run_demo(out: str | Path, *, limit: int | None = None, seed: int = 0, max_new_tokens: int = 16,
             progress: bool | None = None) -> DemoResult:  # fmt: skip
    """Probe ``samples`` with the demo models into ``out/runs/MODEL`` and write ``out/report/``.

    Re-running with the same arguments resumes (nothing committed is recomputed); ``limit`` caps the prompts
    per modality (spread across types) for a quick look.
    """
    out = Path(out)
    runs = []
    for model, tasks in DEMO_MODELS.items():
        run_dir = out / "runs" / model
        config = ProbeConfig(
            model=model, out=run_dir, text_prompts="samples", image_prompts="samples", tasks=tasks,
            limit=limit, seed=seed, max_new_tokens=max_new_tokens, progress=progress,
        )  # fmt: skip
        run_probe(config)
        runs.append(run_dir)
    report = make_report(runs, out / "report")
    findings_path = Path(report).parent / "findings.json"
    findings = json.loads(findings_path.read_text()) if findings_path.exists() else []
    if isinstance(findings, dict):
        findings = findings.get("findings", [])
    return DemoResult(report=Path(report), runs=runs, findings=[str(f) for f in findings][:3])
