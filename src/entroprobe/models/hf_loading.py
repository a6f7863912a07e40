"""Loading Hugging Face checkpoints safely and uniformly, for every transformers-based family.

Safety: ``trust_remote_code`` is off unless the caller turns it on; weights come from safetensors, or, for
``.bin`` checkpoints, through transformers' ``torch.load(weights_only=True)``; nothing in a checkpoint runs code.
"""

from __future__ import annotations

import json

import pickle
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

from entroprobe.errors import InputError, ItemError, LoadError
from entroprobe.models.base import resolve_device, resolve_dtype, weights_fingerprint

__all__ = ["LOAD_KEYS", "load_pretrained", "load_processor", "as_bool", "context_limit", "check_length", "fingerprint_of"]

# the loading keywords every transformers family accepts (`--model-args k=v,…` on the command line)
LOAD_KEYS = ("dtype", "device", "device_map", "offload_folder", "revision", "trust_remote_code", "attn_implementation",
             "local_files_only")  # fmt: skip
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


def as_bool(value: Any, key: str = "value") -> bool:
    """``True``/``"true"``/``"1"``/``"yes"`` → True, their opposites → False, anything else → InputError."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise InputError(f"{key} must be true or false; got {value!r}")


def _check_keys(kwargs: dict[str, Any], extra: tuple[str, ...] = ()) -> None:
    unknown = sorted(set(kwargs) - set(LOAD_KEYS) - set(extra))
    if unknown:
        raise InputError(f"Unknown loading argument(s) {', '.join(unknown)}; accepted: {', '.join(LOAD_KEYS + extra)}")


def load_pretrained(
    auto_cls: Any,
    path: str,
    *,
    what: str = "model",
    dtype: Any = None,
    device: Any = None,
    device_map: Any = None,
    offload_folder: str | None = None,
    revision: str | None = None,
    trust_remote_code: Any = False,
    attn_implementation: str | None = None,
    local_files_only: Any = None,
) -> tuple[Any, torch.device]:
    """``auto_cls.from_pretrained(path, …)`` in eval mode on the requested device; returns (model, device).

    ``device_map`` places the model with accelerate: ``auto`` (over the GPUs, then CPU and disk), ``balanced``,
    ``sequential``, one device (``cpu``, ``cuda:1``) or a JSON file mapping module names to devices
    (``{"model.layers.0": 0, "model.layers.1": 1, …}``; ``"disk"`` needs ``offload_folder``). The returned device
    is where the inputs go: the input embeddings'.

    Raises :class:`LoadError` naming ``what``, the path and the reason when the weights are missing or unreadable;
    :class:`InputError` for a device map that is neither a known name, a device nor a readable JSON object.
    """
    kwargs: dict[str, Any] = {"trust_remote_code": as_bool(trust_remote_code, "trust_remote_code")}
    torch_dtype = resolve_dtype(dtype)
    if torch_dtype is not None:
        kwargs["dtype"] = torch_dtype
    if revision is not None:
        kwargs["revision"] = revision
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    if local_files_only is not None:
        kwargs["local_files_only"] = as_bool(local_files_only, "local_files_only")
    if device_map is not None:
        kwargs["device_map"] = _device_map(device_map)
    if offload_folder is not None:
        kwargs["offload_folder"] = str(offload_folder)
    try:
        model = auto_cls.from_pretrained(path, **kwargs)
    except (SafetensorError, pickle.UnpicklingError, EOFError) as exc:  # corrupt weight files
        raise LoadError(f"Cannot load {what} from '{path}': unreadable weights ({type(exc).__name__}: {exc})") from exc
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        where = "" if Path(path).exists() else (f" (read as a hub id: there is no local directory '{path}' either; "
                                                 "a local model is a path to an existing directory)")  # fmt: skip
        raise LoadError(f"Cannot load {what} from '{path}'{where}: {exc}") from exc
    if device_map is None:
        target = resolve_device(device)
        model = model.to(target)
    return model.eval(), input_device(model)


def input_device(model: Any) -> torch.device:
    """Where a model's inputs go: its input embeddings' device (with a device map, other layers live elsewhere)."""
    try:
        embeddings = model.get_input_embeddings()
        device = next(embeddings.parameters()).device
    except (AttributeError, NotImplementedError, StopIteration):
        device = next(model.parameters()).device
    return torch.device("cpu") if device.type == "meta" else device


def _device_map(value: Any) -> Any:
    """A device map as transformers takes it, from a name, a device or a JSON file."""
    if isinstance(value, dict) or not isinstance(value, str) or value in DEVICE_MAPS:
        return value
    if value.endswith(".json"):
        try:
            mapping = json.loads(Path(value).expanduser().read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"device_map={value}: cannot read the device map ({exc})") from None
        if not isinstance(mapping, dict):
            raise InputError(f"device_map={value} must hold a JSON object of module name → device")
        return mapping
    try:
        torch.device(value)
    except RuntimeError:
        raise InputError(f"device_map must be one of {', '.join(DEVICE_MAPS)}, a device (cpu, cuda:0) or a JSON "
                         f"file of module name → device; got {value!r}") from None
    return value


def load_processor(auto_cls: Any, path: str, *, what: str = "processor", revision: str | None = None,
                   trust_remote_code: Any = False, **_: Any) -> Any:
    """``auto_cls.from_pretrained(path)`` for a tokenizer or processor; LoadError naming the path on failure."""
    kwargs: dict[str, Any] = {"trust_remote_code": as_bool(trust_remote_code, "trust_remote_code")}
    if revision is not None:
        kwargs["revision"] = revision
    try:
        return auto_cls.from_pretrained(path, **kwargs)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise LoadError(f"Cannot load {what} from '{path}': {exc}") from exc


def context_limit(config: Any) -> int | None:
    """The longest sequence the model accepts, from its config (None when the config does not say)."""
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_length(n_tokens: int, limit: int | None, item: str) -> None:
    """Raise :class:`ItemError` when a sequence of ``n_tokens`` exceeds the model's context ``limit``."""
    if limit is not None and n_tokens > limit:
        raise ItemError(item, f"{n_tokens} tokens is longer than the model's context of {limit} tokens")


def fingerprint_of(path: str, revision: str | None = None) -> str:
    """The weights fingerprint of a local checkpoint directory, or of a hub id (+ revision) when not local."""
    local = Path(path)
    if local.exists():
        return weights_fingerprint(local)
    return f"hub:{path}@{revision or 'main'}"
