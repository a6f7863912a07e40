"""Model adapters: layer states of prompts and responses, one registry of families, lazy imports.

>>> load_model("minilm")                                 # doctest: +SKIP
>>> load_model("causal-lm:/models/qwen2.5", dtype="bf16")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from entroprobe.errors import InputError, LoadError, unknown_name
from entroprobe.models.base import (
    MODALITIES,
    TASKS,
    Capability,
    LayerStates,
    ModelAdapter,
    Response,
)

__all__ = [
    "TASKS",
    "MODALITIES",
    "Capability",
    "LayerStates",
    "Response",
    "ModelAdapter",
    "load_model",
    "register_family",
    "families",
    "family_table",
    "capabilities_of",
    "parse_spec",
    "PAPER_ROWS",
]

# family name → "module:attribute" of a ModelAdapter subclass (imported only when used)
_FAMILIES: dict[str, str] = {
    "causal-lm": "entroprobe.models.hf_text:CausalLMAdapter",
    "encoder": "entroprobe.models.hf_text:EncoderAdapter",
    "minilm": "entroprobe.models.hf_text:MiniLMAdapter",
    "janus": "entroprobe.models.janus:JanusAdapter",
    "emu3": "entroprobe.models.emu3:Emu3Adapter",
    "chameleon": "entroprobe.models.chameleon:ChameleonAdapter",
    "micro-ar": "entroprobe.models.micro.adapter:MicroARAdapter",
    "micro-mask": "entroprobe.models.micro.adapter:MicroMaskAdapter",
    # models from their authors' repositories: the code is imported from the user's checkout (repo=PATH)
    "bagel": "entroprobe.models.bagel:BagelAdapter",
    "harmon": "entroprobe.models.harmon:HarmonAdapter",
    "show-o": "entroprobe.models.show_o:ShowOAdapter",
    "show-o2": "entroprobe.models.show_o2:ShowO2Adapter",
    "janusflow": "entroprobe.models.janusflow:JanusFlowAdapter",
    "omnigen2": "entroprobe.models.omnigen2:OmniGen2Adapter",
}
# families whose spec may be the name alone: their weights ship with entroprobe or a dependency
_BUILTIN = {"minilm", "micro-ar", "micro-mask"}
# how each family is loaded, for `entroprobe models`
_LOADING = {
    "causal-lm": "causal-lm:DIR|HUB_ID — any AutoModelForCausalLM (e.g. a unified model's language backbone)",
    "encoder": "encoder:DIR|HUB_ID — any AutoModel encoder (BERT-style)",
    "minilm": "minilm — built in: the real all-MiniLM-L6-v2 sentence encoder",
    "janus": "janus:DIR|HUB_ID — Janus-Pro in Hugging Face format (deepseek-community/Janus-Pro-1B, -7B)",
    "emu3": "emu3:DIR|HUB_ID — Emu3-Chat-hf / Emu3-Gen-hf",
    "chameleon": "chameleon:DIR|HUB_ID — e.g. facebook/chameleon-7b",
    "micro-ar": "micro-ar — built in: a small unified model drawing images token by token",
    "micro-mask": "micro-mask — built in: a small unified model drawing images by masked prediction",
    "bagel": "bagel:DIR --model-args repo=SRC — BAGEL-7B-MoT or BAGEL-RecA as released; SRC a ByteDance-Seed/Bagel clone",
    "harmon": "harmon:DIR --model-args repo=SRC — Harmon or Harmon-RecA as released; SRC a wusize/Harmon clone",
    "show-o": "show-o:DIR --model-args repo=SRC,vq=MAGVIT — Show-o as released, with MAGVIT-v2; SRC a showlab/Show-o clone",
    "show-o2": "show-o2:DIR --model-args repo=SRC — Show-o2 as released, with its VAE; SRC a showlab/Show-o clone",
    "janusflow": "janusflow:DIR --model-args repo=SRC — JanusFlow-1.3B with the SDXL VAE; SRC a deepseek-ai/Janus clone",
    "omnigen2": "omnigen2:DIR --model-args repo=SRC — OmniGen2's pipeline folder; SRC a VectorSpaceLab/OmniGen2 clone",
}
# the ten rows of the paper's Table 1, as (row, --model spec); the RecA rows are post-trainings of the same
# architectures and load with the same family
PAPER_ROWS: tuple[tuple[str, str], ...] = (
    ("BAGEL", "bagel:/ckpt/BAGEL-7B-MoT"),
    ("BAGEL-RecA", "bagel:/ckpt/BAGEL-RecA"),
    ("Harmon", "harmon:/ckpt/Harmon-1_5B"),
    ("Harmon-RecA", "harmon:/ckpt/Harmon-1_5B-RecA"),
    ("Janus-Pro 1B", "janus:deepseek-community/Janus-Pro-1B"),
    ("Janus-Pro 7B", "janus:deepseek-community/Janus-Pro-7B"),
    ("JanusFlow", "janusflow:/ckpt/JanusFlow-1.3B"),
    ("Show-o", "show-o:/ckpt/show-o-512x512"),
    ("Show-o2", "show-o2:/ckpt/show-o2-7B"),
    ("OmniGen2", "omnigen2:/ckpt/OmniGen2"),
)


def register_family(name: str, target: str | type[ModelAdapter]) -> None:
    """Register a family: ``target`` is a ModelAdapter subclass or its lazy ``"module:Class"`` path."""
    if not isinstance(target, str):
        target = f"{target.__module__}:{target.__qualname__}"
    _FAMILIES[name] = target


def families() -> list[str]:
    """The registered family names."""
    return sorted(_FAMILIES)


def capabilities_of(spec: str) -> frozenset[Capability]:
    """What the family of ``spec`` can do (its adapter class's capabilities), without loading any weights."""
    family, _ = parse_spec(spec)
    return _adapter_class(family).capabilities


def family_table() -> list[dict[str, Any]]:
    """Every registered family: ``family``, ``builtin``, ``capabilities`` (``(task, modality)`` pairs), ``load``,
    and for a family over an authors' repository ``upstream`` (its :class:`~.upstream.Upstream` record)."""
    rows = []
    for name in sorted(_FAMILIES):
        adapter = _adapter_class(name)
        rows.append({"family": name, "builtin": name in _BUILTIN, "capabilities": sorted(adapter.capabilities),
                     "load": _LOADING.get(name, f"{name}:PATH"), "upstream": getattr(adapter, "upstream", None)})
    return rows


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``"janus:deepseek-community/Janus-Pro-1B"`` → ``("janus", "deepseek-community/Janus-Pro-1B")``;
    a built-in name alone (``"minilm"``) → ``("minilm", None)``.
    """
    family, sep, path = spec.partition(":")
    if family not in _FAMILIES:
        raise unknown_name("model family", family, _FAMILIES)
    if not sep or not path:
        if family in _BUILTIN:
            return family, None
        raise InputError(f"Model spec '{spec}' needs a path or hub id: '{family}:PATH'")
    return family, path


def _looks_local(path: str) -> bool:
    """A path meant as a directory on this machine, never a hub id ('namespace/name')."""
    return path.startswith(("/", "./", "../", "~", ".\\")) or path.count("/") > 1 or "\\" in path


def _adapter_class(family: str) -> type[ModelAdapter]:
    module_name, _, attribute = _FAMILIES[family].partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def load_model(spec: str, **kwargs: Any) -> ModelAdapter:
    """Load a model adapter from ``FAMILY:PATH`` or a built-in name; ``kwargs`` are loading keywords
    (``dtype``, ``device``, ``device_map``, ``revision``, ``trust_remote_code``, …) passed to the family.
    """
    family, path = parse_spec(spec)
    if path is not None and path.startswith("~"):
        path = str(Path(path).expanduser())  # the shell leaves the ~ of "family:~/…" alone
    if path is not None and _looks_local(path) and not Path(path).exists():
        raise LoadError(
            f"{spec}: no such directory {path}. A model directory holds config.json and its weights "
            "(model.safetensors or model-*.safetensors shards) as save_pretrained writes them; a hub id is "
            "'namespace/name'"
        )
    adapter = _adapter_class(family).load(path, **kwargs)
    adapter.name = spec
    return adapter
