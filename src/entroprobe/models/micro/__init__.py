"""entroprobe's built-in micro unified multimodal models, trained on CPU from a seed.

- :mod:`.world` — the synthetic scenes, captions, riddles, questions and the image checker;
- :mod:`.codebook` — pictures ↔ 64 discrete codes (k-means over 4×4 patches);
- :mod:`.model` — the decoder-only transformer and its two variants (``micro-ar``, ``micro-mask``);
- :mod:`.train` — :func:`train` and :func:`evaluate` (what ``entroprobe micro train|eval`` call);
- :mod:`.adapter` — ``MicroARAdapter`` and ``MicroMaskAdapter``, loaded by ``load_model("micro-ar")``.

The shipped weights and their model card are in ``weights/``. Nothing is imported here (``train`` names both
a module and its main function): ``from entroprobe.models.micro.train import train, evaluate``.
"""
