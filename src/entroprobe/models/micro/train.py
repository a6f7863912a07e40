"""Train and evaluate the micro models; save and load their checkpoints.

Both variants see the same data in the same order (one ``random.Random(seed)`` stream of scenes and texts) and
the same budget; they differ only in how image codes are trained and drawn (see :mod:`.model`). Each step is
one AdamW update on four task groups, each padded to its own length:

- ``caption``: image → text (a caption, or the answer to a question about the picture);
- ``draw``: caption → image;
- ``draw_riddle``: riddle (an indirect, reasoning-style description) → image;
- ``text``: text → text (a riddle → its caption, or a question about a caption or riddle → a short answer).

Held-out evaluation (:func:`evaluate`) uses scenes holding an object combination no training scene holds
(:data:`~.world.HELD_OUT`).

>>> path = train("mask", Path("out"))                        # doctest: +SKIP
>>> evaluate(path, n=200)["image_attribute_accuracy"]        # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from entroprobe.errors import InputError, LoadError, unknown_name
from entroprobe.models.micro import world
from entroprobe.models.micro.codebook import Codebook
from entroprobe.models.micro.model import MicroConfig, MicroUMM

__all__ = [
    "VARIANTS",
    "WEIGHTS_DIR",
    "TrainConfig",
    "Micro",
    "variant_name",
    "weights_path",
    "train",
    "evaluate",
    "GATES",
    "write_model_card",
    "save_checkpoint",
    "load_checkpoint",
]

VARIANTS = {"ar": "micro-ar", "mask": "micro-mask"}
# held-out quality a shipped model must reach: what makes it a model and not a toy
GATES = {"caption_attribute_accuracy": 0.90, "image_attribute_accuracy": 0.80}
BUDGET_S = 600  # training wall time each variant may take on a 2-core machine
WEIGHTS_DIR = Path(__file__).parent / "weights"
_INSTRUCTIONS = ("", "describe the picture .", "what do you see ?", "what is in the picture ?")


@dataclass
class TrainConfig:
    """Everything that fixes a training run besides the variant (recorded in the checkpoint)."""

    seed: int = 0  # seeds the data stream, the codebook, the initial weights and the masking
    steps: int = 1400  # AdamW updates
    groups: dict[str, int] = field(
        default_factory=lambda: {"caption": 12, "draw": 20, "draw_riddle": 4, "text": 8}
    )  # sequences per task group in each step
    lr: float = 3e-3  # peak learning rate
    min_lr: float = 1e-4  # learning rate at the end of the cosine decay
    warmup: int = 50  # linear warm-up steps
    weight_decay: float = 0.1  # on weight matrices and embeddings (not on biases, norms or position biases)
    grad_clip: float = 1.0
    p_two: float = 0.7  # share of training scenes with two objects (held-out evaluation keeps the world's 0.3)
    mask_schedule: str = "cosine"  # micro-mask: how many codes a training image hides (see MASK_SCHEDULES)
    num_codes: int = 256  # codebook size (fewer when the scenes hold fewer distinct patches)
    codebook_images: int = 4000  # scenes the codebook is fitted on
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    threads: int = 2  # torch CPU threads (1.2–1.3× faster than one on a 2-core machine: train one variant at a time)


@dataclass
class Micro:
    """A loaded micro model with what it needs to read and write: vocabulary, codebook, provenance."""

    model: MicroUMM
    vocab: world.Vocabulary
    codebook: Codebook
    variant: str  # "micro-ar" or "micro-mask"
    meta: dict[str, Any]
    path: Path | None = None


def variant_name(variant: str) -> str:
    """``"ar"``/``"micro-ar"`` → ``"micro-ar"``; ``"mask"``/``"micro-mask"`` → ``"micro-mask"``.

    Raises:
        UnknownNameError: for any other name.
    """
    if variant in VARIANTS.values():
        return variant
    if variant in VARIANTS:
        return VARIANTS[variant]
    raise unknown_name("micro variant", variant, [*VARIANTS, *VARIANTS.values()])


def weights_path(variant: str) -> Path:
    """Where the shipped weights of ``variant`` live (``weights/micro-ar.pt``, ``weights/micro-mask.pt``)."""
    return WEIGHTS_DIR / f"{variant_name(variant)}.pt"


# -- checkpoints -------------------------------------------------------------------------------------------


def save_checkpoint(micro: Micro, path: Path) -> Path:
    """Write config, fp16 weights, words, codebook and provenance to one ``torch.save`` file."""
    state = {k: v.detach().to(torch.float16).clone() for k, v in micro.model.state_dict().items()}
    payload = {
        "format": "entroprobe-micro/1",
        "variant": micro.variant,
        "config": asdict(micro.model.config),
        "state_dict": state,
        "words": micro.vocab.words,
        "codebook": micro.codebook.centroids.to(torch.float16),
        "image_size": micro.codebook.image_size,
        "meta": micro.meta,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path


def load_checkpoint(path: str | os.PathLike[str], device: torch.device | str = "cpu") -> Micro:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``: no code runs).

    Raises:
        LoadError: the file is missing, unreadable or not a micro checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise LoadError(f"Micro model weights not found: '{path}' is not a file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same thing to the caller
        raise LoadError(f"Cannot read micro model weights '{path}': {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != "entroprobe-micro/1":
        raise LoadError(f"'{path}' is not a micro model checkpoint (expected format 'entroprobe-micro/1')")
    config = MicroConfig(**payload["config"])
    model = MicroUMM(config)
    state = {k: v.float() for k, v in payload["state_dict"].items()}
    model.load_state_dict(state)
    model.to(device).eval()
    codebook = Codebook(payload["codebook"].float(), image_size=payload["image_size"])
    vocab = world.Vocabulary(payload["words"], codebook.num_codes)
    return Micro(model, vocab, codebook, payload["variant"], payload["meta"], path)


# -- data --------------------------------------------------------------------------------------------------

Example = tuple[list[int], int, str]  # (tokens, where the response starts, "text" or "image")


class _Data:
    """The seeded stream of training examples, identical for both variants."""

    def __init__(self, rng: random.Random, vocab: world.Vocabulary, codebook: Codebook, split: str = "train",
                 p_two: float = 0.3):  # fmt: skip
        self.rng, self.vocab, self.codebook, self.split, self.p_two = rng, vocab, codebook, split, p_two

    def codes(self, scenes: Sequence[world.Scene]) -> list[list[int]]:
        images = torch.from_numpy(np.stack([world.render(s) for s in scenes]))  # (N, H, W, 3)
        return (self.codebook.encode(images) + self.vocab.code_offset).tolist()

    def scenes(self, n: int) -> list[world.Scene]:
        return [world.sample_scene(self.rng, self.split, self.p_two) for _ in range(n)]

    def group(self, name: str, n: int) -> list[Example]:
        v, rng = self.vocab, self.rng
        scenes = self.scenes(n)
        out: list[Example] = []
        if name == "caption":
            for scene, codes in zip(scenes, self.codes(scenes)):
                if rng.random() < 0.25:
                    ask, answer = world.question(scene, rng)
                else:
                    ask, answer = rng.choice(_INSTRUCTIONS), world.caption(scene)
                prompt = [v.bos, v.boi, *codes, v.eoi, *v.encode(ask), v.ans]
                out.append((prompt + v.encode(answer) + [v.eos], len(prompt), "text"))
        elif name in ("draw", "draw_riddle"):
            for scene, codes in zip(scenes, self.codes(scenes)):
                text = world.caption(scene) if name == "draw" else world.riddle(scene, rng)
                prompt = [v.bos, *v.encode(text), v.boi]
                out.append((prompt + codes + [v.eoi], len(prompt), "image"))
        elif name == "text":
            for scene in scenes:
                if rng.random() < 0.4:
                    ask, answer = world.riddle(scene, rng) + " what is in the picture ?", world.caption(scene)
                else:
                    about = world.caption(scene) + " ." if rng.random() < 0.5 else world.riddle(scene, rng)
                    question, answer = world.question(scene, rng)
                    ask = f"{about} {question}"
                prompt = [v.bos, *v.encode(ask), v.ans]
                out.append((prompt + v.encode(answer) + [v.eos], len(prompt), "text"))
        else:
            raise unknown_name("task group", name, ["caption", "draw", "draw_riddle", "text"])
        return out


# micro-mask training: the share of an image's codes to mask, as a function of u ~ U(0, 1). Measured before the
# locality prior of the attention (model._locality_prior), when micro-mask drew objects of several colours, held-out
# image attribute accuracy with each: cosine 0.61, linear 0.56, low 0.17, high 0.56; cosine was kept.
MASK_SCHEDULES: dict[str, Callable[[float], float]] = {
    "cosine": lambda u: math.cos(math.pi / 2 * u),  # MaskGIT's: mostly high ratios (mean 0.64)
    "linear": lambda u: u,  # uniform ratios (mean 0.5)
    "low": lambda u: 1 - math.sqrt(u),  # mostly low ratios (mean 0.33): more context to predict from
    "high": lambda u: 1 - u**4,  # mostly high ratios (mean 0.8): more prediction from the prompt alone
}


def _collate(
    examples: list[Example], variant: str, image_tokens: int, mask_id: int, generator: torch.Generator,
    schedule: str = "cosine",
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Right-padded ``idx`` (B, T) and ``targets`` (B, T, -1 = ignore) for one task group.

    Text responses and micro-ar images: position ``t`` predicts token ``t + 1``. micro-mask images: a share
    of the codes drawn from ``schedule`` (:data:`MASK_SCHEDULES`) becomes ``<mask>``, and each masked position
    predicts its own code.
    """
    T = max(len(tokens) for tokens, _, _ in examples)
    idx = torch.zeros(len(examples), T, dtype=torch.long)  # <pad> is 0
    targets = torch.full((len(examples), T), -1, dtype=torch.long)
    for b, (tokens, start, kind) in enumerate(examples):
        row = torch.tensor(tokens)
        idx[b, : len(tokens)] = row
        if kind == "image" and variant == "micro-mask":
            ratio = MASK_SCHEDULES[schedule](torch.rand((), generator=generator).item())
            k = max(1, math.ceil(ratio * image_tokens))
            chosen = start + torch.randperm(image_tokens, generator=generator)[:k]
            targets[b, chosen] = row[chosen]
            idx[b, chosen] = mask_id
        else:
            targets[b, start - 1 : len(tokens) - 1] = row[start:]
    return idx, targets


# -- training ----------------------------------------------------------------------------------------------


def _build(variant: str, cfg: TrainConfig) -> tuple[MicroUMM, world.Vocabulary, Codebook]:
    fit_rng = random.Random(cfg.seed + 7)
    images = torch.from_numpy(
        np.stack([world.render(world.sample_scene(fit_rng, "train")) for _ in range(cfg.codebook_images)])
    )
    codebook = Codebook.fit(images, cfg.num_codes, seed=cfg.seed)
    vocab = world.Vocabulary(world.grammar_words(), codebook.num_codes)
    config = MicroConfig(
        vocab_size=vocab.size,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        n_embd=cfg.n_embd,
        image_grid=codebook.grid,
        code_offset=vocab.code_offset,
        boi_id=vocab.boi,
        eoi_id=vocab.eoi,
        mask_id=vocab.mask,
        eos_id=vocab.eos,
        bidirectional_image=variant == "micro-mask",
    )
    torch.manual_seed(cfg.seed)
    return MicroUMM(config), vocab, codebook


def _lr(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


def train(
    variant: str,
    out: str | os.PathLike[str],
    *,
    seed: int = 0,
    steps: int | None = None,
    log: Callable[[dict[str, Any]], None] | None = None,
    log_every: int = 50,
    **overrides: Any,
) -> Path:
    """Train one variant from ``seed`` and write ``OUT/micro-<variant>.pt`` and its ``.log.json``.

    With the defaults this reproduces the shipped weights (bit for bit on the same machine and thread count).

    Args:
        variant: ``"ar"``, ``"mask"``, ``"micro-ar"`` or ``"micro-mask"``.
        out: directory to write to (created if needed).
        seed: seeds data, codebook, initial weights and masking.
        steps: AdamW updates (default :attr:`TrainConfig.steps`).
        log: called with ``{"step", "loss", "lr", "elapsed_s"}`` every ``log_every`` steps and at the end.
        log_every: how often to call ``log`` and record the loss.
        **overrides: other :class:`TrainConfig` fields (``n_embd``, ``groups``, ``lr``…).

    Raises:
        UnknownNameError: unknown variant or configuration field.
        InputError: ``steps`` below 1.
    """
    name = variant_name(variant)
    known = {f.name for f in fields(TrainConfig)} - {"seed", "steps"}
    for key in overrides:
        if key not in known:
            raise unknown_name("training setting", key, known)
    cfg = TrainConfig(seed=seed, **overrides)
    if cfg.mask_schedule not in MASK_SCHEDULES:
        raise unknown_name("mask schedule", cfg.mask_schedule, MASK_SCHEDULES)
    if steps is not None:
        if steps < 1:
            raise InputError(f"steps must be at least 1; got {steps}")
        cfg.steps = steps
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        started = time.perf_counter()
        model, vocab, codebook = _build(name, cfg)
        data = _Data(random.Random(cfg.seed), vocab, codebook, p_two=cfg.p_two)
        masking = torch.Generator().manual_seed(cfg.seed + 1)
        decayed = {name: p.dim() >= 2 and not name.endswith("rel_bias") for name, p in model.named_parameters()}
        decay = [p for name, p in model.named_parameters() if decayed[name]]
        no_decay = [p for name, p in model.named_parameters() if not decayed[name]]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr,
            betas=(0.9, 0.95),
        )
        history: list[dict[str, Any]] = []
        model.train()
        for step in range(cfg.steps):
            for group in optimizer.param_groups:
                group["lr"] = _lr(step, cfg)
            optimizer.zero_grad(set_to_none=True)
            total = 0.0
            for group_name, size in cfg.groups.items():
                # each task group weighs the same; within a group, every supervised token weighs the same
                idx, targets = _collate(data.group(group_name, size), name, model.config.image_tokens, vocab.mask,
                                        masking, cfg.mask_schedule)  # fmt: skip
                _, loss = model(idx, targets)
                (loss / len(cfg.groups)).backward()
                total += loss.item() / len(cfg.groups)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            if step % log_every == 0 or step == cfg.steps - 1:
                record = {
                    "step": step,
                    "loss": round(total, 4),
                    "lr": round(_lr(step, cfg), 6),
                    "elapsed_s": round(time.perf_counter() - started, 1),
                }
                history.append(record)
                if log is not None:
                    log(record)
        model.eval()
        wall = time.perf_counter() - started
    finally:
        torch.set_num_threads(threads)
    meta = {
        "variant": name,
        "train": asdict(cfg),
        "wall_s": round(wall, 1),
        "load_avg": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "torch": str(torch.__version__),
        "final_loss": history[-1]["loss"],
    }
    out = Path(out)
    path = save_checkpoint(Micro(model, vocab, codebook, name, meta), out / f"{name}.pt")
    (out / f"{name}.log.json").write_text(json.dumps({**meta, "history": history}, indent=1))
    return path


# -- evaluation --------------------------------------------------------------------------------------------


def _by_length(prompts: list[list[int]], run: Callable[[torch.Tensor], torch.Tensor], batch: int) -> list:
    """Run ``run`` on prompts of equal length together (no padding needed); results in input order."""
    order: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        order.setdefault(len(p), []).append(i)
    results: list = [None] * len(prompts)
    for indices in order.values():
        for lo in range(0, len(indices), batch):
            chunk = indices[lo : lo + batch]
            outputs = run(torch.tensor([prompts[i] for i in chunk]))
            for i, row in zip(chunk, outputs):
                results[i] = row
    return results


def _text_until_eos(ids: torch.Tensor, vocab: world.Vocabulary) -> str:
    ids = ids.tolist()
    return vocab.decode(ids[: ids.index(vocab.eos)] if vocab.eos in ids else ids)


def _attribute_score(truth: list[tuple], got: list[tuple]) -> tuple[int, int]:
    """(correct, total) over the count and each object's colour, shape, size and place.

    Objects are paired with the read-back ones in the order that agrees most (missing ones score nothing).
    """
    def agree(a: tuple, b: tuple | None) -> int:
        return 0 if b is None else sum(a[i] == b[i] for i in range(3)) + (a[3:] == b[3:])

    padded = list(got) + [None] * max(0, len(truth) - len(got))
    best = max(
        sum(agree(t, g) for t, g in zip(truth, perm))
        for perm in ([padded[i] for i in p] for p in _perms(len(padded), len(truth)))
    )
    return best + (len(got) == len(truth)), 4 * len(truth) + 1


def _perms(n: int, k: int) -> list[tuple[int, ...]]:
    from itertools import permutations

    return list(permutations(range(n), k))


def evaluate(
    variant_or_path: str | os.PathLike[str] | Micro,
    *,
    n: int = 200,
    seed: int = 1234,
    temperature: float = 0.0,
    steps: int = 8,
    batch: int = 100,
) -> dict[str, Any]:
    """Held-out quality of a micro model, on scenes holding an object combination never seen in training.

    - ``caption_attribute_accuracy``: greedy captions of ``n`` pictures, parsed back; the share of attributes
      right (the object count, and each object's colour, shape, size and place); ``caption_exact``: whole
      captions right.
    - ``image_attribute_accuracy``: ``n`` captions drawn as pictures, decoded and read back by
      :func:`~.world.read_scene`; the same attribute share; ``image_exact``: pictures with everything right.
    - ``riddle_image_attribute_accuracy``: the same for pictures drawn from riddles (reasoning-style prompts).
    - ``answer_accuracy``: exact short answers to questions about captions and riddles (text → text).

    Args:
        variant_or_path: ``"ar"``/``"mask"``/``"micro-ar"``/``"micro-mask"`` (shipped weights), a checkpoint
            path, or a loaded :class:`Micro`.
        n: scenes per metric.
        seed: seeds the held-out scenes and the sampling.
        temperature: sampling temperature for images (0 = greedy); captions and answers are greedy.
        steps: micro-mask decoding passes.
        batch: prompts per forward pass.

    Raises:
        UnknownNameError: unknown variant name. LoadError: unreadable weights. InputError: ``n`` below 1.
    """
    if n < 1:
        raise InputError(f"n must be at least 1; got {n}")
    micro = variant_or_path if isinstance(variant_or_path, Micro) else _resolve(variant_or_path)
    model, vocab, codebook = micro.model, micro.vocab, micro.codebook
    started = time.perf_counter()
    rng = random.Random(seed)
    data = _Data(rng, vocab, codebook, split="test")
    generator = torch.Generator().manual_seed(seed)
    scenes = data.scenes(n)
    truths = [[t.key() for t in s.things] for s in scenes]

    def score(pairs: list[tuple[list, list]]) -> tuple[float, float]:
        right, total = map(sum, zip(*(_attribute_score(t, g) for t, g in pairs)))
        return right / total, float(np.mean([t == g for t, g in pairs]))

    # image → caption
    prompts = [[vocab.bos, vocab.boi, *c, vocab.eoi, vocab.ans] for c in data.codes(scenes)]
    texts = _by_length(prompts, lambda x: model.generate_text(x, 40, temperature=0.0), batch)
    captions = [world.parse_caption(_text_until_eos(t, vocab)) for t in texts]
    caption_acc, caption_exact = score(list(zip(truths, captions)))

    # text → image (captions, then riddles)
    def draw(texts: list[str]) -> list[list[tuple]]:
        prompts = [[vocab.bos, *vocab.encode(t)] for t in texts]
        if micro.variant == "micro-mask":
            run = lambda x: model.generate_image_mask(x, steps, temperature, generator)  # noqa: E731
        else:
            run = lambda x: model.generate_image_ar(x, temperature, generator)  # noqa: E731
        codes = torch.stack(_by_length(prompts, run, batch)) - vocab.code_offset  # (n, tokens)
        return [world.read_scene(image) for image in codebook.decode(codes).numpy()]

    image_acc, image_exact = score(list(zip(truths, draw([world.caption(s) for s in scenes]))))
    riddle_acc, riddle_exact = score(list(zip(truths, draw([world.riddle(s, rng) for s in scenes]))))

    # text → text
    asks, answers = [], []
    for scene in scenes:
        about = world.caption(scene) + " ." if rng.random() < 0.5 else world.riddle(scene, rng)
        question, answer = world.question(scene, rng)
        asks.append([vocab.bos, *vocab.encode(f"{about} {question}"), vocab.ans])
        answers.append(answer)
    replies = _by_length(asks, lambda x: model.generate_text(x, 8, temperature=0.0), batch)
    answer_acc = float(np.mean([_text_until_eos(r, vocab) == a for r, a in zip(replies, answers)]))

    return {
        "variant": micro.variant,
        "weights": str(micro.path) if micro.path else None,
        "n": n,
        "seed": seed,
        "temperature": temperature,
        "mask_steps": steps if micro.variant == "micro-mask" else None,
        "caption_attribute_accuracy": round(caption_acc, 4),
        "caption_exact": round(caption_exact, 4),
        "image_attribute_accuracy": round(image_acc, 4),
        "image_exact": round(image_exact, 4),
        "riddle_image_attribute_accuracy": round(riddle_acc, 4),
        "riddle_image_exact": round(riddle_exact, 4),
        "answer_accuracy": round(answer_acc, 4),
        "gates": {name: bool(round(value, 4) >= GATES[name]) for name, value in
                  (("caption_attribute_accuracy", caption_acc), ("image_attribute_accuracy", image_acc))},
        "seconds": round(time.perf_counter() - started, 1),
    }  # fmt: skip


def _resolve(variant_or_path: str | os.PathLike[str]) -> Micro:
    text = str(variant_or_path)
    if text in VARIANTS or text in VARIANTS.values():
        return load_checkpoint(weights_path(text))
    if Path(text).suffix == ".pt" or os.sep in text or Path(text).exists():
        return load_checkpoint(text)
    return load_checkpoint(weights_path(text))  # raises UnknownNameError for a bad variant name


# -- the model card ----------------------------------------------------------------------------------------

_METRICS = (
    ("caption_attribute_accuracy", "image → caption: attributes right (count, colour, shape, size, place)"),
    ("caption_exact", "image → caption: whole caption right"),
    ("image_attribute_accuracy", "caption → image: attributes read back right"),
    ("image_exact", "caption → image: everything right"),
    ("riddle_image_attribute_accuracy", "riddle → image: attributes read back right"),
    ("answer_accuracy", "question about a caption or riddle → exact short answer"),
)


def write_model_card(weights_dir: str | os.PathLike[str] = WEIGHTS_DIR, *, n: int = 200, seed: int = 1234) -> Path:
    """Evaluate both variants in ``weights_dir`` and write ``MODEL_CARD.md`` there from what the checkpoints
    record (training settings, wall time, final loss) and what :func:`evaluate` measures now.

    Raises:
        LoadError: a variant's weights are missing or unreadable.
    """
    weights_dir = Path(weights_dir)
    micros = [load_checkpoint(weights_dir / f"{name}.pt") for name in VARIANTS.values()]
    results = [evaluate(micro, n=n, seed=seed) for micro in micros]
    cfg = micros[0].meta["train"]
    names = [m.variant for m in micros]
    lines = [
        "# Model card: micro-ar and micro-mask",
        "",
        "Two small unified multimodal models trained by entroprobe itself on CPU, so that the whole framework runs",
        "on real (if small) models offline. Identical in size, data, order of data and budget; they differ only in",
        "how image codes are trained and drawn: `micro-ar` by next-token prediction (like Janus), `micro-mask` by",
        "masked prediction from context, unmasked over 8 passes (like MaskGIT and Harmon).",
        "",
        "## Data",
        "A synthetic world (`entroprobe.models.micro.world`), generated from the seed: 32×32 RGB scenes of one or two",
        "objects (8 colours, 4 shapes, 2 sizes, a 3×3 grid of places), captions from a grammar, riddles that describe",
        "the same scene indirectly, and short questions about either. Pictures become 64 codes of 4×4 patches",
        f"(a k-means codebook of {micros[0].codebook.num_codes} codes, fitted on {cfg['codebook_images']} scenes).",
        f"Training scenes have two objects with probability {cfg.get('p_two', 0.3)}; one object combination in ten",
        f"({len(world.HELD_OUT)} of them) never appears in training.",
        "",
        "## Model and training",
        f"- decoder-only transformer: {cfg['n_layer']} blocks, {cfg['n_head']} heads, width {cfg['n_embd']}, "
        f"{micros[0].model.num_params():,} parameters; fp16 weights, run in float32",
        f"- seed {cfg['seed']}, {cfg['steps']} AdamW steps (lr {cfg['lr']} cosine to {cfg['min_lr']}, warm-up "
        f"{cfg['warmup']}), per step: " + ", ".join(f"{k} {v}" for k, v in cfg["groups"].items()) + " sequences",
        "- tasks: image → caption or answer, caption → image, riddle → image, text → text",
        "- attention carries a learned bias per head for each 2-D offset between two codes of a picture, started from",
        "  a locality prior (one head even over the picture, the others preferring nearby codes), which micro-mask",
        "  needs to read an object's colour off the codes around a `<mask>` within its budget",
        f"- micro-mask hides a share of each training image's codes drawn from the `{cfg.get('mask_schedule', 'cosine')}` "
        "schedule and predicts them; micro-ar predicts every code from the ones before it",
        "",
        "| | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
        "| training wall time (s) | " + " | ".join(str(m.meta["wall_s"]) for m in micros) + " |",
        "| torch threads | " + " | ".join(str(m.meta["train"]["threads"]) for m in micros) + " |",
        "| final training loss | " + " | ".join(str(m.meta["final_loss"]) for m in micros) + " |",
        "",
        f"## Held-out quality (`entroprobe micro eval --n {n} --seed {seed}`)",
        f"{n} scenes, each holding at least one object combination never seen in training; greedy decoding. Images",
        "are decoded and read back by the deterministic checker `world.read_scene`.",
        "",
        "| metric | gate | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for key, text in _METRICS:
        gate = f"≥ {GATES[key]:.2f}" if key in GATES else ""
        cells = [f"{r[key]:.3f}" + ("" if key not in GATES else " ✓" if r["gates"][key] else " ✗") for r in results]
        lines.append(f"| {text} | {gate} | " + " | ".join(cells) + " |")
    unmet = [f"{r['variant']} {dict(_METRICS)[key].split(':')[0]} ({r[key]:.3f} < {GATES[key]:.2f})"
             for r in results for key in GATES if not r["gates"][key]]  # fmt: skip
    if unmet:
        lines += ["", "**Gates not met:** " + "; ".join(unmet) + "."]
    over = [f"{m.variant} {m.meta['wall_s']} s" for m in micros if m.meta["wall_s"] > BUDGET_S]
    if over:
        lines += ["", f"**Training budget (≤ {BUDGET_S} s each) not met:** " + "; ".join(over) + "."]
    lines += [
        "",
        "## Reproduce",
        "Wall times above are of each variant training alone, one after the other, on a 2-core machine:",
        "```bash",
        " && ".join(f"entroprobe micro train --variant {short} --out weights/" for short in VARIANTS),
        "entroprobe micro card --weights-dir weights/",
        "```",
        "The same seed and thread count on the same machine give the same weights bit for bit.",
        "",
    ]
    path = weights_dir / "MODEL_CARD.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
