"""`kernels/ntm/`: the vectorized step (cosine content addressing, interpolation, circular shift,
sharpening, erase-then-add writes over several heads) against the paper's equations written out
location by location (`naive.py`) in fp64; the scan keeps the state through padding and has finite
gradients."""

from __future__ import annotations

import torch

from archc.backends.torch.kernels.ntm import naive_ntm, ntm_scan, ntm_step, split_interface

B, N, M, R, WH, SHIFT = 2, 7, 3, 2, 2, 3


def _heads(g, heads: int, extra: int = 0):
    raw = torch.randn(B, heads * (M + 3 + SHIFT + extra), dtype=torch.float64, generator=g)
    return split_interface(raw, M, SHIFT, heads, extra)


def _state(g):
    d = dict(dtype=torch.float64, generator=g)
    return (torch.rand(B, N, M, **d), torch.randn(B, R, N, **d).softmax(-1), torch.randn(B, WH, N, **d).softmax(-1))


def test_step_matches_the_equations():
    g = torch.Generator().manual_seed(0)
    reads = [_heads(g, R)[0] for _ in range(4)]
    ws = [_heads(g, WH, 2 * M) for _ in range(4)]
    erase = torch.stack([torch.sigmoid(w[1][..., :M]) for w in ws], 1)
    add = torch.stack([w[1][..., M:] for w in ws], 1)
    state = _state(g)
    want, final = naive_ntm(*state, reads, [w[0] for w in ws], erase, add)
    outs = []
    for t in range(4):
        out, state = ntm_step(*state, reads[t], ws[t][0], erase[:, t], add[:, t])
        outs.append(out)
    torch.testing.assert_close(torch.stack(outs, 1), want)
    torch.testing.assert_close(state[0], final)


def _cell(x_t, carry):
    reads, _ = split_interface(x_t[:, : R * (M + 3 + SHIFT)], M, SHIFT, R)
    writes, extra = split_interface(x_t[:, R * (M + 3 + SHIFT):], M, SHIFT, WH, 2 * M)
    out, new = ntm_step(*carry, reads, writes, torch.sigmoid(extra[..., :M]), extra[..., M:])
    return out.flatten(1), new


def test_scan_skips_padding_and_has_finite_gradients():
    g = torch.Generator().manual_seed(1)
    width = R * (M + 3 + SHIFT) + WH * (3 * M + 3 + SHIFT)
    x = torch.randn(B, 6, width, dtype=torch.float64, generator=g, requires_grad=True)
    keep = torch.ones(B, 6, dtype=torch.bool)
    keep[0, 2:4] = False
    state = _state(g)
    reads, final = ntm_scan(_cell, x, keep, state, R * M)
    _, alone = ntm_scan(_cell, x[:1, [0, 1, 4, 5]], torch.ones(1, 4, dtype=torch.bool), tuple(s[:1] for s in state), R * M)
    torch.testing.assert_close(final[0][:1], alone[0])
    reads.sum().backward()
    assert torch.isfinite(x.grad).all()
