"""Show-o2's generation as its scripts run it: text answers as ``mmu_generate`` draws them, images as
``inference_t2i.py`` makes them, with the states of the last sampler call.

Text answers come from :mod:`entroprobe.models.growing_mask` (``mmu_generate``'s loop for a batch); images
(:func:`generate_images`):

``prepare_gen_input`` lays the prompt out as ``[bos] text [boi] [time] image… [eoi] [eos] [pad]…`` (padded to
``max_seq_length``) and the unconditional row as the same without text; ``modality_positions[0, 0] = (offset,
length)`` with the time embedding at ``offset`` and the image tokens at ``offset + 1 … offset + length − 1``.
The transport's ODE sampler calls ``t2i_generate`` (one decoder pass over both rows) once per Euler step; the
hooks keep only the latest call, so what remains is the last one, closest to the clean image.
"""

from __future__ import annotations

from typing import Any

import torch

from entroprobe.errors import EntroprobeError, InputError, ItemError
from entroprobe.models.base import Response, seeded
from entroprobe.models.hooks import capture_layers

__all__ = ["FIXED_STEP", "generate_images"]


# torchdiffeq's fixed-grid solvers without a convergence test: each row's steps are its own. An adaptive solver
# sizes its steps by the error of the whole batch, and implicit_adams iterates its corrector until the whole batch
# converges, so under those a prompt's image would depend on its batch: such prompts go one at a time.
FIXED_STEP = ("euler", "midpoint", "heun2", "heun3", "rk4", "explicit_adams")


def generate_images(adapter: Any, texts: list[str], items: list[str], seeds: list[int],
                    values: dict[str, Any]) -> list[Response]:  # fmt: skip
    """One image per text (see the module), the texts in one batch as ``inference_t2i.py`` batches its prompts: every
    row has the same padded layout, the conditional rows first, then the unconditional ones; each row's noise comes
    from its own seed. ``values`` are the image-generation settings."""
    if len(seeds) != len(texts):
        raise InputError(f"{len(texts)} prompts need as many seeds; got {len(seeds)}")
    if len(texts) > 1 and str(values["sampling_method"]) not in FIXED_STEP:
        return [r for t, i, s in zip(texts, items, seeds) for r in generate_images(adapter, [t], [i], [s], values)]
    model, ids, device = adapter.model, adapter.ids, adapter.device
    n_tokens = adapter.num_image_tokens + (1 if adapter.add_time_embeds else 0)  # the script's += 1
    max_seq = int(values["max_seq_length"])
    max_text = max_seq - n_tokens - 4  # utils.py get_hyper_params
    if max_text < 1:
        raise InputError(f"max_seq_length={max_seq} leaves no room for text beside {n_tokens} image tokens")
    words = [adapter.tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    for item, row in zip(items, words):
        if len(row) > max_text:
            raise ItemError(item, f"{len(row)} tokens is longer than the {max_text} text tokens max_seq_length="
                                  f"{max_seq} leaves beside the image")  # fmt: skip
    misc, omni, transport = adapter.code["misc"], adapter.code["omni"], adapter.code["transport"]
    tokens, null, positions, null_positions = misc.prepare_gen_input(
        list(texts), adapter.tokenizer, n_tokens, ids["bos_id"], ids["eos_id"], ids["boi_id"], ids["eoi_id"],
        adapter.tokenizer.pad_token_id, ids["img_pad_id"], max_text, device)  # fmt: skip
    guidance = float(values["guidance_scale"])
    config = model.config
    side = int(config.image_latent_height) * int(config.patch_size), int(config.image_latent_width) * int(config.patch_size)
    noise = []
    for seed in seeds:
        with seeded(seed, device):  # as the script draws it, one prompt's noise per seed
            noise.append(torch.randn((1, int(config.image_latent_dim), *side)).to(torch.bfloat16).to(device))
    z = torch.cat(noise)  # (B, C, H, W)
    if guidance > 0:
        z = torch.cat([z, z], dim=0)
        tokens, positions = torch.cat([tokens, null], dim=0), torch.cat([positions, null_positions], dim=0)
    mask = omni.omni_attn_mask_naive(tokens.size(0), max_seq, positions, device).to(adapter.dtype)
    flow = transport.create_transport(path_type="Linear", prediction="velocity", loss_weight=None, train_eps=None,
                                      sample_eps=None, snr_type="lognorm", do_shift=True, seq_len=n_tokens)  # fmt: skip
    try:
        sample = transport.Sampler(flow).sample_ode(
            sampling_method=str(values["sampling_method"]), num_steps=int(values["num_inference_steps"]),
            atol=float(values["atol"]), rtol=float(values["rtol"]), reverse=False,
            time_shifting_factor=float(values["time_shifting_factor"]))  # fmt: skip
    except (AssertionError, ValueError) as exc:
        raise InputError(f"Show-o2's sampler rejected the settings {values}: {exc}") from None
    kwargs = dict(text_tokens=tokens, attention_mask=mask, modality_positions=positions, output_hidden_states=True,
                  max_seq_len=max_seq, guidance_scale=guidance)  # fmt: skip
    holder: dict[str, Any] = {}

    def latest_only(step: int, call: int) -> bool:  # keep one call's states: the last is all we need
        holder["capture"].calls.clear()
        return True

    rows = "first-half" if guidance > 0 else None
    try:
        with capture_layers(model.showo.model, "layers", rows=rows, keep=latest_only) as capture, torch.no_grad():
            holder["capture"] = capture
            samples = sample(z, model.t2i_generate, **kwargs)[-1]
    except (AssertionError, ValueError, KeyError) as exc:  # the settings were checked above: this is the run's
        raise EntroprobeError(f"Show-o2's sampler failed under the settings {values}: {type(exc).__name__}: {exc}") from exc
    if not capture.calls:
        raise InputError(f"num_inference_steps={values['num_inference_steps']} made no model call; give at least 2")
    states = capture.calls[-1].stacked()  # (L + 1, B, T, d): the conditional rows (first-half of 2B under guidance)
    samples = torch.chunk(samples, 2)[0] if guidance > 0 else samples
    with torch.no_grad():
        pixels = adapter.vae.batch_decode(samples.unsqueeze(2)).squeeze(2)  # (B, 3, H, W) in [-1, 1]
    out = []
    for row, words_of_row in enumerate(words):
        offset, length = (int(v) for v in positions[row, 0].tolist())
        first = offset + 1 if adapter.add_time_embeds else offset
        mine = states[:, row]  # (L + 1, T, d)
        out.append(Response(
            prompt=adapter._select(mine, torch.arange(1, 1 + len(words_of_row)), tokens[row].tolist()),  # bos … boi
            response=adapter._select(mine, torch.arange(first, offset + length), None),
            output=_to_pil(pixels[row]), output_ids=None,
            extra={"guidance_scale": guidance, "num_inference_steps": int(values["num_inference_steps"]),
                   "states": "the last sampler call's conditional row"},
        ))  # fmt: skip
    return out


def _to_pil(pixels: torch.Tensor) -> Any:
    """``(3, H, W)`` in [-1, 1] → RGB PIL image (``utils.py`` ``denorm``: clamp((x + 1) / 2) · 255 → uint8)."""
    from PIL import Image

    image = torch.clamp((pixels.float() + 1.0) / 2.0, 0.0, 1.0) * 255.0
    return Image.fromarray(image.permute(1, 2, 0).cpu().numpy().astype("uint8"), mode="RGB")
