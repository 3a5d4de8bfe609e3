"""`kernels/mla/`: the expanded (training) form and the absorbed decode form over the compressed
cache against the paper's equations query by query (`naive.py`) in fp64, with padding; the
absorbed form never forms per-head keys, so equality checks the absorption identity."""

from __future__ import annotations

import torch

from archc.backends.torch.kernels.mla import absorbed_mla, expanded_mla, naive_mla

H, DC, DR, DV, R = 3, 5, 4, 6, 7


def _inputs(t: int = 11, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    d = dict(dtype=torch.float64, generator=g)
    return (torch.randn(2, H, t, DC, **d), torch.randn(2, H, t, DR, **d), torch.randn(2, t, R, **d),
            torch.randn(2, t, DR, **d), torch.randn(H * (DC + DV), R, **d))


def _split(w_kv_b):
    w = w_kv_b.view(H, DC + DV, R)
    return w[:, :DC], w[:, DC:]


def test_expanded_form_matches_the_equations():
    q_nope, q_rope, latent, k_rope, w = _inputs()
    want = naive_mla(q_nope, q_rope, latent, k_rope, *_split(w), scale=0.3)
    torch.testing.assert_close(expanded_mla(q_nope, q_rope, latent, k_rope, w, DC, 0.3), want)


def test_absorbed_form_matches_the_equations_with_padding():
    q_nope, q_rope, latent, k_rope, w = _inputs()
    t = latent.shape[1]
    valid = torch.ones(2, t, dtype=torch.bool)
    valid[1, :3] = False  # a left-padded sequence
    want = naive_mla(q_nope, q_rope, latent, k_rope, *_split(w), scale=0.3, valid=valid)
    allowed = torch.ones(t, t, dtype=torch.bool).tril()[None] & valid[:, None, :]
    got = absorbed_mla(q_nope, q_rope, latent, k_rope, *_split(w), scale=0.3, mask=allowed[:, None])
    torch.testing.assert_close(got[1, :, 3:], want[1, :, 3:])
    torch.testing.assert_close(got[0], want[0])
    got = expanded_mla(q_nope, q_rope, latent, k_rope, w, DC, 0.3, allowed[:, None])
    torch.testing.assert_close(got[1, :, 3:], want[1, :, 3:])
