"""Loading Show-o (``showlab/Show-o``, v1 at the checkout's top level) as ``inference_t2i.py`` /
``inference_mmu.py`` load it, and the authors' defaults with their sources.

- the model: ``Showo.from_pretrained(path)`` (the vendored diffusers 0.30 ``ModelMixin``) with
  ``low_cpu_mem_usage=False``, the Phi config from the checkpoint's ``llm_model_path`` (``llm=`` over it) and
  ``load_from_showo=True`` (the skeleton is built from the Phi config; every weight comes from the checkpoint);
- the text tokenizer: ``AutoTokenizer.from_pretrained(llm_model_path, padding_side="left")`` wrapped in
  ``UniversalPrompting`` with the scripts' special tokens;
- the VQ tokenizer: ``MAGVITv2.from_pretrained(vq)`` (``vq=``, default the yaml's ``showlab/magvitv2``), its sizes
  read from its weights (:func:`~entroprobe.models.compat.show_o.magvit_sizes`);
- with ``w_clip_vit`` in the checkpoint's config: ``CLIPVisionTower(clip)`` and ``CLIPImageProcessor`` (``clip=``,
  default ``inference_mmu.py``'s ``openai/clip-vit-large-patch14-336``).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from entroprobe.errors import LoadError
from entroprobe.models.defaults import Default

__all__ = [
    "IMAGE_DEFAULTS",
    "LOAD_DEFAULTS",
    "SPECIAL_TOKENS",
    "TEXT_DEFAULTS",
    "check_layout",
    "generation_config",
    "load_parts",
]

_YAML = "configs/showo_demo_512x512.yaml"
_MMU, _T2I = "inference_mmu.py", "inference_t2i.py"
TEXT_DEFAULTS = {
    "top_k": Default(1, f"{_MMU}:81 top_k = 1 (passed to mmu_generate)"),
    "temperature": Default(
        1.0, f"models/modeling_showo.py:184 mmu_generate(temperature=1.0); {_MMU}:80 sets 0.8 but does not pass it"
    ),
}
IMAGE_DEFAULTS = {
    "guidance_scale": Default(5.0, f"README.md:179 python3 {_T2I} config={_YAML} … guidance_scale=5"),
    "generation_timesteps": Default(50, f"README.md:179 python3 {_T2I} … generation_timesteps=50"),
    "mask_schedule": Default("cosine", f"{_T2I}:318 config.training.get('mask_schedule', 'cosine') ({_YAML} sets none)"),
    "generation_temperature": Default(1.0, f"{_T2I}:326 config.training.get('generation_temperature', 1.0)"),
    "max_seq_length": Default(128, f"{_YAML}:40 dataset.preprocessing.max_seq_length"),
}
LOAD_DEFAULTS = {
    "vq": Default("showlab/magvitv2", f"{_YAML}:14 model.vq_model.vq_model_name"),
    "clip": Default("openai/clip-vit-large-patch14-336", f"{_MMU}:73 vision_tower_name"),
    "num_new_special_tokens": Default(10, f"{_YAML}:24 model.showo.num_new_special_tokens"),
    "cond_dropout_prob": Default(0.1, f"{_YAML}:47 training.cond_dropout_prob (UniversalPrompting's argument)"),
    "dtype": Default("float32", f"{_T2I}:67 / {_MMU}:77 Showo.from_pretrained(…) without torch_dtype"),
}
# inference_t2i.py:59 / inference_mmu.py:65 UniversalPrompting(special_tokens=…)
SPECIAL_TOKENS = ("<|soi|>", "<|eoi|>", "<|sov|>", "<|eov|>", "<|t2i|>", "<|mmu|>", "<|t2v|>", "<|v2v|>", "<|lvg|>")
WEIGHT_NAMES = ("pytorch_model.bin", "pytorch_model.safetensors")  # what the vendored ModelMixin reads (modeling_utils.py:48)


def _weights(folder: Path, what: str, layout: str) -> Path:
    """The first weight file of ``folder``, or a LoadError naming the layout."""
    if any(folder.glob("*.index.json")):
        return next(folder.glob("*.index.json"))
    for name in WEIGHT_NAMES:
        if (folder / name).is_file():
            return folder / name
    raise LoadError(f"{what} {folder} has no weights: expected {' or '.join(WEIGHT_NAMES)} beside config.json, "
                    f"as in {layout}")  # fmt: skip


def _read(file: Path) -> dict[str, torch.Tensor]:
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(file))
    return torch.load(file, map_location="cpu", weights_only=True, mmap=True)


def check_layout(folder: Path, vq: str) -> None:
    """The released layout's files, before any upstream code is imported.

    Raises:
        LoadError: naming the file or folder missing and the layout expected.
    """
    if not (folder / "config.json").is_file():
        raise LoadError(f"Show-o checkpoint {folder} has no config.json (the layout of showlab/show-o-512x512: "
                        "config.json and pytorch_model.bin)")  # fmt: skip
    _weights(folder, "Show-o checkpoint", "showlab/show-o-512x512")
    where = Path(vq).expanduser()
    if where.is_dir():
        _weights(where, "MAGVIT-v2 folder", "showlab/magvitv2")
    elif vq.startswith((".", "/", "~")) or where.exists():
        raise LoadError(f"no MAGVIT-v2 folder at {where}: download showlab/magvitv2 and pass vq=PATH")


def _showo(code: dict[str, Any], folder: Path, llm: str | None) -> Any:
    from entroprobe.models.compat.show_o import construction, vendored_loading

    stored = json.loads((folder / "config.json").read_text())
    llm_path = llm or stored.get("llm_model_path") or ""
    try:
        with construction(code["showo"]), vendored_loading(code["utils"]):
            model, info = code["models"].Showo.from_pretrained(
                str(folder), low_cpu_mem_usage=False, llm_model_path=llm_path, load_from_showo=True,
                output_loading_info=True)  # fmt: skip
    except (OSError, ValueError, RuntimeError) as exc:
        raise LoadError(f"Cannot load Show-o from {folder} (Phi config from {llm_path!r}; llm=PATH names a local "
                        f"copy of microsoft/phi-1_5): {exc}") from None  # fmt: skip
    missing = sorted(info.get("missing_keys", []))
    if missing:
        shown = ", ".join(missing[:5]) + (" …" if len(missing) > 5 else "")
        raise LoadError(f"Show-o checkpoint {folder} lacks {len(missing)} weight(s) of the model its config.json "
                        f"describes: {shown}")  # fmt: skip
    return model, llm_path


def _magvit(code: dict[str, Any], source: str) -> Any:
    from entroprobe.models.compat.show_o import (
        RELEASED_MAGVIT,
        magvit_construction,
        magvit_sizes,
        vendored_loading,
    )

    folder = Path(source).expanduser()
    sizes: Any = RELEASED_MAGVIT
    if folder.is_dir():
        file = _weights(folder, "MAGVIT-v2 folder", "showlab/magvitv2")
        try:
            sizes = magvit_sizes(_read(file)) if file.suffix != ".json" else RELEASED_MAGVIT
        except (KeyError, OSError, RuntimeError) as exc:
            raise LoadError(f"{file} is not a MAGVIT-v2 state dict ({exc})") from None
    try:
        with magvit_construction(code["magvit"], sizes), vendored_loading(code["utils"]):
            vq, info = code["models"].MAGVITv2.from_pretrained(str(folder) if folder.is_dir() else source,
                                                               low_cpu_mem_usage=False, output_loading_info=True)  # fmt: skip
    except (OSError, ValueError, RuntimeError) as exc:
        raise LoadError(f"Cannot load the MAGVIT-v2 tokenizer from {source!r} (download showlab/magvitv2 and pass "
                        f"vq=PATH): {exc}") from None  # fmt: skip
    if info.get("missing_keys"):
        raise LoadError(f"MAGVIT-v2 weights at {source} lack {', '.join(sorted(info['missing_keys'])[:5])}")
    return vq.eval().requires_grad_(False)


def load_parts(root: Path | None, spec: Any, folder: Path, rest: dict[str, Any], load: dict[str, Any],
               device: torch.device, dtype: torch.dtype) -> dict[str, Any]:  # fmt: skip
    """Everything :class:`~entroprobe.models.show_o.ShowOAdapter` holds: the model, the VQ tokenizer, the prompting,
    the CLIP tower (or None) and the checkout's modules. ``load`` holds :data:`LOAD_DEFAULTS`' values.

    Raises:
        LoadError: no checkout, a missing file, or parts that do not fit together (named).
    """
    from entroprobe.models.compat.show_o import ensure_flax_weights_name
    from entroprobe.models.upstream import import_from

    check_layout(folder, str(load["vq"]))
    ensure_flax_weights_name()
    code = {"models": import_from(root, "models", spec)}
    code["showo"] = import_from(root, "models.modeling_showo", spec)
    code["magvit"] = import_from(root, "models.modeling_magvitv2", spec)
    code["utils"] = import_from(root, "models.modeling_utils", spec)
    code["sampling"] = import_from(root, "models.sampling", spec)
    code["prompting"] = import_from(root, "training.prompting_utils", spec)
    code["data"] = import_from(root, "training.utils", spec)
    model, llm_path = _showo(code, folder, rest.get("llm"))
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(llm_path, padding_side="left")
    except (OSError, ValueError) as exc:
        raise LoadError(f"Cannot load the Phi tokenizer from {llm_path!r} (llm=PATH names a local copy of "
                        f"microsoft/phi-1_5): {exc}") from None  # fmt: skip
    prompting = code["prompting"].UniversalPrompting(
        tokenizer, max_text_len=128, special_tokens=SPECIAL_TOKENS, ignore_id=-100,
        cond_dropout_prob=float(load["cond_dropout_prob"]))  # fmt: skip
    config = model.config
    new = int(load["num_new_special_tokens"])
    if len(prompting.text_tokenizer) != int(config.llm_vocab_size) + new:
        raise LoadError(f"the tokenizer from {llm_path!r} has {len(prompting.text_tokenizer)} tokens with Show-o's "
                        f"special tokens; the checkpoint expects llm_vocab_size {config.llm_vocab_size} + {new}")  # fmt: skip
    vq = _magvit(code, str(load["vq"]))
    codes = int(vq.quantize.codebook_size)
    if codes != int(config.codebook_size) or int(config.vocab_size) != int(config.llm_vocab_size) + new + codes + 1:
        raise LoadError(f"the MAGVIT-v2 tokenizer has {codes} codes; the Show-o checkpoint expects codebook_size "
                        f"{config.codebook_size} within vocab_size {config.vocab_size}")  # fmt: skip
    clip = processor = conversation = None
    if bool(config.w_clip_vit):
        from transformers import CLIPImageProcessor

        source = str(load["clip"])
        code["clip"] = import_from(root, "models.clip_encoder", spec)
        try:
            clip = code["clip"].CLIPVisionTower(source).to(device=device, dtype=dtype)
            processor = CLIPImageProcessor.from_pretrained(source)
        except (OSError, ValueError) as exc:
            raise LoadError(f"Cannot load the CLIP-ViT understanding encoder from {source!r} (the checkpoint says "
                            f"w_clip_vit; clip=PATH names a local copy of {load['clip']}): {exc}") from None  # fmt: skip
        conversation = import_from(root, "llava.llava.conversation", spec).conv_templates["phi1.5"]
    model.to(device=device, dtype=dtype).eval()
    vq.to(device)
    return {"model": model, "vq": vq, "prompting": prompting, "clip": clip, "processor": processor,
            "conversation": conversation, "code": code, "llm": llm_path}  # fmt: skip


def generation_config(adapter: Any, max_seq_length: int) -> SimpleNamespace:
    """What ``t2i_generate`` reads of the scripts' OmegaConf config (``config.model.showo.*``,
    ``config.dataset.preprocessing.max_seq_length``), from the checkpoint's config and the settings."""
    config = adapter.model.config
    showo = SimpleNamespace(num_vq_tokens=adapter.num_image_tokens, llm_vocab_size=int(config.llm_vocab_size),
                            num_new_special_tokens=adapter.num_new_special_tokens,
                            codebook_size=int(config.codebook_size))  # fmt: skip
    return SimpleNamespace(model=SimpleNamespace(showo=showo),
                           dataset=SimpleNamespace(preprocessing=SimpleNamespace(max_seq_length=max_seq_length)))
