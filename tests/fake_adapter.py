"""A fast, deterministic adapter with every capability, for testing the probe run without a real model.

Its states are pseudo-random functions of the prompt (text words, image pixels), so every value is
reproducible and differs between prompts. Prompts whose text contains FAIL_WORD fail as a model error would;
``FAKE_SLEEP`` (seconds, environment) slows each call so a test can kill a run part-way.
"""

from __future__ import annotations

import os
import time
import zlib

import torch

from entroprobe.models import LayerStates, ModelAdapter, Response, register_family

FAIL_WORD = "explode"
NUM_LAYERS, D_MODEL = 3, 12


def _states(key: str, n: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    base = torch.randn(n, D_MODEL, generator=generator)  # (n, d)
    mix = [base * (1 + layer) + torch.randn(n, D_MODEL, generator=generator) * layer for layer in range(NUM_LAYERS + 1)]
    return torch.stack(mix)  # (L + 1, n, d)


def _layer_states(key: str, n: int) -> LayerStates:
    return LayerStates(states=_states(key, n), positions=torch.arange(n), token_ids=torch.arange(n))


class FakeAdapter(ModelAdapter):
    family = "fake"
    capabilities = frozenset({("encode", "text"), ("encode", "image"), ("text-gen", "text"), ("text-gen", "image"),
                              ("image-gen", "text")})

    def __init__(self, capabilities=None):
        if capabilities is not None:
            self.capabilities = frozenset(capabilities)
        self.num_layers, self.d_model, self.device = NUM_LAYERS, D_MODEL, torch.device("cpu")
        self.name = "fake"

    @classmethod
    def load(cls, path=None, **kwargs):
        caps = kwargs.pop("caps", None)
        device = kwargs.pop("device", "cpu")
        if kwargs:
            raise TypeError(f"unexpected {kwargs}")
        adapter = cls(None if caps is None else {tuple(c.split("/")) for c in caps.split("+")})
        adapter.device = torch.device(device)  # recorded only: the fake computes on the CPU
        return adapter

    def _check(self, text):
        time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
        if text and FAIL_WORD in text:
            raise RuntimeError("the fake model exploded")

    def encode_text(self, text):
        self.require("encode", "text")
        self._check(text)
        return _layer_states("t:" + text, max(1, len(text.split())))

    def encode_image(self, image, instruction=None):
        self.require("encode", "image")
        self._check(instruction)
        return _layer_states("i:" + str(zlib.crc32(image.tobytes())), 16)

    def respond_text(self, text=None, image=None, *, max_new_tokens=64, seed=0):
        self.require("text-gen", "image" if image is not None else "text")
        self._check(text)
        prompt = self.encode_text(text or "image") if image is None else self.encode_image(image)
        n = 1 + seed % max_new_tokens
        return Response(prompt=prompt, response=_layer_states(f"r:{seed}:{text}", n), output=f"answer {seed}")

    def respond_image(self, text, *, seed=0, **generation):
        from PIL import Image

        self.require("image-gen", "text")
        self._check(text)
        return Response(prompt=self.encode_text(text), response=_layer_states(f"g:{seed}:{text}", 9),
                        output=Image.new("RGB", (8, 8), (seed % 256, 0, 0)))

    def fingerprint(self):
        return "fake0001"


def register() -> None:
    register_family("fake", FakeAdapter)
    from entroprobe.models import _BUILTIN

    _BUILTIN.add("fake")
