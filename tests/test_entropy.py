"""The estimators against an independent float64 numpy reference, known answers, properties and every error."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from entroprobe import (
    InputError,
    conditional_entropy,
    entropy_from_eigenvalues,
    gaussian_gram,
    joint_entropy,
    kernel_diagnostics,
    mutual_information,
    prompt_response_entropies,
    renyi_entropy,
)
from entroprobe.entropy import kernel as kernel_module
from entroprobe.entropy import engine as engine_module
from entroprobe.entropy import spectrum as spectrum_module
from entroprobe.entropy.kernel import squared_distances
from reference_math import reference_entropy, reference_sigma

ALPHAS = [0.5, 1.0, 1.01, 2.0, 3.0, math.inf]


def random_points(seed: int, *shape: int, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def far_clusters(k: int, per_cluster: int, d: int = 0) -> torch.Tensor:
    """k clusters of identical points, the clusters mutually 100 apart."""
    d = d or k
    centres = torch.eye(k, d, dtype=torch.float64) * 100 / math.sqrt(2)
    return centres.repeat_interleave(per_cluster, dim=0)


# -- against the reference ---------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 20),
    d=st.integers(1, 6),
    alpha=st.sampled_from(ALPHAS),
    seed=st.integers(0, 10_000),
    duplicates=st.booleans(),
)
def test_matches_reference_float64(n, d, alpha, seed, duplicates):
    x = random_points(seed, n, d)
    if duplicates and n > 4:
        x[: n - 1] = x[0]  # (n − 2)/n of the pairs coincide, more than half: the median-of-non-zero rule
    result = renyi_entropy(x, alpha=alpha, return_details=True)
    expected = reference_entropy(x.numpy(), alpha)
    assert result.value.item() == pytest.approx(expected, rel=1e-7, abs=1e-9)
    sigma = reference_sigma(x.numpy())
    if math.isnan(sigma):
        assert math.isnan(result.sigma.item())
    else:
        assert result.sigma.item() == pytest.approx(sigma, rel=1e-9)


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("sigma", [None, 0.7, 3.0])
def test_float32_close_to_float64_reference(alpha, sigma):
    x = random_points(1, 40, 16)
    got = renyi_entropy(x.float(), alpha=alpha, sigma=sigma if sigma else "median").item()
    assert got == pytest.approx(reference_entropy(x.numpy(), alpha, sigma), rel=2e-4, abs=2e-4)


def test_base_changes_units():
    x = random_points(2, 30, 5)
    bits = renyi_entropy(x, base=2).item()
    assert renyi_entropy(x, base=math.e).item() == pytest.approx(bits * math.log(2), rel=1e-10)
    assert renyi_entropy(x, base=10).item() == pytest.approx(bits * math.log10(2), rel=1e-10)


# -- known answers -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", ALPHAS)
def test_identical_rows_have_zero_entropy(alpha):
    x = torch.tensor([[0.3, -1.2, 5.0]]).repeat(17, 1)
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        value = renyi_entropy(x.to(dtype), alpha=alpha, return_details=True)
        assert value.value.item() == 0.0
        assert math.isnan(value.sigma.item())  # no bandwidth is defined when every distance is 0


def test_large_offset_identical_rows_are_exactly_zero_in_float32():
    # transformer states share large offsets; rounding must not make identical rows look distinct
    row = torch.randn(1, 2048, generator=torch.Generator().manual_seed(0)) * 50 + 300
    assert renyi_entropy(row.repeat(64, 1).float()).item() == 0.0


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("base", [2, math.e, 10])
def test_mutually_far_rows_reach_log_n(alpha, base):
    x = torch.eye(12, dtype=torch.float64) * 50
    assert renyi_entropy(x, alpha=alpha, sigma=1.0, base=base).item() == pytest.approx(math.log(12, base), rel=1e-9)


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("k", [1, 2, 5, 8])
def test_k_far_clusters_give_log_k_for_every_alpha(alpha, k):
    x = far_clusters(k, per_cluster=6)
    assert renyi_entropy(x, alpha=alpha, sigma=1.0).item() == pytest.approx(math.log2(k), abs=1e-9)


def test_one_token_has_zero_entropy():
    assert renyi_entropy(torch.randn(1, 7)).item() == 0.0
    assert renyi_entropy(torch.randn(3, 1, 7)).tolist() == [0.0, 0.0, 0.0]
    assert renyi_entropy(torch.randn(1, 7), normalize=True).item() == 0.0


def test_alpha_two_frobenius_shortcut_equals_eigen_path():
    x = random_points(3, 50, 8)
    shortcut = renyi_entropy(x, alpha=2.0).item()
    lam = torch.linalg.eigvalsh(gaussian_gram(x)[0])
    assert shortcut == pytest.approx(-math.log2((lam**2).sum().item()), rel=1e-10)
    assert shortcut == pytest.approx(reference_entropy(x.numpy(), 2.0), rel=1e-10)


def test_entropy_from_eigenvalues_edge_cases():
    uniform = torch.full((8,), 1 / 8, dtype=torch.float64)
    for alpha in ALPHAS:
        assert entropy_from_eigenvalues(uniform, alpha=alpha).item() == pytest.approx(3.0)
    # negative round-off is clamped, zeros contribute 0 · log 0 = 0, never NaN
    value = entropy_from_eigenvalues(torch.tensor([0.5, 0.5, 0.0, -1e-12]), alpha=1.0)
    assert not torch.isnan(value) and value.item() == pytest.approx(1.0)
    # numerically zero eigenvalues (below the rank tolerance) do not count, even for alpha < 1
    tiny = torch.tensor([0.5, 0.5] + [1e-20] * 100, dtype=torch.float64)
    assert entropy_from_eigenvalues(tiny, alpha=0.5).item() == pytest.approx(1.0)


# -- properties ------------------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 25), alpha=st.sampled_from(ALPHAS))
def test_row_permutation_invariance(seed, n, alpha):
    x = random_points(seed, n, 4)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1))
    assert renyi_entropy(x[perm], alpha=alpha).item() == pytest.approx(renyi_entropy(x, alpha=alpha).item(), abs=1e-10)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), alpha=st.sampled_from(ALPHAS), shift=st.floats(-1e3, 1e3))
def test_translation_and_rotation_invariance_at_fixed_sigma(seed, alpha, shift):
    x = random_points(seed, 20, 6)
    q, _ = torch.linalg.qr(random_points(seed + 1, 6, 6))
    moved = x @ q + shift
    for sigma in (1.5, "median"):
        assert renyi_entropy(moved, alpha=alpha, sigma=sigma).item() == pytest.approx(
            renyi_entropy(x, alpha=alpha, sigma=sigma).item(), abs=1e-8
        )


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(1e-3, 1e3), alpha=st.sampled_from(ALPHAS))
def test_scaling_x_and_sigma_together(seed, scale, alpha):
    x = random_points(seed, 15, 3)
    base = renyi_entropy(x, alpha=alpha, sigma=0.8).item()
    assert renyi_entropy(x * scale, alpha=alpha, sigma=0.8 * scale).item() == pytest.approx(base, abs=1e-8)
    # and the median rule scales with x
    assert renyi_entropy(x * scale, alpha=alpha).item() == pytest.approx(renyi_entropy(x, alpha=alpha).item(), abs=1e-8)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 30),
    alpha=st.sampled_from(ALPHAS),
    sigma=st.one_of(st.just("median"), st.floats(1e-3, 1e3)),
)
def test_bounds(seed, n, alpha, sigma):
    x = random_points(seed, n, 5)
    value = renyi_entropy(x, alpha=alpha, sigma=sigma).item()
    assert 0.0 <= value <= math.log2(n) + 1e-9
    normalized = renyi_entropy(x, alpha=alpha, sigma=sigma, normalize=True).item()
    assert 0.0 <= normalized <= 1.0 + 1e-9
    if n > 1:  # the ceiling log n in the entropy's own base: the same share in any base
        in_nats = renyi_entropy(x, alpha=alpha, sigma=sigma, base=math.e, normalize=True).item()
        assert in_nats == pytest.approx(normalized, abs=1e-9)
        assert normalized == pytest.approx(value / math.log2(n), abs=1e-9)


def test_entropy_decreases_with_alpha():
    x = random_points(4, 30, 4)
    values = [renyi_entropy(x, alpha=a).item() for a in ALPHAS]
    assert values == sorted(values, reverse=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_continuous_across_alpha_one(dtype):
    x = random_points(5, 40, 8, dtype=dtype)
    shannon = renyi_entropy(x, alpha=1.0).item()
    tol = 1e-9 if dtype == torch.float64 else 1e-5
    for eps in (1e-9, 1e-7, 1e-6, 1e-5, 1e-4):
        for alpha in (1 - eps, 1 + eps):
            assert renyi_entropy(x, alpha=alpha).item() == pytest.approx(shannon, abs=10 * eps + tol)
    # and close to the reference on both sides of the switch to the expansion
    for alpha in (1 - 2e-6, 1 - 5e-7, 1 + 5e-7, 1 + 2e-6):
        assert renyi_entropy(x.double(), alpha=alpha).item() == pytest.approx(
            reference_entropy(x.double().numpy(), alpha), abs=1e-9
        )


@pytest.mark.parametrize("alpha", [1.01, 2.0, math.inf])
def test_batched_equals_looped(alpha):
    x = random_points(6, 3, 4, 25, 8)  # (3, 4, n, d): any leading shape
    batched = renyi_entropy(x, alpha=alpha, return_details=True)
    assert batched.value.shape == (3, 4) and batched.sigma.shape == (3, 4)
    for i in range(3):
        for j in range(4):
            single = renyi_entropy(x[i, j], alpha=alpha, return_details=True)
            assert batched.value[i, j].item() == pytest.approx(single.value.item(), abs=1e-12)
            assert batched.sigma[i, j].item() == pytest.approx(single.sigma.item(), rel=1e-12)


def test_chunking_under_a_tiny_memory_budget_gives_the_same_values():
    x = random_points(7, 9, 30, 6)
    y = random_points(8, 9, 12, 6)
    assert torch.allclose(renyi_entropy(x, memory_budget=1), renyi_entropy(x), atol=1e-12)
    assert torch.allclose(conditional_entropy(x, y, memory_budget=1), conditional_entropy(x, y), atol=1e-12)


def assert_distances_match_reference(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``squared_distances`` of ``x`` (float64 points) in ``dtype`` against broadcast differences; returns them."""
    got = squared_distances(x.to(dtype)).double()
    expected = ((x[:, :, None] - x[:, None, :]) ** 2).sum(-1)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert torch.allclose(got, expected, rtol=tol, atol=tol * expected.max().item())
    return got


@pytest.mark.parametrize("n", [127, 128, 129, 300, 1030])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_distances_computed_in_block_rows_match_the_reference(n, dtype):
    # long sequences are computed one block row of the lower triangle at a time and mirrored: every block
    # boundary must give the reference distances, an exactly symmetric matrix and an exactly zero diagonal
    x = random_points(40, 2, n, 5) + 30  # a shared offset, as in transformer states
    x[:, -1] = x[:, 0]  # a repeated token: distance exactly 0 across blocks
    got = assert_distances_match_reference(x, dtype)
    block = max(kernel_module._GRAM_MIN_BLOCK, -(-n // kernel_module._GRAM_BLOCK_ROWS))  # rows per block row
    off_diagonal_blocks = ~torch.block_diag(*[torch.ones(block, block, dtype=torch.bool)] * (n // block + 1))[:n, :n]
    assert torch.equal(got[:, off_diagonal_blocks], got.transpose(-1, -2)[:, off_diagonal_blocks])
    assert torch.all(got.diagonal(dim1=-2, dim2=-1) == 0)
    assert torch.all(got[:, -1, 0] == 0) and torch.all(got[:, 0, -1] == 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_distances_of_many_short_sequences_worked_in_groups_match_the_reference(dtype):
    x = random_points(45, 30, 50, 1000)  # 30 sequences of 0.2–0.4 MB: several groups of at most 4 MiB
    assert_distances_match_reference(x, dtype)


@pytest.fixture
def two_threads(monkeypatch):
    """Two torch threads, whatever the machine, and sequences of 192 rows or more spread over them whatever their
    size (small ones keep the tests fast). Yields the list of item counts each spread was called with."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    monkeypatch.setattr(engine_module, "_SPREAD_MIN_WORK", 192**3)
    calls = []
    spread = spectrum_module.spread
    record = lambda work, items: calls.append(items) or spread(work, items)  # noqa: E731
    monkeypatch.setattr(engine_module, "spread", record)
    monkeypatch.setattr(spectrum_module, "spread", record)
    yield calls
    torch.set_num_threads(threads)


@pytest.mark.parametrize("alpha", [1.01, 2.0])
def test_long_sequences_spread_over_threads_match_the_reference(two_threads, alpha):
    # n ≥ 192 with several layers: one sequence per call, sequences over threads, one BLAS thread each
    x = random_points(41, 3, 200, 4)
    got = renyi_entropy(x, alpha=alpha, return_details=True)
    assert two_threads[0] == 3  # the three layers, one per call
    for layer in range(3):
        assert got.value[layer].item() == pytest.approx(reference_entropy(x[layer].numpy(), alpha), abs=1e-9)
        assert got.sigma[layer].item() == pytest.approx(reference_sigma(x[layer].numpy()), rel=1e-9)
    assert torch.get_num_threads() == 2  # restored
    torch.set_num_threads(1)  # the same values unspread
    assert torch.allclose(renyi_entropy(x, alpha=alpha), got.value, atol=1e-10)


def test_pair_measures_spread_over_threads_equal_each_sequence_alone(two_threads):
    x, y = random_points(42, 3, 150, 4) + 5, random_points(43, 3, 60, 4)  # 210 rows in the joint kernel
    measures = prompt_response_entropies(x, y)
    assert two_threads == [3]  # every measure of the three layers, one layer per call (no nested spreading)
    for layer in range(3):
        alone = prompt_response_entropies(x[layer], y[layer])
        for name, result in measures.items():
            assert result.value[layer].item() == pytest.approx(alone[name].value.item(), abs=1e-10), name
            assert result.sigma[layer].item() == pytest.approx(alone[name].sigma.item(), rel=1e-12), name


def test_a_failure_on_a_thread_propagates_and_restores_the_thread_count(two_threads, monkeypatch):
    def failing(*args, **kwargs):
        raise RuntimeError("eigensolver failed to converge")

    monkeypatch.setattr(torch.linalg, "eigvalsh", failing)
    with pytest.raises(RuntimeError, match="failed to converge"):
        renyi_entropy(random_points(44, 3, 200, 4))
    assert two_threads == [3] and torch.get_num_threads() == 2


def test_a_failure_on_a_thread_cancels_the_items_not_yet_started():
    started = []

    def work(i):
        started.append(i)
        if i == 0:
            raise ValueError("sequence 0 is bad")
        time.sleep(0.05)
        return i

    with pytest.raises(ValueError, match="sequence 0"):
        spectrum_module.spread(work, 40)
    assert len(started) < 10


def test_fewer_sequences_than_threads_are_not_spread(two_threads):
    x = random_points(46, 1, 200, 4)
    assert renyi_entropy(x).item() == pytest.approx(reference_entropy(x[0].numpy(), 1.01), abs=1e-9)
    assert two_threads == [1]  # only the eigensolver's one matrix, on one thread


@pytest.mark.parametrize("rows", [20, 200])
def test_inputs_that_require_grad_are_measured_under_no_grad_and_with_grad(two_threads, rows):
    # a worker thread starts with autograd on whatever the caller's mode: the input is detached first
    weight = torch.ones(4, dtype=torch.float64, requires_grad=True)
    x, y = random_points(47, 3, rows, 4) * weight, random_points(48, 3, 30, 4) * weight
    expected = renyi_entropy(x.detach())
    for mode in (torch.no_grad, torch.enable_grad, torch.inference_mode):
        with mode():
            assert torch.equal(renyi_entropy(x), expected)
            assert conditional_entropy(x, y).shape == (3,)
            assert kernel_diagnostics(x).saturation.shape == (3,)
            assert gaussian_gram(x)[0].shape == (3, rows, rows)


def test_float32_is_unbiased_on_large_structured_states():
    # low rank + noise, like hidden states: many small but genuine eigenvalues that a rank-style cut-off
    # (n · eps · λ_max) would drop in float32, biasing every entropy low
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1024, 16, generator=g) @ torch.randn(16, 128, generator=g) + 0.05 * torch.randn(1024, 128, generator=g)
    for alpha in (0.5, 1.01, 2.0):
        single = renyi_entropy(z.float(), alpha=alpha).item()
        double = renyi_entropy(z.double(), alpha=alpha).item()
        assert single == pytest.approx(double, abs=2e-3), alpha


def test_a_tiny_fixed_sigma_saturates_instead_of_failing():
    x = random_points(30, 10, 3)
    for dtype in (torch.float32, torch.float64):
        assert renyi_entropy(x.to(dtype), sigma=1e-25).item() == pytest.approx(math.log2(10))
        assert renyi_entropy(torch.ones(5, 3, dtype=dtype), sigma=1e-25).item() == 0.0


def test_half_precision_is_upcast():
    x = random_points(9, 20, 8).float()
    for dtype in (torch.float16, torch.bfloat16):
        low = x.to(dtype)
        assert renyi_entropy(low).item() == pytest.approx(renyi_entropy(low.float()).item(), abs=1e-6)


def test_sigma_tensor_per_leading_index():
    x = random_points(10, 3, 20, 4)
    sigmas = torch.tensor([0.5, 1.0, 2.0])
    batched = renyi_entropy(x, sigma=sigmas)
    for i, s in enumerate(sigmas.tolist()):
        assert batched[i].item() == pytest.approx(renyi_entropy(x[i], sigma=s).item(), abs=1e-12)


def test_numpy_input_is_accepted():
    x = random_points(11, 10, 3)
    assert renyi_entropy(x.numpy()).item() == pytest.approx(renyi_entropy(x).item())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    for n in (64, 300):  # one block row of distances, and three (the whole batch at once on the GPU)
        x = random_points(12, 5, n, 32).float()
        on_gpu = renyi_entropy(x.cuda())
        assert on_gpu.device.type == "cuda"
        assert torch.allclose(on_gpu.cpu(), renyi_entropy(x), atol=1e-4)
        y = random_points(13, 5, 40, 32).float()
        measures = prompt_response_entropies(x.cuda(), y.cuda())
        for name, expected in prompt_response_entropies(x, y).items():
            assert torch.allclose(measures[name].value.cpu(), expected.value, atol=1e-4), name
    distances = squared_distances(random_points(14, 2, 300, 8).cuda())
    assert torch.allclose(distances.cpu(), squared_distances(random_points(14, 2, 300, 8)), atol=1e-9)


def test_device_measures_where_it_says_chunk_by_chunk():
    """``device=``: the same values, every chunk moved there; a chunked batch (a small budget) too, and chunks
    that split a sequence's random subsets give each subset its own sequence's rows."""
    x, y = random_points(15, 6, 40, 16).float(), random_points(16, 6, 24, 16).float()
    whole = prompt_response_entropies(x, y, subsample=(16, 16))  # one chunk
    for budget in (1 << 30, 4 << 10):  # one chunk; a few subsets per chunk
        chunked = prompt_response_entropies(x, y, device="cpu", memory_budget=budget, subsample=(16, 16))
        again = prompt_response_entropies(x, y, memory_budget=budget, subsample=(16, 16))
        for name in whole:
            assert torch.equal(chunked[name].value, again[name].value), name
            assert torch.allclose(chunked[name].value, whole[name].value, atol=1e-5), (name, budget)
    assert torch.allclose(renyi_entropy(x, device=torch.device("cpu"), memory_budget=4 << 10), renyi_entropy(x))
    assert torch.allclose(renyi_entropy(x, subsample=16, draws=8, memory_budget=4 << 10),
                          renyi_entropy(x, subsample=16, draws=8), atol=1e-5)
    with pytest.raises(InputError, match="device must be a torch device"):
        renyi_entropy(x, device="gpu-please")


class _Moves(torch.Tensor):
    """A tensor that records the shape of every ``.to`` of it or of what is cut from it."""

    shapes: list[tuple[int, ...]] = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func is torch.Tensor.to:
            cls.shapes.append(tuple(args[0].shape))
        return super().__torch_function__(func, types, args, kwargs or {})


def test_with_a_device_only_a_chunk_is_ever_moved():
    """On a CPU ``device="cpu"`` moves nothing, so what is moved is observed: with a budget of one sequence per
    chunk, every ``.to`` is of one sequence's rows, never of the whole batch (as on a GPU: one chunk there at a
    time)."""
    x, y = random_points(19, 6, 40, 16).float(), random_points(20, 6, 24, 16).float()
    expected = prompt_response_entropies(x, y)
    _Moves.shapes = []
    measured = prompt_response_entropies(x.as_subclass(_Moves), y.as_subclass(_Moves), device="cpu",
                                         memory_budget=4 << 10)  # fmt: skip
    assert _Moves.shapes and {s[0] for s in _Moves.shapes} == {1}, _Moves.shapes
    assert {s[1:] for s in _Moves.shapes} == {(40, 16), (24, 16)}
    for name, value in expected.items():
        assert torch.allclose(torch.as_tensor(measured[name].value), value.value, atol=1e-5), name
    _Moves.shapes = []
    prompt_response_entropies(x.as_subclass(_Moves), y.as_subclass(_Moves), device="cpu")  # one chunk: all six
    assert {s[0] for s in _Moves.shapes} == {6}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_states_on_the_cpu_measured_on_the_gpu_equal_states_on_the_gpu():
    x, y = random_points(17, 5, 300, 32).float(), random_points(18, 5, 60, 32).float()
    on_gpu = prompt_response_entropies(x.cuda(), y.cuda())
    moved = prompt_response_entropies(x, y, device="cuda", memory_budget=1 << 20)  # many chunks, each moved
    for name, expected in on_gpu.items():
        assert moved[name].value.device.type == "cuda"
        assert torch.allclose(moved[name].value, expected.value, atol=1e-5), name


# -- joint, conditional, mutual information -------------------------------------------------------------------


def test_joint_entropy_is_the_entropy_of_the_stacked_rows_at_the_union_sigma():
    x, y = random_points(13, 2, 10, 5), random_points(14, 2, 7, 5)
    union = torch.cat([x, y], dim=-2)
    assert torch.allclose(joint_entropy(x, y), renyi_entropy(union), atol=1e-12)
    details = joint_entropy(x, y, return_details=True)
    assert torch.allclose(details.sigma, renyi_entropy(union, return_details=True).sigma)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_conditional_of_y_equal_x_is_zero(alpha):
    x = random_points(15, 4, 30, 8)
    assert torch.allclose(conditional_entropy(x, x, alpha=alpha), torch.zeros(4, dtype=torch.float64), atol=1e-9)


def test_conditional_is_joint_minus_prompt_at_one_shared_sigma():
    x, y = random_points(16, 20, 4), random_points(17, 9, 4)
    details = conditional_entropy(x, y, return_details=True)
    sigma = details.sigma.item()
    assert sigma == pytest.approx(reference_sigma(np.concatenate([x.numpy(), y.numpy()])))
    expected = reference_entropy(np.concatenate([x.numpy(), y.numpy()]), 1.01, sigma) - reference_entropy(
        x.numpy(), 1.01, sigma
    )
    assert details.value.item() == pytest.approx(expected, abs=1e-9)


def test_conditional_grows_as_dependence_weakens():
    x = random_points(18, 64, 16)
    noise = random_points(19, 64, 16)
    identical = conditional_entropy(x, x).item()
    perturbed = conditional_entropy(x, x + 0.3 * noise).item()
    independent = conditional_entropy(x, random_points(20, 64, 16)).item()
    assert abs(identical) < 1e-9 < perturbed < independent


def test_mutual_information_proxy():
    x = random_points(21, 25, 6)
    details = mutual_information(x, x, return_details=True)
    # S(x, x) = S(x) exactly at any shared σ, so the proxy equals S(x) at the union's σ
    assert details.value.item() == pytest.approx(renyi_entropy(x, sigma=details.sigma.item()).item(), abs=1e-9)
    assert mutual_information(x, random_points(22, 25, 6)).item() < details.value.item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_prompt_response_entropies_agree_with_the_single_functions(dtype):
    # large offsets, as in transformer states: the prompt and response entropies must equal renyi_entropy's
    x = random_points(23, 3, 18, 5, dtype=dtype) + 40
    y = random_points(24, 3, 11, 5, dtype=dtype) - 40
    measures = prompt_response_entropies(x, y)
    assert torch.equal(measures["prompt_entropy"].value, renyi_entropy(x))
    assert torch.equal(measures["response_entropy"].value, renyi_entropy(y))
    assert torch.allclose(measures["joint_entropy"].value, joint_entropy(x, y), atol=1e-9)
    assert torch.allclose(measures["conditional_entropy"].value, conditional_entropy(x, y), atol=1e-9)
    assert measures["prompt_entropy"].n == 18 and measures["joint_entropy"].n == 29


# -- diagnostics and the Gram matrix ---------------------------------------------------------------------------


def test_kernel_diagnostics_flags_both_saturations_of_a_fixed_sigma():
    x = random_points(25, 40, 8)
    small = kernel_diagnostics(x, sigma=1e-3)  # K ≈ I: the value is log2(n), the reference too
    assert small.states == ["structureless"] and small.saturation.item() == pytest.approx(1.0)
    assert small.relative.item() == pytest.approx(1.0) and small.entropy.item() == pytest.approx(math.log2(40))
    assert "too small" in small.warnings()[0] and "counts tokens" in small.warnings()[0]
    large = kernel_diagnostics(x, sigma=1e4)  # K ≈ all-ones
    assert large.states == ["collapsed"] and large.saturation.item() == pytest.approx(-1.0, abs=1e-6)
    assert "too large" in large.warnings()[0]
    healthy = kernel_diagnostics(far_clusters(4, 10) + 0.3 * random_points(26, 40, 4))
    assert healthy.states == ["ok"] and healthy.warnings() == []
    same = kernel_diagnostics(torch.ones(6, 4))
    assert same.states == ["identical"] and "same point" in same.warnings()[0]
    assert 0 < healthy.offdiag_mean.item() < 1


def test_kernel_diagnostics_batched_and_matches_details():
    x = random_points(26, 4, 30, 5)
    diagnostics = kernel_diagnostics(x)
    assert diagnostics.saturation.shape == (4,)
    assert torch.allclose(diagnostics.saturation, renyi_entropy(x, return_details=True).saturation)


def test_gaussian_gram_is_trace_normalised_and_symmetric():
    x = random_points(27, 2, 12, 3)
    a, sigma = gaussian_gram(x)
    assert a.shape == (2, 12, 12) and sigma.shape == (2,)
    assert torch.allclose(a.diagonal(dim1=-2, dim2=-1).sum(-1), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(a, a.transpose(-1, -2), atol=1e-15)
    k, _ = gaussian_gram(x[0], sigma=2.0, normalize=False)
    d2 = ((x[0][:, None] - x[0][None]) ** 2).sum(-1)
    assert torch.allclose(k, torch.exp(-d2 / 8), atol=1e-12)


# -- every error path ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: renyi_entropy(torch.tensor([[0.0, float("nan")]])), r"contains NaN or Inf"),
        (lambda: renyi_entropy(torch.tensor([1.0, 2.0])), r"at least 2 dimensions.*got shape \(2,\)"),
        (lambda: renyi_entropy(torch.zeros(0, 3)), r"empty sequence \(n = 0"),
        (lambda: renyi_entropy(torch.zeros(4, 0)), r"no features \(d = 0\)"),
        (lambda: renyi_entropy(torch.zeros(0, 4, 3)), r"empty leading dimension"),
        (lambda: renyi_entropy(torch.zeros(4, 3, dtype=torch.complex64)), r"must be real"),
        (lambda: renyi_entropy("abc"), r"must be a tensor"),
        (lambda: renyi_entropy(torch.zeros(4, 3), alpha=0), r"alpha must be > 0.*got 0"),
        (lambda: renyi_entropy(torch.zeros(4, 3), alpha=-1.5), r"alpha must be > 0.*got -1.5"),
        (lambda: renyi_entropy(torch.zeros(4, 3), alpha=float("nan")), r"alpha must be > 0"),
        (lambda: renyi_entropy(torch.zeros(4, 3), alpha="high"), r"alpha must be a number"),
        (lambda: renyi_entropy(torch.zeros(4, 3), sigma=0.0), r"sigma must be positive and finite; got 0.0"),
        (lambda: renyi_entropy(torch.zeros(4, 3), sigma=-2), r"sigma must be positive and finite; got -2"),
        (lambda: renyi_entropy(torch.zeros(4, 3), sigma=float("inf")), r"sigma must be positive and finite"),
        (lambda: renyi_entropy(torch.zeros(4, 3), sigma=float("nan")), r"sigma must be positive and finite"),
        (lambda: renyi_entropy(torch.zeros(4, 3), sigma="mean"), r"Unknown sigma rule 'mean'.*median"),
        (lambda: renyi_entropy(torch.zeros(2, 4, 3), sigma=torch.ones(3)), r"leading shape \(2,\); got \(3,\)"),
        (
            lambda: renyi_entropy(torch.zeros(2, 4, 3), sigma=torch.tensor([1.0, -1.0])),
            r"got -1.0 at leading index \(1,\)",
        ),
        (lambda: renyi_entropy(torch.zeros(4, 3), base=1), r"base must be .*!= 1; got 1"),
        (lambda: renyi_entropy(torch.zeros(4, 3), base=-2), r"base must be"),
        (lambda: renyi_entropy(torch.zeros(4, 3), memory_budget=0), r"memory_budget must be a positive"),
        (lambda: conditional_entropy(torch.zeros(4, 3), torch.zeros(4, 5)), r"same feature size d.*d = 3.*d = 5"),
        (lambda: joint_entropy(torch.zeros(2, 4, 3), torch.zeros(3, 4, 3)), r"same leading shape.*\(2,\).*\(3,\)"),
        (lambda: conditional_entropy(torch.zeros(4, 3), torch.zeros(0, 3)), r"y is an empty sequence"),
        (lambda: mutual_information(torch.zeros(4, 3), torch.tensor([[float("inf")] * 3])), r"y contains NaN or Inf"),
        (lambda: kernel_diagnostics(torch.zeros(4, 3), margin=0), r"margin must be a number in \(0, 1\)"),
        (lambda: entropy_from_eigenvalues(torch.ones(3), alpha=0), r"alpha must be > 0"),
    ],
)
def test_errors_name_the_problem(call, message):
    with pytest.raises(InputError, match=message):
        call()


def test_nan_error_names_the_first_bad_layer():
    x = torch.zeros(5, 4, 3)
    x[3, 2, 1] = float("inf")
    x[4, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or Inf at leading index \(3,\).*shape \(5, 4, 3\)"):
        renyi_entropy(x)


def test_nan_error_in_y_names_y_and_its_first_bad_layer():
    x, y = torch.zeros(2, 3, 4, 3), torch.zeros(2, 3, 5, 3)
    y[1, 2, 4, 0] = float("nan")
    with pytest.raises(ValueError, match=r"y contains NaN or Inf at leading index \(1, 2\)"):
        conditional_entropy(x, y)


def test_the_spread_threads_are_kept_and_a_forked_child_gets_its_own():
    """spread keeps its threads for later calls; a child forked after a call (as a DataLoader worker or a torchrun
    launcher may fork) has none of them and must start its own, not wait on threads it does not have."""
    import multiprocessing

    assert spectrum_module.spread(lambda i: i * i, 4) == [0, 1, 4, 9]
    pool = spectrum_module._pool
    assert spectrum_module.spread(lambda i: -i, 3) == [0, -1, -2] and spectrum_module._pool is pool
    child = multiprocessing.get_context("fork").Process(target=_spread_in_a_child)
    child.start()
    child.join(timeout=30)
    assert child.exitcode == 0, "the forked child's spread did not finish"


def _spread_in_a_child():
    import sys

    sys.exit(0 if spectrum_module.spread(lambda i: i + 1, 3) == [1, 2, 3] else 1)
