"""The one engine behind every measure: distances, σ, kernels and spectra of a batch, in bounded memory.

The public functions in :mod:`.renyi` validate their input and ask the engine for *requests*: ``(rows,
sigma_rows)``, the rows the kernel is built over and the rows whose distances set the median σ, each ``"x"``,
``"y"`` or ``"xy"`` (their union). A request over the rows that set its own σ (``("x", "x")``) gets the
distances of those rows alone, exactly as :func:`renyi_entropy` would; requests of a pair measure share one
distance matrix over the rows of ``[x; y]`` (blocks of it for x or y).

Optionally every sequence is measured over ``draws`` subsets of its tokens (the draws become extra batch items,
so r draws of k tokens cost about r kernels of k tokens) and at several multiples of its σ (the distances are
shared; each scale adds a kernel and a spectrum).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from entroprobe.entropy.kernel import gaussian_kernel, median_distance, squared_distances
from entroprobe.entropy.reference import kernel_states, structureless_entropy
from entroprobe.entropy.spectrum import saturation, spectrum_entropy, spread
from entroprobe.entropy.subsample import Draws

__all__ = ["Request", "Measured", "engine"]

# Sequences are worked one per thread (see engine) from this much work each, N²·(N + d) for N rows of d features.
# Against batched calls on 2 threads, best of 10–15 interleaved rounds: 0.93× at N = 512, d = 2048 (6.7e8, 33
# layers), 0.95× at N = 1024, d = 2048; 0.99× at N = 384, d = 1024 (2.1e8); 1.07× at N = 300, d = 384 and
# 1.18× at N = 200, d = 384, where the per-call costs outweigh what the cache saves.
_SPREAD_MIN_WORK = 1 << 28

# On the CPU, draws are gathered and measured in groups of at most this many bytes of rows: a batch-sized gather
# (8 draws × 33 layers × 64 tokens × d = 2048, 138 MB) into fresh pages cost half as much again as the kernels;
# best of 8 in a warm process: 1.08× the kernels unchunked, 1.17× at 16–64 MiB, 1.5× at 4 MiB.
_CPU_GATHER_BYTES = 32 << 20

Request = tuple[str, str]


@dataclass(frozen=True)
class Measured:
    """One request at one σ scale; tensors have the input's leading shape (means over draws)."""

    value: torch.Tensor
    sigma: torch.Tensor  # in the input's units, NaN where every row coincided
    saturation: torch.Tensor
    reference: torch.Tensor  # the structureless reference at the same token count and σ
    state: torch.Tensor  # kernel_states codes
    n: int  # rows of the kernel


def engine(
    x: torch.Tensor,
    y: torch.Tensor | None,
    requests: list[Request],
    *,
    alpha: float,
    sigma: str | torch.Tensor,
    base: float,
    memory_budget: int,
    draws: Draws | None = None,
    scales: tuple[float, ...] = (1.0,),
    device: torch.device | None = None,
) -> dict[Request, list[Measured]]:
    """Compute each requested entropy for validated ``x`` (…, n, d) and optional ``y`` (…, m, d).

    Works on the flattened batch (× draws) in chunks whose working memory stays under ``memory_budget``
    (half-precision input is upcast chunk by chunk), each chunk on ``device`` (default: ``x``'s): states kept
    on the CPU are measured on a GPU one chunk at a time, and only a chunk is there at once.

    On the CPU, when each sequence is large (``N²·(N + d) ≥ _SPREAD_MIN_WORK`` for the N rows of ``[x; y]``) and
    there are at least as many sequences as torch has threads (more than one), every request is worked one
    sequence per call, the sequences spread over the threads with one BLAS thread each: a sequence's distances
    then stay in cache from the Gram product to the eigensolver. With fewer sequences than threads, batched
    calls keep every core busy.

    Returns:
        Per request, one :class:`Measured` per scale, in the order of ``scales``.
    """
    compute = x.device if device is None else device
    leading = x.shape[:-2]
    n, d = x.shape[-2:]
    m = 0 if y is None else y.shape[-2]
    dtype = torch.float64 if (x.dtype == torch.float64 or (y is not None and y.dtype == torch.float64)) else torch.float32
    xs = x.reshape(-1, n, d)  # (B, n, d), a view when x is contiguous
    ys = None if y is None else y.reshape(-1, m, d)  # (B, m, d)
    fixed_sigma = None if isinstance(sigma, str) else sigma.reshape(-1).to(x.device)  # (B,)
    r = 1 if draws is None else draws.count
    kx = n if draws is None or draws.x is None else draws.x.shape[1]
    ky = m if draws is None or draws.y is None else draws.y.shape[1]
    blocks = {"x": slice(0, kx), "y": slice(kx, kx + ky), "xy": slice(0, kx + ky)}

    total = kx + ky
    itemsize = torch.finfo(dtype).bits // 8
    # per item: the upcast (or gathered) rows and their scaled centred copy (2·N·d, 3·N·d with draws),
    # distances, norms/masks, a kernel and eigvalsh's copy (≈ 4·N²), σ pairs (N²/2), own-rows distances (≤ N²)
    per_item = itemsize * ((2 if draws is None else 3) * total * d + 5.5 * total * total)
    chunk = max(1, int(memory_budget // per_item))
    if draws is not None and compute.type == "cpu":  # gathered subsets are worked while they are in cache
        chunk = min(chunk, max(1, _CPU_GATHER_BYTES // (total * d * itemsize)))

    # which distance matrix each step reads (σ first; then the kernel), so that a kernel can be built in its
    # distance matrix's memory when no later step reads that matrix
    reads: list[str] = []
    kernel_read: list[int] = []  # per request, its place in reads
    for rows, sigma_rows in requests:
        if sigma_rows not in reads:
            reads.append(sigma_rows)  # a σ request's rows are its own: the key is the rows themselves
        kernel_read.append(len(reads))
        reads.append(rows if rows == sigma_rows else "xy")
    last_use = [reads[at] == rows and reads[at] not in reads[at + 1 :] for at, (rows, _) in zip(kernel_read, requests)]
    sizes = {"x": kx, "y": ky, "xy": kx + ky}

    def measure(x_part: torch.Tensor, y_part: torch.Tensor | None, sigma_part: torch.Tensor | None) -> dict:
        """Every request at every scale over a batch of sequences: (value, σ, saturation, reference) each."""
        rows_of = {"x": lambda: x_part.to(dtype), "y": lambda: y_part.to(dtype)}
        rows_of["xy"] = lambda: rows_of["x"]() if y_part is None else torch.cat([rows_of["x"](), rows_of["y"]()], -2)
        distances: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # key → (scaled distances, scale)

        def dist_for(rows: str, sigma_rows: str) -> tuple[torch.Tensor, torch.Tensor]:
            key = rows if rows == sigma_rows else "xy"
            if key not in distances:
                distances[key] = squared_distances(rows_of[key](), return_scale=True)  # (b, k, k), (b,)
            dist, scale = distances[key]
            return (dist if key == rows else dist[:, blocks[rows], blocks[rows]]), scale

        rules: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}  # σ rows → (σ, σ true, median D)
        measured = {}
        for index, (rows, sigma_rows) in enumerate(requests):
            if sigma_rows not in rules:
                dist, scale = dist_for(sigma_rows, sigma_rows)
                median = median_distance(dist)  # (b,) in scaled units; NaN where every row coincides
                if sigma_part is None:
                    scaled_sigma = torch.sqrt(median / 2)
                else:
                    scaled_sigma = sigma_part * scale
                rules[sigma_rows] = (scaled_sigma, scaled_sigma / scale, median)
            scaled_sigma, true_sigma, median = rules[sigma_rows]
            dist, _ = dist_for(rows, sigma_rows)
            for at, factor in enumerate(scales):
                s = scaled_sigma * factor
                inplace = last_use[index] and at == len(scales) - 1
                kernel = gaussian_kernel(dist, s, inplace=inplace)
                value = spectrum_entropy(kernel, alpha, base)  # (b,)
                # all rows coincide (NaN median): K is exactly all-ones, S = 0 exactly
                value = value.masked_fill(torch.isnan(median), 0.0)
                c = torch.exp(-median / (2 * s.square())).nan_to_num(nan=1.0)  # the median pair's kernel entry
                reference = structureless_entropy(sizes[rows], c, alpha=alpha, base=base)
                measured[(rows, sigma_rows), at] = (value, true_sigma * factor, saturation(kernel), reference)
                del kernel
        return measured

    items = xs.shape[0] * r
    parts: dict[tuple[Request, int], list] = {(q, at): [] for q in requests for at in range(len(scales))}
    for start in range(0, items, chunk):
        stop = min(start + chunk, items)
        args = tuple(None if a is None else a.to(compute) for a in _gather(xs, ys, fixed_sigma, draws, r, start, stop))
        count = stop - start
        threads = torch.get_num_threads()
        if compute.type == "cpu" and total * total * (total + d) >= _SPREAD_MIN_WORK and 1 < threads <= count:
            # one sequence per call, sequences over threads: each one's distances stay in cache from the Gram
            # product to the eigensolver, and BLAS/LAPACK run single-threaded, where they are most efficient
            batches = spread(lambda i: measure(*(None if a is None else a[i : i + 1] for a in args)), count)
        else:
            batches = [measure(*args)]
        for measured in batches:
            for key in parts:
                parts[key].append(measured[key])

    out: dict[Request, list[Measured]] = {q: [] for q in requests}
    for (request, _), chunks in parts.items():
        value, sig, sat, ref = (torch.cat(column).reshape(*leading, r) for column in zip(*chunks))
        value, sat, ref = value.mean(-1), sat.mean(-1), ref.mean(-1)
        sig = sig.nanmean(-1) if r > 1 else sig[..., 0]
        k = sizes[request[0]]
        out[request].append(Measured(value=value, sigma=sig, saturation=sat, reference=ref,
                                     state=kernel_states(value, ref, sig, k, base), n=k))  # fmt: skip
    return out


def _gather(xs, ys, fixed_sigma, draws: Draws | None, r: int, start: int, stop: int):
    """Items ``start:stop`` of the batch × draws: (x rows, y rows or None, σ or None) of each item."""
    if draws is None:
        part = slice(start, stop)
        return xs[part], None if ys is None else ys[part], None if fixed_sigma is None else fixed_sigma[part]
    item = torch.arange(start, stop)
    b, t = item // r, item % r  # sequence, draw

    def pick(rows: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
        """The draws' rows of their sequences, (c, k, d): one index_select on the flattened batch (advanced
        indexing with two index tensors was measured three times slower)."""
        count, n, d = rows.shape
        index = torch.arange(n).expand(len(t), n) if index is None else index[t]  # (c, k)
        flat = (b[:, None] * n + index).reshape(-1).to(rows.device)  # (c·k,)
        return rows.reshape(count * n, d).index_select(0, flat).reshape(len(t), -1, d)

    x_part = pick(xs, draws.x)
    y_part = None if ys is None else pick(ys, draws.y)
    return x_part, y_part, None if fixed_sigma is None else fixed_sigma[b.to(xs.device)]
