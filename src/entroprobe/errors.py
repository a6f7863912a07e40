"""The exceptions entroprobe raises, one base class and a few kinds.

Every error names what it was given, what it expected and where (the layer, the prompt id, the file).
Errors caused by the caller's input subclass :class:`ValueError` as well, so ``except ValueError`` works.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "EntroprobeError",
    "InputError",
    "UnknownNameError",
    "CapabilityError",
    "LoadError",
    "ItemError",
    "unknown_name",
]


class EntroprobeError(Exception):
    """Base class of every error entroprobe raises on purpose."""


class InputError(EntroprobeError, ValueError):
    """The input is malformed: wrong shape, NaN/Inf, out-of-range parameter, unreadable item."""


class UnknownNameError(InputError):
    """A name (model family, prompt source, task, measure) that no registry knows."""


class CapabilityError(EntroprobeError, NotImplementedError):
    """The model cannot do what was asked (e.g. image generation on a text-only model)."""


class LoadError(EntroprobeError, OSError):
    """Weights, a processor, a data file or a run directory could not be loaded."""


class ItemError(InputError):
    """One item (a prompt, an image) failed; the run records it and goes on.

    Attributes:
        item: the id of the item that failed.
        reason: what went wrong, in words.
    """

    def __init__(self, item: str, reason: str):
        super().__init__(f"{item}: {reason}")
        self.item = item
        self.reason = reason


def unknown_name(kind: str, name: str, known: Iterable[str]) -> UnknownNameError:
    """Build the error for an unknown ``name`` of ``kind``, with the closest match and the known names.

    >>> str(unknown_name("model family", "janos", ["janus", "emu3"]))
    "Unknown model family 'janos'. Did you mean 'janus'? Available: emu3, janus"
    """
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return UnknownNameError(f"Unknown {kind} '{name}'.{hint} Available: {', '.join(known)}")
