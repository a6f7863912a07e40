"""Capture the outputs of a model's decoder layers during any call: the hook path of the families over their
authors' repositories (BAGEL, Harmon, Show-o, Show-o2, JanusFlow, OmniGen2) and of a model entroprobe does not
know (``docs/recipes.md``).

>>> with capture_layers(model, "language_model.model.layers", rows="first-half") as cap:   # doctest: +SKIP
...     image = model.generate_image(prompt)
>>> call = cap.select(step=cap.last_step, call_in_step=0)[0]                              # doctest: +SKIP
>>> states = to_layer_states(call.stacked(), positions=image_positions)                    # doctest: +SKIP

What is recorded, per call through the hooked layers (a *call* starts each time the first hooked layer runs):

- ``embedding``: the input of the first hooked layer — the embedding output, layer 0 of :class:`LayerStates`;
- ``outputs[i]``: the output of hooked layer ``i`` (a tuple's element ``output_index`` when the layer returns one).

Each is ``(rows, tokens, d_model)`` for batched layers, or ``(tokens, d_model)`` for packed layers that have no
batch axis (BAGEL). ``rows`` keeps only some batch rows — the conditional half under classifier-free guidance —
as they are captured. Calls carry a ``step`` and a ``call_in_step`` index, so the conditional and unconditional
calls of one denoising step can be told apart. Hooks are removed when the block ends, also on error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from entroprobe.errors import InputError
from entroprobe.models.base import LayerStates

__all__ = [
    "ROW_SELECTIONS",
    "LayerCall",
    "LayerCapture",
    "capture_layers",
    "concat_calls",
    "find_layer_lists",
    "resolve_layers",
    "resolve_module",
    "select_rows",
    "to_layer_states",
]

# named row selections for classifier-free guidance batches
ROW_SELECTIONS = ("first-half", "second-half", "even", "odd")
Rows = str | int | Sequence[int] | slice | None


def resolve_module(root: nn.Module, path: str) -> nn.Module:
    """The submodule at a dotted ``path`` (``"language_model.model.layers"``; digits index into lists).

    Raises:
        InputError: naming the first missing part and the children available there.
    """
    module = root
    walked: list[str] = []
    for part in path.split(".") if path else []:
        children = dict(module.named_children())
        if part not in children:
            where = ".".join(walked) or type(root).__name__
            raise InputError(
                f"Module path '{path}': '{where}' has no child '{part}'; children: {', '.join(children) or 'none'}"
            )
        module = children[part]
        walked.append(part)
    return module


def resolve_layers(root: nn.Module, path: str | Sequence[str], indices: Sequence[int] | None = None) -> list[nn.Module]:
    """The layers to hook: a dotted path to a ``ModuleList``/``Sequential`` (optionally some ``indices`` of it),
    or a list of dotted paths to single modules, in the order they run.

    Raises:
        InputError: when a path does not exist, is not a list of layers, or an index is out of range.
    """
    if not isinstance(path, str):
        return [resolve_module(root, p) for p in path]
    container = resolve_module(root, path)
    if not isinstance(container, (nn.ModuleList, nn.Sequential)):
        raise InputError(f"Module path '{path}' is a {type(container).__name__}, not a ModuleList of layers")
    layers = list(container)
    if indices is None:
        return layers
    bad = [i for i in indices if not -len(layers) <= i < len(layers)]
    if bad:
        raise InputError(f"Layer indices {bad} are out of range for '{path}' with {len(layers)} layers")
    return [layers[i] for i in indices]


def find_layer_lists(root: nn.Module, min_length: int = 2) -> list[tuple[str, int]]:
    """Every ``ModuleList`` in ``root`` with at least ``min_length`` entries, as ``(dotted path, length)``:
    where to look for a model's decoder layers."""
    return [
        (name, len(module))
        for name, module in root.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) >= min_length
    ]


def select_rows(hidden: torch.Tensor, rows: Rows, where: str = "layer output") -> torch.Tensor:
    """Keep some batch rows of a ``(batch, tokens, d)`` tensor: ``"first-half"`` (conditional rows first, the
    usual CFG layout), ``"second-half"``, ``"even"``, ``"odd"`` (interleaved CFG), an index, indices or a slice.

    Raises:
        InputError: for a packed ``(tokens, d)`` tensor (no batch axis to select from), an odd batch split in
            halves, or an unknown selection.
    """
    if rows is None:
        return hidden
    if hidden.dim() != 3:
        raise InputError(
            f"Cannot select rows {rows!r} of {where} with shape {tuple(hidden.shape)}: expected (batch, tokens, d); "
            "packed outputs have no batch axis (give rows=None and separate the calls by call_in_step)"
        )
    batch = hidden.shape[0]
    if isinstance(rows, str):
        if rows not in ROW_SELECTIONS:
            raise InputError(f"Unknown row selection '{rows}'; expected one of {', '.join(ROW_SELECTIONS)}")
        if rows in ("first-half", "second-half") and batch % 2:
            raise InputError(f"Cannot split {where} with batch {batch} into CFG halves: the batch is odd")
        index: Any = {
            "first-half": slice(0, batch // 2),
            "second-half": slice(batch // 2, batch),
            "even": slice(0, batch, 2),
            "odd": slice(1, batch, 2),
        }[rows]
    elif isinstance(rows, int):
        index = [rows]
    else:
        index = rows
    return hidden[index]


@dataclass
class LayerCall:
    """One call through the hooked layers. Tensors are ``(rows, tokens, d)`` or, packed, ``(tokens, d)``."""

    index: int  # position among all calls of the capture
    step: int  # denoising / sampling step (-1: before the first marked step)
    call_in_step: int  # 0, 1, 2… within the step (e.g. conditional, cfg_text, cfg_img)
    embedding: torch.Tensor | None = None
    outputs: list[torch.Tensor | None] = field(default_factory=list)

    def stacked(self) -> torch.Tensor:
        """``(layers + 1, [rows,] tokens, d)`` float32: the embedding output, then every hooked layer's output,
        on the embedding's device (layers spread over several GPUs by ``device_map`` leave their outputs on
        their own device).

        Raises:
            InputError: when the embedding or a layer's output was not captured in this call.
        """
        missing = [i for i, out in enumerate(self.outputs) if out is None]
        if self.embedding is None or missing:
            what = ("the embedding output" if self.embedding is None else "") + (
                f" layers {missing}" if missing else ""
            )
            raise InputError(f"Call {self.index} (step {self.step}) is incomplete: missing {what.strip()}")
        from entroprobe.models.placement import stack_layers

        return stack_layers([self.embedding, *self.outputs])  # (L + 1, [rows,] T, d), on the CPU when large


class LayerCapture:
    """Forward hooks on a list of layers, recording :class:`LayerCall` s. Use through :func:`capture_layers`.

    Args:
        layers: the layers, in the order they run.
        rows: batch rows to keep (see :func:`select_rows`); None keeps all.
        calls_per_step: when set, ``step = call index // calls_per_step`` and ``call_in_step`` its remainder.
        keep: ``keep(step, call_in_step) -> bool`` decides which calls are stored (all by default).
        output_index: which element of a tuple output is the hidden state.
        input_name: keyword under which the first layer receives its hidden states when called with keywords
            only (``"hidden_states"`` in transformers, ``"packed_query_sequence"`` in BAGEL).
        offload: device to move captured tensors to (e.g. ``"cpu"``), None to keep them where they are.
    """

    def __init__(
        self,
        layers: Sequence[nn.Module],
        *,
        rows: Rows = None,
        calls_per_step: int | None = None,
        keep: Callable[[int, int], bool] | None = None,
        output_index: int = 0,
        input_name: str = "hidden_states",
        offload: str | torch.device | None = None,
    ):
        if not layers:
            raise InputError("LayerCapture needs at least one layer to hook; got none")
        if calls_per_step is not None and calls_per_step < 1:
            raise InputError(f"calls_per_step must be >= 1; got {calls_per_step}")
        self.layers = list(layers)
        self.rows = rows
        self.calls_per_step = calls_per_step
        self.keep = keep
        self.output_index = output_index
        self.input_name = input_name
        self.offload = offload
        self.calls: list[LayerCall] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._count = 0  # calls seen, stored or not
        self._step = 0
        self._in_step = 0  # calls seen since the step began
        self._current: LayerCall | None = None

    # -- steps ---------------------------------------------------------------------------------------
    @property
    def step(self) -> int:
        return self._step

    @step.setter
    def step(self, value: int) -> None:
        """Start step ``value``: later calls carry it, and ``call_in_step`` counts from 0 again."""
        self._step = value
        self._in_step = 0

    def next_step(self) -> None:
        """Start the next step (a callback for pipelines that report the end of each step)."""
        self.step = self._step + 1

    @property
    def last_step(self) -> int:
        """The highest step among the stored calls."""
        if not self.calls:
            raise InputError("No calls were captured: did the hooked layers run inside the block?")
        return max(call.step for call in self.calls)

    def select(self, step: int | None = None, call_in_step: int | None = None) -> list[LayerCall]:
        """The stored calls of one step and/or one position within the steps."""
        return [
            c
            for c in self.calls
            if (step is None or c.step == step) and (call_in_step is None or c.call_in_step == call_in_step)
        ]

    # -- hooks ---------------------------------------------------------------------------------------
    def attach(self) -> None:
        """Register the hooks (once)."""
        if self._handles:
            return
        self._handles.append(self.layers[0].register_forward_pre_hook(self._on_start, with_kwargs=True))
        for i, layer in enumerate(self.layers):
            self._handles.append(layer.register_forward_hook(self._make_on_output(i)))

    def detach(self) -> None:
        """Remove every hook registered by :meth:`attach`."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._current = None

    def _store(self, hidden: torch.Tensor, where: str) -> torch.Tensor:
        hidden = select_rows(hidden.detach(), self.rows, where)
        return hidden.to(self.offload, copy=True) if self.offload is not None else hidden.clone()

    def _on_start(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self.calls_per_step is not None:
            step, in_step = divmod(self._count, self.calls_per_step)
        else:
            step, in_step = self._step, self._in_step
            self._in_step += 1
        self._count += 1
        if self.keep is not None and not self.keep(step, in_step):
            self._current = None
            return
        hidden = _first_tensor(args, kwargs, self.input_name)
        call = LayerCall(index=self._count - 1, step=step, call_in_step=in_step)
        call.embedding = None if hidden is None else self._store(hidden, "the first layer's input")
        call.outputs = [None] * len(self.layers)
        self.calls.append(call)
        self._current = call

    def _make_on_output(self, i: int) -> Callable[..., None]:
        def on_output(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if self._current is None:
                return
            hidden = output[self.output_index] if isinstance(output, (tuple, list)) else output
            if not isinstance(hidden, torch.Tensor):
                raise InputError(
                    f"Hooked layer {i} returned {type(hidden).__name__}; expected a tensor "
                    f"(or a tuple with the hidden states at index {self.output_index})"
                )
            self._current.outputs[i] = self._store(hidden, f"layer {i}'s output")

        return on_output


def _first_tensor(args: tuple[Any, ...], kwargs: dict[str, Any], name: str) -> torch.Tensor | None:
    """A layer's hidden-state input: its first positional tensor, else ``kwargs[name]``."""
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    value = kwargs.get(name)
    return value if isinstance(value, torch.Tensor) else None


@contextlib.contextmanager
def capture_layers(
    model: nn.Module,
    layers: str | Sequence[str] | Sequence[nn.Module],
    *,
    indices: Sequence[int] | None = None,
    step_method: tuple[Any, str] | None = None,
    **options: Any,
) -> Iterator[LayerCapture]:
    """Capture the outputs of ``layers`` of ``model`` during the block; the hooks go away on exit, error or not.

    Args:
        model: the model (any ``nn.Module``).
        layers: a dotted path to the decoder ``ModuleList`` (``"language_model.model.layers"``), a list of
            dotted paths, or the layer modules themselves.
        indices: with a ModuleList path, hook only these entries.
        step_method: ``(object, "method_name")`` whose every call starts a new step (e.g.
            ``(bagel, "_forward_flow")``); calls before the first one carry step -1. Restored on exit.
        **options: :class:`LayerCapture` options (``rows``, ``calls_per_step``, ``keep``, ``output_index``,
            ``input_name``, ``offload``).

    Raises:
        InputError: for a wrong module path, or a ``step_method`` the object does not have.
    """
    if isinstance(layers, str) or (layers and isinstance(next(iter(layers)), str)):
        modules = resolve_layers(model, layers, indices)  # type: ignore[arg-type]
    else:
        modules = list(layers)  # type: ignore[arg-type]
    capture = LayerCapture(modules, **options)
    with contextlib.ExitStack() as stack:
        if step_method is not None:
            capture.step = -1
            stack.enter_context(_count_steps(capture, *step_method))
        capture.attach()
        stack.callback(capture.detach)
        yield capture


@contextlib.contextmanager
def _count_steps(capture: LayerCapture, owner: Any, name: str) -> Iterator[None]:
    """Wrap ``owner.name`` so that each call starts the next step; restore the attribute afterwards."""
    original = getattr(owner, name, None)
    if not callable(original):
        raise InputError(f"step_method: {type(owner).__name__} has no method '{name}'")
    had_own = name in vars(owner) if hasattr(owner, "__dict__") else False

    def counted(*args: Any, **kwargs: Any) -> Any:
        capture.next_step()
        return original(*args, **kwargs)

    setattr(owner, name, counted)
    try:
        yield
    finally:
        if had_own:
            setattr(owner, name, original)
        else:
            delattr(owner, name)


def concat_calls(calls: Sequence[LayerCall]) -> torch.Tensor:
    """Join calls along the token axis — e.g. a KV-cached generation's prefill and one-token steps — into
    ``(layers + 1, [rows,] tokens, d)``.

    Raises:
        InputError: when there are no calls or their shapes do not line up.
    """
    if not calls:
        raise InputError("concat_calls needs at least one call; got none")
    stacked = [call.stacked() for call in calls]
    stacked = [s.to(stacked[0].device) for s in stacked]  # on the first call's device
    token_axis = stacked[0].dim() - 2
    try:
        return torch.cat(stacked, dim=token_axis)
    except RuntimeError as exc:
        if isinstance(exc, torch.OutOfMemoryError) or "memory" in str(exc).lower():
            raise  # not the shapes' fault: a run halves its batch on it
        shapes = [tuple(s.shape) for s in stacked]
        raise InputError(f"Cannot join calls with shapes {shapes} along the token axis: {exc}") from None


def to_layer_states(
    states: torch.Tensor,
    positions: torch.Tensor | Sequence[int] | slice,
    *,
    token_ids: torch.Tensor | None = None,
    row: int = 0,
    final_norm: nn.Module | None = None,
) -> LayerStates:
    """Captured ``(layers + 1, [rows,] tokens, d)`` states → :class:`LayerStates` of the tokens at ``positions``.

    Args:
        states: from :meth:`LayerCall.stacked` or :func:`concat_calls`.
        positions: the tokens to keep (indices, a boolean mask, or a slice) along the token axis.
        token_ids: their ids, if they are tokens.
        row: the batch row, for batched states.
        final_norm: the model's final norm module; applied to the last entry (``final_norm=True`` in the
            result) so the layout matches transformers' ``hidden_states``. None leaves it raw. It runs on its
            parameters' device (states offloaded to the CPU go there and back).

    Raises:
        InputError: for states that are not 3-D or 4-D, or positions out of range.
    """
    if states.dim() == 4:
        states = states[:, row]  # (L + 1, T, d)
    if states.dim() != 3:
        raise InputError(f"Expected states (layers + 1, [rows,] tokens, d); got shape {tuple(states.shape)}")
    n_tokens = states.shape[1]
    index = torch.arange(n_tokens)[positions] if isinstance(positions, slice) else torch.as_tensor(positions)
    if index.dtype == torch.bool:
        index = index.nonzero().flatten()
    index = index.long().flatten()
    if index.numel() and (index.min() < 0 or index.max() >= n_tokens):
        raise InputError(f"Positions {index.tolist()} are out of range for {n_tokens} captured tokens")
    selected = states[:, index.to(states.device)].float()  # (L + 1, n, d)
    if final_norm is not None:
        param = next(final_norm.parameters(), None)
        dtype, device = (selected.dtype, selected.device) if param is None else (param.dtype, param.device)
        with torch.no_grad():
            last = final_norm(selected[-1].to(device=device, dtype=dtype))  # (n, d) on the norm's device
        selected = torch.cat([selected[:-1], last.float().to(selected.device)[None]])
    return LayerStates(
        states=selected,
        positions=index.cpu(),
        token_ids=None if token_ids is None else torch.as_tensor(token_ids).long().flatten().cpu(),
        final_norm=final_norm is not None,
    )
