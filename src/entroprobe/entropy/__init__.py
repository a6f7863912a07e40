"""The estimators: pure functions over torch tensors, no word of models or prompts.

Matrix-based Rényi entropy of token embeddings (:func:`renyi_entropy`), the block-joint-kernel entropy
(:func:`joint_entropy`), the conditional-entropy and mutual-information proxies, the structureless reference
every value is read against, token-count control by subsampling, a pooled σ per layer, kernel diagnostics.
"""

from entroprobe.entropy.diagnostics import KernelDiagnostics, gaussian_gram, kernel_diagnostics
from entroprobe.entropy.pooled import SigmaCalibration, pooled_sigma
from entroprobe.entropy.reference import COLLAPSED_FRACTION, STATES, STRUCTURELESS_MARGIN, structureless_entropy
from entroprobe.entropy.renyi import (
    DEFAULT_MEMORY_BUDGET,
    EntropyResult,
    check_parameters,
    conditional_entropy,
    joint_entropy,
    mutual_information,
    prompt_response_entropies,
    renyi_entropy,
)
from entroprobe.entropy.spectrum import entropy_from_eigenvalues
from entroprobe.entropy.subsample import subsample_indices

__all__ = [
    "renyi_entropy",
    "joint_entropy",
    "conditional_entropy",
    "mutual_information",
    "prompt_response_entropies",
    "entropy_from_eigenvalues",
    "structureless_entropy",
    "subsample_indices",
    "pooled_sigma",
    "SigmaCalibration",
    "check_parameters",
    "kernel_diagnostics",
    "gaussian_gram",
    "EntropyResult",
    "KernelDiagnostics",
    "DEFAULT_MEMORY_BUDGET",
    "STRUCTURELESS_MARGIN",
    "COLLAPSED_FRACTION",
    "STATES",
]
