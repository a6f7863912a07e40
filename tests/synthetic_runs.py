"""Run directories written from synthetic rows, in the run format, whose answers are known.

- Image prompts (576 tokens) have a far higher raw prompt entropy than text prompts (8–300 tokens), and the same
  at the matched count of 16 tokens: the raw modality difference is token count.
- Text generation has a higher conditional entropy than image generation, raw and at 16 prompt and 16 response
  tokens: the response difference survives.
- Every value is a fraction of the structureless reference of its token count (below 0.8: kernel state ok);
  with ``image_ceiling`` one model's image prompts sit at 0.95 of it at layer 0 (state structureless: a warning).
"""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd

from entroprobe.probe.schema import COLUMNS

TEXT_TYPES = ["composition", "deductive", "inductive", "abductive"]
IMAGE_TYPES = ["coarse", "single-instance", "cross-instance", "attribute", "relation", "logical"]
LENGTH_TOKENS = {"short": (8, 20), "medium": (30, 80), "long": (120, 300)}
IMAGE_TOKENS = 576
K = M = 16  # the matched counts
FIGURES = ["fig1_length", "fig2_length_layers", "fig3_prompt_types", "fig4_modality", "fig5_response",
           "fig6_kernel"]


@cache
def reference(n: int, base: float = 2.0, alpha: float = 1.01) -> float:
    """n equidistant tokens at kernel entry e⁻¹: eigenvalues (1 + (n − 1)/e)/n once and (1 − 1/e)/n n − 1 times."""
    if n < 2:
        return 0.0
    c = math.exp(-1)
    p1, p2 = (1 + (n - 1) * c) / n, (1 - c) / n
    return math.log(p1**alpha + (n - 1) * p2**alpha) / (1 - alpha) / math.log(base)


def _rows(model, num_layers, *, tasks, n_text, n_image, length_meta, image_ceiling, alpha, sigma, base, rng,
          scales, matched, image_gen_layers=None):
    log = lambda n: np.log(n) / np.log(base)  # noqa: E731
    ref = lambda n: reference(int(n), base, alpha)  # noqa: E731
    prompts = []
    for t in TEXT_TYPES:
        for i in range(n_text):
            length = list(LENGTH_TOKENS)[i % 3]
            meta = {"sub_class": f"{t}-{i % 2}"} | ({"length": length} if length_meta else {})
            prompts.append(("text", t, f"{t}/{i:03d}", int(rng.integers(*LENGTH_TOKENS[length])), meta))
    for t in IMAGE_TYPES:
        for i in range(n_image):
            prompts.append(("image", t, f"{t}/{i:03d}", IMAGE_TOKENS, {"category": t}))
    out = []
    for modality, ptype, pid, n, meta in prompts:
        source = "samples" if modality == "text" else "images"
        for task in tasks:
            if task == "image-gen" and modality == "image":
                continue
            m = 0 if task == "encode" else (24 if task == "text-gen" else 64)
            blocks = [(0, 0, n, m)]
            if matched and n >= K and (task == "encode" or m >= M):
                blocks.append((K, 0 if task == "encode" else M, K, 0 if task == "encode" else M))
            depth = image_gen_layers if task == "image-gen" and image_gen_layers else num_layers
            for k, mk, n_seen, m_seen in blocks:
                for layer in range(depth + 1):
                    d = layer / depth
                    if k:  # matched: both modalities alike
                        frac = 0.6 + rng.normal(0, 0.01)
                    elif modality == "text":
                        frac = 0.45 + 0.25 * d + rng.normal(0, 0.02)
                    else:
                        frac = (0.95 if image_ceiling and layer == 0 else 0.75 - 0.05 * d) + rng.normal(0, 0.003)
                    prompt = frac * ref(n_seen)
                    values = {"prompt_entropy": (prompt, n_seen, ref(n_seen))}
                    if task != "encode":
                        if k:
                            cond = (0.9 if task == "text-gen" else 0.4) + rng.normal(0, 0.03)
                        else:
                            cond = (1.4 + 0.6 * d if task == "text-gen" else 0.5) + rng.normal(0, 0.08)
                        joint_ref = ref(n_seen + m_seen)
                        values["conditional_entropy"] = (cond, n_seen + m_seen, joint_ref - ref(n_seen))
                        values["joint_entropy"] = (prompt + cond, n_seen + m_seen, joint_ref)
                        values["response_entropy"] = (0.7 * ref(m_seen) + rng.normal(0, 0.05), m_seen, ref(m_seen))
                    for scale in scales:
                        for measure, (value, rows_seen, reference_value) in values.items():
                            value = value * (1 + 0.1 * math.log2(scale))  # a wider σ: a little more, never a flip
                            flagged = measure == "prompt_entropy" and value >= 0.8 * reference_value
                            state = "structureless" if flagged else "ok"
                            out.append({
                                "model": model, "prompt_id": pid, "source": source, "modality": modality,
                                "prompt_type": ptype, "prompt_meta": json.dumps(meta), "task": task,
                                "measure": measure, "layer": layer, "num_layers": depth, "value": float(value),
                                "n_tokens": n, "n_response_tokens": m, "alpha": alpha,
                                "sigma": scale * ((2.0 + 3.0 * layer + rng.normal(0, 0.2)) if sigma == "median"
                                                  else float(sigma)),
                                "sigma_rule": "median" if sigma == "median" else "fixed", "sigma_scale": scale,
                                "base": base, "saturation": 0.2, "saturated": state != "ok", "kernel_state": state,
                                "reference": reference_value, "max_entropy": float(log(rows_seen)),
                                "subsample": k, "subsample_response": mk, "draws": 8 if k else 1,
                            })  # fmt: skip
    return out


def write_run(path: Path, model: str = "causal-lm:tiny-a", num_layers: int = 4, *,
              tasks=("encode", "text-gen", "image-gen"), n_text: int = 6, n_image: int = 5, length_meta=True,
              image_ceiling=False, alpha=1.01, sigma="median", base=2.0, status="complete", seed=0,
              scales=(1.0,), matched=True, image_gen_layers: int | None = None) -> Path:
    """Write a run directory in the run format: manifest.json + results.parquet (schema columns and dtypes).

    ``image_gen_layers``: image generation measured in another network of that many layers (OmniGen2's diffusion
    transformer beside its MLLM)."""
    rng = np.random.default_rng(seed)
    rows = _rows(model, num_layers, tasks=tasks, n_text=n_text, n_image=n_image, length_meta=length_meta,
                 image_ceiling=image_ceiling, alpha=alpha, sigma=sigma, base=base, rng=rng, scales=scales,
                 matched=matched, image_gen_layers=image_gen_layers)  # fmt: skip
    df = pd.DataFrame(rows, columns=list(COLUMNS)).astype({c: d for c, (d, _) in COLUMNS.items()})
    path.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path / "results.parquet", index=False)
    manifest = {
        "entroprobe_version": "0.1.0", "status": status,
        "model": {"spec": model, "family": model.split(":")[0], "num_layers": num_layers, "d_model": 64,
                  "fingerprint": "sha256:test"},
        "settings": {"alpha": alpha, "sigma": sigma, "base": base, "tasks": list(tasks), "text_prompts": "samples",
                     "image_prompts": "images:x", "limit": None, "max_new_tokens": 16, "seed": 0,
                     "match_tokens": K if matched else 0, "match_response_tokens": M if matched else 0},
        "started": "2026-01-01T00:00:00+00:00", "ended": "2026-01-01T00:05:00+00:00",
        "counts": {"prompts": int(df["prompt_id"].nunique()), "rows": len(df), "errors": 0},
        "versions": {"torch": "2.13.0"}, "device": "cpu",
        "layers_by_task": {"image-gen": image_gen_layers} if image_gen_layers else {},
    }
    (path / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return path


def raw_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows on every token at σ × 1."""
    return df[(df["subsample"] == 0) & (df["subsample_response"] == 0) & (df["sigma_scale"] == 1.0)]


def matched_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows at the matched counts, σ × 1."""
    return df[((df["subsample"] > 0) | (df["subsample_response"] > 0)) & (df["sigma_scale"] == 1.0)]
