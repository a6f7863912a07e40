"""Loading BAGEL as its authors' ``app.py`` and ``inference.ipynb`` ("Model Initialization") do, from the checkout.

The released layout (``ByteDance-Seed/BAGEL-7B-MoT``; BAGEL-RecA is a post-training of the same architecture)::

    llm_config.json   Qwen2Config.from_json_file; then qk_norm=True, tie_word_embeddings=False,
                      layer_module="Qwen2MoTDecoderLayer"                                    (app.py:39-42)
    vit_config.json   SiglipVisionConfig.from_json_file; then rope=False, num_hidden_layers -= 1 (app.py:44-46)
    ae.safetensors    load_ae(local_path=...) — the FLUX VAE, full size only                  (app.py:48)
    ema.safetensors   load_checkpoint_and_dispatch(checkpoint=..., dtype=torch.bfloat16)       (app.py:105-112)
    vocab.json, merges.txt, tokenizer_config.json
                      Qwen2Tokenizer.from_pretrained + add_special_tokens (new_token_ids)     (app.py:68-69)

``BagelConfig(visual_gen=True, visual_und=True, vit_max_num_patch_per_side=70, connector_act='gelu_pytorch_tanh',
latent_patch_size=2, max_latent_size=64)`` (app.py:50-60), built under ``init_empty_weights`` with the ViT patch
embedding turned linear (``convert_conv2d_to_linear(vit_config, meta=True)``, app.py:62-66), and the transforms
``ImageTransform(1024, 512, 16)`` (VAE) and ``ImageTransform(980, 224, 14)`` (ViT) (app.py:71-72).

Two model arguments stand beside the layout: ``weights=FILE`` (default ``ema.safetensors``; a file name inside the
checkpoint or a path) for a checkpoint that names its weights otherwise, and ``ae_params=FILE.json`` — the fields of
``modeling.autoencoder.AutoEncoderParams`` — for a VAE of another size than ``load_ae``'s hard-coded one (small test
VAEs); without it ``load_ae`` runs as the authors call it. Weights go onto one device without accelerate's dispatch
hooks (``load_checkpoint_in_model``, what ``load_checkpoint_and_dispatch`` runs before dispatching), every parameter
of the model must come from the file, and the VAE goes to the same device.
"""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from entroprobe.errors import LoadError
from entroprobe.models.defaults import Default
from entroprobe.models.upstream import Upstream, import_from

__all__ = [
    "BUILD",
    "DTYPE",
    "LAYOUT",
    "VAE_TRANSFORM",
    "VIT_TRANSFORM",
    "WEIGHTS",
    "Parts",
    "check_layout",
    "load_parts",
]  # fmt: skip

WEIGHTS = Default("ema.safetensors", "app.py:107 / inference.ipynb (Model Loading): "
                                     "load_checkpoint_and_dispatch(checkpoint=os.path.join(model_path, 'ema.safetensors'))")
DTYPE = Default("bfloat16", "app.py:111 / inference.ipynb: load_checkpoint_and_dispatch(..., dtype=torch.bfloat16); "
                            "inferencer.py:233 runs under torch.autocast(dtype=torch.bfloat16)")
BUILD = Default({"visual_gen": True, "visual_und": True, "vit_max_num_patch_per_side": 70,
                 "connector_act": "gelu_pytorch_tanh", "latent_patch_size": 2, "max_latent_size": 64},
                "app.py:50-60 / inference.ipynb (Model Initialization): BagelConfig(...)")  # fmt: skip
VAE_TRANSFORM = Default((1024, 512, 16), "app.py:71 / inference.ipynb: vae_transform = ImageTransform(1024, 512, 16)")
VIT_TRANSFORM = Default((980, 224, 14), "app.py:72 / inference.ipynb: vit_transform = ImageTransform(980, 224, 14)")
_CONFIGS = ("llm_config.json", "vit_config.json", "ae.safetensors")
_TOKENIZER = ("vocab.json", "merges.txt")
LAYOUT = ("the released BAGEL-7B-MoT layout: llm_config.json, vit_config.json, ema.safetensors, ae.safetensors and "
          "the Qwen2 tokenizer (vocab.json, merges.txt, tokenizer_config.json)")  # fmt: skip


@dataclass
class Parts:
    """What loading gives: the model (eval), its VAE, tokenizer, ``new_token_ids``, the transforms and the
    checkout's ``InterleaveInferencer`` over them; ``code`` the checkout's modules used."""

    model: Any
    vae: Any
    vae_params: Any
    tokenizer: Any
    new_token_ids: dict[str, int]
    vae_transform: Any
    vit_transform: Any
    inferencer: Any
    proxy: Any
    code: SimpleNamespace
    weights: Path
    ae_params: str | None


def weights_file(directory: Path, weights: str | None) -> Path:
    """The weights file: ``weights`` (inside ``directory`` unless a path) or ``ema.safetensors``."""
    name = Path(weights or WEIGHTS.value).expanduser()
    return name if name.is_absolute() or len(name.parts) > 1 else directory / name


def check_layout(directory: Path, weights: str | None = None) -> Path:
    """The weights file, after checking that every file of the released layout is there.

    Raises:
        LoadError: naming the first missing file and the layout.
    """
    if not directory.is_dir():
        raise LoadError(f"no BAGEL checkpoint directory at {directory}; expected {LAYOUT}")
    for name in (*_CONFIGS, *_TOKENIZER):
        if not (directory / name).is_file():
            raise LoadError(f"{directory} lacks {name}; expected {LAYOUT}")
    file = weights_file(directory, weights)
    if not file.is_file():
        present = sorted(p.name for p in directory.glob("*.safetensors") if p.name != "ae.safetensors")
        hint = "" if weights else (" (pass weights=FILE when the checkpoint names its weights otherwise; it has "
                                   f"{', '.join(present) or 'no other .safetensors file'})")  # fmt: skip
        raise LoadError(f"{directory} lacks {file.name if file.parent == directory else file}{hint}; expected {LAYOUT}")
    return file


def import_checkout(root: Path | None, spec: Upstream) -> SimpleNamespace:
    """The checkout's modules (``modeling.bagel``, ``modeling.autoencoder``, ``modeling.qwen2``, ``data.data_utils``,
    ``data.transforms``, ``inferencer``), imported with the flash-attn stand-in where flash-attn is missing."""
    from entroprobe.models.compat.bagel import ensure_default_rope, provide_flash_attn

    ensure_default_rope()
    with provide_flash_attn():
        names = {"bagel": "modeling.bagel", "navit": "modeling.bagel.qwen2_navit", "autoencoder": "modeling.autoencoder",
                 "qwen2": "modeling.qwen2", "data_utils": "data.data_utils", "transforms": "data.transforms",
                 "inferencer": "inferencer"}  # fmt: skip
        return SimpleNamespace(**{key: import_from(root, name, spec) for key, name in names.items()})


def _vae(code: SimpleNamespace, directory: Path, ae_params: str | None) -> tuple[Any, Any]:
    """``load_ae`` as the authors call it, or an ``AutoEncoder(AutoEncoderParams(**json))`` given ``ae_params``."""
    file = directory / "ae.safetensors"
    if ae_params is None:
        try:
            with contextlib.redirect_stdout(sys.stderr):  # load_ae prints missing / unexpected keys
                return code.autoencoder.load_ae(local_path=str(file))
        except RuntimeError as exc:
            raise LoadError(f"{file} does not fit load_ae's VAE (the released FLUX VAE's size); for a VAE of another "
                            f"size pass ae_params=FILE.json with its AutoEncoderParams: {exc}") from exc
    try:
        fields = json.loads(Path(ae_params).expanduser().read_text())
        params = code.autoencoder.AutoEncoderParams(**fields)
    except (OSError, ValueError, TypeError) as exc:
        raise LoadError(f"ae_params={ae_params!r} must be a JSON file of AutoEncoderParams fields "
                        f"(resolution, in_channels, downsample, ch, out_ch, ch_mult, num_res_blocks, z_channels, "
                        f"scale_factor, shift_factor): {exc}") from exc  # fmt: skip
    from safetensors.torch import load_file

    vae = code.autoencoder.AutoEncoder(params)
    try:
        vae.load_state_dict(load_file(str(file)), strict=True)
    except RuntimeError as exc:
        raise LoadError(f"{file} does not fit the VAE of ae_params={ae_params!r}: {exc}") from exc
    return vae, params


def load_parts(root: Path | None, spec: Upstream, directory: Path, *, weights: str | None, ae_params: str | None,
               dtype: torch.dtype, device: torch.device) -> Parts:  # fmt: skip
    """Build and load everything as the module docstring says.

    Raises:
        LoadError: a missing file, a checkout that does not import, weights the model does not find in the file.
    """
    file = check_layout(directory, weights)
    code = import_checkout(root, spec)
    from accelerate import init_empty_weights
    from accelerate.utils import load_checkpoint_in_model
    from safetensors import safe_open

    from entroprobe.models.compat.bagel import OnDevice, legacy_llm_config

    bagel = code.bagel
    try:
        llm_config = legacy_llm_config(bagel.Qwen2Config.from_json_file(str(directory / "llm_config.json")))
        llm_config.qk_norm = True
        llm_config.tie_word_embeddings = False
        llm_config.layer_module = "Qwen2MoTDecoderLayer"
        vit_config = bagel.SiglipVisionConfig.from_json_file(str(directory / "vit_config.json"))
        vit_config.rope = False
        vit_config.num_hidden_layers -= 1
    except (OSError, ValueError, TypeError) as exc:
        raise LoadError(f"cannot read the configs of {directory} ({LAYOUT}): {exc}") from exc
    vae, vae_params = _vae(code, directory, ae_params)
    config = bagel.BagelConfig(llm_config=llm_config, vit_config=vit_config, vae_config=vae_params, **BUILD.value)
    with init_empty_weights():
        language_model = bagel.Qwen2ForCausalLM(llm_config)
        vit_model = bagel.SiglipVisionModel(vit_config)
        model = bagel.Bagel(language_model, vit_model, config)
        model.vit_model.vision_model.embeddings.convert_conv2d_to_linear(vit_config, meta=True)
    with safe_open(str(file), framework="pt") as handle:
        stored = set(handle.keys())
    missing = sorted(set(model.state_dict()) - stored)
    if missing:
        raise LoadError(f"{file} lacks {len(missing)} weight(s) of the model built from llm_config.json / "
                        f"vit_config.json, e.g. {', '.join(missing[:5])}")  # fmt: skip
    try:
        load_checkpoint_in_model(model, str(file), device_map={"": str(device)}, dtype=dtype)
    except (OSError, ValueError, RuntimeError) as exc:
        raise LoadError(f"cannot load {file} into BAGEL: {exc}") from exc
    model = model.to(device).eval()
    vae = vae.to(device).eval()
    try:
        tokenizer = code.qwen2.Qwen2Tokenizer.from_pretrained(str(directory))
    except (OSError, ValueError) as exc:
        raise LoadError(f"cannot load the Qwen2 tokenizer of {directory}: {exc}") from exc
    tokenizer, new_token_ids, _ = code.data_utils.add_special_tokens(tokenizer)
    vae_transform = code.transforms.ImageTransform(*VAE_TRANSFORM.value)
    vit_transform = code.transforms.ImageTransform(*VIT_TRANSFORM.value)
    proxy = OnDevice(model, device)
    inferencer = code.inferencer.InterleaveInferencer(model=proxy, vae_model=vae, tokenizer=tokenizer,
                                                      vae_transform=vae_transform, vit_transform=vit_transform,
                                                      new_token_ids=new_token_ids)  # fmt: skip
    return Parts(model=model, vae=vae, vae_params=vae_params, tokenizer=tokenizer, new_token_ids=dict(new_token_ids),
                 vae_transform=vae_transform, vit_transform=vit_transform, inferencer=inferencer, proxy=proxy,
                 code=code, weights=file, ae_params=ae_params)  # fmt: skip
