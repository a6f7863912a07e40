"""Compatibility shims, all here: where installed libraries or an authors' repository need working around.

Each module says what it replaces, why, and when it applies; a shim is installed only when the code it works
around needs it (it checks, and does nothing otherwise), and never copies upstream code: it adapts the
user's checkout or the installed library from outside.

- :mod:`.janus_hf` — transformers' own Janus: text ``generate`` that keeps ``logits_processor``.
- :mod:`.transformers5` — what transformers 5 removed that the authors' repositories (written against 4.x) call:
  the ``"default"`` RoPE initialiser.
- :mod:`.devices` — ``tensor.cuda()`` in sampling code, sent to the model's device when that is not a GPU.
- one module per upstream family (``bagel``, ``harmon``, ``show_o``, ``show_o2``, ``janusflow``, ``omnigen2``),
  each listing its shims in its docstring.
"""

from entroprobe.models.compat.janus_hf import janus_text_generate

__all__ = ["janus_text_generate"]
