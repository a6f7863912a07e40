"""The ``entroprobe`` command: a thin shell over the library's functions.

Each subcommand parses its flags into the same objects a Python user would build, calls one library function,
and prints what it returns. Heavy imports happen inside the handlers so ``entroprobe --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from entroprobe.errors import EntroprobeError

EXAMPLES = {
    "demo": "entroprobe demo --out demo-report",
    "run": (
        "entroprobe run --model minilm --text-prompts samples --out runs/minilm\n"
        "  entroprobe run --model janus:deepseek-community/Janus-Pro-1B --model-args dtype=bf16,device=cuda \\\n"
        "      --text-prompts t2i-corebench:T2I-CoReBench/data --image-prompts mmbench:MMBench_DEV_EN.tsv \\\n"
        "      --tasks encode,text-gen,image-gen --out runs/janus-1b\n"
        "  torchrun --nproc_per_node=8 -m entroprobe run --model ... --out runs/x   # sharded by rank"
    ),
    "report": "entroprobe report runs/janus-1b runs/micro-mask --out report/",
    "prompts": "entroprobe prompts t2i-corebench:T2I-CoReBench/data --summary",
    "validate": "entroprobe validate --out validation/ --seed 0",
    "collect": "entroprobe collect runs/janus-1b   # results.parquet from what a running or killed run committed",
    "micro": (
        "entroprobe micro train --variant mask --out weights/\n  entroprobe micro eval --variant ar\n"
        "  entroprobe micro card --weights-dir weights/"
    ),
    "models": "entroprobe models",
}


def _sigma(text: str) -> str | float:
    if text in ("median", "pooled"):
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sigma takes 'median', 'pooled' or a positive number; got '{text}'") from None


def _scales(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sigma-scale takes factors separated by commas, e.g. 0.5,1,2; got '{text}'") from None


def _subparser(subparsers, name: str, help_text: str) -> argparse.ArgumentParser:
    return subparsers.add_parser(
        name, help=help_text, description=help_text, epilog=f"example:\n  {EXAMPLES[name]}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="entroprobe",
        description="Layer-wise matrix-based Rényi entropy of how models encode prompts and respond.",
    )
    from entroprobe import __version__

    parser.add_argument("--version", action="version", version=f"entroprobe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _subparser(sub, "demo", "Probe the built-in micro-world prompts with minilm, micro-ar and micro-mask, then write the report.")
    p.add_argument("--out", required=True, type=Path, help="output directory (runs/ and report/ go inside)")
    p.add_argument("--limit", type=int, default=None, help="at most this many prompts per source (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=_demo)

    p = _subparser(sub, "run", "Probe a model over prompt sources; rows are committed as they are computed.")
    p.add_argument("--model", required=True, help="FAMILY:PATH (e.g. causal-lm:/models/qwen) or a built-in name")
    p.add_argument("--model-args", default="", help="loading keywords k=v,… (dtype, device, revision, …)")
    p.add_argument("--text-prompts", help="a text prompt source (samples, t2i-corebench:DIR, jsonl:FILE)")
    p.add_argument("--image-prompts", help="an image prompt source (samples, mmbench:FILE.tsv, images:DIR)")
    p.add_argument("--tasks", default="encode", help="comma-separated: encode, text-gen, image-gen")
    p.add_argument("--alpha", type=float, default=1.01, help="Rényi order (default 1.01)")
    p.add_argument("--sigma", type=_sigma, default="median",
                   help="'median' (per sequence and layer), 'pooled' (one per layer for the run, calibrated on a "
                        "sample of its units) or a fixed bandwidth")
    p.add_argument("--sigma-scale", type=_scales, default=(1.0,), metavar="F,F,…",
                   help="also measure at σ × each factor, e.g. 0.5,1,2 (rows with a sigma_scale column)")
    p.add_argument("--match-tokens", type=int, default=16, metavar="K",
                   help="also measure prompts at K tokens (mean over random subsets; 0: off; default 16)")
    p.add_argument("--match-response-tokens", type=int, default=16, metavar="M",
                   help="and responses at M tokens, the prompt at K (0: the response whole; default 16)")
    p.add_argument("--match-draws", type=int, default=8, metavar="R", help="random subsets per matched measure")
    p.add_argument("--calibration-units", type=int, default=32, metavar="N",
                   help="units whose token pairs set σ under --sigma pooled (default 32)")
    p.add_argument("--base", type=float, default=2.0, help="logarithm base (default 2: bits)")
    p.add_argument("--limit", type=int, help="at most this many prompts per source, spread across types")
    p.add_argument("--max-new-tokens", type=int, default=32, help="length of text responses")
    p.add_argument("--layers", default=None, metavar="L,L,…|every=K",
                   help="measure these layers only: 0,4,8,-1 (0 = embedding output, -1 = last) or every=K")
    p.add_argument("--batch-size", type=int, default=1, metavar="B",
                   help="prompts per forward pass and generate call (same rows as 1, to float tolerance)")
    p.add_argument("--state-memory", type=float, default=2.0, metavar="GIB",
                   help="a unit's layer states larger than this (float32) are kept on the CPU and measured on the "
                        "GPU chunk by chunk (default 2 GiB)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-states", action="store_true", help="also keep every unit's layer states")
    p.add_argument("--overwrite", action="store_true", help="replace a run with other settings in --out")
    p.add_argument("--out", required=True, type=Path, help="the run directory")
    p.set_defaults(handler=_run)

    p = _subparser(sub, "collect", "Write results.parquet (and errors/responses) from a run's committed rows.")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--repair", action="store_true",
                   help="remove for good rows an older entroprobe committed twice (not while a run writes it)")
    p.set_defaults(handler=_collect)

    p = _subparser(sub, "report", "Write the paper's table and figures for one or more runs (models side by side).")
    from entroprobe.report import add_arguments, run_command  # cheap: pandas/matplotlib load when a report is made

    add_arguments(p)
    p.set_defaults(handler=run_command)

    p = _subparser(sub, "prompts", "List a prompt source's prompts (JSON lines), or their counts with --summary.")
    p.add_argument("source")
    p.add_argument("--summary", action="store_true", help="counts per prompt type as JSON")
    p.add_argument("--limit", type=int)
    p.set_defaults(handler=_prompts)

    p = _subparser(sub, "validate", "Check the estimators: the paper's two sensitivity experiments and a length "
                                    "confound, each PASS or FAIL (exit 1 on a FAIL).")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=_validate)

    p = _subparser(sub, "models", "List the model families and built-in models.")
    p.set_defaults(handler=_models)

    p = _subparser(sub, "micro", "Train or evaluate the built-in micro unified models.")
    micro = p.add_subparsers(dest="micro_command", required=True, metavar="ACTION")
    t = micro.add_parser("train", help="train a variant from its seed (reproduces the shipped weights)")
    t.add_argument("--variant", required=True, choices=["ar", "mask"])
    t.add_argument("--out", required=True, type=Path)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--steps", type=int, help="training steps (default: the shipped weights' budget)")
    t.set_defaults(handler=_micro_train)
    e = micro.add_parser("eval", help="held-out quality of the shipped (or given) weights")
    e.add_argument("--variant", choices=["ar", "mask"], help="default: both")
    e.add_argument("--weights", type=Path, help="a weights file from 'micro train' instead of the shipped ones")
    e.add_argument("--n", type=int, default=200, help="held-out examples")
    e.add_argument("--seed", type=int, default=1234)
    e.set_defaults(handler=_micro_eval)
    c = micro.add_parser("card", help="evaluate both variants in a folder and write its MODEL_CARD.md")
    c.add_argument("--weights-dir", type=Path, help="a folder of micro-ar.pt and micro-mask.pt (default: shipped)")
    c.add_argument("--n", type=int, default=200, help="held-out examples")
    c.add_argument("--seed", type=int, default=1234)
    c.set_defaults(handler=_micro_card)
    return parser


# -- handlers ---------------------------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    from entroprobe.probe import ProbeConfig, parse_model_args, run_probe

    config = ProbeConfig(
        model=args.model, out=args.out, model_args=parse_model_args(args.model_args),
        text_prompts=args.text_prompts, image_prompts=args.image_prompts,
        tasks=tuple(t.strip() for t in args.tasks.split(",") if t.strip()),
        alpha=args.alpha, sigma=args.sigma, base=args.base, limit=args.limit, sigma_scales=args.sigma_scale,
        match_tokens=args.match_tokens, match_response_tokens=args.match_response_tokens,
        match_draws=args.match_draws, calibration_units=args.calibration_units,
        max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, state_memory=args.state_memory,
        layers=args.layers, seed=args.seed, save_states=args.save_states, overwrite=args.overwrite,
    )  # fmt: skip
    summary = run_probe(config)
    print(summary.describe(), file=sys.stderr)
    return 0


def _collect(args: argparse.Namespace) -> int:
    from entroprobe.probe import collect

    frame = collect(args.run_dir, repair=args.repair)
    print(f"{len(frame)} rows → {args.run_dir / 'results.parquet'}")
    if frame.attrs.get("dropped_duplicates"):
        print(f"{frame.attrs['dropped_duplicates']} rows an older entroprobe committed twice are left out; "
              f"'entroprobe collect {args.run_dir} --repair' removes them from the shards")
    return 0


def _prompts(args: argparse.Namespace) -> int:
    from entroprobe.sources import format_summary, load_prompts

    prompts = load_prompts(args.source, limit=args.limit)
    if args.summary:
        print(format_summary(prompts))
        return 0
    for p in prompts:
        record = {"id": p.id, "source": p.source, "modality": p.modality, "type": p.prompt_type, "text": p.text,
                  "image": p.image_path or ("<bytes>" if p.image_bytes else None), "meta": p.meta}  # fmt: skip
        print(json.dumps(record, ensure_ascii=False))
    return 0


def _validate(args: argparse.Namespace) -> int:
    from entroprobe.validate import run_validation

    result = run_validation(args.out, seed=args.seed)
    verdict = {True: "PASS", False: "FAIL"}
    clusters, alignment, length = result["clusters"], result["alignment"], result["length"]
    print(f"{verdict[clusters['passed']]} clusters: {clusters['expected']}")
    for row in clusters["rows"]:
        print(f"  k={row['k']:>3}: entropy {row['entropy']:.4f} bits")
    print(f"{verdict[alignment['passed']]} alignment: {alignment['expected']}")
    for row in alignment["rows"]:
        print(f"  {row['case']:>11}: conditional entropy {row['conditional_entropy']:.4f} bits")
    print(f"{verdict[length['passed']]} length: {length['expected']}")
    for name, row in length["long_minus_short"].items():
        print(f"  {name:>7}: long − short {row['difference']:+.4f} [{row['low']:+.4f}, {row['high']:+.4f}] bits")
    print(f"written: {args.out / 'validation.json'}, clusters.png, alignment.png, length.png")
    return 0 if result["passed"] else 1


def _models(args: argparse.Namespace) -> int:
    from entroprobe.models import PAPER_ROWS, family_table

    columns = [("encode", "text"), ("encode", "image"), ("text-gen", "text"), ("text-gen", "image"),
               ("image-gen", "text")]  # fmt: skip
    head = ["family", *(f"{task}/{modality}" for task, modality in columns)]
    rows = [[row["family"], *("yes" if c in row["capabilities"] else "–" for c in columns)] for row in family_table()]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    for row in [head, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
    print("\nHow to load each (--model):")
    for row in family_table():
        print(f"  {row['load']}")
    upstream = [row for row in family_table() if row["upstream"] is not None]
    if upstream:
        print("\nModels from their authors' repositories: entroprobe imports the code of your checkout (repo=PATH,")
        print("or $ENTROPROBE_UPSTREAM/<name>); your checkout's licence governs its use. How to install them")
        print("beside entroprobe, and what each measures: docs/upstream.md.")
        for row in upstream:
            record = row["upstream"]
            tested = ", ".join(f"{commit[:7]} ({date})" for commit, date in record.tested)
            print(f"  {row['family']}: {record.github} — tested at {tested}, transformers {record.transformers}")
            if record.licence:
                print(f"      licence: {record.licence}")
    print("\nThe paper's ten models (Table 1):")
    checkouts = {row["family"]: row["upstream"] for row in upstream}
    for name, spec in PAPER_ROWS:
        record = checkouts.get(spec.partition(":")[0])
        repo = f" --model-args repo=/src/{record.name}" if record is not None else ""
        print(f"  {name:<13} --model {spec}{repo}")
    print("  The RecA rows are post-trainings of BAGEL and Harmon: their checkpoints load with the same family.")
    return 0


def _micro_train(args: argparse.Namespace) -> int:
    from entroprobe.models.micro.train import train

    path = train(args.variant, args.out, seed=args.seed, steps=args.steps)
    print(f"weights: {path}")
    return 0


def _micro_eval(args: argparse.Namespace) -> int:
    from entroprobe.models.micro.train import evaluate

    targets = [str(args.weights)] if args.weights else ([args.variant] if args.variant else ["ar", "mask"])
    for target in targets:
        print(json.dumps({"model": target, **evaluate(target, n=args.n, seed=args.seed)}, indent=2))
    return 0


def _micro_card(args: argparse.Namespace) -> int:
    from entroprobe.models.micro.train import WEIGHTS_DIR, write_model_card

    print(f"model card: {write_model_card(args.weights_dir or WEIGHTS_DIR, n=args.n, seed=args.seed)}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from entroprobe.demo import DEMO_MODELS, run_demo

    result = run_demo(args.out, limit=args.limit, seed=args.seed)
    from entroprobe.probe.reading import describe

    print(f"\nreport: {result.report}")
    for model, summary in zip(DEMO_MODELS, result.summaries):
        print(f"{model}: {describe(summary.reading) or 'unknown tokens: not measured'}")
    for finding in result.findings:
        print(f"- {finding}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except EntroprobeError as exc:
        print(f"entroprobe: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("entroprobe: interrupted; committed rows are kept (run the same command to resume)", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `entroprobe prompts … | head`: the reader has gone, which is not an error
        if args.command != "prompts":
            raise
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's own flush at exit must not fail
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
