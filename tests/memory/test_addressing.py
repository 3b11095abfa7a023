from __future__ import annotations

import pytest
import torch

from qimia.addressing import (
    circular_shift, content_weighting, cosine_similarity, interpolate, ntm_address, sharpen, tempered_softmax,
)


def test_content_weighting_matches_equation_and_sums_to_one():
    torch.manual_seed(0)
    M, k, beta = torch.randn(2, 5, 4), torch.randn(2, 3, 4), torch.rand(2, 3) * 5
    w = content_weighting(M, k, beta)
    assert w.shape == (2, 3, 5)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3))
    cos = torch.nn.functional.cosine_similarity(k.unsqueeze(2), M.unsqueeze(1), dim=-1)  # (B, H, N)
    expected = torch.exp(beta.unsqueeze(-1) * cos)
    torch.testing.assert_close(w, expected / expected.sum(-1, keepdim=True), atol=1e-5, rtol=1e-5)


def test_content_weighting_focuses_on_matching_row_with_large_beta():
    M = torch.eye(6).unsqueeze(0)  # (1, 6, 6)
    w = content_weighting(M, M[:, 3:4], torch.tensor([[100.0]]))
    assert w[0, 0].argmax() == 3 and w[0, 0, 3] > 0.99


@pytest.mark.parametrize("index,offset", [(0, -1), (1, 0), (2, 1)])
def test_shift_kernel_index_moves_weight_in_documented_direction(index, offset):
    w = torch.zeros(1, 1, 7)
    w[..., 3] = 1.0
    s = torch.zeros(1, 1, 3)
    s[..., index] = 1.0
    out = circular_shift(w, s)
    assert out[0, 0].argmax().item() == 3 + offset
    torch.testing.assert_close(out.sum(-1), torch.ones(1, 1))


def test_shift_wraps_around_the_ends():
    w = torch.zeros(1, 5)
    w[0, 4] = 1.0
    assert circular_shift(w, torch.tensor([[0.0, 0.0, 1.0]]))[0].argmax() == 0
    w = torch.zeros(1, 5)
    w[0, 0] = 1.0
    assert circular_shift(w, torch.tensor([[1.0, 0.0, 0.0]]))[0].argmax() == 4


def test_shift_is_the_papers_circular_convolution_for_wider_kernels():
    torch.manual_seed(1)
    w, s = torch.rand(2, 3, 8), torch.softmax(torch.randn(2, 3, 5), -1)
    K, N = 2, 8
    expected = torch.zeros_like(w)
    for i in range(N):
        for j in range(2 * K + 1):
            expected[..., i] += w[..., (i - (j - K)) % N] * s[..., j]
    torch.testing.assert_close(circular_shift(w, s), expected)


def test_shift_rejects_even_kernel():
    with pytest.raises(ValueError, match="odd"):
        circular_shift(torch.rand(1, 5), torch.rand(1, 2))


def test_interpolate_and_sharpen_follow_equations():
    wc, wp, g = torch.tensor([[0.2, 0.8]]), torch.tensor([[1.0, 0.0]]), torch.tensor([0.25])
    torch.testing.assert_close(interpolate(wc, wp, g), torch.tensor([[0.8, 0.2]]))
    w, gamma = torch.tensor([[0.2, 0.3, 0.5]]), torch.tensor([2.0])
    expected = w**2 / (w**2).sum()
    torch.testing.assert_close(sharpen(w, gamma), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("fill", [0.0, 1.0])
def test_no_nan_on_zero_or_constant_memory_in_outputs_and_gradients(fill):
    M = torch.full((2, 6, 4), fill, requires_grad=True)
    k = torch.zeros(2, 1, 4, requires_grad=True)
    beta = torch.ones(2, 1, requires_grad=True)
    prev = torch.zeros(2, 1, 6)
    prev[..., 0] = 1
    gate = torch.full((2, 1), 0.5, requires_grad=True)
    shift = torch.tensor([0.0, 0.0, 1.0]).expand(2, 1, 3).clone().requires_grad_()
    gamma = torch.ones(2, 1, requires_grad=True)
    w = ntm_address(M, prev, k, beta, gate, shift, gamma)
    assert torch.isfinite(w).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 1))
    (w * torch.arange(6.0)).sum().backward()
    for t in (M, k, beta, gate, shift, gamma):
        assert torch.isfinite(t.grad).all()
    assert torch.isfinite(cosine_similarity(k, M)).all()


def test_infinite_strength_is_the_limit_of_the_softmax_not_nan():
    M = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]]])  # rows 0 and 2 tie for the key
    k = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    beta = torch.tensor([[float("inf"), 3.0]], requires_grad=True)
    w = content_weighting(M, k, beta)
    assert torch.isfinite(w).all()
    torch.testing.assert_close(w[0, 0], torch.tensor([0.5, 0.0, 0.5, 0.0]))  # the ties share the weight
    finite = content_weighting(M, k[:, 1:], beta[:, 1:].detach())
    torch.testing.assert_close(w[0, 1], finite[0, 0])  # a finite beta is unchanged
    torch.testing.assert_close(w[0, 0], content_weighting(M, k[:, :1], torch.tensor([[1e4]]))[0, 0])  # the limit
    (w * torch.arange(4.0)).sum().backward()
    assert torch.isfinite(beta.grad).all() and beta.grad[0, 0] == 0


def test_infinite_sharpening_keeps_the_largest_entries():
    w = sharpen(torch.tensor([[0.2, 0.5, 0.3], [0.4, 0.2, 0.4]]), torch.tensor([float("inf"), float("inf")]))
    torch.testing.assert_close(w, torch.tensor([[0.0, 1.0, 0.0], [0.5, 0.0, 0.5]]))
    assert tempered_softmax(torch.zeros(1, 3), torch.tensor([0.0])).allclose(torch.full((1, 3), 1 / 3))
