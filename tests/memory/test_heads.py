from __future__ import annotations

import torch

from qimia.memory.heads import NTMHeadParams, read_memory, write_memory


def test_read_is_weighted_sum_of_rows():
    M = torch.arange(12.0).view(1, 3, 4)
    w = torch.tensor([[[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]])
    r = read_memory(M, w)
    torch.testing.assert_close(r[0, 0], 0.5 * M[0, 0] + 0.5 * M[0, 1])
    torch.testing.assert_close(r[0, 1], M[0, 2])


def test_erase_then_add_gives_exact_memory():
    M = torch.ones(1, 3, 2) * 2.0
    w = torch.tensor([[[1.0, 0.5, 0.0]]])
    e = torch.tensor([[[1.0, 0.0]]])
    a = torch.tensor([[[3.0, 4.0]]])
    new = write_memory(M, w, e, a)
    expected = torch.tensor([[[0.0 + 3.0, 2.0 + 4.0],  # row 0: fully erased col 0, add a
                              [1.0 + 1.5, 2.0 + 2.0],  # row 1: half erased col 0, half a
                              [2.0, 2.0]]])            # row 2 untouched
    torch.testing.assert_close(new, expected)


def test_several_write_heads_multiply_erasures_and_sum_adds():
    torch.manual_seed(0)
    M, w = torch.randn(2, 4, 3), torch.softmax(torch.randn(2, 2, 4), -1)
    e, a = torch.rand(2, 2, 3), torch.randn(2, 2, 3)
    out = write_memory(M, w, e, a)
    expected = M.clone()
    for i in range(4):
        keep = (1 - w[:, 0, i, None] * e[:, 0]) * (1 - w[:, 1, i, None] * e[:, 1])
        expected[:, i] = M[:, i] * keep + w[:, 0, i, None] * a[:, 0] + w[:, 1, i, None] * a[:, 1]
    torch.testing.assert_close(out, expected)


def test_head_params_ranges():
    p = NTMHeadParams(10, num_heads=3, word_size=5, shift_range=1, write=True)(torch.randn(4, 10) * 10)
    assert p.keys.shape == (4, 3, 5) and p.shifts.shape == (4, 3, 3)
    assert (p.strengths >= 0).all() and (p.gammas >= 1).all()
    assert ((0 <= p.gates) & (p.gates <= 1)).all() and ((0 <= p.erase) & (p.erase <= 1)).all()
    torch.testing.assert_close(p.shifts.sum(-1), torch.ones(4, 3))
    r = NTMHeadParams(10, num_heads=2, word_size=5)(torch.randn(4, 10))
    assert r.erase is None and r.add is None
