"""Plain-file prompt sources: ``jsonl:FILE`` (text prompts) and ``images:DIR`` (image prompts)."""

from __future__ import annotations

import json
from pathlib import Path

from entroprobe.errors import InputError, LoadError
from entroprobe.sources.base import Prompt

__all__ = ["IMAGE_EXTENSIONS", "UNTYPED", "load_jsonl", "load_images"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
UNTYPED = "untyped"  # the prompt type of a JSONL line without "type" and of an image directly in DIR


def load_jsonl(file: str) -> list[Prompt]:
    """Load text prompts from a JSON Lines file, one object a line, in file order.

    Each object has ``"id"`` (string or integer), ``"text"`` (non-empty string) and optionally ``"type"``
    (default ``"untyped"``); its other scalar fields go to ``meta`` as strings. Blank lines are skipped.

    Args:
        file: path of the ``.jsonl`` file.

    Raises:
        LoadError: the file is missing or unreadable.
        InputError: a line that is not a JSON object, lacks ``id`` or ``text``, has a non-string ``type``,
            or repeats an id (naming the line number); a file without any prompt.
    """
    path = Path(file).expanduser()
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise LoadError(f"Cannot read JSONL prompts {path}: {exc}") from exc
    prompts: list[Prompt] = []
    first_line: dict[str, int] = {}  # id → line it was defined on
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        prompt = _jsonl_prompt(path, number, line)
        if prompt.id in first_line:
            raise InputError(f"{path} line {number}: id '{prompt.id}' already used on line {first_line[prompt.id]}")
        first_line[prompt.id] = number
        prompts.append(prompt)
    if not prompts:
        raise InputError(f"{path}: no prompts found, expected one JSON object a line with 'id' and 'text'")
    return prompts


def _jsonl_prompt(path: Path, number: int, line: str) -> Prompt:
    where = f"{path} line {number}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(record, dict):
        raise InputError(f"{where}: expected a JSON object with 'id' and 'text', got a {type(record).__name__}")
    prompt_id = record.get("id")
    if isinstance(prompt_id, bool) or not isinstance(prompt_id, (str, int)) or str(prompt_id) == "":
        raise InputError(f"{where}: 'id' must be a non-empty string or an integer, got {prompt_id!r}")
    text = record.get("text")
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{where}: 'text' must be a non-empty string, got {text!r}")
    prompt_type = record.get("type", UNTYPED)
    if not isinstance(prompt_type, str) or not prompt_type:
        raise InputError(f"{where}: 'type' must be a non-empty string, got {prompt_type!r}")
    meta = {  # JSON scalars keep their type (prompt_meta in the results is JSON)
        key: value
        for key, value in record.items()
        if key not in ("id", "text", "type") and isinstance(value, (str, int, float, bool))
    }
    return Prompt(id=str(prompt_id), source="jsonl", modality="text", prompt_type=prompt_type, text=text, meta=meta)


def load_images(directory: str) -> list[Prompt]:
    """Load image prompts from a folder tree, sorted by relative path.

    The prompt type is the name of the first sub-folder under ``directory`` (``"untyped"`` for images directly
    in it); the id is the POSIX path relative to ``directory``. An optional text file beside an image with the
    same stem (``cat.png`` + ``cat.txt``) gives the prompt text. Hidden files and folders are skipped. Images are
    read lazily: an unreadable one raises :class:`ItemError` from ``Prompt.load_image``.

    Args:
        directory: the root folder.

    Raises:
        LoadError: the folder does not exist or a text file is unreadable.
        InputError: the folder holds no image file (the extensions looked for are named).
    """
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise LoadError(f"Image prompt folder not found: {root}")
    files = sorted(
        (p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    prompts = []
    for path in files:
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue
        prompts.append(
            Prompt(
                id=relative.as_posix(),
                source="images",
                modality="image",
                prompt_type=relative.parts[0] if len(relative.parts) > 1 else UNTYPED,
                text=_sidecar_text(path),
                image_path=str(path.resolve()),
                meta={"file": relative.as_posix()},
            )
        )
    if not prompts:
        raise InputError(f"{root}: no image files found (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return prompts


def _sidecar_text(image: Path) -> str | None:
    text_file = image.with_suffix(".txt")
    if not text_file.is_file():
        return None
    try:
        return text_file.read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError) as exc:
        raise LoadError(f"Cannot read the prompt text {text_file}: {exc}") from exc
