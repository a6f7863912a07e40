"""Loading OmniGen2's released pipeline folder with the checkout's own classes (see :mod:`entroprobe.models.omnigen2`).

The release (``OmniGen2/OmniGen2`` on the hub) is a diffusers pipeline folder::

    model_index.json   mllm/ (Qwen2.5-VL)   processor/ (Qwen2.5-VL processor)   transformer/   vae/   scheduler/

``inference.py`` loads it with ``OmniGen2Pipeline.from_pretrained(model_path, torch_dtype=..., trust_remote_code=True)``
and then replaces the transformer with the checkout's ``OmniGen2Transformer2DModel.from_pretrained(model_path,
subfolder="transformer")``; ``inference_chat.py`` does the same with ``OmniGen2ChatPipeline``. Here every component is
loaded from its subfolder as ``model_index.json`` names it — the two custom ones (``transformer_omnigen2`` /
``scheduling_flow_match_euler_discrete``) with the checkout's classes of those module names rather than with copies of
them inside the folder (no remote code runs) — and both pipelines are built from the same components.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from entroprobe.errors import LoadError
from entroprobe.models.upstream import Upstream, import_from

__all__ = ["LAYOUT", "check_layout", "load_components", "make_scheduler"]

LAYOUT = ("the released OmniGen2 pipeline folder: model_index.json, mllm/ (config.json + weights), processor/ "
          "(preprocessor_config.json + tokenizer files), transformer/config.json, vae/config.json, "
          "scheduler/scheduler_config.json")  # fmt: skip
_FILES = ("model_index.json", "mllm/config.json", "processor/preprocessor_config.json", "transformer/config.json",
          "vae/config.json", "scheduler/scheduler_config.json")  # fmt: skip
_TOKENIZER = ("processor/tokenizer.json", "processor/vocab.json", "processor/tokenizer_config.json")
_WEIGHTS = {"mllm": ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"),
            "transformer": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json",
                            "diffusion_pytorch_model.bin"),
            "vae": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")}  # fmt: skip
# model_index.json entries and the class each must name
_CLASSES: dict[str, str | None] = {
    "mllm": "Qwen2_5_VLForConditionalGeneration", "processor": None,  # a transformers processor class, loaded by name
    "transformer": "OmniGen2Transformer2DModel", "vae": "AutoencoderKL", "scheduler": "FlowMatchEulerDiscreteScheduler",
}  # fmt: skip


def check_layout(directory: Path) -> dict[str, Any]:
    """``model_index.json`` of ``directory``; raise :class:`LoadError` naming the first missing file or wrong class."""
    if not directory.is_dir():
        raise LoadError(f"no OmniGen2 pipeline folder at {directory}; expected {LAYOUT}")
    for name in _FILES:
        if not (directory / name).is_file():
            raise LoadError(f"{directory} lacks {name}; expected {LAYOUT}")
    if not any((directory / name).is_file() for name in _TOKENIZER):
        raise LoadError(f"{directory} has no tokenizer in processor/ ({', '.join(_TOKENIZER)}); expected {LAYOUT}")
    for part, names in _WEIGHTS.items():
        if not any((directory / part / name).is_file() for name in names):
            raise LoadError(f"{directory / part} has no weights ({', '.join(names)}); expected {LAYOUT}")
    try:
        index = json.loads((directory / "model_index.json").read_text())
    except (OSError, ValueError) as exc:
        raise LoadError(f"{directory / 'model_index.json'} does not read as JSON: {exc}") from exc
    for part, cls in _CLASSES.items():
        entry = index.get(part)
        if not (isinstance(entry, list) and len(entry) == 2 and entry[1] == (cls or entry[1])):
            want = repr(cls) if cls else "class"
            raise LoadError(f"{directory / 'model_index.json'}: {part} must be [module, {want}]; got {entry!r}")
    return index


def load_components(root: Path | None, spec: Upstream, directory: Path, dtype: torch.dtype,
                    index: dict[str, Any]) -> dict[str, Any]:
    """``{"pipeline", "chat", "modules"}``: OmniGen2Pipeline and OmniGen2ChatPipeline over the same components, and the
    checkout's modules (``"dpmsolver"``: its DPMSolverMultistepScheduler module).

    Raises:
        LoadError: a checkout module that does not import, or a component that does not load.
    """
    from entroprobe.models.compat.omnigen2 import torch_rmsnorm_without_cuda

    torch_rmsnorm_without_cuda(import_from(root, "omnigen2.utils.import_utils", spec))
    t2i = import_from(root, "omnigen2.pipelines.omnigen2.pipeline_omnigen2", spec)
    chat = import_from(root, "omnigen2.pipelines.omnigen2.pipeline_omnigen2_chat", spec)
    model = import_from(root, "omnigen2.models.transformers.transformer_omnigen2", spec)
    euler = import_from(root, "omnigen2.schedulers.scheduling_flow_match_euler_discrete", spec)
    dpm = import_from(root, "omnigen2.schedulers.scheduling_dpmsolver_multistep", spec)
    try:
        import transformers
        from diffusers import AutoencoderKL

        processor = getattr(transformers, str(index["processor"][1]), None)  # model_index.json: Qwen2_5_VLProcessor
        if processor is None:
            raise LoadError(f"model_index.json names processor {index['processor']!r}, which transformers lacks")
        parts = {
            "mllm": transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(str(directory / "mllm"), dtype=dtype),
            "processor": processor.from_pretrained(str(directory / "processor")),
            "transformer": model.OmniGen2Transformer2DModel.from_pretrained(
                str(directory), subfolder="transformer", torch_dtype=dtype),
            "vae": AutoencoderKL.from_pretrained(str(directory), subfolder="vae", torch_dtype=dtype),
            "scheduler": euler.FlowMatchEulerDiscreteScheduler.from_pretrained(str(directory), subfolder="scheduler"),
        }
    except ImportError as exc:
        raise LoadError(f"OmniGen2 needs diffusers and transformers with Qwen2.5-VL: {exc}") from exc
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
        raise LoadError(f"cannot load OmniGen2 from {directory} ({LAYOUT}): {exc}") from exc
    return {"pipeline": t2i.OmniGen2Pipeline(**parts), "chat": chat.OmniGen2ChatPipeline(**parts),
            "dpmsolver": dpm}  # fmt: skip


def make_scheduler(name: str, euler: Any, dpm_module: Any) -> Any:
    """The scheduler ``inference.py --scheduler`` picks: the folder's Euler flow-matching one, or ``dpmsolver++``
    built as inference.py builds it (``algorithm_type="dpmsolver++", solver_type="midpoint", solver_order=2,
    prediction_type="flow_prediction"``)."""
    if name == "euler":
        return euler
    return dpm_module.DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_type="midpoint", solver_order=2,
                                                  prediction_type="flow_prediction")  # fmt: skip
