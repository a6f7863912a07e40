"""Show-o's generation as the authors' scripts run it, then one teacher-forced pass for the states.

- text (``inference_mmu.py``): ``mmu_generate``'s loop (:mod:`entroprobe.models.growing_mask`, several prompts at
  once, each drawing from its own seed) over the prompt's embeddings (the MAGVIT and text prompts' token ids
  embedded, the CLIP-ViT prompts' own), the additive mask growing by one causal row a step; the teacher-forced pass
  runs the prompt + every generated token under the authors' mask of the whole sequence (the same rows the growing
  mask gave each step);
- images (``inference_t2i.py``, ``mode='t2i'``): ``UniversalPrompting`` ``t2i_gen`` lays the prompt out as
  ``[pad…] <|t2i|> <|sot|> text <|eot|> <|soi|> [mask]×N <|eoi|>`` (text left-padded to ``max_seq_length + 1``),
  the unconditional row the same with no text; ``t2i_generate`` unmasks the image over ``generation_timesteps``
  MaskGIT steps with CFG ``(1 + s)·cond − s·uncond``; then the conditional row with every image token at its final
  value goes once through the model under ``create_attention_mask_predict_next`` (``rm_pad_in_image=True``), and
  the image decodes with ``vq_model.decode_code``. The unmasking loop is ``t2i_generate``'s, written out so that
  each prompt draws from its own generator (the script's global RNG, seeded, gives the same draws alone); a batch
  of prompts runs it at once, as the script batches its prompts.
"""

from __future__ import annotations

from typing import Any

import torch

from entroprobe.errors import InputError, ItemError
from entroprobe.models.base import Response

__all__ = ["generate_images", "generate_texts"]


def generate_texts(adapter: Any, prompts: list[dict[str, Any]], budgets: list[int], seeds: list[int]) -> list[Response]:
    """``mmu_generate`` on each prompt (from ``ShowOAdapter._understanding``), the prompts at once (see
    :mod:`entroprobe.models.growing_mask`), then one teacher-forced pass over them all, right-padded."""
    from entroprobe.models.growing_mask import forced, generate

    model, device = adapter.model, adapter.device
    # inference_mmu.py: the MAGVIT checkpoint generates over ids and ends at <|eot|>, the CLIP-ViT one over
    # embeddings and ends at the tokenizer's end of sequence (feeding ids or their embeddings is the same pass)
    eos = adapter.tokenizer.eos_token_id if adapter.w_clip_vit else adapter.ids["<|eot|>"]
    top_k, temperature = int(adapter.text_settings["top_k"]), float(adapter.text_settings["temperature"])

    def mask_of(ids: list[int | None], embeds: torch.Tensor, kind: Any) -> torch.Tensor:
        tokens = torch.tensor([[0 if i is None else i for i in ids]], dtype=torch.long, device=device)
        return adapter._mask(tokens, embeds, kind)[0, 0]  # (T, T), the authors' mask of the whole sequence

    with torch.no_grad():
        def logits_of(embeds: torch.Tensor, mask: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
            hidden = model.showo.model(inputs_embeds=embeds, attention_mask=mask)[0]  # what PhiForCausalLM gives lm_head
            return model.showo.lm_head(hidden[torch.arange(hidden.shape[0], device=ends.device), ends]).float()

        news = generate(logits_of,
                        lambda token: adapter._embed([token])[0, 0],
                        [(p["embeds"][0], mask_of(p["ids"], p["embeds"], p["kind"])) for p in prompts], budgets, seeds,
                        top_k=top_k, temperature=temperature, eos=eos)  # fmt: skip
        rows, masks = [], []
        for p, new in zip(prompts, news):
            joined = torch.cat([p["embeds"], adapter._embed(new).to(p["embeds"].dtype)], dim=1) if new else p["embeds"]
            rows.append(joined[0])
            masks.append(mask_of([*p["ids"], *new], joined, p["kind"]))  # the same rows the growing mask gave
        states = forced(adapter._pass, rows, masks)  # (L + 1, T_i, d) each
    out = []
    for p, new, mine in zip(prompts, news, states):
        every, n_prompt = [*p["ids"], *new], p["embeds"].shape[1]
        out.append(Response(
            prompt=adapter._select(mine, torch.cat([p["image"], p["question"]]), every),
            response=adapter._select(mine, torch.arange(n_prompt, n_prompt + len(new)), every),
            output=adapter.tokenizer.decode(new, skip_special_tokens=True), output_ids=torch.tensor(new, dtype=torch.long),
            extra={"top_k": top_k, "states": "one teacher-forced pass over prompt + generated tokens"},
        ))  # fmt: skip
    return out


def generate_images(adapter: Any, texts: list[str], items: list[str], seeds: list[int],
                    values: dict[str, Any]) -> list[Response]:  # fmt: skip
    """One image per text (see the module), the texts in one batch: every row has the script's padded layout, and
    each draws from its own generator (:func:`_unmask`); ``values`` are the image-generation settings."""
    if len(seeds) != len(texts):
        raise InputError(f"{len(texts)} prompts need as many seeds; got {len(seeds)}")
    model, device, prompting = adapter.model, adapter.device, adapter.prompting
    code, sp = adapter.code, adapter.ids
    n = adapter.num_image_tokens
    max_seq = int(values["max_seq_length"])
    room = max_seq + 1 - 3  # <|t2i|> <|sot|> … <|eot|> within max_text_len = max_seq_length + 1
    if room < 1:
        raise InputError(f"max_seq_length={max_seq} leaves no room for text")
    words = []
    for text, item in zip(texts, items):
        row = adapter.tokenizer([text])["input_ids"][0]  # UniversalPrompting.__call__('t2i_gen')
        if row and row[0] == adapter.tokenizer.bos_token_id:  # t2i_gen_prompt then adds no second one
            row = row[1:]
        if len(row) > room:
            raise ItemError(item, f"{len(row)} tokens is longer than the {room} text tokens max_seq_length={max_seq} "
                                  "leaves (inference_t2i.py would cut the prompt)")  # fmt: skip
        words.append(row)
    total = max_seq + 1 + n + 2
    if total > adapter.context:
        raise InputError(f"max_seq_length={max_seq} with {n} image tokens is longer than the context {adapter.context}")
    try:
        schedule = code["sampling"].get_mask_chedule(str(values["mask_schedule"]))
    except ValueError as exc:
        raise InputError(f"mask_schedule={values['mask_schedule']!r}: {exc}") from None
    timesteps = int(values["generation_timesteps"])
    if timesteps < 1:
        raise InputError(f"generation_timesteps must be at least 1; got {timesteps}")
    prompting.max_text_len = max_seq + 1  # UniversalPrompting(max_text_len=max_seq_length) keeps it + 1
    mask_id = int(model.config.mask_token_id)
    image_tokens = torch.ones((len(texts), n), dtype=torch.long, device=device) * mask_id
    input_ids, _ = prompting((list(texts), image_tokens), "t2i_gen")
    condition = input_ids.clone()  # the loop rewrites input_ids in place

    def mask_of(sequence: torch.Tensor) -> torch.Tensor:
        return code["prompting"].create_attention_mask_predict_next(
            sequence, pad_id=sp["<|pad|>"], soi_id=sp["<|soi|>"], eoi_id=sp["<|eoi|>"], rm_pad_in_image=True)  # fmt: skip

    guidance = float(values["guidance_scale"])
    uncond = None
    if guidance > 0:
        uncond, _ = prompting(([""] * len(texts), image_tokens), "t2i_gen")
        attention_mask = mask_of(torch.cat([input_ids, uncond], dim=0))
    else:
        attention_mask = mask_of(input_ids)
    from entroprobe.models.show_o_load import generation_config

    config = generation_config(adapter, max_seq)
    generators = [torch.Generator(device=device).manual_seed(int(seed)) for seed in seeds]
    with torch.no_grad():
        generated = _unmask(model, code["sampling"], input_ids, uncond, attention_mask, guidance,
                            float(values["generation_temperature"]), timesteps, schedule, config, generators)  # fmt: skip
        generated = torch.clamp(generated, max=int(model.config.codebook_size) - 1, min=0)  # as the script
        final = condition.clone()
        final[:, -(n + 1) : -1] = generated + int(model.config.llm_vocab_size) + adapter.num_new_special_tokens
        rows = [final[k].tolist() for k in range(final.shape[0])]
        embeds = adapter._embed(rows[0]) if len(rows) == 1 else torch.cat([adapter._embed(r) for r in rows])
        states = adapter._pass(embeds, mask_of(final))  # (L + 1, B, T, d): the rows have one length
        pixels = adapter.vq.decode_code(generated)  # (B, 3, H, W) in [-1, 1]
    length = final.shape[1]
    image_positions = torch.arange(length - n - 1, length - 1)
    text_end = max_seq  # the prompt's <|eot|> sits at max_text_len - 1 = max_seq
    out = []
    for k, (row, asked) in enumerate(zip(rows, words)):
        mine = states[:, k]
        out.append(Response(
            prompt=adapter._select(mine, torch.arange(text_end - len(asked), text_end), row),
            response=adapter._select(mine, image_positions, row), output=_to_pil(pixels[k]),
            output_ids=generated[k].detach().cpu(),
            extra={"guidance_scale": guidance, "generation_timesteps": timesteps,
                   "states": "one teacher-forced pass over the conditional row with the final image tokens"},
        ))  # fmt: skip
    return out


def _unmask(model: Any, sampling: Any, input_ids: torch.Tensor, uncond: torch.Tensor | None, attention_mask: torch.Tensor,
            guidance: float, temperature: float, timesteps: int, schedule: Any, config: Any,
            generators: list[torch.Generator]) -> torch.Tensor:  # fmt: skip
    """``Showo.t2i_generate`` (models/modeling_showo.py) written out for rows that each draw from their own
    generator: its ``multinomial`` and its ``mask_by_random_topk`` noise are drawn row by row, in its order, so a
    row draws at any B what it draws alone with that generator, and alone what ``t2i_generate`` draws with it.
    ``input_ids`` is rewritten in place, as there; returns the sampled code ids ``(B, N)``."""
    showo = config.model.showo
    n, offset, width = int(showo.num_vq_tokens), int(showo.llm_vocab_size) + int(showo.num_new_special_tokens), \
        int(config.dataset.preprocessing.max_seq_length) + 1  # fmt: skip
    mask_id = int(model.config.mask_token_id)
    current = input_ids[:, -(n + 1) : -1].clone()
    current = torch.where(current == mask_id, mask_id, current - offset)
    prefix = None if uncond is None else uncond[:, :width]
    for step in range(timesteps):
        if uncond is not None and guidance > 0:
            model_input = torch.cat([input_ids, torch.cat([prefix, input_ids[:, width:]], dim=1)])
            cond_logits, uncond_logits = model(model_input, attention_mask=attention_mask).chunk(2)
            logits = (1 + guidance) * cond_logits - guidance * uncond_logits
        else:
            logits = model(input_ids, attention_mask=attention_mask)
        logits = logits[:, -(n + 1) : -1, offset:-1]  # (B, N, codes)
        probs = logits.softmax(dim=-1)
        sampled_ids = torch.stack([torch.multinomial(probs[b].reshape(-1, logits.size(-1)), 1, generator=g)[:, 0]
                                   for b, g in enumerate(generators)])  # (B, N)  # fmt: skip
        unknown = current == mask_id
        sampled_ids = torch.where(unknown, sampled_ids, current)
        ratio = 1.0 * (step + 1) / timesteps
        mask_ratio = schedule(torch.tensor(ratio))
        selected = torch.gather(probs, -1, sampled_ids.long()[..., None]).squeeze(-1)
        selected = torch.where(unknown, selected, torch.finfo(selected.dtype).max)
        mask_len = (n * mask_ratio).floor().unsqueeze(0).to(logits.device)
        mask_len = torch.max(torch.tensor([1], device=logits.device), torch.min(unknown.sum(dim=-1, keepdim=True) - 1,
                                                                             mask_len))  # (B, 1)  # fmt: skip
        temperature = temperature * (1.0 - ratio)  # as there: compounded step by step
        masking = torch.cat([sampling.mask_by_random_topk(mask_len[b : b + 1], selected[b : b + 1], temperature,
                                                          generator=g) for b, g in enumerate(generators)])  # fmt: skip
        input_ids[:, -(n + 1) : -1] = torch.where(masking, mask_id, sampled_ids + offset)
        current = torch.where(masking, mask_id, sampled_ids)
    return sampled_ids


def _to_pil(pixels: torch.Tensor) -> Any:
    """``(3, H, W)`` in [-1, 1] → RGB PIL image (``inference_t2i.py``: clamp((x + 1) / 2) · 255 → uint8)."""
    from PIL import Image

    image = torch.clamp((pixels.float() + 1.0) / 2.0, 0.0, 1.0) * 255.0
    return Image.fromarray(image.permute(1, 2, 0).cpu().numpy().astype("uint8"), mode="RGB")
