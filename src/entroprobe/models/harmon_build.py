"""Build Harmon as the authors' scripts do: the config under ``configs/models``, then the ``harmon_*.pth``.

``scripts/text2image.py`` and ``scripts/image2text.py`` run::

    config = Config.fromfile(args.config)                  # configs/models/qwen2_5_1_5b_kl16_mar_h.py
    model = BUILDER.build(config.model).eval().cuda()
    model = model.to(model.dtype)                          # the LLM's dtype: torch_dtype=torch.bfloat16
    model.load_state_dict(torch.load(args.checkpoint), strict=False)

Here the config file is executed as mmengine executes it (a Python file whose variables are the config), its
imports of the checkout's ``src`` resolved from the checkout and those of xtuner (the configs import
``PROMPT_TEMPLATE`` and do not use it) left empty when xtuner is missing. Three entries are pointed at the
user's files: the LLM and tokenizer (``llm_name_or_path``, a hub id in the config) at ``llm=`` or
``DIR/<its last part>``, the VAE's ``ckpt_path`` at ``DIR/kl16.ckpt``, and ``attn_implementation`` (the configs
ask for ``flash_attention_2``) at ``sdpa``.
"""

from __future__ import annotations

import builtins
import contextlib
import copy
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from entroprobe.errors import LoadError
from entroprobe.models.compat.harmon import install_builder
from entroprobe.models.upstream import Upstream, import_from

__all__ = ["CONFIGS", "find_layout", "pick_config", "read_config", "build_harmon", "load_weights"]

# the checkout's config for each released checkpoint (README: "organize them as follows")
CONFIGS = {"0.5b": "configs/models/qwen2_5_0_5b_kl16_mar_b.py", "1.5b": "configs/models/qwen2_5_1_5b_kl16_mar_h.py"}
LAYOUT = ("expected DIR/kl16.ckpt (the VAE) and DIR/harmon_*.pth (harmon_0.5b.pth, harmon_1.5b.pth, "
          "harmon_1.5b-o.pth) as `huggingface-cli download wusize/harmon --local-dir DIR` lays them out")  # fmt: skip
_OPTIONAL = ("xtuner", "mmengine")  # imported by configs / training code, unused by the model


def find_layout(path: str | Path, checkpoint: str | None = None) -> tuple[Path, Path]:
    """``(harmon_*.pth, kl16.ckpt)`` in the folder ``path`` (``checkpoint``: the .pth's name when there are several).

    Raises:
        LoadError: a missing folder or file, naming it and the layout expected.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise LoadError(f"no Harmon checkpoint folder at {root}; {LAYOUT}")
    vae = root / "kl16.ckpt"
    if not vae.is_file():
        raise LoadError(f"{root} lacks kl16.ckpt (the VAE); {LAYOUT}")
    if checkpoint is not None:
        pth = root / checkpoint
        if not pth.is_file():
            raise LoadError(f"{root} lacks {checkpoint} (checkpoint=); {LAYOUT}")
        return pth, vae
    found = sorted(root.glob("harmon_*.pth"))
    if len(found) != 1:
        what = "no harmon_*.pth" if not found else f"several .pth ({', '.join(p.name for p in found)}): pass checkpoint=NAME"
        raise LoadError(f"{root} has {what}; {LAYOUT}")
    return found[0], vae


def pick_config(root: Path, pth: Path, config: str | None) -> Path:
    """The config file: ``config`` (absolute, or relative to the checkout), else the one the README pairs with
    the checkpoint's size (``0.5b`` / ``1.5b`` in its name).

    Raises:
        LoadError: no such file, or a checkpoint name that names no size.
    """
    if config is None:
        sizes = [size for size in CONFIGS if size in pth.name.lower()]
        if len(sizes) != 1:
            raise LoadError(f"cannot tell which config {pth.name} needs (its name says neither 0.5b nor 1.5b); "
                            f"pass config=PATH, e.g. config={CONFIGS['1.5b']}")  # fmt: skip
        config = CONFIGS[sizes[0]]
    chosen = Path(config).expanduser()
    chosen = chosen if chosen.is_absolute() else root / chosen
    if not chosen.is_file():
        raise LoadError(f"no Harmon config at {chosen} (config=); the checkout's are under configs/models")
    return chosen


class _Absent(ModuleType):
    """An optional package a config imports but the model does not use: every name is None."""

    def __getattr__(self, name: str) -> None:
        if name.startswith("__"):
            raise AttributeError(name)
        return None


def read_config(path: Path, root: Path, spec: Upstream) -> dict[str, Any]:
    """The variables of the config file at ``path``, executed as mmengine's ``Config.fromfile`` executes it.

    Raises:
        LoadError: the file does not run (a missing dependency, a syntax error), naming it and the error.
    """

    def resolve(name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0) -> Any:
        top = name.split(".")[0]
        if top == "src":
            module = import_from(root, name, spec)
            return module if fromlist else sys.modules["src"]
        try:
            return builtins.__import__(name, globals, locals, fromlist, level)
        except ImportError:
            if top in _OPTIONAL:
                return _Absent(name)
            raise

    namespace: dict[str, Any] = {"__builtins__": {**vars(builtins), "__import__": resolve}, "__file__": str(path),
                                 "__name__": "harmon_config"}  # fmt: skip
    try:
        exec(compile(path.read_text(), str(path), "exec"), namespace)  # noqa: S102 - the user's own config file
    except LoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of the config is a loading failure
        raise LoadError(f"the Harmon config {path} does not run: {type(exc).__name__}: {exc}") from exc
    if not isinstance(namespace.get("model"), dict):
        raise LoadError(f"the Harmon config {path} defines no model = dict(type=Harmon, ...)")
    return namespace


def _llm_folder(path: Path, name: str, llm: str | None) -> str:
    """``llm=`` if given, else ``DIR/<last part of the config's llm_name_or_path>`` if it exists, else the hub id."""
    if llm is not None:
        folder = Path(llm).expanduser()
        if not folder.is_dir():
            raise LoadError(f"no LLM folder at {folder} (llm=): a Qwen2.5 save_pretrained folder with its tokenizer")
        return str(folder)
    beside = path / Path(name).name
    return str(beside) if beside.is_dir() else name


def build_harmon(root: Path, spec: Upstream, config: Path, path: Path, vae: Path, *, llm: str | None,
                 dtype: torch.dtype | None) -> tuple[torch.nn.Module, dict[str, Any]]:  # fmt: skip
    """The Harmon module of ``config`` with the user's files (see the module), in ``dtype`` (None: the config's),
    before its checkpoint is loaded; and the config's variables.

    Raises:
        LoadError: the config does not run, or a part (LLM, tokenizer, VAE) cannot be built.
    """
    import_from(root, "src.models.mar.mar", spec)  # the checkout's src first, then a builder where mmengine is absent
    install_builder()
    builder = import_from(root, "src.builder", spec)
    import_from(root, "src.models.harmon", spec)
    namespace = read_config(config, root, spec)
    cfg = copy.deepcopy(namespace["model"])
    source = _llm_folder(path, str(namespace.get("llm_name_or_path", "")), llm)
    try:
        cfg["tokenizer"]["pretrained_model_name_or_path"] = source
        llm_cfg = cfg["llm"]
        llm_cfg["pretrained_model_name_or_path"] = source
        config_dtype = llm_cfg.pop("torch_dtype", None)
        llm_cfg["dtype"] = dtype or config_dtype or torch.float32
        llm_cfg["attn_implementation"] = "sdpa"
        cfg["vae"]["ckpt_path"] = str(vae)
    except (KeyError, TypeError) as exc:
        raise LoadError(f"the Harmon config {config} lacks the tokenizer / llm / vae entries of the released "
                        f"configs ({exc})") from exc  # fmt: skip
    try:
        with contextlib.redirect_stdout(sys.stderr):  # the VAE prints its shape and keys while it loads
            model = builder.BUILDER.build(cfg)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise LoadError(f"cannot build Harmon from {config} with the LLM at {source} and the VAE at {vae}: "
                        f"{type(exc).__name__}: {exc}") from exc  # fmt: skip
    return model.eval(), namespace


def load_weights(model: torch.nn.Module, pth: Path) -> dict[str, int]:
    """``model.load_state_dict(torch.load(pth), strict=False)`` as the scripts do; the key counts.

    Raises:
        LoadError: an unreadable file or weights of another shape (a config of the wrong size).
    """
    try:
        state = torch.load(pth, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle and zip errors of many kinds
        raise LoadError(f"cannot read the Harmon checkpoint {pth}: {exc}") from exc
    try:
        info = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise LoadError(f"{pth} does not fit the model its config builds (pass the matching config=): {exc}") from exc
    return {"loaded": len(state) - len(info.unexpected_keys), "missing": len(info.missing_keys),
            "unexpected": len(info.unexpected_keys)}  # fmt: skip
