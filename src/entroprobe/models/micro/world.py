"""The micro models' synthetic image–text world: scenes, their pictures, captions, riddles and questions.

A scene holds one or two objects on a black 32×32 canvas. Each object has a colour (8), a shape (4), a size
(2: an 8- or 12-pixel box) and a cell of a 3×3 grid, where its box sits on the grid of 4×4 patches. Two
objects never share a colour or a cell and never overlap. Everything is drawn from a ``random.Random``, so a
seed fixes the data.

Text comes from a small grammar:

- a **caption** names every object: ``"a large red circle at the top left and a small blue square in the center"``;
- a **riddle** describes the same scene indirectly, in shuffled clue sentences (``"its colour is the colour of
  grass"``, ``"it has no corners at all"``, ``"it sits near the top edge"``) — the reasoning-style prompt;
- a **question** about a caption or a riddle has a short answer (a colour, a shape, a place, a count, yes/no).

:func:`read_scene` is the deterministic checker: it reads the objects back from any RGB picture (colour by
nearest palette entry, shape by mask statistics, size by extent, place by the box centre), so generated images
can be scored against their prompt. :class:`Vocabulary` maps the grammar's words, the specials and the image
codes to one id space; unknown words become ``<unk>``.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import numpy as np

__all__ = [
    "IMAGE_SIZE",
    "COLOURS",
    "SHAPES",
    "SIZES",
    "ROWS",
    "COLUMNS",
    "SPECIALS",
    "Thing",
    "Scene",
    "HELD_OUT",
    "SPLITS",
    "sample_scene",
    "render",
    "caption",
    "parse_caption",
    "riddle",
    "clue_sentences",
    "question",
    "read_scene",
    "tokenize",
    "grammar_words",
    "Vocabulary",
]

IMAGE_SIZE = 32
PATCH = 4  # objects sit on a grid of 4×4-pixel patches, so a codebook of patches can hold them exactly
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (50, 90, 230),
    "yellow": (235, 215, 40),
    "purple": (150, 70, 200),
    "orange": (245, 140, 30),
    "cyan": (40, 200, 210),
    "white": (235, 235, 235),
}
SHAPES = ("square", "circle", "triangle", "diamond")
SIZES: dict[str, int] = {"small": 8, "large": 12}  # side of the object's bounding box, in pixels
ROWS = ("top", "middle", "bottom")
COLUMNS = ("left", "center", "right")
_BOUNDS = (IMAGE_SIZE / 3, 2 * IMAGE_SIZE / 3)  # a box centre left of 10.7 px is "left", right of 21.3 "right"
_STARTS = {"small": (1, 3, 5), "large": (0, 2, 5)}  # where a box starts in each grid row/column, in patches

SPECIALS = ("<pad>", "<bos>", "<eos>", "<boi>", "<eoi>", "<mask>", "<unk>", "<ans>")


@dataclass(frozen=True)
class Thing:
    """One object of a scene: its colour, shape, size and grid cell."""

    colour: str
    shape: str
    size: str
    row: int  # 0 top, 1 middle, 2 bottom
    col: int  # 0 left, 1 center, 2 right

    @property
    def x(self) -> int:
        """Left edge of the box, in patches."""
        return _STARTS[self.size][self.col]

    @property
    def y(self) -> int:
        """Top edge of the box, in patches."""
        return _STARTS[self.size][self.row]

    @property
    def place(self) -> str:
        """The grid cell in words: ``"top left"``, ``"top"``, ``"center"``, ``"bottom right"``…"""
        return _place(self.row, self.col)

    def key(self) -> tuple[str, str, str, int, int]:
        """The attributes a caption states: ``(colour, shape, size, row, col)``."""
        return (self.colour, self.shape, self.size, self.row, self.col)


@dataclass(frozen=True)
class Scene:
    """One or two objects, in caption order (by grid cell, row by row)."""

    things: tuple[Thing, ...]


def _cell(centre: float) -> int:
    return int(centre > _BOUNDS[0]) + int(centre > _BOUNDS[1])


def _place(row: int, col: int) -> str:
    if row == 1:
        return "center" if col == 1 else COLUMNS[col]
    return ROWS[row] if col == 1 else f"{ROWS[row]} {COLUMNS[col]}"


def _overlap(a: Thing, b: Thing) -> bool:
    sa, sb = SIZES[a.size] // PATCH, SIZES[b.size] // PATCH
    return a.x < b.x + sb and b.x < a.x + sa and a.y < b.y + sb and b.y < a.y + sa


def _sample_thing(rng: random.Random, colour: str | None = None, cell: int | None = None) -> Thing:
    cell = rng.randrange(9) if cell is None else cell
    return Thing(
        colour=colour or rng.choice(list(COLOURS)),
        shape=rng.choice(SHAPES),
        size=rng.choice(list(SIZES)),
        row=cell // 3,
        col=cell % 3,
    )


def _all_keys() -> list[tuple[str, str, str, int, int]]:
    return [(c, s, z, r, k) for c in COLOURS for s in SHAPES for z in SIZES for r in range(3) for k in range(3)]


# One object in ten — a (colour, shape, size, cell) combination — never appears in training data; held-out
# evaluation asks about scenes holding at least one of them, so the metrics measure composition, not recall.
HELD_OUT = frozenset(random.Random(2024).sample(_all_keys(), len(_all_keys()) // 10))
SPLITS = ("train", "test", "any")


def _in_split(scene: Scene, split: str) -> bool:
    novel = any(thing.key() in HELD_OUT for thing in scene.things)
    return split == "any" or novel == (split == "test")


def sample_scene(rng: random.Random, split: str = "any", p_two: float = 0.3) -> Scene:
    """A random scene: one object, or two (probability ``p_two``) of different colours and cells, not overlapping.

    Args:
        rng: the source of randomness.
        split: ``"train"`` (no held-out combination), ``"test"`` (at least one) or ``"any"``.
        p_two: probability of two objects.
    """
    while True:
        scene = _sample_two(rng) if rng.random() < p_two else Scene((_sample_thing(rng),))
        if _in_split(scene, split):
            return scene


def _sample_two(rng: random.Random) -> Scene:
    while True:  # some pairs overlap (a large one next to another object): draw both again
        first = _sample_thing(rng)
        colour = rng.choice([c for c in COLOURS if c != first.colour])
        cell = rng.choice([c for c in range(9) if c != first.row * 3 + first.col])
        second = _sample_thing(rng, colour, cell)
        if not _overlap(first, second):
            return Scene(tuple(sorted((first, second), key=lambda t: (t.row, t.col))))


# -- pictures ---------------------------------------------------------------------------------------------


def _mask(thing: Thing) -> np.ndarray:
    """Boolean (H, W) mask of one object, drawn at pixel centres."""
    grid = np.arange(IMAGE_SIZE) + 0.5
    half = SIZES[thing.size] / 2
    u = (grid[None, :] - thing.x * PATCH - half) / half  # (1, W) in [-1, 1] inside the box
    v = (grid[:, None] - thing.y * PATCH - half) / half  # (H, 1)
    if thing.shape == "square":
        return (np.abs(u) <= 1) & (np.abs(v) <= 1)
    if thing.shape == "circle":
        return u**2 + v**2 <= 1
    if thing.shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1
    return (v >= -1) & (v <= 1) & (np.abs(u) <= (v + 1) / 2)  # triangle, apex up


def render(scene: Scene) -> np.ndarray:
    """The scene's picture, ``(32, 32, 3)`` uint8 on black."""
    image = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    for thing in scene.things:
        image[_mask(thing)] = COLOURS[thing.colour]
    return image


# -- captions ---------------------------------------------------------------------------------------------


def _name(thing: Thing) -> str:
    where = "in the center" if thing.place == "center" else f"at the {thing.place}"
    return f"a {thing.size} {thing.colour} {thing.shape} {where}"


def caption(scene: Scene) -> str:
    """The canonical caption, objects joined by ``and`` in grid order."""
    return " and ".join(_name(thing) for thing in scene.things)


_PLACES = {_place(r, c): (r, c) for r in range(3) for c in range(3)}
_NAME = re.compile(
    rf"a (?P<size>{'|'.join(SIZES)}) (?P<colour>{'|'.join(COLOURS)}) (?P<shape>{'|'.join(SHAPES)}) "
    rf"(?:in the|at the) (?P<place>{'|'.join(sorted(_PLACES, key=len, reverse=True))})"
)


def parse_caption(text: str) -> list[tuple[str, str, str, int, int]]:
    """The objects a caption names, as ``(colour, shape, size, row, col)``; unreadable parts are skipped."""
    found = []
    for part in text.split(" and "):
        match = _NAME.fullmatch(part.strip())
        if match:
            row, col = _PLACES[match["place"]]
            found.append((match["colour"], match["shape"], match["size"], row, col))
    return found


# -- riddles: the same scene described indirectly ---------------------------------------------------------

_COLOUR_CLUES = {
    "red": ("the colour of blood", "the colour of a ripe tomato", "the colour of a fire truck"),
    "green": ("the colour of grass", "the colour of a fresh leaf", "the colour of a lime"),
    "blue": ("the colour of the clear sky", "the colour of the deep sea", "the colour of a sapphire"),
    "yellow": ("the colour of a lemon", "the colour of a banana", "the colour of the sun"),
    "purple": ("the colour of a plum", "the colour of grapes", "the colour of lavender"),
    "orange": ("the colour of a carrot", "the colour of a pumpkin", "the colour of a tangerine"),
    "cyan": ("the colour of a swimming pool", "the colour of turquoise", "the colour of a glacier"),
    "white": ("the colour of snow", "the colour of milk", "the colour of a cloud"),
}
_SHAPE_CLUES = {
    "square": ("it has four equal sides and four right angles", "it looks like a box seen from the front"),
    "circle": ("it has no corners at all", "it is round like a coin", "it is round like a wheel"),
    "triangle": ("it has exactly three corners", "it points upward like a roof", "it has three sides"),
    "diamond": ("it is a square standing on one corner", "it looks like a kite", "it has four corners and no right angle"),
}
_SIZE_CLUES = {
    "small": ("it is tiny", "it is not big", "it takes up little space"),
    "large": ("it is big", "it is not small", "it takes up a lot of space"),
}
_ROW_CLUES = (
    ("near the top edge", "in the upper part"),
    ("halfway between the top and the bottom", "at mid height"),
    ("near the bottom edge", "in the lower part"),
)
_COLUMN_CLUES = (
    ("on the left side", "near the left edge"),
    ("in the middle from left to right", "neither left nor right"),
    ("on the right side", "near the right edge"),
)
_ORDINALS = ("first", "second")
_COUNTS = ("zero", "one", "two")


def _clues(thing: Thing, rng: random.Random, subject: str) -> list[str]:
    """Four clue sentences about one object; ``subject`` is ``"it"`` or ``"the first one"``…"""
    colour = "its colour" if subject == "it" else f"the colour of {subject}"
    return [
        rng.choice(_SHAPE_CLUES[thing.shape]).replace("it ", f"{subject} ", 1),
        f"{colour} is {rng.choice(_COLOUR_CLUES[thing.colour])}",
        rng.choice(_SIZE_CLUES[thing.size]).replace("it ", f"{subject} ", 1),
        f"{subject} sits {rng.choice(_ROW_CLUES[thing.row])} and {rng.choice(_COLUMN_CLUES[thing.col])}",
    ]


def clue_sentences(thing: Thing, subject: str = "it") -> dict[str, tuple[str, ...]]:
    """Every clue sentence the grammar has for one object, by what it tells: ``colour``, ``shape``, ``size``,
    ``row`` and ``column`` (each tuple in the grammar's order; :func:`riddle` draws one of each)."""
    colour = "its colour" if subject == "it" else f"the colour of {subject}"
    return {
        "colour": tuple(f"{colour} is {clue}" for clue in _COLOUR_CLUES[thing.colour]),
        "shape": tuple(clue.replace("it ", f"{subject} ", 1) for clue in _SHAPE_CLUES[thing.shape]),
        "size": tuple(clue.replace("it ", f"{subject} ", 1) for clue in _SIZE_CLUES[thing.size]),
        "row": tuple(f"{subject} sits {clue}" for clue in _ROW_CLUES[thing.row]),
        "column": tuple(f"{subject} sits {clue}" for clue in _COLUMN_CLUES[thing.col]),
    }


def riddle(scene: Scene, rng: random.Random) -> str:
    """The scene described indirectly, clue by clue in shuffled order (a reasoning-style prompt)."""
    if len(scene.things) == 1:
        clues = _clues(scene.things[0], rng, "it")
        rng.shuffle(clues)
        return "there is one shape in the picture . " + " . ".join(clues) + " ."
    parts = ["there are two shapes in the picture"]
    for ordinal, thing in zip(_ORDINALS, scene.things):
        clues = _clues(thing, rng, f"the {ordinal} one")
        rng.shuffle(clues)
        parts.extend(clues)
    return " . ".join(parts) + " ."


def question(scene: Scene, rng: random.Random) -> tuple[str, str]:
    """A question about the scene and its short answer."""
    things = scene.things
    thing = rng.choice(things)
    kind = rng.randrange(6 if len(things) == 2 else 5)
    if kind == 0:
        return f"what colour is the {thing.shape} ?", thing.colour
    if kind == 1:
        return f"what shape is the {thing.colour} one ?", thing.shape
    if kind == 2:
        return f"where is the {thing.colour} {thing.shape} ?", thing.place
    if kind == 3:
        return f"is the {thing.colour} {thing.shape} big or small ?", "big" if thing.size == "large" else "small"
    if kind == 4:
        return "how many shapes are there ?", _COUNTS[len(things)]
    a, b = rng.sample(things, 2)
    relation = rng.choice(("left of", "right of", "above", "below"))
    truth = {"left of": a.col < b.col, "right of": a.col > b.col, "above": a.row < b.row, "below": a.row > b.row}
    return f"is the {a.colour} {a.shape} {relation} the {b.colour} {b.shape} ?", "yes" if truth[relation] else "no"


# -- the checker ------------------------------------------------------------------------------------------

_PALETTE = np.array([(0, 0, 0), *COLOURS.values()], dtype=np.float32)  # (9, 3): background first
_MIN_PIXELS = 12  # fewer pixels of a colour than this is noise, not an object


def _shape_of(mask: np.ndarray) -> str:
    """Shape by mask statistics: fill of the bounding box, then top-half versus bottom-half mass."""
    ys, xs = np.nonzero(mask)
    height, width = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    fill = mask.sum() / (height * width)
    if fill > 0.9:
        return "square"
    if fill > 0.68:
        return "circle"
    middle = (ys.min() + ys.max()) / 2
    top, bottom = (ys < middle).sum(), (ys > middle).sum()
    return "triangle" if top < 0.6 * bottom else "diamond"


def read_scene(image: np.ndarray) -> list[tuple[str, str, str, int, int]]:
    """Read the objects back from a picture: ``(colour, shape, size, row, col)`` in grid order.

    Every pixel takes its nearest palette colour (black is background); each colour with at least 12 pixels
    is one object. Its shape comes from :func:`_shape_of`, its size from the longer side of its box (10 pixels
    or more is large), its cell from the box centre.

    Args:
        image: ``(H, W, 3)`` RGB array (uint8 or float in 0–255); 32×32 in practice.
    """
    pixels = np.asarray(image, dtype=np.float32)[..., :3]
    distance = ((pixels[:, :, None, :] - _PALETTE[None, None]) ** 2).sum(-1)  # (H, W, 9)
    nearest = distance.argmin(-1)  # (H, W)
    found = []
    for index, colour in enumerate(COLOURS, start=1):
        mask = nearest == index
        if mask.sum() < _MIN_PIXELS:
            continue
        ys, xs = np.nonzero(mask)
        extent = max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)
        size = "large" if extent >= 10 else "small"
        cx, cy = (xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2  # box centre, in pixels
        found.append((colour, _shape_of(mask), size, _cell(cy), _cell(cx)))
    return sorted(found, key=lambda t: (t[3], t[4]))


# -- words ------------------------------------------------------------------------------------------------

_TOKEN = re.compile(r"[a-z]+|[0-9]+|[^\sa-z0-9]")


def tokenize(text: str) -> list[str]:
    """Lower-case words, numbers and single punctuation marks: ``"Where's it?"`` → ``where ' s it ?``."""
    return _TOKEN.findall(text.lower())


def grammar_words() -> list[str]:
    """Every word the grammar can produce, sorted (the micro models' word vocabulary)."""
    texts = [" ".join(COLOURS), " ".join(SHAPES), " ".join(SIZES), " ".join(_PLACES), "a and in at the big"]
    texts += [" ".join(_COUNTS), " ".join(_ORDINALS), "yes no left of right of above below . ?"]
    texts += ["there is one shape in the picture are two shapes one s colour its"]
    texts += ["what colour is shape where big or small how many describe do you see draw"]
    for clues in (*_COLOUR_CLUES.values(), *_SHAPE_CLUES.values(), *_SIZE_CLUES.values(), *_ROW_CLUES, *_COLUMN_CLUES):
        texts.extend(clues)
    texts += ["sits", "first", "second"]
    return sorted({word for text in texts for word in tokenize(text)})


class Vocabulary:
    """One id space: the specials, then the words, then the image codes.

    ``<pad>`` is 0; a word the vocabulary lacks becomes ``<unk>``; image code ``k`` is ``code_offset + k``.
    """

    def __init__(self, words: list[str], num_codes: int):
        self.words = list(words)
        self.num_codes = num_codes
        self.itos = [*SPECIALS, *self.words]
        self.stoi = {token: index for index, token in enumerate(self.itos)}
        self.code_offset = len(self.itos)
        self.size = self.code_offset + num_codes

    def __getattr__(self, name: str) -> int:
        # vocab.bos, vocab.eos, vocab.boi, vocab.eoi, vocab.mask, vocab.unk, vocab.ans, vocab.pad
        if name.startswith("_") or f"<{name}>" not in SPECIALS:
            raise AttributeError(name)
        return SPECIALS.index(f"<{name}>")

    def encode(self, text: str) -> list[int]:
        """Text → word ids (unknown words → ``<unk>``)."""
        return [self.stoi.get(word, self.unk) for word in tokenize(text)]

    def decode(self, ids: list[int]) -> str:
        """Word ids → text; ``<unk>`` stays, the other specials and the image codes are left out."""
        return " ".join(self.itos[i] for i in ids if len(SPECIALS) <= i < self.code_offset or i == self.unk)

    def __repr__(self) -> str:
        return f"Vocabulary(words={len(self.words)}, num_codes={self.num_codes})"
