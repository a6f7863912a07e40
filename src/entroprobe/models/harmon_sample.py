"""Harmon's images for a batch of prompts, each prompt drawing what it draws alone (``respond_image_batch``).

``Harmon.sample`` (``src/models/harmon.py``) batches prompts as ``scripts/text2image.py`` does: the conditional rows,
then the unconditional ones. It takes its randomness from global generators, though:

- MAR's generation order from numpy's: ``mar.sample_orders`` shuffles one order per row with ``np.random.shuffle``;
- the diffusion head's noise from torch's: ``mar.diffloss.sample`` draws the start noise with ``torch.randn`` on
  the CPU, then ``gen_diffusion.p_sample_loop`` draws fresh noise with ``th.randn_like`` at every step, on the
  model's device.

In a batch, each prompt would therefore get other draws than it gets alone. Inside :func:`per_prompt_draws`, those
two methods of the model's own instances are replaced by versions that give each prompt its own draws:

- **orders**: prompt i's order is the first shuffle of ``np.random.RandomState(seed_i)``. That is the order its
  conditional row gets alone after ``np.random.seed(seed_i)``. Alone, the unconditional row draws a second order,
  which ``sample`` overwrites with the conditional one; in a batch ``sample`` overwrites it the same way.
- **diffusion noise**: the ancestral sampling loop of ``p_sample_loop``. Each step's mean and variance come from the
  checkout's own ``gen_diffusion.p_mean_variance``. Each prompt draws its noise from its own generators, in the
  shapes and the order it draws alone:
  - the start noise, ``(k, C)`` on the CPU;
  - then each step's noise, the shape of its rows on the model's device: ``(2k, C)`` under guidance (its
    conditional and its unconditional rows), ``(k, C)`` without.

  Here k is the number of tokens each MAE step predicts. It is the same for every prompt of the batch, because
  ``sample`` computes one ``mask_len`` for all of them.

Alone, ``torch.manual_seed(seed)`` seeds both global generators. Here each prompt gets one generator per device: a
CPU generator and, on a GPU, a generator on the model's device, each seeded with the prompt's seed. On the CPU the
two are the same generator, as the global generator is one stream there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["per_prompt_draws", "orders_of"]


def orders_of(seeds: list[int], length: int) -> list[Any]:
    """Each seed's generation order over ``length`` tokens: ``np.random.seed(seed)`` then one ``np.random.shuffle``."""
    import numpy as np

    orders = []
    for seed in seeds:
        order = np.arange(length)
        np.random.RandomState(seed % 2**32).shuffle(order)
        orders.append(order)
    return orders


def _rows_of_noise(generators: list[torch.Generator], like: torch.Tensor, halves: int) -> torch.Tensor:
    """Noise shaped like ``like`` ``(halves · B · k, C)``: prompt i draws ``(halves · k, C)`` from its own generator,
    as it does alone, and its first k rows go to its conditional rows, the next k to its unconditional rows."""
    count = len(generators)
    per = like.shape[0] // (halves * count)
    draws = [torch.randn((halves * per, *like.shape[1:]), generator=g, dtype=like.dtype, device=like.device)
             for g in generators]  # fmt: skip
    return torch.cat([d[h * per : (h + 1) * per] for h in range(halves) for d in draws])


@contextlib.contextmanager
def per_prompt_draws(model: Any, seeds: list[int], device: torch.device) -> Iterator[None]:
    """Inside the block, ``model.sample`` (a Harmon) draws each prompt's order and noise from ``seeds[i]``.

    The prompts are the conditional rows of ``sample``'s batch, in order; the unconditional rows follow them.

    Raises:
        RuntimeError: ``sample`` asked for orders or noise of a shape that does not fit ``len(seeds)`` prompts.
            This means the checkout's ``sample`` is not the one this module was written against.
    """
    mar, head = model.mar, model.mar.diffloss
    count = len(seeds)
    device = torch.device(device)
    on_cpu = [torch.Generator().manual_seed(seed) for seed in seeds]
    on_device = on_cpu if device.type == "cpu" else [torch.Generator(device=device).manual_seed(s) for s in seeds]

    def sample_orders(bsz: int, seq_len: int | None = None) -> torch.Tensor:
        import numpy as np

        if bsz not in (count, 2 * count):
            raise RuntimeError(f"Harmon.sample asked for {bsz} generation orders for {count} prompts")
        orders = orders_of(seeds, mar.seq_len if seq_len is None else seq_len) * (bsz // count)
        return torch.as_tensor(np.array(orders), dtype=torch.long, device=device)

    def sample(z: torch.Tensor, temperature: float = 1.0, cfg: Any = 1.0) -> torch.Tensor:
        guided = not cfg == 1.0  # a tensor under the linear schedule
        halves = 2 if guided else 1
        if z.shape[0] % (halves * count):
            raise RuntimeError(f"Harmon's diffusion head got {z.shape[0]} tokens for {count} prompts")
        per = z.shape[0] // (halves * count)
        start = torch.cat([torch.randn(per, head.in_channels, generator=g) for g in on_cpu]).to(z.device)
        if guided:
            start = torch.cat([start, start])
            net, kwargs = head.net.forward_with_cfg, {"c": z, "cfg_scale": cfg}
        else:
            net, kwargs = head.net.forward, {"c": z}
        diffusion, x = head.gen_diffusion, start
        for step in reversed(range(diffusion.num_timesteps)):
            t = torch.full((x.shape[0],), step, dtype=torch.long, device=x.device)
            out = diffusion.p_mean_variance(net, x, t, clip_denoised=False, denoised_fn=None, model_kwargs=kwargs)
            noise = _rows_of_noise(on_device, x, halves)
            nonzero = (t != 0).float().view(-1, *([1] * (x.dim() - 1)))  # no noise at the last step
            x = out["mean"] + nonzero * torch.exp(0.5 * out["log_variance"]) * noise * temperature
        return x

    swapped = [(mar, "sample_orders", sample_orders), (head, "sample", sample)]
    before = [vars(owner).get(name) for owner, name, _ in swapped]  # an attribute already set on the instance
    for owner, name, replacement in swapped:
        setattr(owner, name, replacement)
    try:
        yield
    finally:
        for (owner, name, _), old in zip(swapped, before):
            if old is None:
                delattr(owner, name)
            else:
                setattr(owner, name, old)
