"""The rotary kernel (archc/backends/triton/templates/rotary.py.jinja, bound in
archc/backends/torch/kernels/rotary/triton.py) against `naive.py`, in Triton's interpreter: full
and partial rotary (a quarter of the head rotated, as GPT-NeoX / Phi), shared and per-sequence
tables, GQA's fewer key heads, lengths 1, 15 and 63, queries laid out as attention leaves them
(a transposed view); fp32 to rounding, bf16 by flash-linear-attention's criterion against the
fp32 reference (see test_rms_norm.py)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from archc.backends.torch.kernels.rotary.naive import apply_rope  # noqa: E402
from archc.backends.torch.kernels.rotary.triton import triton_rope  # noqa: E402
from archc.backends.torch.ops.positions import rope_cos_sin  # noqa: E402
from tests.backends.torch.kernels.criteria import rel_rms  # noqa: E402


@pytest.mark.parametrize(("heads", "t", "hd", "rot", "per_batch"), [
    (4, 1, 16, 16, False), (2, 15, 24, 24, False), (1, 63, 32, 8, False), (3, 15, 16, 16, True)],
    ids=["T1", "T15-hd24", "T63-partial", "per-sequence"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_kernel_equals_naive(heads, t, hd, rot, per_batch, dtype):
    gen = torch.Generator().manual_seed(0)
    b = 2
    positions = torch.randint(0, 500, (b, t), generator=gen) if per_batch else torch.arange(t) + 7
    inv_freq = 1.0 / 10000 ** (torch.arange(0, rot, 2).float() / rot)
    # attention's layout: [B, T, H, hd] projected, viewed as [B, H, T, hd]
    x0 = torch.randn(b, t, heads, hd, generator=gen).transpose(1, 2)
    dy = torch.randn(b, heads, t, hd, generator=gen)
    if dtype == torch.bfloat16:
        x0 = x0.bfloat16()

    def run(fn, dt):
        cos, sin = rope_cos_sin(positions, inv_freq, dt)
        x = x0.to(dt).detach().requires_grad_()
        y = fn(x, cos, sin)
        (y.float() * dy).sum().backward()
        return y.detach(), x.grad

    (y, dx), (y_ref, dx_ref) = run(triton_rope, dtype), run(apply_rope, torch.float32)
    tol = 1e-6 if dtype == torch.float32 else 0.005
    assert y.dtype == dtype and y.shape == y_ref.shape
    assert rel_rms(y, y_ref) <= tol and rel_rms(dx, dx_ref) <= (1e-6 if dtype == torch.float32 else 0.008)
    if rot < hd:  # the unrotated features pass through untouched
        torch.testing.assert_close(y[..., rot:], x0[..., rot:].to(dtype), rtol=0, atol=0)


def test_naive_equals_transformers_rotary():
    """The reference itself against transformers' Llama rotary (full rotation, fp32)."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    q, k = torch.randn(2, 4, 9, 16), torch.randn(2, 2, 9, 16)
    inv_freq = 1.0 / 10000 ** (torch.arange(0, 16, 2).float() / 16)
    cos, sin = rope_cos_sin(torch.arange(9), inv_freq, torch.float32)
    q_ref, k_ref = apply_rotary_pos_emb(q, k, cos[None], sin[None])
    torch.testing.assert_close(apply_rope(q, cos, sin), q_ref)
    torch.testing.assert_close(apply_rope(k, cos, sin), k_ref)
