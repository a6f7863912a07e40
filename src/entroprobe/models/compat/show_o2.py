"""What Show-o2's code (``showlab/Show-o``, ``show-o2/``) needs under transformers 5.23 / diffusers 0.42 / CPU.

``ensure_flax_weights_name`` and ``wan_vae`` check first and change nothing when the installed library (or the
checkpoint) already gives what the code expects; ``load_showo2`` and ``construction`` always apply (they read
every weight from the checkpoint into a skeleton built from its config).

- :func:`ensure_flax_weights_name` — ``models/modeling_utils.py`` (diffusers 0.30's ``ModelMixin``, vendored)
  imports ``FLAX_WEIGHTS_NAME`` from ``diffusers.utils``; diffusers 0.42 dropped the name, so importing
  ``models`` fails. This puts the constant back (diffusers' old value), only when it is missing.
- :func:`load_showo2` — replaces the vendored ``ModelMixin.from_pretrained`` (what the inference scripts call:
  ``Showo2Qwen2_5.from_pretrained(path, use_safetensors=False)``), whose loading helpers have changed signature
  in diffusers 0.42 (``load_model_dict_into_meta`` no longer takes ``device=``). Written from its behaviour: the
  model is built from the checkpoint's ``config.json`` (``from_config``) without initialising weights, every
  weight then comes from the checkpoint's files (all keys required), and the model is put in eval mode.
- :func:`construction` — while the model is built, two module globals of ``models.modeling_showo2_qwen2_5``
  are wrapped: ``AutoConfig`` (the Qwen2.5 config then carries the 4.x attributes the vendored ``qwen2.py``
  reads: ``rope_theta``, which transformers 5 moved into ``rope_parameters``, and ``use_cache=False``, because
  5.x's ``DynamicCache`` has no ``to_legacy_cache`` and the authors' code never reuses a cache —
  ``mmu_generate`` re-runs the whole sequence each step), and ``SiglipModel`` (``from_pretrained`` builds the
  SigLIP skeleton from its config only: the constructor keeps its position embedding and encoder, whose
  weights the Show-o2 checkpoint holds; reading SigLIP's own weights first would be thrown away).
  ``Qwen2ForCausalLM.resize_token_embeddings`` (the constructor grows the vocabulary to Show-o2's) runs with
  ``mean_resizing=False``: transformers >= 4.46 fills new rows from the old rows' mean and covariance, which
  cannot run on the weightless (meta) skeleton, and the checkpoint overwrites those rows anyway.
  All are restored afterwards. The ``"default"`` RoPE entry comes from
  :func:`~entroprobe.models.compat.transformers5.ensure_default_rope`.
- :func:`wan_vae` — ``models.wan21_vae.WanVAE`` builds the Wan2.1 VAE at width 96 (the released
  ``Wan2.1_VAE.pth``). The width is read from the checkpoint instead; when it is 96, ``WanVAE`` runs unchanged,
  otherwise its ``_video_vae`` builder gets that width for the duration of the call (small test VAEs).

No CUDA-only call is on the paths entroprobe runs (sampling, VAE, generation all follow the tensors' device).
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from entroprobe.errors import LoadError

__all__ = [
    "ensure_flax_weights_name",
    "legacy_llm_config",
    "construction",
    "weight_files",
    "load_showo2",
    "wan_vae",
]

FLAX_WEIGHTS_NAME = "diffusion_flax_model.msgpack"  # diffusers 0.30's value
WEIGHT_NAMES = ("pytorch_model.bin", "pytorch_model.safetensors", "model.safetensors",
                "diffusion_pytorch_model.bin", "diffusion_pytorch_model.safetensors")  # fmt: skip
VAE_WIDTH = 96  # WanVAE's fixed `dim`


def ensure_flax_weights_name() -> bool:
    """Put ``diffusers.utils.FLAX_WEIGHTS_NAME`` back when diffusers lacks it; True when it was added now."""
    import diffusers.utils

    if hasattr(diffusers.utils, "FLAX_WEIGHTS_NAME"):
        return False
    diffusers.utils.FLAX_WEIGHTS_NAME = FLAX_WEIGHTS_NAME
    return True


def legacy_llm_config(config: Any) -> Any:
    """The 4.x attributes the vendored Qwen2 reads, set on a transformers 5 config (see the module docstring)."""
    if getattr(config, "rope_theta", None) is None:
        parameters = getattr(config, "rope_parameters", None) or {}
        config.rope_theta = float(parameters.get("rope_theta", 10000.0))
    config.use_cache = False
    return config


class _LegacyAutoConfig:
    """``AutoConfig`` whose configs pass through :func:`legacy_llm_config`."""

    def __init__(self, auto: Any):
        self._auto = auto

    def from_pretrained(self, *args: Any, **kwargs: Any) -> Any:
        return legacy_llm_config(self._auto.from_pretrained(*args, **kwargs))


class _SkeletonSiglip:
    """``SiglipModel`` whose ``from_pretrained`` builds the model from its config only (no weights read)."""

    def __init__(self, cls: Any):
        self._cls = cls

    def from_pretrained(self, path: Any, *args: Any, **kwargs: Any) -> Any:
        config = self._cls.config_class.from_pretrained(path)
        return self._cls(config)


@contextlib.contextmanager
def construction(module: ModuleType) -> Iterator[None]:
    """Wrap ``module.AutoConfig`` and ``module.SiglipModel`` (``models.modeling_showo2_qwen2_5``) while the model
    is built; restored on exit, error or not."""
    saved = {name: getattr(module, name) for name in ("AutoConfig", "SiglipModel")}
    module.AutoConfig = _LegacyAutoConfig(saved["AutoConfig"])
    module.SiglipModel = _SkeletonSiglip(saved["SiglipModel"])
    from entroprobe.models.compat.transformers5 import plain_resizing

    try:
        with plain_resizing(getattr(module, "Qwen2ForCausalLM", None)):
            yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


def weight_files(path: Path) -> list[Path]:
    """The checkpoint's weight files: those an ``*.index.json`` names, else the first of :data:`WEIGHT_NAMES`.

    Raises:
        LoadError: naming the folder and the files expected.
    """
    for index in sorted(path.glob("*.index.json")):
        names = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
        missing = [n for n in names if not (path / n).is_file()]
        if missing:
            raise LoadError(f"Show-o2 checkpoint {path}: {index.name} names missing shard(s) {', '.join(missing)}")
        if names:
            return [path / n for n in names]
    for name in WEIGHT_NAMES:
        if (path / name).is_file():
            return [path / name]
    raise LoadError(
        f"Show-o2 checkpoint {path} has no weights: expected {WEIGHT_NAMES[0]} (or shards with an *.index.json, "
        "or a .safetensors file) beside config.json, as in showlab/show-o2-7B"
    )


def _read(file: Path) -> dict[str, torch.Tensor]:
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(file))
    return torch.load(file, map_location="cpu", weights_only=True, mmap=True)


def load_showo2(cls: Any, path: Path, **overrides: Any) -> Any:
    """``cls.from_pretrained(path)`` for Show-o2's vendored ``ModelMixin`` (see the module docstring).

    Args:
        cls: ``Showo2Qwen2_5``.
        path: the checkpoint folder (``config.json`` + weights).
        **overrides: constructor arguments over ``config.json`` (``llm_model_path``, ``clip_pretrained_model_path``).

    Raises:
        LoadError: no config, no weights, or weights that do not match the model built from the config.
    """
    import accelerate

    if not (path / "config.json").is_file():
        raise LoadError(f"Show-o2 checkpoint {path} has no config.json (the layout of showlab/show-o2-7B: "
                        "config.json and pytorch_model.bin)")  # fmt: skip
    config = cls.load_config(str(path))
    files = weight_files(path)
    with accelerate.init_empty_weights():
        model = cls.from_config(config, **overrides)
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(_read(file))
    wanted = set(model.state_dict())
    missing = sorted(wanted - set(state))
    tied = bool(getattr(model.showo.config, "tie_word_embeddings", False))
    if tied and missing == ["showo.lm_head.weight"]:
        missing = []
    if missing:
        shown = ", ".join(missing[:5]) + (" …" if len(missing) > 5 else "")
        raise LoadError(f"Show-o2 checkpoint {path} lacks {len(missing)} weight(s) of the model its config.json "
                        f"describes: {shown}")  # fmt: skip
    try:
        model.load_state_dict({k: v for k, v in state.items() if k in wanted}, strict=False, assign=True)
    except RuntimeError as exc:
        raise LoadError(f"Show-o2 checkpoint {path} does not match its config.json: {exc}") from None
    if tied:
        model.showo.tie_weights()
    return model.eval()


def wan_vae(module: ModuleType, path: Path, *, dtype: torch.dtype, device: torch.device) -> Any:
    """``module.WanVAE(vae_pth=path, dtype=dtype, device=device)`` with the width the checkpoint has.

    Raises:
        LoadError: the file is missing or is not a Wan VAE state dict.
    """
    if not path.is_file():
        raise LoadError(f"no Wan2.1 VAE at {path}: download Wan2.1_VAE.pth (Wan-AI/Wan2.1-T2V-14B) into the "
                        "checkpoint folder or pass vae=PATH")  # fmt: skip
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        width = int(state["encoder.conv1.weight"].shape[0])
    except (KeyError, OSError, RuntimeError, AttributeError) as exc:
        raise LoadError(f"{path} is not a Wan2.1 VAE state dict (no encoder.conv1.weight): {exc}") from None
    del state
    if width == VAE_WIDTH:
        return module.WanVAE(vae_pth=str(path), dtype=dtype, device=device)
    builder = module._video_vae
    module._video_vae = functools.partial(builder, dim=width)
    try:
        return module.WanVAE(vae_pth=str(path), dtype=dtype, device=device)
    finally:
        module._video_vae = builder
