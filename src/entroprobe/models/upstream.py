"""Models that live in their own repositories: find the user's checkout, import its code, record its commit.

entroprobe never ships these models' code. A family such as ``bagel`` imports it from the user's clone of the
authors' repository at run time::

    entroprobe run --model bagel:/ckpt/BAGEL-7B-MoT --model-args repo=/src/Bagel ...

``repo=PATH`` names the checkout; without it, ``$ENTROPROBE_UPSTREAM/<Name>`` is used when that variable is set
(the layout the upstream tests use: ``$ENTROPROBE_UPSTREAM/Bagel``, ``…/Harmon``, ``…/Show-o``, ``…/Janus``,
``…/OmniGen2``), and then an installed package where the project publishes one (``janus``).

What this module gives a family:

- :class:`Upstream`: one record per repository — where to clone it, the file that marks a checkout, the
  top-level packages it adds to ``sys.path``, the commits and transformers versions it was tested with, and
  its licence note (the user's checkout governs its own use);
- :func:`checkout`: the checkout's path, or a :class:`~entroprobe.errors.LoadError` that says how to get one;
- :func:`import_from`: a module of the checkout, imported from it (packages of the same name that another
  checkout loaded — Show-o's and Show-o2's ``models`` — are set aside first);
- :func:`provenance`: the checkout's path, commit and whether it has local changes, for ``manifest.json``;
- :func:`settings`: a family's defaults table (:mod:`.defaults`) with the user's ``--model-args`` over it, each
  value parsed to the type of its default;
- :class:`UpstreamAdapter`: the parts every such adapter shares (fingerprint, description, defaults record).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from entroprobe.errors import InputError, LoadError
from entroprobe.models.base import ModelAdapter, Reading, tokenizer_reading, weights_fingerprint
from entroprobe.models.defaults import Default, record

__all__ = [
    "ENV",
    "Upstream",
    "checkout",
    "import_from",
    "provenance",
    "settings",
    "parse_value",
    "UpstreamAdapter",
]

ENV = "ENTROPROBE_UPSTREAM"  # a folder of checkouts, one per repository, named as Upstream.name


@dataclass(frozen=True)
class Upstream:
    """One authors' repository a family imports its code from.

    Attributes:
        name: the folder name of a clone (``Bagel``), as ``git clone`` makes it.
        github: ``owner/name`` to clone.
        marker: a file, relative to the import root, that every checkout has and nothing else does.
        packages: the top-level modules the family imports from the checkout (``modeling``, ``data``).
        subdir: the import root inside the checkout (``show-o2`` for Show-o2), empty for the checkout itself.
        package: an installed package that may stand in for a checkout (``janus`` from ``pip install -e .``).
        tested: ``(commit, date)`` of the checkouts the upstream tests passed against.
        transformers: the transformers versions it was tested with.
        licence: what the docs say of the code's licence.
    """

    name: str
    github: str
    marker: str
    packages: tuple[str, ...]
    subdir: str = ""
    package: str | None = None
    tested: tuple[tuple[str, str], ...] = ()
    transformers: str = ""
    licence: str = ""

    def hint(self) -> str:
        return f"clone {self.github} and pass repo=PATH (or set {ENV} to a folder holding {self.name}/)"


def checkout(spec: Upstream, repo: str | os.PathLike[str] | None) -> Path | None:
    """The import root of the user's checkout of ``spec`` (``repo``, else ``$ENTROPROBE_UPSTREAM/<name>``), or
    None when no checkout is named and ``spec.package`` is installed.

    Raises:
        LoadError: no checkout at the path given, a folder that is not one (its marker file is missing), or
            neither a checkout nor the package — each saying how to get one.
    """
    if repo is None and os.environ.get(ENV):
        candidate = Path(os.environ[ENV]).expanduser() / spec.name
        if candidate.exists():
            repo = candidate
    if repo is None:
        if spec.package and importlib.util.find_spec(spec.package) is not None:
            return None
        raise LoadError(f"{spec.name} code is needed and no checkout was named: {spec.hint()}")
    root = Path(repo).expanduser().resolve()
    if not root.is_dir():
        raise LoadError(f"no {spec.name} checkout at {root}; {spec.hint()}")
    base = root / spec.subdir if spec.subdir else root
    if not (base / spec.marker).is_file():
        raise LoadError(
            f"{root} is not a {spec.name} checkout: it lacks {Path(spec.subdir, spec.marker).as_posix()}; {spec.hint()}"
        )
    return base


def _belongs(module: ModuleType, root: Path) -> bool:
    """Was top-level ``module`` imported from ``root`` itself (``root/pkg/__init__.py``, ``root/mod.py``), not from a
    folder above or below it? (Show-o's ``models`` lives in the root of a clone whose ``show-o2/models`` is
    Show-o2's: the parent folder alone cannot tell them apart.)"""
    file = getattr(module, "__file__", None)
    if file:
        where = Path(file).resolve()
        folder = where.parent.parent if where.name == "__init__.py" else where.parent
        return folder == root
    return any(Path(entry).resolve().parent == root for entry in getattr(module, "__path__", []) or [])


def import_from(root: Path | None, name: str, spec: Upstream | None = None) -> ModuleType:
    """Import module ``name`` (``"modeling.bagel"``) from the checkout at ``root`` (None: as installed).

    The checkout's root goes first on ``sys.path``. A top-level package of ``spec.packages`` already loaded
    from somewhere else (another checkout's ``models``) is removed from ``sys.modules`` first, with its
    submodules, so this checkout's code is what runs; objects made from the other one keep working.

    Raises:
        LoadError: when the module cannot be imported (a dependency of the checkout is missing, say), naming
            the module, the checkout and the error.
    """
    if root is not None:
        root = root.resolve()
        tops = set(spec.packages if spec else ()) | {name.split(".")[0]}
        for top in tops:
            loaded = sys.modules.get(top)
            if loaded is not None and not _belongs(loaded, root):
                for key in [k for k in sys.modules if k == top or k.startswith(top + ".")]:
                    del sys.modules[key]
        if str(root) in sys.path:
            sys.path.remove(str(root))
        sys.path.insert(0, str(root))
        importlib.invalidate_caches()
    where = f"the checkout at {root}" if root is not None else "the installed package"
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise LoadError(
            f"cannot import {name} from {where}: {exc}. Install the repository's own requirements beside "
            "entroprobe (see docs/upstream.md)"
        ) from exc
    except LoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - code that fails while it imports (another release of a library)
        raise LoadError(
            f"importing {name} from {where} failed: {type(exc).__name__}: {exc}. The family was tested with the "
            "commit and transformers release `entroprobe models` names"
        ) from exc


def provenance(root: Path | None, spec: Upstream) -> dict[str, Any]:
    """``{"repository", "path", "commit", "dirty"}`` of the checkout (commit None when it is no git clone)."""
    out: dict[str, Any] = {"repository": spec.github, "path": None, "commit": None, "dirty": None}
    if root is None:
        module = importlib.util.find_spec(spec.package) if spec.package else None
        out["path"] = str(Path(module.origin).parent) if module and module.origin else None
        return out
    out["path"] = str(root)
    git = ["git", "-C", str(root)]
    try:
        commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if commit.returncode == 0:
            out["commit"] = commit.stdout.strip()
            status = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                    text=True, timeout=30)  # fmt: skip
            out["dirty"] = bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    return out


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_value(key: str, value: Any, default: Any) -> Any:
    """A setting's value → the type of its ``default`` (bool, int, float, str, tuple).

    ``--model-args`` gives strings, or numbers and booleans already converted. A tuple is written with its items
    separated by ``x`` or ``;`` when they are numbers (``image_size=1024x768``, ``cfg_interval=0.4x1``), by ``;``
    when they are strings (commas separate the model arguments); from Python, a list or tuple (or a string as
    on the command line, where numbers may also be separated by commas).

    Raises:
        InputError: naming the key, the value and the type expected.
    """
    if default is None:
        return value
    kind = type(default).__name__
    try:
        if isinstance(default, tuple):
            return _parse_tuple(value, default)
        if isinstance(default, bool):
            if isinstance(value, bool):
                return value
            low = str(value).strip().lower()
            if low not in _TRUE | _FALSE:
                raise ValueError("expected true or false")
            return low in _TRUE
        if isinstance(value, bool):
            raise ValueError(f"expected a {kind}, not true/false")
        if isinstance(default, int):
            number = float(value) if not isinstance(value, str) else None
            if number is not None and number != int(number):
                raise ValueError("expected a whole number")
            return int(value) if isinstance(value, str) else int(number)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, str):
            return str(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{key}={value!r} does not parse as {kind}: {exc}") from None
    return value


def _parse_tuple(value: Any, default: tuple) -> tuple:
    """A tuple setting from a list or tuple, or from a string of items (see :func:`parse_value`)."""
    numeric = bool(default) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in default)
    if isinstance(value, (list, tuple)):
        items = list(value)
    elif isinstance(value, str):
        separated = value.replace("x", ";").replace(",", ";") if numeric else value
        items = [v.strip() for v in separated.split(";") if v.strip()]
    else:
        form = "numbers separated by x (e.g. 1024x768)" if numeric else "strings separated by ;"
        raise ValueError(f"expected {len(default) or 'several'} {form}")
    cast = type(default[0]) if default else str
    if numeric and cast is int and any(isinstance(v, float) and v != int(v) for v in items):
        raise ValueError("expected whole numbers")
    return tuple(cast(v) for v in items)


def settings(table: Mapping[str, Default], given: Mapping[str, Any], *, what: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(values, given)``: ``table``'s defaults with the user's ``given`` over them, each parsed to its default's
    type, and the parsed ``given`` (what :func:`~entroprobe.models.defaults.record` records as overrides).

    Raises:
        InputError: a key the table lacks (listing the keys it has), or a value that does not parse.
    """
    unknown = sorted(set(given) - set(table))
    if unknown:
        raise InputError(f"Unknown {what} setting(s) {', '.join(unknown)}; accepted: {', '.join(sorted(table))}")
    parsed = {key: parse_value(key, value, table[key].value) for key, value in given.items()}
    values = {key: default.value for key, default in table.items()}
    values.update(parsed)
    return values, parsed


class UpstreamAdapter(ModelAdapter):
    """What every adapter over an authors' repository shares.

    Attributes:
        path: the checkpoint directory the weights came from (fingerprinted).
        root: the checkout's import root (None: the installed package).
        upstream: its :class:`Upstream` record (a class attribute of the family).
        tables: ``{task: (defaults table, user's overrides)}`` recorded in ``manifest.json`` under ``defaults``.
    """

    upstream: Upstream

    def __init__(self, *, path: str, root: Path | None, device: torch.device, num_layers: int, d_model: int,
                 final_norm: bool | None, tables: Mapping[str, tuple[Mapping[str, Default], Mapping[str, Any]]]):  # fmt: skip
        self.path = str(path)
        self.root = root
        self.device = device
        self.num_layers = int(num_layers)
        self.d_model = int(d_model)
        self.final_norm = final_norm
        self.tables = dict(tables)
        self.name = f"{self.family}:{path}"

    @classmethod
    def split(cls, kwargs: Mapping[str, Any], accepted: tuple[str, ...]) -> tuple[Path | None, dict[str, Any]]:
        """``(checkout root, the other keywords)`` of a family's loading keywords.

        Raises:
            InputError: a keyword outside ``repo`` and ``accepted``, listing them.
            LoadError: see :func:`checkout`.
        """
        unknown = sorted(set(kwargs) - {"repo", *accepted})
        if unknown:
            raise InputError(f"Unknown model argument(s) {', '.join(unknown)} for {cls.family}; accepted: "
                             f"{', '.join(['repo', *accepted])}")  # fmt: skip
        rest = {k: v for k, v in kwargs.items() if k != "repo"}
        return checkout(cls.upstream, kwargs.get("repo")), rest

    @staticmethod
    def generation_settings(kwargs: Mapping[str, Any], text_table: Mapping[str, Default],
                            image_table: Mapping[str, Default]) -> tuple[dict, dict, dict, dict]:  # fmt: skip
        """``(text values, text given, image values, image given)``: the keywords of each table parsed over its
        defaults (see :func:`settings`); the other keywords are left for loading."""
        text, text_given = settings(text_table, {k: v for k, v in kwargs.items() if k in text_table},
                                    what="text-gen")  # fmt: skip
        image, image_given = settings(image_table, {k: v for k, v in kwargs.items() if k in image_table},
                                      what="image-gen")  # fmt: skip
        return text, text_given, image, image_given

    @staticmethod
    def for_call(table: Mapping[str, Default], current: Mapping[str, Any], generation: Mapping[str, Any], *,
                 what: str = "image-gen") -> dict[str, Any]:  # fmt: skip
        """One call's settings: ``current`` (the load-time values) with the call's keywords over them, each parsed
        to its default's type.

        Raises:
            InputError: a keyword ``table`` lacks, or a value that does not parse.
        """
        _, given = settings(table, generation, what=what)
        return {**current, **given}

    def _text_rows(self, texts: list[str]) -> list[torch.Tensor]:
        """The ids ``(T,)`` of each text to encode (no template), each checked: not empty, within the context.

        Raises:
            CapabilityError: a family that does not encode text.
            ItemError: an empty text, or one longer than the context (naming it).
        """
        from entroprobe.models.hf import prompt_item, tokenize_checked

        self.require("encode", "text")
        return [tokenize_checked(self.tokenizer, text, limit=self.context, item=prompt_item(text))[0] for text in texts]

    def _image_prompts(self, images: list[Any], instructions: list[str | None] | None) -> list[tuple[Any, str | None, str]]:
        """The image prompts of a batch to encode, checked: ``(picture, instruction, item)`` each, the picture read.

        Raises:
            CapabilityError: a family that does not encode images.
            ItemError: an image that cannot be read (naming it).
        """
        from entroprobe.models.hf import load_image, prompt_item

        self.require("encode", "image")
        checked = []
        for image, instruction in zip(images, instructions or [None] * len(images)):
            item = prompt_item(instruction, image)
            checked.append((load_image(image, item), instruction, item))
        return checked

    def _replies(self, prompts: list[tuple[str | None, Any]]) -> list[tuple[str | None, Any, str]]:
        """The ``(text, image)`` prompts of a batch of text replies, checked: ``(text, picture or None, item)``
        each, the picture read.

        Raises:
            CapabilityError: a prompt modality the family does not answer.
            InputError: a prompt with neither text nor image.
            ItemError: an image that cannot be read (naming it).
        """
        from entroprobe.models.hf import load_image, prompt_item, require_prompt

        checked = []
        for text, image in prompts:
            self.require("text-gen", "image" if image is not None else "text")
            require_prompt(text, image)
            item = prompt_item(text, image)
            checked.append((text, None if image is None else load_image(image, item), item))
        return checked

    def _question(self, templated: str, text: str | None, ids: torch.Tensor, item: str, render: Any) -> torch.Tensor:
        """The positions of the question ``text`` in ``ids``, the tokens of ``templated`` (``render(q)`` gives the
        template around any question; see :mod:`.prompt_tokens`); none for an empty question."""
        from entroprobe.models.prompt_tokens import locate, question_positions

        if not text or not text.strip():
            return torch.zeros(0, dtype=torch.long)
        return question_positions(self.tokenizer, templated, text, ids.cpu(), item=item, start=locate(render, text))

    def read(self, text: str) -> Reading | None:
        """How the family's ``tokenizer`` reads ``text`` (no special tokens; see :func:`~.base.tokenizer_reading`)."""
        tokenizer = getattr(self, "tokenizer", None)
        return None if tokenizer is None else tokenizer_reading(tokenizer, text)

    def fingerprint(self) -> str:
        """sha256 over the checkpoint's weight files (see :func:`~entroprobe.models.base.weights_fingerprint`)."""
        return weights_fingerprint(self.path)

    def describe(self) -> dict[str, Any]:
        """The common description, the checkout (repository, path, commit) and every default with its source."""
        return {
            **super().describe(),
            "path": self.path,
            "final_norm": self.final_norm,
            "upstream": provenance(self.root, self.upstream),
            "defaults": {task: record(table, given) for task, (table, given) in self.tables.items()},
        }
