"""entroprobe: layer-wise matrix-based Rényi entropy probing of how models encode prompts and respond.

The estimators are importable from the top level::

    from entroprobe import renyi_entropy, conditional_entropy
"""

from entroprobe.entropy import (
    COLLAPSED_FRACTION,
    DEFAULT_MEMORY_BUDGET,
    STATES,
    STRUCTURELESS_MARGIN,
    EntropyResult,
    SigmaCalibration,
    KernelDiagnostics,
    conditional_entropy,
    entropy_from_eigenvalues,
    gaussian_gram,
    joint_entropy,
    kernel_diagnostics,
    mutual_information,
    pooled_sigma,
    prompt_response_entropies,
    renyi_entropy,
    structureless_entropy,
    subsample_indices,
)
from entroprobe.errors import CapabilityError, EntroprobeError, InputError, ItemError, LoadError, UnknownNameError

__version__ = "0.1.0"

__all__ = [
    "renyi_entropy",
    "joint_entropy",
    "conditional_entropy",
    "mutual_information",
    "prompt_response_entropies",
    "entropy_from_eigenvalues",
    "kernel_diagnostics",
    "gaussian_gram",
    "structureless_entropy",
    "subsample_indices",
    "pooled_sigma",
    "SigmaCalibration",
    "EntropyResult",
    "KernelDiagnostics",
    "DEFAULT_MEMORY_BUDGET",
    "STRUCTURELESS_MARGIN",
    "COLLAPSED_FRACTION",
    "STATES",
    "EntroprobeError",
    "InputError",
    "UnknownNameError",
    "CapabilityError",
    "LoadError",
    "ItemError",
    "__version__",
]
