"""What Harmon's code (wusize/Harmon, written against transformers 4 and mmengine) needs to run here.

- :func:`install_builder` — ``src/builder.py`` is one line, ``BUILDER = mmengine.registry.Registry('builder')``,
  and ``src/models/harmon.py`` imports it to build its parts (``BUILDER.build(vae)``, ``…(llm)``, ``…(mar)``,
  ``…(tokenizer)``). Inference needs nothing else of mmengine (nor of xtuner, which only the configs import).
  When mmengine is not installed, this registers a module ``src.builder`` whose ``BUILDER.build(cfg)`` does what
  the registry does with such configs: ``cfg`` a dict whose ``type`` is a callable → ``type(**other keys)``
  (nested dicts are left for the callable to build, as the registry leaves them). Nothing is registered when
  mmengine is importable or ``src.builder`` is already loaded.
- :func:`legacy_cache` — ``Harmon.sample`` starts its KV cache with ``DynamicCache.from_legacy_cache()``
  (transformers 5 removed that constructor) and ``Harmon.curtail_cache`` cuts the cache back to the prompt after
  every MAE step with ``for keys, values in past_key_values`` (transformers 5 yields ``(keys, values,
  sliding_window_tensor)`` triples). Inside the block, the ``DynamicCache`` name of Harmon's module is a subclass
  with ``from_legacy_cache(pairs=None)`` (an empty cache, or one filled layer by layer from ``(keys, values)``
  pairs) whose iteration yields ``(keys, values)`` of each layer — the tensors themselves, so assigning to their
  ``.data`` cuts the cache as it did in transformers 4. The name is restored on exit; nothing is swapped when
  transformers' own ``DynamicCache`` has both behaviours.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Iterator, Mapping
from types import ModuleType
from typing import Any

__all__ = ["ConfigBuilder", "install_builder", "legacy_cache", "cache_needs_shim", "legacy_cache_class"]

BUILDER_MODULE = "src.builder"


class ConfigBuilder:
    """The part of mmengine's ``Registry.build`` Harmon uses: a ``dict(type=callable, **kwargs)`` → its result."""

    def build(self, cfg: Any) -> Any:
        if not isinstance(cfg, Mapping):
            raise TypeError(f"BUILDER.build expects a dict with a 'type'; got {type(cfg).__name__}")
        kwargs = dict(cfg)
        target = kwargs.pop("type", None)
        if not callable(target):
            raise TypeError(f"BUILDER.build: 'type' must be a class or function; got {target!r}")
        return target(**kwargs)


def install_builder(mmengine_present: bool | None = None) -> bool:
    """Register ``src.builder`` with a :class:`ConfigBuilder` when mmengine is missing; True when it was added now.

    Call it after the checkout's ``src`` package is imported (``import_from`` would set a stray one aside)."""
    if mmengine_present is None:
        mmengine_present = importlib.util.find_spec("mmengine") is not None
    if mmengine_present or BUILDER_MODULE in sys.modules:
        return False
    module = ModuleType(BUILDER_MODULE)
    module.__doc__ = "entroprobe's stand-in for wusize/Harmon's src/builder.py (mmengine is not installed)"
    module.BUILDER = ConfigBuilder()
    module.__all__ = ["BUILDER"]
    sys.modules[BUILDER_MODULE] = module
    return True


def cache_needs_shim(cache_cls: type) -> bool:
    """Whether ``cache_cls`` lacks ``from_legacy_cache`` or iterates in something other than pairs."""
    if not hasattr(cache_cls, "from_legacy_cache"):
        return True
    import torch

    cache = cache_cls()
    cache.update(torch.zeros(1, 1, 1, 2), torch.zeros(1, 1, 1, 2), 0)
    return any(len(entry) != 2 for entry in cache)


def legacy_cache_class(cache_cls: type) -> type:
    """A subclass of ``cache_cls`` (transformers' ``DynamicCache``) with the 4.x behaviours (see the module)."""

    class LegacyDynamicCache(cache_cls):  # type: ignore[misc, valid-type]
        @classmethod
        def from_legacy_cache(cls, past_key_values: Any = None) -> Any:
            cache = cls()
            for index, (keys, values, *_) in enumerate(past_key_values or ()):
                cache.update(keys, values, index)
            return cache

        def __iter__(self) -> Iterator[tuple[Any, Any]]:
            for layer in self.layers:
                yield layer.keys, layer.values

    LegacyDynamicCache.__qualname__ = f"Legacy{cache_cls.__name__}"
    return LegacyDynamicCache


@contextlib.contextmanager
def legacy_cache(module: ModuleType, name: str = "DynamicCache") -> Iterator[bool]:
    """Inside the block ``module.<name>`` is :func:`legacy_cache_class` of it when needed; yields whether it is."""
    original = getattr(module, name)
    if not cache_needs_shim(original):
        yield False
        return
    setattr(module, name, legacy_cache_class(original))
    try:
        yield True
    finally:
        setattr(module, name, original)
