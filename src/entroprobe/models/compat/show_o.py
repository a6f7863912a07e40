"""What Show-o's code (``showlab/Show-o``, top level: ``models/``, ``training/``) needs under transformers 5.23 /
diffusers 0.42 / CPU.

``FLAX_WEIGHTS_NAME``, ``vendored_loading`` and the MAGVIT sizes check first and change nothing when the installed
libraries (or the weights) already give what the code expects; ``construction`` always applies while the model is
built (its Phi config attributes are read by the vendored ``phi.py`` under any transformers); every wrapper is
restored when its block ends.

- ``FLAX_WEIGHTS_NAME``: ``models/modeling_utils.py`` (diffusers 0.30's ``ModelMixin``, vendored) imports it
  from ``diffusers.utils``, which diffusers 0.42 dropped; :func:`~entroprobe.models.compat.show_o2.
  ensure_flax_weights_name` (the same vendored file as Show-o2's) puts it back.
- :func:`vendored_loading` — the vendored ``ModelMixin.from_pretrained`` (what ``inference_t2i.py`` /
  ``inference_mmu.py`` call, ``Showo.from_pretrained(path)`` and ``MAGVITv2.from_pretrained(path)``) calls
  ``diffusers.models.model_loading_utils.load_state_dict(model_file, variant=variant)``; diffusers 0.42's
  ``load_state_dict`` has no ``variant`` argument (the variant is already in the file name). While the block runs
  the vendored module's ``load_state_dict`` takes and drops it. With ``low_cpu_mem_usage=False`` the vendored
  code then runs unchanged: the model is built from ``config.json`` and the checkpoint loaded into it.
- :func:`construction` — while ``Showo`` is built, ``models.modeling_showo.AutoConfig`` hands the vendored
  ``phi.py`` a Phi config with the 4.x attributes it reads (:func:`legacy_phi_config`: ``rope_theta`` and
  ``partial_rotary_factor``, which transformers 5 moved into ``rope_parameters``; ``rope_scaling=None`` for
  plain RoPE, since 5.x's ``rope_scaling`` is the ``rope_parameters`` dict and ``phi.py`` would read its
  ``"type"``; ``use_cache=False``, because 5.x's ``DynamicCache`` has no ``get_usable_length`` /
  ``to_legacy_cache`` and the authors' code never reuses a cache: ``mmu_generate`` and ``t2i_generate`` re-run
  the whole sequence each step), and ``PhiForCausalLM.resize_token_embeddings`` runs with
  ``mean_resizing=False`` (transformers 4.41, the authors' pin, had no mean resizing; the checkpoint overwrites
  those rows anyway).
- :func:`magvit_sizes` / :func:`magvit_construction` — ``MAGVITv2()`` takes no arguments: it always builds the
  released tokenizer (``VQGANEncoder()``, ``VQGANDecoder()``, ``LFQuantizer()``: 128 channels, 16× down, 2¹³
  codes). The sizes are read from the checkpoint instead; when they are the released ones, ``MAGVITv2`` is built
  unchanged, otherwise its three part classes get the checkpoint's sizes for the duration of the call (small
  test tokenizers).

No CUDA-only call is on the paths entroprobe runs (``t2i_generate``, ``mmu_generate`` and MAGVIT follow the
tensors' device). The ``"default"`` RoPE entry of transformers 5 is not needed: ``phi.py`` computes its own.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import re
from collections.abc import Iterator, Mapping
from types import ModuleType
from typing import Any

import torch

from entroprobe.models.compat.show_o2 import ensure_flax_weights_name

__all__ = [
    "RELEASED_MAGVIT",
    "construction",
    "ensure_flax_weights_name",
    "legacy_phi_config",
    "magvit_construction",
    "magvit_sizes",
    "vendored_loading",
]

# the sizes MAGVITv2() builds (models/modeling_magvitv2.py: VQGANEncoder/VQGANDecoder/LFQuantizer defaults)
RELEASED_MAGVIT = {
    "encoder": {"ch": 128, "ch_mult": [1, 2, 2, 4, 4], "num_res_blocks": [4, 3, 4, 3, 4], "z_channels": 13},
    "decoder": {"ch": 128, "ch_mult": [1, 1, 2, 2, 4], "num_res_blocks": [4, 4, 3, 4, 3], "z_channels": 13},
    "quantize": {"codebook_dim": 13},
}


def legacy_phi_config(config: Any) -> Any:
    """The 4.x attributes the vendored ``phi.py`` reads, set on a transformers 5 config (see the module)."""
    parameters = getattr(config, "rope_parameters", None) or {}
    if getattr(config, "rope_theta", None) is None:
        config.rope_theta = float(parameters.get("rope_theta", 10000.0))
    if getattr(config, "partial_rotary_factor", None) is None:
        config.partial_rotary_factor = float(parameters.get("partial_rotary_factor", 0.5))
    scaling = getattr(config, "rope_scaling", None)
    if isinstance(scaling, Mapping) and "type" not in scaling and scaling.get("rope_type", "default") == "default":
        config.rope_scaling = None
    config.use_cache = False
    return config


class _LegacyAutoConfig:
    """``AutoConfig`` whose configs pass through :func:`legacy_phi_config`."""

    def __init__(self, auto: Any):
        self._auto = auto

    def from_pretrained(self, *args: Any, **kwargs: Any) -> Any:
        return legacy_phi_config(self._auto.from_pretrained(*args, **kwargs))


@contextlib.contextmanager
def construction(module: ModuleType) -> Iterator[None]:
    """Wrap ``module.AutoConfig`` and ``module.PhiForCausalLM.resize_token_embeddings`` (``models.modeling_showo``)
    while ``Showo`` is built; restored on exit, error or not."""
    from entroprobe.models.compat.transformers5 import plain_resizing

    saved = module.AutoConfig
    module.AutoConfig = _LegacyAutoConfig(saved)
    try:
        with plain_resizing(getattr(module, "PhiForCausalLM", None)):
            yield
    finally:
        module.AutoConfig = saved


@contextlib.contextmanager
def vendored_loading(module: ModuleType) -> Iterator[None]:
    """Let ``module.load_state_dict`` (``models.modeling_utils``) take the ``variant=`` diffusers 0.42 dropped."""
    original = module.load_state_dict
    if "variant" in inspect.signature(original).parameters:
        yield
        return

    @functools.wraps(original)
    def load_state_dict(checkpoint_file: Any, variant: Any = None, **kwargs: Any) -> Any:
        return original(checkpoint_file, **kwargs)

    module.load_state_dict = load_state_dict
    try:
        yield
    finally:
        module.load_state_dict = original


def _levels(state: Mapping[str, torch.Tensor], prefix: str, stage: str) -> list[int]:
    """Blocks per level of ``prefix.stage.{level}.block.{j}`` keys."""
    pattern = re.compile(rf"^{re.escape(prefix)}\.{stage}\.(\d+)\.block\.(\d+)\.")
    count: dict[int, int] = {}
    for key in state:
        hit = pattern.match(key)
        if hit:
            level, block = int(hit.group(1)), int(hit.group(2))
            count[level] = max(count.get(level, 0), block + 1)
    return [count[i] for i in sorted(count)]


def magvit_sizes(state: Mapping[str, torch.Tensor]) -> dict[str, dict[str, Any]]:
    """The encoder / decoder / quantizer sizes a MAGVIT-v2 state dict was saved from (see the module).

    Raises:
        KeyError: the state dict is no MAGVITv2's (``encoder.conv_in.weight`` … missing).
    """
    enc_ch = int(state["encoder.conv_in.weight"].shape[0])
    enc_blocks = _levels(state, "encoder", "down")
    enc_mult = [int(state[f"encoder.down.{i}.block.0.conv2.weight"].shape[0]) // enc_ch for i in range(len(enc_blocks))]
    dec_blocks = _levels(state, "decoder", "up")
    dec_ch = int(state["decoder.up.0.block.0.conv2.weight"].shape[0])  # ch × ch_mult[0], and ch_mult[0] is 1
    dec_mult = [int(state[f"decoder.up.{i}.block.0.conv2.weight"].shape[0]) // dec_ch for i in range(len(dec_blocks))]
    return {
        "encoder": {"ch": enc_ch, "ch_mult": enc_mult, "num_res_blocks": enc_blocks,
                    "z_channels": int(state["encoder.conv_out.weight"].shape[0])},
        "decoder": {"ch": dec_ch, "ch_mult": dec_mult, "num_res_blocks": dec_blocks,
                    "z_channels": int(state["decoder.conv_in.weight"].shape[1])},
        "quantize": {"codebook_dim": int(state["quantize.embedding"].shape[1])},
    }  # fmt: skip


@contextlib.contextmanager
def magvit_construction(module: ModuleType, sizes: Mapping[str, Mapping[str, Any]]) -> Iterator[None]:
    """While the block runs, ``MAGVITv2()`` (``models.modeling_magvitv2``) builds parts of ``sizes``; nothing is
    wrapped when they are the released ones."""
    if dict(sizes) == RELEASED_MAGVIT:
        yield
        return
    names = {"encoder": "VQGANEncoder", "decoder": "VQGANDecoder", "quantize": "LFQuantizer"}
    saved = {name: getattr(module, name) for name in names.values()}
    for part, name in names.items():
        setattr(module, name, functools.partial(saved[name], **sizes[part]))
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)
