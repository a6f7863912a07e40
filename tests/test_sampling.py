"""Per-prompt sampling for transformers' generate (models/hf_generate.py) and where a question sits in a template."""

from __future__ import annotations

import json
import math

import pytest
import torch

from entroprobe.errors import InputError
from entroprobe.models import load_model
from entroprobe.models.hf_generate import GuidedRowNoise, RowNoise
from entroprobe.models.prompt_tokens import locate
from entroprobe.probe import ProbeConfig, run_probe

from tiny_models import tiny_emu3, tiny_janus, tiny_llama


def test_greedy_over_scores_plus_row_noise_draws_from_the_softmax():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, 0.5]])
    want = torch.softmax(logits[0], -1)
    n = 6000
    counts = torch.zeros(5)
    for seed in range(n):
        noisy = RowNoise([torch.Generator().manual_seed(seed)])(None, logits)
        counts[noisy.argmax()] += 1
    for p, c in zip(want.tolist(), counts.tolist()):
        assert abs(c / n - p) < 4 * math.sqrt(p * (1 - p) / n)  # within 4 standard errors


def test_guided_noise_guides_filters_and_survives_the_guidance_that_follows():
    from transformers import ClassifierFreeGuidanceLogitsProcessor, TopKLogitsWarper

    torch.manual_seed(0)
    scores = torch.randn(4, 50)  # 2 prompts: conditional rows, then unconditional ones
    guided = scores[2:] + 3.0 * (scores[:2] - scores[2:])
    allowed = guided.topk(5, dim=-1).indices
    ours = GuidedRowNoise(3.0, [TopKLogitsWarper(top_k=5)], [torch.Generator().manual_seed(s) for s in (1, 2)])
    mine = ours(None, scores)
    out = ClassifierFreeGuidanceLogitsProcessor(2.0)(torch.zeros(2, 1, dtype=torch.long), mine)  # the model's step
    assert out.shape == (2, 50) and not out.isnan().any()
    torch.testing.assert_close(out, mine[:2])  # changes nothing
    for row in range(2):
        assert out[row].argmax() in allowed[row]  # drawn among the top 5 of the guided scores
    torch.testing.assert_close(GuidedRowNoise(1.0, [], None)(None, scores)[:2], scores[:2])  # w = 1: conditional
    torch.testing.assert_close(GuidedRowNoise(0.0, [], None)(None, scores)[:2], scores[2:])  # w = 0: unconditional
    # a draw from softmax(guided): the share of the top code over seeds
    p = torch.softmax(guided[0], -1)
    n = 3000
    top = sum(int(GuidedRowNoise(3.0, [], [torch.Generator().manual_seed(s)] * 2)(None, scores)[0].argmax()
                  == p.argmax()) for s in range(n))  # fmt: skip
    assert abs(top / n - p.max().item()) < 4 * math.sqrt(p.max().item() * (1 - p.max().item()) / n)


def test_janus_images_with_top_k_or_without_guidance(tmp_path):
    janus = load_model(f"janus:{tiny_janus(tmp_path / 'janus')}", device="cpu")
    codes = janus.respond_image("a red cat", seed=0, top_k=2).output_ids
    assert len(set(codes.tolist())) > 1  # not one code over and over (a NaN argmax gives code 0 everywhere)
    for scale in (1.0, 0.0):
        assert janus.respond_image("a red cat", seed=0, guidance_scale=scale).extra["guidance_scale"] == scale
    batched = janus.respond_image_batch(["a cat", "the red dog sat"], seeds=[1, 2], top_k=3, guidance_scale=1.0)
    alone = [janus.respond_image(t, seed=s, top_k=3, guidance_scale=1.0) for t, s in (("a cat", 1), ("the red dog sat", 2))]
    assert [b.output_ids.tolist() for b in batched] == [a.output_ids.tolist() for a in alone]


def test_settings_that_read_the_padded_prompt_are_generated_one_by_one(tmp_path):
    spec = f"causal-lm:{tiny_llama(tmp_path / 'llama')}"
    adapter = load_model(spec, device="cpu", do_sample=True, repetition_penalty=1.3)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "text": t}) + "\n"
                               for i, t in enumerate(["a cat", "the red dog sat on the mat", "blue"])))  # fmt: skip
    summary = run_probe(ProbeConfig(model=spec, out=tmp_path / "run", text_prompts=f"jsonl:{prompts}",
                                    tasks=("text-gen",), batch_size=3, progress=False, max_new_tokens=4),
                        adapter=adapter)  # fmt: skip
    assert summary.failed == 0
    assert any("done one prompt at a time (first: text-gen of 3 prompts: EntroprobeError: repetition_penalty=1.3 "
               "reads the prompt's ids" in n for n in summary.notices)


def test_generation_over_embeddings_is_the_scripts_call_and_batches_under_a_repetition_penalty(tmp_path):
    """embeds=: generate gets inputs_embeds alone (as the families' scripts call it), so a repetition penalty reads
    the answer's tokens only: at B = 1 the answer is the plain call's, and a batch gives each prompt's alone."""
    from transformers import AutoModelForCausalLM

    from entroprobe.models.hf_generate import generate_rows

    model = AutoModelForCausalLM.from_pretrained(tiny_llama(tmp_path / "llama")).eval()
    rows = [torch.tensor(r) for r in ([5, 9, 11, 7], [3, 8], [12, 4, 6, 10, 2, 9])]
    embeds = [model.get_input_embeddings()(r).detach() for r in rows]
    settings = {"do_sample": False, "repetition_penalty": 1.5, "eos_token_id": 1, "pad_token_id": 0}
    with torch.no_grad():
        plain = model.generate(inputs_embeds=embeds[0][None], attention_mask=torch.ones(1, 4, dtype=torch.long),
                               max_new_tokens=6, **settings)[0]  # fmt: skip
    alone = [generate_rows(model, [r], seeds=[0], max_new_tokens=6, device=torch.device("cpu"), generation=settings,
                           embeds=[e])[0] for r, e in zip(rows, embeds)]  # fmt: skip
    assert alone[0].tolist() == plain.tolist()[: len(alone[0])]
    batched = generate_rows(model, rows, seeds=[0, 1, 2], max_new_tokens=6, device=torch.device("cpu"),
                            generation=settings, embeds=embeds)  # fmt: skip
    assert [b.tolist() for b in batched] == [a.tolist() for a in alone]


def test_the_question_is_found_where_the_template_puts_it(tmp_path):
    emu3 = load_model(f"emu3:{tiny_emu3(tmp_path / 'emu3')}", image_area=256)
    tok = emu3.processor.tokenizer
    # the quality suffix repeats the question's words after it: the question is still the first ones
    drawn = emu3.respond_image("best quality", seed=0, positive_prompt=" best quality")
    assert drawn.prompt.positions.tolist() == [1, 2] and drawn.prompt.token_ids.tolist() == tok("best quality")["input_ids"]
    assert locate(lambda q: f"say {q} then ASSISTANT: {q}", "ASSISTANT") == 4
    assert locate(lambda q: q.upper(), "a cat") is None  # a template that changes the text: not located


def test_a_run_measured_with_other_generation_defaults_is_not_resumed(tmp_path):
    spec = f"janus:{tiny_janus(tmp_path / 'janus')}"
    adapter = load_model(spec, device="cpu")
    config = ProbeConfig(model=spec, out=tmp_path / "run", text_prompts="micro-world", tasks=("image-gen",), limit=2,
                         progress=False)  # fmt: skip
    run_probe(config, adapter=adapter)
    manifest_path = tmp_path / "run" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["model"]["defaults"]["image-gen"]["top_k"]["value"] = 50  # what an older entroprobe sampled with
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="was measured with other generation defaults \\(image-gen differ"):
        run_probe(config, adapter=adapter)
    config.overwrite = True
    assert run_probe(config, adapter=adapter).succeeded == 2
