"""Compatibility shims, all here: where installed libraries or an authors' repository need working around.

Each module says what it replaces, why, and when it applies. Most shims check for what the installed library
lacks and do nothing otherwise; the few that always apply (they adapt the authors' code to how entroprobe runs
it: on one device without accelerate's hooks, every weight read from the checkpoint) say so. None copies
upstream code: each adapts the user's checkout or the installed library from outside.

- :mod:`.janus_hf` — transformers' own Janus: text ``generate`` that keeps ``logits_processor``.
- :mod:`.transformers5` — what transformers 5 removed that the authors' repositories (written against 4.x) call:
  the ``"default"`` RoPE initialiser.
- :mod:`.devices` — ``tensor.cuda()`` in sampling code, sent to the model's device when that is not the current GPU.
- one module per upstream family (``bagel``, ``harmon``, ``show_o``, ``show_o2``, ``janusflow``, ``omnigen2``),
  each listing its shims in its docstring.
"""

from entroprobe.models.compat.janus_hf import janus_text_generate

__all__ = ["janus_text_generate"]
