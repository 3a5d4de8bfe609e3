"""`kernels/knn_attention/`: the whole-sequence form (local attention per segment, exact top-k
over earlier segments by torch.topk walking the segments, by one masked topk as traced, and by a
faiss index) and the decode step against the definition query by query (`naive.py`) in fp64;
padding is never retrieved; export with a dynamic length."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.export import Dim

from archc.backends.torch.kernels.knn_attention import (
    knn_attention,
    knn_attention_step,
    naive_knn_attention,
    retrieve,
)

pytest.importorskip("faiss")


def _inputs(t: int = 23, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    d = dict(dtype=torch.float64, generator=g)
    q = F.normalize(torch.randn(2, 2, t, 4, **d), dim=-1) * 3
    k = F.normalize(torch.randn(2, 2, t, 4, **d), dim=-1)
    return q, k, torch.randn(2, 2, t, 4, **d), torch.randn(2, **d)


@pytest.mark.parametrize("index", ["torch", "faiss"])
@pytest.mark.parametrize("t", [23, 61])  # 61 > 4 segments: torch walks the segments
def test_forward_matches_the_definition(index, t):
    q, k, v, gate = _inputs(t)
    torch.testing.assert_close(knn_attention(q, k, v, gate, 5, 3, index=index), naive_knn_attention(q, k, v, gate, 5, 3))


def test_steps_match_the_definition():
    q, k, v, gate = _inputs()
    keys, values, outs = torch.zeros(2, 2, 32, 4, dtype=torch.float64), torch.zeros(2, 2, 32, 4, dtype=torch.float64), []
    for start, stop in ((0, 7), (7, 8), (8, 23)):
        keys[:, :, start:stop], values[:, :, start:stop] = k[:, :, start:stop], v[:, :, start:stop]
        outs.append(knn_attention_step(q[:, :, start:stop], keys, values, torch.arange(start, stop), gate, 5, 3))
    torch.testing.assert_close(torch.cat(outs, 2), naive_knn_attention(q, k, v, gate, 5, 3))


@pytest.mark.parametrize("index", ["torch", "faiss"])
def test_padding_is_never_retrieved(index):
    q, k, _, _ = _inputs(40)
    valid = torch.ones(2, 40, dtype=torch.bool)
    valid[:, 10:20] = False
    idx, found = retrieve(q, k, 5, 8, valid, index)
    assert not ((idx >= 10) & (idx < 20) & found).any() and found[:, :, 39].all()


class _Knn(torch.nn.Module):
    def forward(self, x):
        x = x.transpose(1, 2)  # [B, H, T, 12]
        return knn_attention(F.normalize(x[..., :4], dim=-1), F.normalize(x[..., 4:8], dim=-1), x[..., 8:],
                             torch.zeros(2), 8, 4)


def test_forward_exports_with_a_dynamic_length():
    ep = torch.export.export(_Knn(), (torch.randn(1, 50, 2, 12),), dynamic_shapes=({1: Dim("T", min=2, max=4096)},))
    for t in (3, 70):
        x = torch.randn(1, t, 2, 12)
        torch.testing.assert_close(ep.module()(x), _Knn()(x))
