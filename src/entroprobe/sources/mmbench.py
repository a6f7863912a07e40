"""``mmbench:FILE.tsv`` — the image prompts of an MMBench TSV (VLMEvalKit's format), typed like the paper.

The TSV has a header with at least ``index, question, l2-category, image`` (``hint, A, B, C, D, answer, category``
and more are optional). ``image`` holds a base64 image, or — when 64 characters or fewer — the ``index`` of the
row that holds it. Circular-evaluation copies of a question share ``index % 1_000_000``: only the first row of
each such group becomes a prompt, so each image is probed once per question. Types come from ``l2-category``
(see :data:`L2_TYPES`); the prompt text is the question, after the hint when there is one.

What fails where:

- At load time (:class:`InputError` / :class:`LoadError`, the whole file is refused): a missing or unreadable
  file, missing columns, a row with the wrong number of fields, a non-integer index, an empty question, an
  unknown ``l2-category`` — each naming the line or the row index.
- Later, per item (:class:`ItemError` from ``Prompt.load_image``, which a run records and moves past): an image
  cell that is not valid base64, that refers to a row missing from the file or to a row without an image of its
  own, or bytes that do not decode as an image — each naming the prompt (``mmbench/<index>``) and the reason.
"""

from __future__ import annotations

import base64
import binascii
import csv
from pathlib import Path

from entroprobe.errors import InputError, LoadError
from entroprobe.sources.base import Prompt

__all__ = ["L2_TYPES", "CIRCULAR_STRIDE", "load"]

SOURCE = "mmbench"
CIRCULAR_STRIDE = 1_000_000  # circular copies of row i have index i + k * CIRCULAR_STRIDE
_MAX_REFERENCE = 64  # an image cell this short is the index of another row
# l2-category (lower case, single spaces) → the paper's image type
L2_TYPES: dict[str, str] = {
    "coarse_perception": "coarse",
    "finegrained_perception (instance-level)": "single-instance",
    "finegrained_perception (cross-instance)": "cross-instance",
    "attribute_reasoning": "attribute",
    "relation_reasoning": "relation",
    "logic_reasoning": "logical",
}
_REQUIRED = ("index", "question", "l2-category", "image")
_OPTIONAL_META = (("category", "category"), ("answer", "answer"))


def load(file: str) -> list[Prompt]:
    """Load an MMBench TSV as image prompts, one per question (circular copies merged).

    Prompt ids are ``"mmbench/<index % 1_000_000>"``; meta keeps ``index``, ``l2_category`` and, when present,
    ``category`` and ``answer``. Prompts keep the order of each question's first row.

    Args:
        file: path of the TSV.

    Raises:
        LoadError: the file is missing or unreadable.
        InputError: a malformed file or row (see the module docstring), naming the line or the row index.
    """
    path = Path(file).expanduser()
    rows = _read_rows(path)
    cells = {index: row["image"].strip() for index, row in rows}  # index → image cell (base64 or a reference)
    decoded: dict[int, bytes | str] = {}  # index of an image-holding row → bytes, or why they cannot be had
    prompts: list[Prompt] = []
    seen: set[int] = set()
    for index, row in rows:
        base = index % CIRCULAR_STRIDE
        if base in seen:
            continue
        seen.add(base)
        prompts.append(_prompt(path, base, row, _image(index, cells, decoded)))
    return prompts


def _read_rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    """The rows as (index, column → cell), checked for shape; large base64 cells allowed."""
    if not path.is_file():
        raise LoadError(f"MMBench TSV not found: {path}")
    old_limit = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)  # base64 images exceed csv's default 128 KiB field limit
    try:
        with path.open(encoding="utf-8-sig", newline="") as stream:
            reader = csv.reader(stream, delimiter="\t")
            header = next(reader, None)
            if not header:
                raise InputError(f"{path}: empty file, expected a header with columns {', '.join(_REQUIRED)}")
            missing = [c for c in _REQUIRED if c not in header]
            if missing:
                raise InputError(
                    f"{path}: missing column(s) {', '.join(missing)}; the header has {', '.join(header)}"
                )
            rows = []
            for cells in reader:
                if not cells:
                    continue
                if len(cells) != len(header):
                    raise InputError(
                        f"{path}: line {reader.line_num} has {len(cells)} fields, the header has {len(header)}"
                    )
                row = dict(zip(header, cells))
                rows.append((_index(path, reader.line_num, row["index"]), row))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LoadError(f"Cannot read MMBench TSV {path}: {exc}") from exc
    finally:
        csv.field_size_limit(old_limit)
    return rows


def _index(path: Path, line: int, cell: str) -> int:
    try:
        return int(cell.strip())
    except ValueError:
        raise InputError(f"{path}: line {line} has index {cell!r}, expected an integer") from None


def _image(index: int, cells: dict[int, str], decoded: dict[int, bytes | str]) -> bytes | str:
    """The image bytes of row ``index``, following a reference; a string says why there are none."""
    cell = cells[index]
    if len(cell) > _MAX_REFERENCE:
        holder = index
    elif not cell:
        return f"row index {index} has an empty image cell"
    else:
        try:
            holder = int(cell)
        except ValueError:
            return f"row index {index}: image cell {cell!r} is neither base64 nor a row index"
        if holder not in cells:
            return f"row index {index}: image refers to row index {holder}, which is not in the file"
        if len(cells[holder]) <= _MAX_REFERENCE:
            return f"row index {index}: image refers to row index {holder}, which holds no image of its own"
    if holder not in decoded:
        try:
            decoded[holder] = base64.b64decode("".join(cells[holder].split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            decoded[holder] = f"row index {holder}: image cell is not valid base64 ({exc})"
    return decoded[holder]


def _prompt(path: Path, base: int, row: dict[str, str], image: bytes | str) -> Prompt:
    l2 = " ".join(row["l2-category"].split()).lower()
    if l2 not in L2_TYPES:
        raise InputError(
            f"{path}: row index {row['index'].strip()} has l2-category {row['l2-category']!r}; "
            f"expected one of: {', '.join(L2_TYPES)}"
        )
    question = row["question"].strip()
    if not question:
        raise InputError(f"{path}: row index {row['index'].strip()} has an empty question")
    hint = row.get("hint", "").strip()
    text = f"{hint}\n{question}" if hint and hint.lower() != "nan" else question
    meta = {"index": int(base), "l2_category": l2}
    for column, key in _OPTIONAL_META:
        if row.get(column, "").strip():
            meta[key] = row[column].strip()
    fields = dict(id=f"{SOURCE}/{base}", source=SOURCE, modality="image", prompt_type=L2_TYPES[l2], text=text)
    if isinstance(image, str):
        return Prompt(**fields, meta=meta, image_error=image)
    return Prompt(**fields, image_bytes=image, meta=meta)
