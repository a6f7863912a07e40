"""Token-count control: the structureless reference, the kernel states, subsampling, σ scales, the pooled σ."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from entroprobe import (
    InputError,
    SigmaCalibration,
    conditional_entropy,
    joint_entropy,
    kernel_diagnostics,
    mutual_information,
    pooled_sigma,
    prompt_response_entropies,
    renyi_entropy,
    structureless_entropy,
    subsample_indices,
)
from reference_math import reference_entropy, reference_equidistant, reference_sigma, reference_subsampled

ALPHAS = [0.5, 1.0, 1.01, 2.0, 3.0, math.inf]


def gaussian(seed: int, *shape: int, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def noisy_clusters(k: int, n: int, d: int = 64, spread: float = 0.1, seed: int = 0) -> torch.Tensor:
    """n tokens round-robin over k clusters of unit-variance centres, each token ``spread`` from its centre."""
    centres = gaussian(seed, k, d)
    return centres[torch.arange(n) % k] + spread * gaussian(seed + 1, n, d)


# -- the structureless reference ---------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("n", [1, 2, 7, 100])
@pytest.mark.parametrize("c", [0.0, 0.1, math.exp(-1), 0.9, 1.0])
def test_structureless_entropy_is_the_entropy_of_the_equidistant_kernel(alpha, n, c):
    assert structureless_entropy(n, c, alpha=alpha).item() == pytest.approx(reference_equidistant(n, c, alpha), abs=1e-9)


def test_structureless_entropy_known_answers_and_shapes():
    assert structureless_entropy(8, 0.0, alpha=1.0).item() == pytest.approx(3.0)  # mutually far: log2 n
    assert structureless_entropy(8, 1.0).item() == 0.0  # all alike
    assert structureless_entropy(16, torch.tensor([[0.0, 1.0]])).shape == (1, 2)
    # i.i.d. high-dimensional noise under the median rule sits at the reference (issue: 7.12 bits at n = 1024)
    noise = renyi_entropy(gaussian(0, 1024, 2048, dtype=torch.float32))
    assert noise.item() == pytest.approx(structureless_entropy(1024).item(), rel=0.02)


def test_every_result_carries_its_reference():
    x = gaussian(1, 3, 50, 8)
    median = renyi_entropy(x, return_details=True)
    assert torch.allclose(median.reference, torch.full((3,), structureless_entropy(50).item(), dtype=torch.float64))
    # a fixed σ: the reference's kernel entry is the median pair's, exp(−median D / (2σ²))
    fixed = renyi_entropy(x[0], sigma=2.0, return_details=True)
    c = math.exp(-(reference_sigma(x[0].numpy()) ** 2 * 2) / (2 * 2.0**2))
    assert fixed.reference.item() == pytest.approx(reference_equidistant(50, c, 1.01), abs=1e-9)
    assert fixed.relative.item() == pytest.approx(fixed.value.item() / fixed.reference.item())


def test_the_conditional_reference_is_that_of_an_independent_structureless_response():
    # the proxy grows with the response length; value / reference does not
    x = gaussian(2, 64, 512, dtype=torch.float32)
    raws, relatives = [], []
    for m in (4, 64, 256):
        result = conditional_entropy(x, gaussian(3 + m, m, 512, dtype=torch.float32), return_details=True)
        expected = structureless_entropy(64 + m).item() - structureless_entropy(64).item()
        assert result.reference.item() == pytest.approx(expected, rel=1e-9)
        raws.append(result.value.item())
        relatives.append(result.relative.item())
    assert raws[-1] > 10 * raws[0]
    assert all(0.9 < r < 1.1 for r in relatives), relatives
    mi = mutual_information(x, x, return_details=True)
    assert mi.reference.item() == pytest.approx(2 * structureless_entropy(64).item() - structureless_entropy(128).item())


def test_the_conditional_proxy_can_be_negative():
    x = torch.tensor([[0.0, 0.0], [10.0, 0.0]], dtype=torch.float64)  # two far tokens
    y = x[:1].repeat(50, 1)  # a response that repeats one of them 50 times
    assert conditional_entropy(x, y).item() < -0.5


# -- the kernel states -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.01])
@pytest.mark.parametrize("d", [64, 256, 2048])
def test_iid_gaussian_tokens_are_flagged_structureless(alpha, d):
    for n in (16, 64, 256, 1024):
        x = gaussian(10 + n, n, d, dtype=torch.float32)
        result = renyi_entropy(x, alpha=alpha, return_details=True)
        assert result.states == ["structureless"], (n, d, result.relative.item())
        assert bool(result.saturated)
        diagnostics = kernel_diagnostics(x, alpha=alpha)
        assert diagnostics.states == ["structureless"]
        assert "counts tokens" in diagnostics.warnings()[0]


@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.01])
@pytest.mark.parametrize("k", [2, 5, 10, 20])
def test_separated_noisy_clusters_stay_silent(alpha, k):
    for n in (64, 256, 1024):
        x = noisy_clusters(k, n, seed=k * n)
        result = renyi_entropy(x, alpha=alpha, return_details=True)
        assert result.states == ["ok"], (k, n, result.relative.item())
        assert kernel_diagnostics(x, alpha=alpha).warnings() == []


def test_one_noisy_cluster_is_noise_to_a_scale_free_rule():
    # under the median rule one cluster is rescaled to its own spread: structureless, as the flag says
    assert renyi_entropy(noisy_clusters(1, 256), return_details=True).states == ["structureless"]


def test_states_of_identical_and_collapsed_sequences():
    same = renyi_entropy(torch.ones(2, 10, 3), return_details=True)
    assert same.states == ["identical", "identical"] and bool(same.saturated.all())
    huge_sigma = renyi_entropy(gaussian(4, 30, 5), sigma=1e6, return_details=True)
    assert huge_sigma.states == ["collapsed"]


# -- subsampling -------------------------------------------------------------------------------------------------


def test_subsample_indices_are_subsets_without_replacement_and_seeded():
    picks = subsample_indices(30, 10, 5, seed=7)
    assert picks.shape == (5, 10)
    for row in picks:
        assert len(set(row.tolist())) == 10 and row.min() >= 0 and row.max() < 30
    assert torch.equal(picks, subsample_indices(30, 10, 5, seed=7))
    assert not torch.equal(picks, subsample_indices(30, 10, 5, seed=8))


@pytest.mark.parametrize("alpha", [1.01, 2.0, math.inf])
@pytest.mark.parametrize("sigma", ["median", 1.5])
def test_subsampled_entropy_against_the_reference_over_the_same_subsets(alpha, sigma):
    x = gaussian(5, 3, 40, 6)
    got = renyi_entropy(x, alpha=alpha, sigma=sigma, subsample=12, draws=6, seed=3, return_details=True)
    subsets = subsample_indices(40, 12, 6, seed=3).numpy()
    fixed = None if sigma == "median" else sigma
    for layer in range(3):
        expected = reference_subsampled(x[layer].numpy(), subsets, alpha, fixed)
        assert got.value[layer].item() == pytest.approx(expected, abs=1e-9)
    assert got.n == 12 and got.draws == 6
    assert got.reference[0].item() == pytest.approx(structureless_entropy(12, alpha=alpha).item()) or sigma != "median"


def test_subsample_shares_its_subsets_across_the_batch_and_of_all_tokens_is_the_whole():
    x = gaussian(6, 4, 30, 5)
    batched = renyi_entropy(x, subsample=10, draws=5, seed=1)
    for layer in range(4):
        assert batched[layer].item() == pytest.approx(renyi_entropy(x[layer], subsample=10, draws=5, seed=1).item(), abs=1e-12)
    # a trajectory over layers that are scaled copies of one layer is flat: the same tokens at every layer
    copies = torch.stack([x[0] * s for s in (1.0, 3.0, 0.01)])
    flat = renyi_entropy(copies, subsample=10, draws=5, seed=1)
    assert torch.allclose(flat, flat[0].expand(3), atol=1e-9)
    assert torch.allclose(renyi_entropy(x, subsample=30, draws=3), renyi_entropy(x), atol=1e-12)


def test_subsample_is_unbiased_for_the_entropy_at_k_tokens_on_exchangeable_data():
    # a random 16-subset of 200 i.i.d. tokens is distributed like 16 i.i.d. tokens
    long = gaussian(7, 300, 200, 8)  # 300 sequences of 200 tokens
    short = gaussian(8, 300, 16, 8)  # 300 sequences of 16 tokens
    sub = renyi_entropy(long, subsample=16, draws=4, seed=2).numpy()
    fresh = renyi_entropy(short).numpy()
    se = math.sqrt(sub.var() / len(sub) + fresh.var() / len(fresh))
    assert abs(sub.mean() - fresh.mean()) < 4 * se
    assert abs(renyi_entropy(long).mean().item() - fresh.mean()) > 20 * se  # whole, the long ones are far higher


def test_pair_measures_subsample_the_response_or_both_sides():
    x, y = gaussian(9, 2, 20, 4), gaussian(10, 2, 30, 4) + 1.0
    px = subsample_indices(20, 8, 4, seed=5).numpy()
    py = subsample_indices(30, 6, 4, seed=6).numpy()  # y's subsets come from seed + 1
    both = prompt_response_entropies(x, y, subsample=(8, 6), draws=4, seed=5)
    only_y = conditional_entropy(x, y, subsample=6, draws=4, seed=5)
    for layer in range(2):
        xs, ys = x[layer].numpy(), y[layer].numpy()
        joint = [reference_entropy(np.concatenate([xs[a], ys[b]]), 1.01) for a, b in zip(px, py)]
        sigmas = [reference_sigma(np.concatenate([xs[a], ys[b]])) for a, b in zip(px, py)]
        cond = [j - reference_entropy(xs[a], 1.01, s) for j, a, s in zip(joint, px, sigmas)]
        assert both["joint_entropy"].value[layer].item() == pytest.approx(np.mean(joint), abs=1e-9)
        assert both["conditional_entropy"].value[layer].item() == pytest.approx(np.mean(cond), abs=1e-9)
        assert both["prompt_entropy"].value[layer].item() == pytest.approx(reference_subsampled(xs, px, 1.01), abs=1e-9)
        assert both["response_entropy"].value[layer].item() == pytest.approx(reference_subsampled(ys, py, 1.01), abs=1e-9)
        whole = [reference_entropy(np.concatenate([xs, ys[b]]), 1.01) - reference_entropy(
            xs, 1.01, reference_sigma(np.concatenate([xs, ys[b]]))) for b in py]
        assert only_y[layer].item() == pytest.approx(np.mean(whole), abs=1e-9)
    assert both["joint_entropy"].n == 14 and both["prompt_entropy"].n == 8
    assert torch.equal(both["prompt_entropy"].value, renyi_entropy(x, subsample=8, draws=4, seed=5))
    assert joint_entropy(x, y, subsample=(None, 6), draws=4, seed=5).shape == (2,)
    assert mutual_information(x, y, subsample=(8, 6), draws=4, seed=5).shape == (2,)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: renyi_entropy(torch.zeros(12, 3), subsample=20), r"subsample x = 20 tokens is more than the 12"),
        (lambda: conditional_entropy(torch.zeros(5, 3), torch.zeros(4, 3), subsample=9), r"subsample y = 9 .* 4 tokens"),
        (lambda: conditional_entropy(torch.zeros(5, 3), torch.zeros(4, 3), subsample=(6, 2)), r"x = 6 .* 5 tokens"),
        (lambda: renyi_entropy(torch.zeros(12, 3), subsample=0), r"subsample \(x\) must be a positive integer"),
        (lambda: renyi_entropy(torch.zeros(12, 3), subsample=4, draws=0), r"draws must be a positive integer"),
        (lambda: renyi_entropy(torch.zeros(12, 3), subsample=4, seed=1.5), r"seed must be an integer"),
        (lambda: joint_entropy(torch.zeros(5, 3), torch.zeros(4, 3), subsample=(1, 2, 3)), r"m or \(k, m\)"),
        (lambda: renyi_entropy(torch.zeros(4, 3), sigma_scale=0), r"sigma_scale must be positive"),
        (lambda: renyi_entropy(torch.zeros(4, 3), sigma_scale=[]), r"at least one factor"),
        (lambda: renyi_entropy(torch.zeros(4, 3), sigma_scale="wide"), r"sigma_scale must be positive numbers"),
    ],
)
def test_token_count_errors_name_the_problem(call, message):
    with pytest.raises(InputError, match=message):
        call()


# -- σ scales ------------------------------------------------------------------------------------------------------


def test_sigma_scales_share_the_distances_and_equal_a_scaled_sigma():
    x, y = gaussian(11, 3, 25, 6), gaussian(12, 3, 9, 6)
    scaled = renyi_entropy(x, sigma_scale=[0.5, 1.0, 2.0], return_details=True)
    assert scaled.value.shape == (3, 3) and scaled.reference.shape == (3, 3)
    sigma = renyi_entropy(x, return_details=True).sigma
    for at, factor in enumerate((0.5, 1.0, 2.0)):
        assert torch.allclose(scaled.value[:, at], renyi_entropy(x, sigma=sigma * factor), atol=1e-10)
        assert torch.allclose(scaled.value[:, at], renyi_entropy(x, sigma_scale=factor), atol=1e-12)
        c = math.exp(-1 / factor**2)  # the median pair's entry at σ × factor
        assert scaled.reference[0, at].item() == pytest.approx(structureless_entropy(25, c).item())
    pairs = prompt_response_entropies(x, y, sigma_scale=(1.0, 3.0), subsample=(10, 5), draws=3)
    alone = prompt_response_entropies(x, y, sigma_scale=3.0, subsample=(10, 5), draws=3)
    for name, result in pairs.items():
        assert torch.allclose(result.value[..., 1], alone[name].value, atol=1e-10), name


# -- the pooled σ -----------------------------------------------------------------------------------------------


def test_pooled_sigma_is_the_weighted_median_of_every_sequence_s_pairs():
    short, long = gaussian(13, 2, 6, 3), gaussian(14, 2, 40, 3) * 3.0
    sigma = pooled_sigma([short, long], pairs_per_sequence=10_000)  # every pair of both
    for layer in range(2):
        values, weights = [], []
        for seq in (short[layer].numpy(), long[layer].numpy()):
            d2 = ((seq[:, None] - seq[None]) ** 2).sum(-1)[np.triu_indices(len(seq), 1)]
            values += list(d2)
            weights += [1 / len(d2)] * len(d2)  # each sequence weighs the same
        order = np.argsort(values)
        cumulative = np.cumsum(np.array(weights)[order])
        median = np.array(values)[order][np.searchsorted(cumulative, cumulative[-1] / 2)]
        assert sigma[layer].item() == pytest.approx(math.sqrt(median / 2), rel=1e-12)


def test_pooled_sigma_samples_pairs_deterministically_and_refuses_what_it_cannot_use():
    sequences = [gaussian(15 + i, 3, 200, 8) for i in range(4)]
    first = pooled_sigma(sequences, pairs_per_sequence=500, seed=1)
    assert torch.equal(first, pooled_sigma(sequences, pairs_per_sequence=500, seed=1))
    assert torch.allclose(first, pooled_sigma(sequences, pairs_per_sequence=19_900), rtol=0.05)
    calibration = SigmaCalibration()
    calibration.add(torch.zeros(3, 1, 8))  # one token: no pair
    with pytest.raises(InputError, match="no sequence of at least two tokens"):
        calibration.sigma()
    calibration.add(sequences[0])
    with pytest.raises(InputError, match="have 2 layers; the sequences added before have 3"):
        calibration.add(torch.zeros(2, 5, 8))
    assert calibration.sequences == 1 and calibration.skipped == 1
    with pytest.raises(InputError, match="coincides at layer 0"):
        pooled_sigma([torch.ones(1, 5, 2)])
    with pytest.raises(InputError, match="pairs_per_sequence must be a positive integer"):
        SigmaCalibration(pairs_per_sequence=0)
