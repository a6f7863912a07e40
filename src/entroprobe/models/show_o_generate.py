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
  the image decodes with ``vq_model.decode_code``. Sampling draws from torch's global RNG as the script does, under
  :func:`~entroprobe.models.base.seeded`.
"""

from __future__ import annotations

from typing import Any

import torch

from entroprobe.errors import InputError, ItemError
from entroprobe.models.base import Response, seeded

__all__ = ["generate_image", "generate_texts"]


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


def generate_image(adapter: Any, text: str, item: str, seed: int, values: dict[str, Any]) -> Response:
    """One image for ``text`` (see the module); ``values`` are the image-generation settings."""
    model, device, prompting = adapter.model, adapter.device, adapter.prompting
    code, sp = adapter.code, adapter.ids
    n = adapter.num_image_tokens
    max_seq = int(values["max_seq_length"])
    words = adapter.tokenizer([text])["input_ids"][0]  # UniversalPrompting.__call__('t2i_gen')
    if words and words[0] == adapter.tokenizer.bos_token_id:  # t2i_gen_prompt then adds no second one
        words = words[1:]
    room = max_seq + 1 - 3  # <|t2i|> <|sot|> … <|eot|> within max_text_len = max_seq_length + 1
    if room < 1:
        raise InputError(f"max_seq_length={max_seq} leaves no room for text")
    if len(words) > room:
        raise ItemError(item, f"{len(words)} tokens is longer than the {room} text tokens max_seq_length={max_seq} "
                              "leaves (inference_t2i.py would cut the prompt)")  # fmt: skip
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
    image_tokens = torch.ones((1, n), dtype=torch.long, device=device) * mask_id
    input_ids, _ = prompting(([text], image_tokens), "t2i_gen")
    condition = input_ids.clone()  # t2i_generate rewrites input_ids in place

    def mask_of(sequence: torch.Tensor) -> torch.Tensor:
        return code["prompting"].create_attention_mask_predict_next(
            sequence, pad_id=sp["<|pad|>"], soi_id=sp["<|soi|>"], eoi_id=sp["<|eoi|>"], rm_pad_in_image=True)  # fmt: skip

    guidance = float(values["guidance_scale"])
    uncond = None
    if guidance > 0:
        uncond, _ = prompting(([""], image_tokens), "t2i_gen")
        attention_mask = mask_of(torch.cat([input_ids, uncond], dim=0))
    else:
        attention_mask = mask_of(input_ids)
    from entroprobe.models.show_o_load import generation_config

    config = generation_config(adapter, max_seq)
    with seeded(seed, device), torch.no_grad():
        generated = model.t2i_generate(
            input_ids=input_ids, uncond_input_ids=uncond, attention_mask=attention_mask, guidance_scale=guidance,
            temperature=float(values["generation_temperature"]), timesteps=timesteps, noise_schedule=schedule,
            noise_type="mask", seq_len=n, uni_prompting=prompting, config=config)  # fmt: skip
        generated = torch.clamp(generated, max=int(model.config.codebook_size) - 1, min=0)  # as the script
        final = condition.clone()
        final[:, -(n + 1) : -1] = generated + int(model.config.llm_vocab_size) + adapter.num_new_special_tokens
        row = final[0].tolist()
        states = adapter._states(adapter._embed(row), mask_of(final))
        pixels = adapter.vq.decode_code(generated)  # (1, 3, H, W) in [-1, 1]
    length = final.shape[1]
    image_positions = torch.arange(length - n - 1, length - 1)
    text_end = max_seq  # the prompt's <|eot|> sits at max_text_len - 1 = max_seq
    prompt_positions = torch.arange(text_end - len(words), text_end)
    return Response(prompt=adapter._select(states, prompt_positions, row),
                    response=adapter._select(states, image_positions, row), output=_to_pil(pixels[0]),
                    output_ids=generated[0].detach().cpu(),
                    extra={"guidance_scale": guidance, "generation_timesteps": timesteps,
                           "states": "one teacher-forced pass over the conditional row with the final image tokens"})  # fmt: skip


def _to_pil(pixels: torch.Tensor) -> Any:
    """``(3, H, W)`` in [-1, 1] → RGB PIL image (``inference_t2i.py``: clamp((x + 1) / 2) · 255 → uint8)."""
    from PIL import Image

    image = torch.clamp((pixels.float() + 1.0) / 2.0, 0.0, 1.0) * 255.0
    return Image.fromarray(image.permute(1, 2, 0).cpu().numpy().astype("uint8"), mode="RGB")
