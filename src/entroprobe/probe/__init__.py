"""The probe run: prompts through a model, every layer's entropies, crash-safe tidy rows."""

from entroprobe.probe.run import ProbeConfig, RunSummary, collect, parse_model_args, run_probe
from entroprobe.probe.schema import COLUMNS, MEASURES

__all__ = ["ProbeConfig", "RunSummary", "run_probe", "collect", "parse_model_args", "COLUMNS", "MEASURES"]
