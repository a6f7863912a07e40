"""What JanusFlow's code (``deepseek-ai/Janus``, ``janus/janusflow/models``), written against transformers 4.38,
needs under transformers 5.

- :func:`dataclass_safe_configs` — transformers 5 turns every ``PretrainedConfig`` subclass into a dataclass
  when the class is created (``PretrainedConfig.__init_subclass__``). JanusFlow's ``VisionUnderstandEncoderConfig``,
  ``VisionGenerationEncoderConfig`` and ``VisionGenerationDecoderConfig`` declare ``params: AttrDict = {}``, a
  mutable class default that ``dataclasses`` refuses ("mutable default ... is not allowed"), so importing
  ``janus.janusflow.models`` fails. Inside this block, a config class being created has each mutable class default
  (a value whose type is unhashable: dict, list, set, AttrDict) replaced by ``dataclasses.field(default_factory=...)``
  making a copy of it before transformers' own ``__init_subclass__`` runs; the classes' own ``__init__`` still sets
  every attribute. It patches only when ``PretrainedConfig`` is a dataclass (transformers >= 5) and restores
  ``__init_subclass__`` when the block ends.
- :func:`with_post_init` — transformers 5's ``from_pretrained`` reads attributes that ``PreTrainedModel.post_init``
  sets (``all_tied_weights_keys``); ``MultiModalityCausalLM.__init__`` never calls ``post_init``, so loading fails
  with "has no attribute 'all_tied_weights_keys'". This returns a subclass, made at run time, whose ``__init__`` calls
  the model's own ``__init__`` and then ``post_init()`` when the instance lacks that attribute (transformers >= 5);
  with transformers 4 it returns the class unchanged. The weights' names and the forward pass are the model's own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
from collections.abc import Iterator
from typing import Any

__all__ = ["dataclass_safe_configs", "mutable_defaults_to_factories", "needs_post_init", "with_post_init"]


def mutable_defaults_to_factories(cls: type) -> list[str]:
    """Replace the mutable class defaults of ``cls``'s own annotated fields by ``default_factory`` fields that copy
    them; returns the names replaced (in place, on ``cls``)."""
    replaced = []
    for name in inspect.get_annotations(cls):
        if name not in vars(cls):
            continue
        value = vars(cls)[name]
        if isinstance(value, dataclasses.Field) or type(value).__hash__ is not None:
            continue
        setattr(cls, name, dataclasses.field(default_factory=lambda value=value: type(value)(value)))
        replaced.append(name)
    return replaced


@contextlib.contextmanager
def dataclass_safe_configs() -> Iterator[bool]:
    """Let config classes with mutable class defaults be created (see the module docstring); yields whether a
    patch was needed and installed."""
    from transformers import PretrainedConfig

    if not dataclasses.is_dataclass(PretrainedConfig):
        yield False
        return
    had_own = "__init_subclass__" in vars(PretrainedConfig)
    original = vars(PretrainedConfig).get("__init_subclass__")

    def init_subclass(cls: type, *args: Any, **kwargs: Any) -> None:
        mutable_defaults_to_factories(cls)
        if original is not None:
            original.__func__(cls, *args, **kwargs)
        else:  # pragma: no cover - transformers >= 5 defines its own
            super(PretrainedConfig, cls).__init_subclass__(*args, **kwargs)

    PretrainedConfig.__init_subclass__ = classmethod(init_subclass)  # type: ignore[assignment]
    try:
        yield True
    finally:
        if had_own:
            PretrainedConfig.__init_subclass__ = original  # type: ignore[assignment]
        else:  # pragma: no cover
            del PretrainedConfig.__init_subclass__


def needs_post_init() -> bool:
    """Whether this transformers' ``from_pretrained`` needs ``post_init`` to have run (transformers >= 5)."""
    import transformers

    return int(transformers.__version__.split(".")[0]) >= 5


_WRAPPED: dict[type, type] = {}


def with_post_init(model_class: type) -> type:
    """``model_class``, or a subclass of it whose ``__init__`` ends with ``post_init()`` (see the module docstring);
    the same subclass on every call."""
    if not needs_post_init():
        return model_class
    if model_class in _WRAPPED:
        return _WRAPPED[model_class]

    def __init__(self: Any, config: Any, *args: Any, **kwargs: Any) -> None:
        model_class.__init__(self, config, *args, **kwargs)
        if "all_tied_weights_keys" not in vars(self):
            self.post_init()

    wrapped = type(model_class.__name__, (model_class,), {"__init__": __init__, "__module__": model_class.__module__,
                                                          "__qualname__": model_class.__qualname__})  # fmt: skip
    _WRAPPED[model_class] = wrapped
    return wrapped
