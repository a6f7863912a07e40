"""Batching on a GPU, on a random-weight model of real size: units/s at each B, the bf16 equality, the full pass.

    python benchmarks/bench_gpu.py                          # Janus-Pro-1B's shapes on cuda, bf16 (≈ 4 minutes on an H200)
    python benchmarks/bench_gpu.py --shape tiny --device cpu --dtype float32   # the same path in seconds, to try it

The model is ``JanusForConditionalGeneration`` built from a config with Janus-Pro-1B's shapes (a 24-layer
LLaMA of width 2048, vocabulary 102,400; SigLIP-L at 384 px, 576 image tokens; the VQ-16 image tokenizer with
16,384 codes), random weights, saved with ``save_pretrained`` and loaded through ``load_model`` as a user's
checkpoint is. Its tokenizer is the tests' word-level one (``tests/tiny_models.py``), with Janus-Pro's default
system prompt in text replies. Prompts are 20 to 120 words, so their lengths spread as T2I-CoReBench's do.

For each task (encode, text-gen, image-gen) and each ``--sizes`` B, one ``run_probe`` into a fresh directory,
the model loaded once and warmed up first: 64 prompts for encode, 32 for text replies of 32 tokens, and for
images one batch of B prompts (4 at B = 1), since each image is 576 sequential steps. Printed as Markdown (and
written to ``--out`` as ``bench_gpu.md`` and ``bench_gpu.json``):

- units/s over the whole run, its ratio to B = 1, the model's own seconds and the estimators' seconds, and the
  most GPU memory a batch's model work took above the model;
- the bf16 equality of each B against B = 1 over the units both ran: for encode, the largest difference of any
  row in bits; for generation, how many units drew the same answer (in bf16 a batch's padding changes the
  rounding, and a sampled answer can then take another branch) and the largest row difference among those;
- the time a full T2I-CoReBench image-generation pass (1,080 prompts) would take at the fastest B.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the tests' word-level Janus tokenizer and chat template

TASKS = ("encode", "text-gen", "image-gen")
T2I_COREBENCH_PROMPTS = 1080

# Janus-Pro-1B (deepseek-ai/Janus-Pro-1B, config.json): language model, vision encoder and image tokenizer
PRO_1B = {
    "text": dict(model_type="llama", vocab_size=102400, hidden_size=2048, intermediate_size=5632, num_hidden_layers=24,
                 num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=16384),
    "vision": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, image_size=384, patch_size=16,
                   projection_dim=2048, num_image_tokens=576),
    "vq": dict(projection_dim=2048, image_token_embed_dim=2048),  # the rest: transformers' VQ-16 defaults
    "image_size": 384,
}  # fmt: skip
TINY = {
    "text": dict(model_type="llama", hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=512),
    "vision": dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2.0, image_size=32,
                   patch_size=8, projection_dim=32, num_image_tokens=16),
    "vq": dict(embed_dim=8, num_embeddings=64, latent_channels=8, base_channels=32, channel_multiplier=[1, 2],
               num_res_blocks=1, projection_dim=32, image_token_embed_dim=32),
    "image_size": 32,
}  # fmt: skip


def build(directory: Path, shape: dict, device: str, dtype: str) -> Path:
    """A random-weight Janus of ``shape`` and its processor, saved into ``directory`` in ``dtype``; the weights
    are drawn on ``device`` (a 2-billion-parameter model is slow to initialise on a CPU)."""
    import torch
    from tiny_models import JANUS_CHAT_TEMPLATE, _janus_tokenizer
    from transformers import JanusConfig, JanusForConditionalGeneration, JanusImageProcessorPil, JanusProcessor

    tokenizer = _janus_tokenizer()
    text = {"vocab_size": len(tokenizer), **shape["text"], "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}  # fmt: skip
    config = JanusConfig(text_config=text, vision_config=shape["vision"], vq_config=shape["vq"],
                         image_token_id=tokenizer.convert_tokens_to_ids("<image_placeholder>"))  # fmt: skip
    torch.manual_seed(0)
    with torch.device(device):
        model = JanusForConditionalGeneration(config).eval().to(getattr(torch, dtype))
    side = shape["image_size"]
    images = JanusImageProcessorPil(size={"height": side, "width": side}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor = JanusProcessor(image_processor=images, tokenizer=tokenizer, chat_template=JANUS_CHAT_TEMPLATE,
                               num_image_tokens=shape["vision"]["num_image_tokens"], use_default_system_prompt=True)  # fmt: skip
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    del model
    return directory


def prompts(directory: Path, count: int) -> str:
    """``count`` prompts of 20 to 120 words of the tokenizer's vocabulary, as a JSONL source."""
    from tiny_models import JANUS_WORDS

    words = JANUS_WORDS[2:]  # not the role markers
    lines = [{"id": f"p{i:03d}", "text": " ".join(words[(7 * i + j) % len(words)] for j in range(20 + (37 * i) % 101))}
             for i in range(count)]  # fmt: skip
    path = directory / "prompts.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return f"jsonl:{path}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=("pro-1b", "tiny"), default="pro-1b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--units", type=int, nargs=3, default=[64, 32, 64], metavar=("ENCODE", "TEXT", "IMAGE"),
                        help="most prompts per task (default 64 32 64)")  # fmt: skip
    parser.add_argument("--images", type=int, default=4, help="image-gen units at B = 1 (at B, max(B, this))")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("."), help="where bench_gpu.md and bench_gpu.json go")
    args = parser.parse_args()

    import torch
    import transformers

    from entroprobe.models import load_model
    from entroprobe.probe import ProbeConfig, run_probe
    from equality import equality, told

    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    header = (f"{args.shape} Janus, {args.dtype}, on {gpu}; torch {torch.__version__}, transformers "
              f"{transformers.__version__}")  # fmt: skip
    lines = [header, "", "| task | B | units | units/s | vs B = 1 | model s | estimators s | peak GiB | same answer | "
             "max Δ bits |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    print("\n".join(lines), flush=True)
    results = {"header": header, "cases": []}
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        started = time.perf_counter()
        path = build(scratch / "janus", PRO_1B if args.shape == "pro-1b" else TINY, args.device, args.dtype)
        adapter = load_model(f"janus:{path}", device=args.device, dtype=args.dtype)
        results["setup_seconds"] = time.perf_counter() - started
        source = prompts(scratch, max(args.units))
        warm = ProbeConfig(model="janus", out=scratch / "warm", text_prompts=source, tasks=tuple(args.tasks), limit=2,
                           progress=False, max_new_tokens=4, batch_size=2)  # fmt: skip
        run_probe(warm, adapter=adapter)  # kernels and lazy imports outside the timed runs
        for task, count in zip(TASKS, args.units):
            if task not in args.tasks:
                continue
            base = None
            for size in args.sizes:
                # an image takes seconds: at B, image-gen runs one batch of B prompts (at least --images)
                limit = min(count, max(args.images, size)) if task == "image-gen" else count
                out = scratch / f"{task}-{size}"
                config = ProbeConfig(model="janus", out=out, text_prompts=source, tasks=(task,), limit=limit,
                                     batch_size=size, progress=False, max_new_tokens=args.max_new_tokens)  # fmt: skip
                s = run_probe(config, adapter=adapter)
                rate = s.succeeded / s.seconds
                base = base or (rate, out)
                same = equality(base[1], out) if size != args.sizes[0] else None
                case = {"task": task, "B": size, "units": s.succeeded, "failed": s.failed, "units_per_s": rate,
                        "model_s": s.model_seconds, "estimators_s": s.entropy_seconds,
                        "peak_gib": s.peak_gpu_bytes / (1 << 30), "equality": same}  # fmt: skip
                results["cases"].append(case)
                ratio = f"{rate / base[0]:.2f}×" if base[0] else "—"
                lines.append(f"| {task} | {size} | {s.succeeded} | {rate:.2f} | {ratio} | {s.model_seconds:.1f} | "
                             f"{s.entropy_seconds:.1f} | {case['peak_gib']:.2f} | {told(same)} |")  # fmt: skip
                print(lines[-1], flush=True)
                write(args.out, lines, results)  # what is done survives a kill
    write(args.out, lines, results)


def write(out: Path, lines: list[str], results: dict) -> None:
    """``bench_gpu.md`` (the table so far, the full-pass projection and the setup time) and ``bench_gpu.json``."""
    tail = []
    images = [c for c in results["cases"] if c["task"] == "image-gen" and c["units_per_s"]]
    if images:
        best = max(images, key=lambda c: c["units_per_s"])
        hours = T2I_COREBENCH_PROMPTS / best["units_per_s"] / 3600
        results["full_image_pass"] = {"B": best["B"], "hours": hours}
        tail.append(f"A full T2I-CoReBench image-generation pass ({T2I_COREBENCH_PROMPTS} prompts) at B = {best['B']}: "
                    f"{hours:.2f} h ({best['units_per_s']:.2f} units/s).")  # fmt: skip
    tail.append(f"Setup (build, save and load the model): {results['setup_seconds']:.0f} s.")
    (out / "bench_gpu.md").write_text("\n".join([*lines, "", *tail]) + "\n")
    (out / "bench_gpu.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
