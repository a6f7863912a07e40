"""The estimators: pure functions over torch tensors, no word of models or prompts.

Matrix-based Rényi entropy of token embeddings (:func:`renyi_entropy`), the block-joint-kernel entropy
(:func:`joint_entropy`), the conditional-entropy and mutual-information proxies, kernel diagnostics, and a
streaming accumulator of per-layer means.
"""

from entroprobe.entropy.diagnostics import KernelDiagnostics, gaussian_gram, kernel_diagnostics
from entroprobe.entropy.renyi import (
    DEFAULT_MEMORY_BUDGET,
    SATURATION_THRESHOLD,
    EntropyResult,
    check_parameters,
    conditional_entropy,
    entropy_from_eigenvalues,
    joint_entropy,
    mutual_information,
    prompt_response_entropies,
    renyi_entropy,
)

__all__ = [
    "renyi_entropy",
    "joint_entropy",
    "conditional_entropy",
    "mutual_information",
    "prompt_response_entropies",
    "entropy_from_eigenvalues",
    "check_parameters",
    "kernel_diagnostics",
    "gaussian_gram",
    "EntropyResult",
    "KernelDiagnostics",
    "DEFAULT_MEMORY_BUDGET",
    "SATURATION_THRESHOLD",
]
