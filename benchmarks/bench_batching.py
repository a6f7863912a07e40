"""Throughput of ``--batch-size`` on CPU: units per second at B = 1, 4, 16, per task, side by side in one run.

    python benchmarks/bench_batching.py [--sizes 1 4 16] [--models micro-ar janus janus-images emu3 chameleon llama]
    python benchmarks/bench_batching.py --models janus janus-images emu3 chameleon llama --dtype bfloat16

Each case is one ``run_probe`` into a fresh directory with the model loaded once beforehand: ``micro-ar`` over
all of ``micro-world`` (60 text + image prompts for encode and text-gen, 36 for image-gen), and a tiny random
Janus (the tests' ``tiny_models.tiny_janus``: 2 layers, d = 32, 16 image tokens) over 48 short prompts of its
vocabulary; ``janus-images`` is that Janus over 48 random 32 × 32 image prompts (encode and text answers of
images), ``emu3`` a tiny random Emu3 (``tiny_models.tiny_emu3``, 4 × 4 image grids) over the same 48 prompts and 48
images; ``chameleon`` and ``llama`` (a causal LM) the tests' tiny random ones over the 48 prompts (and, for
Chameleon, the images). Each family runs with its own generation defaults (text answers greedy, images
sampled). Reported per task: units/s over the whole run (setup and the final collect included), its ratio to
B = 1 (after one untimed warm-up run), and the model's own time (forward passes, generation) with its ratio, which shows what batching changes
when the estimators and the commits, done per unit whatever B, take most of a unit's time. ``ceiling`` is the
whole run at B = 1 over the model's own time at B: the most any batching of the estimators and commits could
give, were they free at B. "same answer" and "max Δ bits" hold each B's run to the run at B = 1: how many units
gave the same answer (text, or picture file), and the largest difference of a row among those (``--dtype
bfloat16`` shows how far a batch's rounding moves the rows and flips answers; micro-ar runs in float32 only).
Goals (issue 13, CPU): micro-ar image-gen ≥ 4× and encode ≥ 3× the B = 1 throughput at B = 16.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the tiny random models the tests build from config

TASKS = ("encode", "text-gen", "image-gen")


def _janus_prompts(directory: Path) -> str:
    words = "a the cat dog sat on mat red blue image of".split()
    lines = [{"id": f"p{i}", "text": " ".join(words[(i + j) % len(words)] for j in range(3 + i % 10))}
             for i in range(48)]  # fmt: skip
    path = directory / "prompts.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return f"jsonl:{path}"


def _images(directory: Path) -> str:
    from tiny_models import random_image

    folder = directory / "images" / "random"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(48):
        random_image((32, 32), seed=i).save(folder / f"{i:02d}.png")
    return f"images:{folder.parent}"


def cases(name: str, scratch: Path, dtype: str):
    from entroprobe.models import load_model

    if name == "micro-ar":
        return load_model("micro-ar", device="cpu", dtype=dtype), "micro-world", "micro-world"
    from tiny_models import tiny_chameleon, tiny_emu3, tiny_janus, tiny_llama

    if name == "emu3":
        adapter = load_model(f"emu3:{tiny_emu3(scratch / 'emu3')}", device="cpu", dtype=dtype, image_area=256)
        return adapter, _janus_prompts(scratch), _images(scratch)
    if name == "chameleon":
        adapter = load_model(f"chameleon:{tiny_chameleon(scratch / 'chameleon')}", device="cpu", dtype=dtype)
        return adapter, _janus_prompts(scratch), _images(scratch)
    if name == "llama":
        return load_model(f"causal-lm:{tiny_llama(scratch / 'llama')}", device="cpu", dtype=dtype), \
            _janus_prompts(scratch), None
    janus = load_model(f"janus:{tiny_janus(scratch / 'janus')}", device="cpu", dtype=dtype)
    if name == "janus-images":
        return janus, None, _images(scratch)
    return janus, _janus_prompts(scratch), None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--models", nargs="+", default=["micro-ar", "janus"],
                        choices=("micro-ar", "janus", "janus-images", "emu3", "chameleon", "llama"))
    parser.add_argument("--dtype", default="float32", help="the models' dtype (micro-ar: float32 only)")
    args = parser.parse_args()
    import torch

    from entroprobe.probe import ProbeConfig, run_probe
    from equality import equality, told

    print(f"{args.dtype}, torch {torch.__version__}, {torch.get_num_threads()} threads\n\n"
          "| model | task | B | units | units/s | vs B = 1 | model s | model vs B = 1 | ceiling | same answer | "
          "max Δ bits |\n|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        for name in args.models:
            adapter, text, image = cases(name, scratch, args.dtype)
            warm = ProbeConfig(model=name, out=scratch / f"{name}-warm", text_prompts=text, image_prompts=image,
                               tasks=TASKS, limit=2, progress=False, max_new_tokens=4)  # fmt: skip
            run_probe(warm, adapter=adapter)  # first calls (kernels, lazy imports) outside the timed runs
            for task in TASKS:
                if task == "image-gen" and (text is None or not adapter.can(task, "text")):
                    continue  # images are drawn from text prompts, by models that draw them
                base = None
                for size in args.sizes:
                    out = scratch / f"{name}-{task}-{size}"
                    config = ProbeConfig(model=name, out=out, text_prompts=text, image_prompts=image, tasks=(task,),
                                         batch_size=size, progress=False, max_new_tokens=16)  # fmt: skip
                    s = run_probe(config, adapter=adapter)
                    rate = s.succeeded / s.seconds
                    base = base or (rate, s.model_seconds, s.seconds, out)
                    same = equality(base[3], out) if out != base[3] else None
                    # the most batching could give if, at this B, a unit's estimators and commit cost nothing:
                    # the whole run at B = 1 over the model's own time at B
                    ceiling = base[2] / s.model_seconds
                    print(f"| {name} | {task} | {size} | {s.succeeded} | {rate:.1f} | {rate / base[0]:.2f}× | "
                          f"{s.model_seconds:.2f} | {base[1] / s.model_seconds:.2f}× | {ceiling:.2f}× | {told(same)} |",
                          flush=True)


if __name__ == "__main__":
    main()
