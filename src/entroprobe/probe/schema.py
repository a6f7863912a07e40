"""The columns of a run's tidy results table (``RUN_DIR/results.parquet``), one row per measurement."""

from __future__ import annotations

__all__ = ["COLUMNS", "MEASURES", "TASKS", "MODALITIES", "ROW_KEY"]

MEASURES = ("prompt_entropy", "response_entropy", "joint_entropy", "conditional_entropy")
TASKS = ("encode", "text-gen", "image-gen")
MODALITIES = ("text", "image")

# name → (pandas dtype, meaning)
COLUMNS: dict[str, tuple[str, str]] = {
    "model": ("string", "the model spec the run was started with"),
    "prompt_id": ("string", "the prompt's id within its source"),
    "source": ("string", "the prompt source's name"),
    "modality": ("string", "text | image: the prompt's modality"),
    "prompt_type": ("string", "the paper's prompt type (composition, … / coarse, …)"),
    "prompt_meta": ("string", "the prompt's extra fields as JSON, types kept (sub-class, category, n_words…); the "
                    "prompt's text and image are in prompts.parquet beside the results"),
    "task": ("string", "encode | text-gen | image-gen"),
    "measure": ("string", "prompt_entropy | response_entropy | joint_entropy | conditional_entropy"),
    "layer": ("int64", "0 = embedding output, i = output of layer i"),
    "num_layers": ("int64", "the model's layer count L: rows have layers 0 … L, L + 1 of them (depth = layer / L)"),
    "value": ("float64", "the measure, in units of log base `base`"),
    "n_tokens": ("int64", "the prompt's tokens (all of them, also in subsampled rows)"),
    "n_response_tokens": ("int64", "the response's tokens (0 for encode; all of them, also in subsampled rows)"),
    "alpha": ("float64", "Rényi order"),
    "sigma": ("float64", "the kernel bandwidth used for this row (the mean over draws when subsampled)"),
    "sigma_rule": ("string", "median | pooled | fixed: how sigma was chosen"),
    "sigma_scale": ("float64", "the factor sigma was multiplied by (1: the rule's own sigma)"),
    "base": ("float64", "logarithm base"),
    "saturation": ("float64", "kernel diagnostics: signed saturation in [-1, 1] (+1: K≈I, −1: K≈ones)"),
    "saturated": ("bool", "kernel diagnostics: kernel_state is not ok"),
    "kernel_state": ("string", "ok | structureless (within 20 % of the reference) | collapsed (≈ 0) | identical"),
    "reference": ("float64", "what tokens without structure give at the same token count and sigma"),
    "max_entropy": ("float64", "log_base(number of rows the kernel saw): the ceiling of this value"),
    "subsample": ("int64", "prompt tokens per random subset (0: every prompt token)"),
    "subsample_response": ("int64", "response tokens per random subset (0: every response token)"),
    "draws": ("int64", "random subsets averaged (1: none)"),
}

# what identifies one measurement of a run: a row of the results table
ROW_KEY = ["source", "prompt_id", "task", "measure", "layer", "subsample", "subsample_response", "sigma_scale"]
