"""The ``micro-world`` prompt set: in the micro models' vocabulary, the shape of ``samples``, true to its pictures."""

from __future__ import annotations

import io
import re
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from entroprobe.models.micro import world
from entroprobe.models.micro.train import load_checkpoint, weights_path
from entroprobe.sources import IMAGE_TYPES, TEXT_TYPES, load_prompts

PROMPTS = load_prompts("micro-world")


@pytest.fixture(scope="module")
def shipped_words():
    """The words the shipped checkpoints know (their own vocabulary, not the grammar's word list)."""
    words = set()
    for variant in ("micro-ar", "micro-mask"):
        words |= set(load_checkpoint(weights_path(variant), "cpu").vocab.words)
    return words


def test_every_word_of_every_prompt_is_in_the_shipped_vocabulary(shipped_words):
    for prompt in PROMPTS:
        tokens = re.findall(r"[a-z]+|[0-9]+|[^\sa-z0-9]", prompt.text.lower())
        assert tokens and set(tokens) <= shipped_words, (prompt.id, set(tokens) - shipped_words)


def test_the_set_has_the_shape_of_samples():
    text = [p for p in PROMPTS if p.modality == "text"]
    image = [p for p in PROMPTS if p.modality == "image"]
    assert Counter((p.prompt_type, p.meta["length"]) for p in text) == \
        {(t, n): 3 for t in TEXT_TYPES for n in ("short", "medium", "long")}
    assert Counter(p.prompt_type for p in image) == dict.fromkeys(IMAGE_TYPES, 4)
    bands = {"short": range(1, 15), "medium": range(30, 61), "long": range(101, 400)}  # words, as in samples
    for p in text:
        assert len(p.text.split()) == p.meta["n_words"] and p.meta["n_words"] in bands[p.meta["length"]], p.id
        assert p.text.endswith("what is in the picture?")
    assert len({p.text for p in PROMPTS if p.modality == "text"}) == 36
    assert [p.id for p in load_prompts("samples")] == [p.id for p in PROMPTS]  # same ids: runs line up


def test_generation_is_deterministic():
    again = load_prompts("micro-world")
    assert [(p.text, p.image_bytes, p.meta) for p in again] == [(p.text, p.image_bytes, p.meta) for p in PROMPTS]


def _scene_of(prompt):
    """Read the picture back with the world's checker (after undoing the 7× enlargement)."""
    image = Image.open(io.BytesIO(prompt.image_bytes)).convert("RGB")
    assert image.size == (224, 224)
    small = np.asarray(image)[3::7, 3::7]  # the centre pixel of every 7×7 block
    assert (np.repeat(np.repeat(small, 7, 0), 7, 1) == np.asarray(image)).all()  # enlarged without smoothing
    return world.read_scene(small)


def test_each_picture_shows_its_caption_and_answers_its_question():
    places = {"top left": (0, 0), "top": (0, 1), "top right": (0, 2), "left": (1, 0), "center": (1, 1),
              "right": (1, 2), "bottom left": (2, 0), "bottom": (2, 1), "bottom right": (2, 2)}
    for prompt in (p for p in PROMPTS if p.modality == "image"):
        seen = _scene_of(prompt)
        assert seen == world.parse_caption(prompt.meta["caption"]), prompt.id
        by_colour = {colour: (shape, size, (row, col)) for colour, shape, size, row, col in seen}
        question, answer = prompt.text, prompt.meta["answer"]
        if question == "how many shapes are there ?":
            assert answer == ["zero", "one", "two"][len(seen)]
        elif m := re.fullmatch(r"what colour is the (\w+) \?", question):
            assert [c for c, (shape, _, _) in by_colour.items() if shape == m[1]] == [answer]
        elif m := re.fullmatch(r"what shape is the (\w+) one \?", question):
            assert by_colour[m[1]][0] == answer
        elif m := re.fullmatch(r"is the (\w+) (\w+) big or small \?", question):
            assert by_colour[m[1]][:2] == (m[2], "large" if answer == "big" else "small")
        elif m := re.fullmatch(r"where is the (\w+) (\w+) \?", question):
            assert by_colour[m[1]][0] == m[2] and by_colour[m[1]][2] == places[answer]
        else:
            m = re.fullmatch(r"is the (\w+) \w+ (left of|right of|above|below) the (\w+) \w+ \?", question)
            (ra, ca), (rb, cb) = by_colour[m[1]][2], by_colour[m[3]][2]
            truth = {"left of": ca < cb, "right of": ca > cb, "above": ra < rb, "below": ra > rb}[m[2]]
            assert answer == ("yes" if truth else "no"), prompt.id


def test_text_prompts_describe_their_scene():
    """A caption prompt names its scene's objects outright; the clue forms name no shape outright."""
    for p in (p for p in PROMPTS if p.modality == "text"):
        objects = world.parse_caption(p.meta["caption"])
        assert len(objects) == (1 if p.meta["length"] == "short" or
                                (p.meta["length"] == "medium" and p.prompt_type != "composition") else 2)
        if p.prompt_type == "composition":
            assert p.text.startswith(p.meta["caption"])
        else:
            assert not any(f" {shape}" in p.text for shape in world.SHAPES), p.id
        if p.prompt_type == "abductive":  # partial: colour and place only
            assert "corner" not in p.text and "side" not in p.text.replace("left side", "").replace("right side", "")
