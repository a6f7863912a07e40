"""``micro-world`` — a built-in prompt set written in the micro models' vocabulary, so every model reads it.

The built-in ``samples`` are everyday English: the micro models (``micro-ar``, ``micro-mask``) know about 120
words and would read half of those tokens as ``<unk>``. This set uses only words of their grammar
(:mod:`entroprobe.models.micro.world`), which minilm and any real model read as well, and keeps the shape of
``samples``:

- 36 text prompts, nine per text type, three each of ``meta["length"]`` short (under 15 words), medium (30-60
  words) and long (over 100 words). Each describes a scene of one or two shapes and ends "what is in the
  picture?": a model answers with a caption, or draws the scene. The micro world has no stories, so each of the
  paper's text types stands for one way of describing the scene (``meta["form"]``):

  - composition: ``caption`` — every object named outright, with how the objects stand to each other;
  - deductive: ``rule clues`` — shape by its corners and sides, size by negation, place by elimination;
  - inductive: ``likeness clues`` — colour, shape, size and place by likeness to known things (a lemon, a kite);
  - abductive: ``partial clues`` — some attributes left out, for the model to fill in.

- 24 image prompts, four per image type: the micro world's 32×32 pictures, enlarged to 224×224 without
  smoothing, each with a question in ``text`` and its answer in ``meta["answer"]`` (coarse: how many shapes;
  single-instance: a colour; cross-instance: a shape; attribute: a size; relation and logical: where things are).

``meta["caption"]`` holds the canonical caption of the scene each prompt describes, so a drawn image can be
checked with :func:`entroprobe.models.micro.world.read_scene`. Everything is generated from fixed seeds: every
call gives identical prompts and PNG bytes.
"""

from __future__ import annotations

import io
import random

from entroprobe.models.micro import world
from entroprobe.sources.base import IMAGE_TYPES, TEXT_TYPES, Prompt

__all__ = ["ASK", "FORMS", "load", "text_prompt", "image_prompt"]

SOURCE = "micro-world"
LENGTHS = ("short", "medium", "long")
SIZE = 224  # image prompts are SIZE × SIZE pixels: the 32×32 picture, each pixel a 7×7 block
FORMS = dict(zip(TEXT_TYPES, ("caption", "rule clues", "likeness clues", "partial clues")))

# which clue variants are rules (definitions, negations, elimination) and which likenesses, by kind; the index
# is the variant's place in world.clue_sentences
_RULE_SHAPE = {"square": 0, "circle": 0, "triangle": 0, "diamond": 2}
_LIKE_SHAPE = {"square": 1, "circle": 1, "triangle": 1, "diamond": 1}
_RULE_SIZE = 1  # "it is not big" / "it is not small"
_LIKE_SIZE = 2  # "it takes up little space" / "it takes up a lot of space"
_ORDINALS = ("first", "second")


def _scene(seed: str, things: int, shape: str | None = None) -> world.Scene:  # the same seed, the same scene
    rng = random.Random(seed)
    while True:
        scene = world.sample_scene(rng, p_two=1.0 if things == 2 else 0.0)
        if len(scene.things) == things and shape in (None, scene.things[0].shape):
            return scene


def _subjects(scene: world.Scene) -> list[str]:
    return ["it"] if len(scene.things) == 1 else [f"the {o} one" for o in _ORDINALS]


def _sentences(*parts: str) -> str:
    return ". ".join(parts) + "."


def _relations(scene: world.Scene, by_order: bool = False) -> list[str]:
    """The true left/right/above/below sentences between the two objects of a scene, each named by its colour
    and shape, or as the first and the second one."""
    a, b = scene.things
    name_a, name_b = ("the first one", "the second one") if by_order else \
        (f"the {a.colour} {a.shape}", f"the {b.colour} {b.shape}")
    out = []
    if a.col != b.col:
        out += [f"{name_a} is {'left' if a.col < b.col else 'right'} of {name_b}",
                f"{name_b} is {'right' if a.col < b.col else 'left'} of {name_a}"]  # fmt: skip
    if a.row != b.row:
        out += [f"{name_a} is {'above' if a.row < b.row else 'below'} {name_b}",
                f"{name_b} is {'below' if a.row < b.row else 'above'} {name_a}"]  # fmt: skip
    return out


def _plain(thing: world.Thing, subject: str) -> list[str]:
    """Each attribute of one object stated outright."""
    where = "in the center" if thing.place == "center" else f"at the {thing.place}"
    return [f"{subject} is a {thing.size} {thing.colour} {thing.shape}", f"the colour of {subject} is {thing.colour}",
            f"{subject} is {'big' if thing.size == 'large' else 'small'}", f"{subject} sits {where}"]  # fmt: skip


def _rules(thing: world.Thing, subject: str) -> list[str]:
    clues = world.clue_sentences(thing, subject)
    colour = "its colour" if subject == "it" else f"the colour of {subject}"
    return [clues["shape"][_RULE_SHAPE[thing.shape]], f"{colour} is {thing.colour}", clues["size"][_RULE_SIZE],
            clues["row"][0], clues["column"][0]]  # fmt: skip


def _likenesses(thing: world.Thing, subject: str) -> list[str]:
    clues = world.clue_sentences(thing, subject)
    return [clues["shape"][_LIKE_SHAPE[thing.shape]], clues["colour"][0], clues["size"][_LIKE_SIZE],
            clues["row"][1], clues["column"][1]]  # fmt: skip


def _opening(scene: world.Scene) -> str:
    return "there is one shape in the picture" if len(scene.things) == 1 else "there are two shapes in the picture"


def text_prompt(prompt_type: str, length: str, k: int) -> tuple[str, world.Scene]:
    """The ``k``-th (from 1) prompt of a text type and length, and the scene it describes.

    Every prompt describes a picture and ends with :data:`ASK`, the micro world's request for it: a model
    answers in words (a caption) or draws it.
    """
    return _describe(prompt_type, length, k) + " " + ASK, _scene(*_scene_of(prompt_type, length, k))


ASK = "what is in the picture?"


def _scene_of(prompt_type: str, length: str, k: int) -> tuple[str, int, str | None]:
    """The scene's seed, object count and, for the short prompts that name one clue, a shape (each k its own)."""
    two = length == "long" or (length == "medium" and prompt_type == "composition")
    return f"{prompt_type}/{length}/{k}", 2 if two else 1, world.SHAPES[k - 1] if length == "short" else None


def _describe(prompt_type: str, length: str, k: int) -> str:
    scene = _scene(*_scene_of(prompt_type, length, k))
    things, subjects = scene.things, _subjects(scene)
    if prompt_type == "composition":
        if length == "short":
            return _sentences(world.caption(scene))
        body = [world.caption(scene), *_relations(scene)]
        if length == "long":
            body += [_opening(scene), *(s for t, who in zip(things, subjects) for s in _plain(t, who)),
                     *_relations(scene, by_order=True)]
        return _sentences(*body)
    describe = {"deductive": _rules, "inductive": _likenesses, "abductive": _rules}[prompt_type]
    clues = [describe(t, who) for t, who in zip(things, subjects)]
    more = [world.clue_sentences(t, who) for t, who in zip(things, subjects)]
    if prompt_type == "abductive":  # their colour and where they are, said two ways; never their shape or size
        clues = [[c[1], c[3], m["colour"][0], c[4]] for c, m in zip(clues, more)]
    if length == "short":
        return _sentences(clues[0][0])
    if length == "medium":
        return _sentences(_opening(scene), *clues[0])
    extra = [s for m in more for s in (*m["colour"][1:], m["row"][1], m["column"][1])]  # the same facts again
    return _sentences(_opening(scene), *(c for group in clues for c in group), *extra)


# image type → (objects in the scene, the question and its answer)
def image_prompt(prompt_type: str, k: int) -> tuple[str, str, world.Scene]:
    """The ``k``-th (from 1) image prompt of an image type: its question, its answer and its scene."""
    two = prompt_type in ("cross-instance", "relation", "logical") or (prompt_type == "coarse" and k % 2 == 0)
    scene = _scene(f"image/{prompt_type}/{k}", 2 if two else 1)
    first, last = scene.things[0], scene.things[-1]
    if prompt_type == "coarse":
        return "how many shapes are there ?", ("one", "two")[len(scene.things) - 1], scene
    if prompt_type == "single-instance":
        return f"what colour is the {first.shape} ?", first.colour, scene
    if prompt_type == "cross-instance":
        return f"what shape is the {last.colour} one ?", last.shape, scene
    if prompt_type == "attribute":
        return f"is the {first.colour} {first.shape} big or small ?", "big" if first.size == "large" else "small", scene
    if prompt_type == "relation":
        return f"where is the {last.colour} {last.shape} ?", last.place, scene
    a, b = scene.things  # logical: a yes/no question about the two objects' places
    relation = ("left of", "right of", "above", "below")[k - 1]
    truth = {"left of": a.col < b.col, "right of": a.col > b.col, "above": a.row < b.row, "below": a.row > b.row}
    return f"is the {a.colour} {a.shape} {relation} the {b.colour} {b.shape} ?", "yes" if truth[relation] else "no", scene


def _png(scene: world.Scene) -> bytes:
    from PIL import Image

    small = Image.fromarray(world.render(scene))
    buffer = io.BytesIO()
    small.resize((SIZE, SIZE), Image.Resampling.NEAREST).save(buffer, format="PNG")
    return buffer.getvalue()


def load() -> list[Prompt]:
    """The set: 36 text prompts, then 24 image prompts.

    Ids are ``"text/<type>/<length>-<k>"`` and ``"image/<type>/<k>"`` (k from 1), as in ``samples``.
    """
    prompts = []
    for prompt_type in TEXT_TYPES:
        for length in LENGTHS:
            for k in (1, 2, 3):
                text, scene = text_prompt(prompt_type, length, k)
                prompts.append(Prompt(
                    id=f"text/{prompt_type}/{length}-{k}", source=SOURCE, modality="text", prompt_type=prompt_type,
                    text=text, meta={"length": length, "n_words": len(text.split()), "form": FORMS[prompt_type],
                                     "caption": world.caption(scene)},
                ))  # fmt: skip
    for prompt_type in IMAGE_TYPES:
        for k in (1, 2, 3, 4):
            question, answer, scene = image_prompt(prompt_type, k)
            prompts.append(Prompt(
                id=f"image/{prompt_type}/{k}", source=SOURCE, modality="image", prompt_type=prompt_type,
                text=question, image_bytes=_png(scene), meta={"answer": answer, "caption": world.caption(scene)},
            ))  # fmt: skip
    return prompts
