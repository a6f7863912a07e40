"""entroprobe: layer-wise matrix-based Rényi entropy probing of how models encode prompts and respond.

The estimators are importable from the top level::

    from entroprobe import renyi_entropy, conditional_entropy
"""

from entroprobe.entropy import (
    DEFAULT_MEMORY_BUDGET,
    SATURATION_THRESHOLD,
    EntropyResult,
    KernelDiagnostics,
    conditional_entropy,
    entropy_from_eigenvalues,
    gaussian_gram,
    joint_entropy,
    kernel_diagnostics,
    mutual_information,
    prompt_response_entropies,
    renyi_entropy,
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
    "EntropyResult",
    "KernelDiagnostics",
    "DEFAULT_MEMORY_BUDGET",
    "SATURATION_THRESHOLD",
    "EntroprobeError",
    "InputError",
    "UnknownNameError",
    "CapabilityError",
    "LoadError",
    "ItemError",
    "__version__",
]
