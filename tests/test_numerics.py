"""The estimators at the edges of floating point: near-duplicates, cancellation, tiny and huge magnitudes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from entroprobe import conditional_entropy, prompt_response_entropies, renyi_entropy
from entroprobe.entropy.kernel import median_distance, squared_distances
from reference_math import reference_entropy, reference_sigma


def near_duplicates(jitter: float, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """40 tokens of d = 16, the first 30 a cloud of radius ``jitter`` around one point."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(40, 16, generator=g, dtype=torch.float64)
    x[:30] = x[0] + jitter * torch.randn(30, 16, generator=g, dtype=torch.float64)
    return x.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_near_duplicates_get_their_exact_distances(dtype):
    # the Gram formula cancels to noise for pairs 1e-6 apart among norms of order 1: recomputed from differences
    x = near_duplicates(1e-6, dtype=dtype)
    got = squared_distances(x[None]).double()[0]
    exact = ((x.double()[:, None] - x.double()[None]) ** 2).sum(-1)
    assert torch.allclose(got, exact, rtol=1e-5 if dtype == torch.float32 else 1e-8, atol=0)


def test_sigma_of_near_pairs_matches_the_reference_in_float64():
    x = near_duplicates(1e-7) + 1e3  # a large shared offset, as in transformer states
    sigma = renyi_entropy(x, return_details=True).sigma.item()
    assert sigma == pytest.approx(reference_sigma(x.numpy()), rel=1e-9)


@pytest.mark.parametrize("alpha", [1.01, 2.0])
def test_the_value_moves_continuously_as_near_duplicates_spread(alpha):
    # 30 of 40 tokens within a jitter: float32 must follow float64 at every jitter, with no jump where the
    # formula's rounding floor used to set the near pairs to exactly 0
    jitters = np.geomspace(1e-7, 1e-1, 25)
    doubles = [renyi_entropy(near_duplicates(j), alpha=alpha).item() for j in jitters]
    inputs = [near_duplicates(j, dtype=torch.float32) for j in jitters]  # float32's own rounding of the jitter
    singles = [renyi_entropy(x, alpha=alpha).item() for x in inputs]
    assert np.allclose(singles, [renyi_entropy(x.double(), alpha=alpha).item() for x in inputs], atol=2e-3)
    assert doubles[0] == pytest.approx(reference_entropy(near_duplicates(1e-7).numpy(), alpha), abs=1e-7)
    steps = np.abs(np.diff(doubles))
    assert steps.max() < 0.2  # the jitter grows by 1.8× per step: the value moves, it never jumps


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("power", [-30, -22, -10, 0, 10, 19, 30])
def test_every_finite_scale_gives_the_same_value(dtype, power):
    x = torch.randn(3, 48, 24, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = renyi_entropy(x)
    scaled = (x * 10.0**power).to(dtype)
    assert torch.isfinite(scaled).all()
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    for alpha in (1.01, 2.0):
        assert torch.allclose(renyi_entropy(scaled, alpha=alpha), renyi_entropy(x, alpha=alpha), atol=tol)
    result = renyi_entropy(scaled, return_details=True)
    assert torch.allclose(result.value, expected, atol=tol)
    assert torch.allclose(result.sigma / 10.0**power, renyi_entropy(x, return_details=True).sigma, rtol=1e-5)
    # a fixed σ scaled with the input gives the value of the unscaled input at the unscaled σ
    assert torch.allclose(renyi_entropy(scaled, sigma=2.0 * 10.0**power), renyi_entropy(x, sigma=2.0), atol=tol)
    y = torch.randn(3, 10, 24, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    pair = conditional_entropy(scaled, (y * 10.0**power).to(dtype))
    assert torch.allclose(pair, conditional_entropy(x, y), atol=10 * tol)


def test_huge_states_in_float32_neither_overflow_nor_pass_as_identical():
    x = torch.randn(2, 64, 32, generator=torch.Generator().manual_seed(3))
    huge = x * 1e19  # squares overflow float32: once NaN distances, taken as "all identical" (0 at α = 2)
    for alpha in (1.01, 2.0):
        assert torch.allclose(renyi_entropy(huge, alpha=alpha), renyi_entropy(x, alpha=alpha), atol=1e-4)
    measures = prompt_response_entropies(huge[:, :40], huge[:, 40:])
    expected = prompt_response_entropies(x[:, :40], x[:, 40:])
    for name, result in measures.items():
        assert torch.allclose(result.value, expected[name].value, atol=1e-4), name


def test_a_nan_median_never_passes_silently():
    dist = torch.zeros(2, 4, 4)
    dist[1, 0, 1] = dist[1, 1, 0] = float("nan")
    dist[1, 2, 3] = dist[1, 3, 2] = float("nan")
    dist[1, 0, 2] = dist[1, 2, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="sequence 1"):
        median_distance(dist)
    assert math.isnan(median_distance(torch.zeros(1, 4, 4)).item())  # all identical: NaN by definition


def test_identical_rows_are_exactly_zero_apart_at_any_offset():
    row = torch.randn(1, 512, generator=torch.Generator().manual_seed(4)) * 1e4 + 3e5
    x = torch.cat([row.repeat(20, 1), row + 1.0])  # 20 copies and one token about 1 away in every feature
    dist = squared_distances(x[None])[0]
    assert torch.all(dist[:20, :20] == 0)
    exact = ((x[0].double() - x[20].double()) ** 2).sum().item()  # of the float32 values as they are
    assert dist[0, 20].item() == pytest.approx(exact, rel=1e-6)


def test_the_gram_matrix_of_half_precision_states_is_upcast():
    from entroprobe import gaussian_gram

    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(5))
    for dtype in (torch.float16, torch.bfloat16):
        a, _ = gaussian_gram(x.to(dtype))
        assert a.dtype == torch.float32 and torch.allclose(a, gaussian_gram(x.to(dtype).float())[0])
    with pytest.raises(TypeError, match="float32 or float64 rows; got torch.float16"):
        squared_distances(x.half()[None])
