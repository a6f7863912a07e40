"""``t2i-corebench:DIR`` — the text prompts of T2I-CoReBench, typed like the paper's four text types.

DIR is the ``data/`` folder of the published repository (the repository root works too): 12 JSON files, each an
object keyed by prompt id whose values hold ``"Main Class"``, ``"Sub Class"``, ``"Prompt"``, ``"Checklist"`` and
``"Remark"``. The file decides the type: composition = the ``C-`` files; deductive = R-LR, R-BR, R-HR, R-PR;
inductive = R-GR, R-AR; abductive = R-CR, R-RR. Prompts come file by file in that order, keys in file order.
"""

from __future__ import annotations

import json
from pathlib import Path

from entroprobe.errors import InputError, LoadError
from entroprobe.sources.base import Prompt

__all__ = ["FILE_TYPES", "load"]

SOURCE = "t2i-corebench"
# file stem → the paper's text type, in the order prompts are listed
FILE_TYPES: dict[str, str] = {
    "C-MI": "composition",
    "C-MA": "composition",
    "C-MR": "composition",
    "C-TR": "composition",
    "R-LR": "deductive",
    "R-BR": "deductive",
    "R-HR": "deductive",
    "R-PR": "deductive",
    "R-GR": "inductive",
    "R-AR": "inductive",
    "R-CR": "abductive",
    "R-RR": "abductive",
}


def load(directory: str) -> list[Prompt]:
    """Load the 12 T2I-CoReBench files of ``directory`` as text prompts.

    Each prompt's id is its key in the file (``"C-MI-001"``); its meta keeps ``file``, ``main_class`` and
    ``sub_class`` (the last two when the record has them).

    Args:
        directory: the ``data/`` folder, or the repository root holding it.

    Raises:
        LoadError: the folder does not exist, some of the 12 files are missing (all are named), a file is unreadable.
        InputError: malformed JSON, a file that is not an object, a record without a non-empty ``"Prompt"``,
            or a prompt id found in two files — each naming the file and the key.
    """
    root = _data_dir(Path(directory).expanduser())
    prompts: list[Prompt] = []
    where: dict[str, str] = {}  # prompt id → file it came from
    for stem, prompt_type in FILE_TYPES.items():
        path = root / f"{stem}.json"
        for key, record in _read_object(path).items():
            if key in where:
                raise InputError(f"{path}: prompt id '{key}' also appears in {where[key]}; ids must be unique")
            where[key] = path.name
            prompts.append(_prompt(path, key, record, prompt_type))
    return prompts


def _data_dir(root: Path) -> Path:
    """The folder that holds the 12 files: ``root`` itself or ``root/data``."""
    if not root.is_dir():
        raise LoadError(f"T2I-CoReBench folder not found: {root} (expected the data/ folder of the repository)")
    if not (root / "C-MI.json").exists() and (root / "data" / "C-MI.json").exists():
        root = root / "data"
    missing = [f"{stem}.json" for stem in FILE_TYPES if not (root / f"{stem}.json").is_file()]
    if missing:
        raise LoadError(
            f"T2I-CoReBench folder {root} lacks {len(missing)} of its 12 files: {', '.join(missing)}"
        )
    return root


def _read_object(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LoadError(f"Cannot read {path}: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object keyed by prompt id, got a {type(data).__name__}")
    return data


def _prompt(path: Path, key: str, record: object, prompt_type: str) -> Prompt:
    if not isinstance(record, dict):
        raise InputError(f"{path}: record '{key}' must be an object, got a {type(record).__name__}")
    text = record.get("Prompt")
    if not isinstance(text, str) or not text.strip():
        got = "no \"Prompt\" field" if "Prompt" not in record else f"\"Prompt\" = {text!r}"
        raise InputError(f"{path}: record '{key}' needs a non-empty string \"Prompt\", got {got}")
    meta = {"file": path.name}
    for field, name in (("Main Class", "main_class"), ("Sub Class", "sub_class")):
        if isinstance(record.get(field), str):
            meta[name] = record[field]
    return Prompt(id=key, source=SOURCE, modality="text", prompt_type=prompt_type, text=text, meta=meta)
