"""S4D and S4 (DPLR) against references archc did not write: the discretizations against
`torch.linalg.matrix_exp` (Van Loan's block exponential) and dense solves, the FFT convolutions
(S4D's Vandermonde kernel, S4's Cauchy kernel with Woodbury's identity) against the explicit
recurrence x_k = Ā x_{k−1} + B̄ u_k with dense matrices (both directions), S4's initial state
matrix against HiPPO-LegS's spectrum, and every form against the others."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.export import Dim

import archc
from archc.backends.torch import build
from archc.backends.torch.context import Context
from archc.backends.torch.ops.s4 import hippo_legs_diagonal, vandermonde, vandermonde_t
from tests.conftest import (
    assert_exported_step_matches_forward,
    assert_step_matches_forward,
    exportable_logits,
)

SPEC = """
model ref(tokens) {{
  block layer(x) {{
    x = x + s4(layernorm(x), d_state=8, mode="{mode}", discretization="{disc}"{extra})
    return x + mlp(layernorm(x), hidden=64)
  }}
  x = embed(tokens, 64, 16)
  x = repeat(2, layer)(x)
  return lm_head(layernorm(x), tied=true)
}}
"""


def _model(disc: str = "zoh", extra: str = "", mode: str = "diag"):
    return build(archc.loads(SPEC.format(disc=disc, extra=extra, mode=mode), "ref.arch").graph, seed=0).eval()


def _dense_discretization(mod, disc):
    """Ā, B̄ per channel from the continuous (A, B, Δ) with dense linear algebra: ZOH by the
    matrix exponential of [[ΔA, ΔB], [0, 0]] (= [[Ā, B̄], [0, 1]]), bilinear by a solve."""
    A = torch.complex(-mod.A_real.double().exp(), mod.A_imag.double())
    B = torch.view_as_complex(mod.B.double().contiguous())
    dt = mod.log_dt.double().exp()
    bars = []
    for h in range(A.shape[0]):
        m = A.shape[1]
        a, b = torch.diag(A[h]) * dt[h], (B[h] * dt[h])[:, None]
        if disc == "zoh":
            big = torch.zeros(m + 1, m + 1, dtype=torch.complex128)
            big[:m, :m], big[:m, m:] = a, b
            e = torch.linalg.matrix_exp(big)
            bars.append((e[:m, :m], e[:m, m]))
        else:
            eye = torch.eye(m, dtype=torch.complex128)
            bars.append((torch.linalg.solve(eye - a / 2, eye + a / 2), torch.linalg.solve(eye - a / 2, b)[:, 0]))
    return bars


def _diag_systems(mod, disc):
    """Per channel (Ā, B̄, the read-out rows): y = Re(row · x), so S4D's 2·Re(C x) has rows 2C."""
    C = torch.view_as_complex(mod.C.double().contiguous())
    return [(a, b, [2 * C[c, h] for c in range(C.shape[0])]) for h, (a, b) in enumerate(_dense_discretization(mod, disc))]


def _full(t):
    """A half-space vector with its conjugate appended: the full, conjugate-symmetric space."""
    return torch.cat((t, t.conj()), dim=-1)


def _dplr_systems(mod):
    """S4's system per channel over the full N-dimensional complex space, with dense matrices:
    A = diag(Λ) − Σ_r P_r P_r*, Ā = (I − ΔA/2)⁻¹(I + ΔA/2), B̄ = Δ(I − ΔA/2)⁻¹B by solves."""
    lam = _full(torch.complex(-mod.A_real.double().exp(), mod.A_imag.double()))
    B, P, C = (_full(torch.view_as_complex(t.double().contiguous())) for t in (mod.B, mod.P, mod.C))
    dt = mod.log_dt.double().exp()
    systems = []
    for h in range(lam.shape[0]):
        A = torch.diag(lam[h]) - sum(P[r, h, :, None] * P[r, h].conj() for r in range(P.shape[0]))
        eye = torch.eye(A.shape[0], dtype=torch.complex128)
        lhs = eye - dt[h] * A / 2
        systems.append((torch.linalg.solve(lhs, eye + dt[h] * A / 2), dt[h] * torch.linalg.solve(lhs, B[h]),
                        [C[c, h] for c in range(C.shape[0])]))
    return systems


def _recurrence_output(mod, x, systems):
    """The S4 layer by the explicit recurrence (forward, and the right-to-left one when
    bidirectional), then D·u, GELU, the GLU output map."""
    u = x.double().transpose(1, 2)  # [B, H, L]
    y = torch.zeros_like(u)
    length = u.shape[-1]
    for h, (a_bar, b_bar, rows) in enumerate(systems):
        s = torch.zeros(u.shape[0], a_bar.shape[0], dtype=torch.complex128)
        for t in range(length):
            s = s @ a_bar.T + u[:, h, t, None] * b_bar
            y[:, h, t] += (s @ rows[0]).real
        if len(rows) == 2:  # z_t = Ā z_{t+1} + B̄ u_{t+1}: strictly future tokens
            z = torch.zeros_like(s)
            for t in range(length - 2, -1, -1):
                z = z @ a_bar.T + u[:, h, t + 1, None] * b_bar
                y[:, h, t] += (z @ rows[1]).real
    y = F.gelu(y + mod.D.double()[:, None] * u).transpose(1, 2)
    return F.glu(y @ mod.output_linear.weight.double().T + mod.output_linear.bias.double(), dim=-1)


@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["causal", "bidirectional"])
def test_fft_convolution_equals_the_recurrence(disc, bidirectional):
    torch.manual_seed(0)
    model = _model(disc, ", bidirectional=true" if bidirectional else "")
    mod = model.get_submodule("layers.0.mixer")
    with torch.no_grad():  # larger Δ, so that the kernel's tail matters over 70 steps
        mod.log_dt.uniform_(-2.0, 0.0)
    x = torch.randn(2, 70, 16)
    got = mod(x, ctx=Context(torch.arange(70)))
    torch.testing.assert_close(got.double(), _recurrence_output(mod, x, _diag_systems(mod, disc)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("rank", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["causal", "bidirectional"])
def test_dplr_cauchy_kernel_equals_the_recurrence(rank, bidirectional):
    """S4's kernel (C̃ = C(I − Ā^L), Cauchy sums, Woodbury, inverse FFT) against the recurrence
    with the dense full-space Ā; P, Δ moved off their init so that the low-rank term matters."""
    torch.manual_seed(0)
    extra = f", rank={rank}" + (", bidirectional=true" if bidirectional else "")
    mod = _model("bilinear", extra, mode="dplr").get_submodule("layers.0.mixer")
    with torch.no_grad():
        mod.log_dt.uniform_(-2.0, 0.0)
        mod.P.add_(torch.randn_like(mod.P) * 0.3)
    x = torch.randn(2, 70, 16)
    got = mod(x, ctx=Context(torch.arange(70)))
    torch.testing.assert_close(got.double(), _recurrence_output(mod, x, _dplr_systems(mod)), atol=1e-5, rtol=1e-5)


def test_dplr_kernel_in_frequency_blocks_is_the_same(monkeypatch):
    from archc.backends.torch.ops import s4

    mod = _model("bilinear", ", rank=2", mode="dplr").get_submodule("layers.0.mixer")
    with torch.no_grad():
        whole = mod.kernel(150)
        monkeypatch.setattr(s4, "CAUCHY_BLOCK", 8)
        torch.testing.assert_close(mod.kernel(150), whole)


def test_dplr_init_is_hippo_legs():
    """At init (Λ − PP*, B) is HiPPO-LegS's (A, B) in a unitary basis V: A_nk = −√(2n+1)√(2k+1)
    (n > k), −(n+1) (n = k), 0 (n < k), B_n = √(2n+1). Unitary similarity keeps the transfer
    function Bᵀ(g − A)⁻¹B, which (unlike the eigenvalues of this non-normal matrix) is well
    conditioned away from the spectrum: compare it at a few points g."""
    mod = _model("bilinear", mode="dplr").get_submodule("layers.0.mixer")
    lam = _full(torch.complex(-mod.A_real.double().exp(), mod.A_imag.double()))[0]
    B, P = (_full(torch.view_as_complex(t.double().contiguous())) for t in (mod.B, mod.P))
    A = torch.diag(lam) - P[0, 0, :, None] * P[0, 0].conj()
    n = torch.arange(8, dtype=torch.float64)
    r = (2 * n + 1).sqrt()
    legs = -torch.where(n[:, None] > n[None, :], r[:, None] * r[None, :], torch.diag(n + 1))
    eye = torch.eye(8, dtype=torch.complex128)
    for g in (0.5, 2 + 3j, -0.25 + 10j):
        ours = B[0].conj() @ torch.linalg.solve(g * eye - A, B[0])
        paper = r.to(torch.complex128) @ torch.linalg.solve(g * eye - legs.to(torch.complex128), r.to(torch.complex128))
        torch.testing.assert_close(ours, paper, atol=1e-5, rtol=1e-5)


def test_hippo_legs_modes():
    lam, b, p = hippo_legs_diagonal(16)
    assert lam.shape == (8,)
    torch.testing.assert_close(lam.real, torch.full((8,), -0.5))
    assert (lam.imag > 0).all()
    # V is unitary and B real: the kept half of the modes carries half of |B|² = Σ (2n + 1) = N²
    torch.testing.assert_close(b.abs().square().sum(), torch.tensor(128.0))
    torch.testing.assert_close(p.abs().square().sum(), torch.tensor(sum(n + 0.5 for n in range(16)) / 2))


def test_blocked_vandermonde_products():
    torch.manual_seed(0)
    log_a = torch.complex(-torch.rand(3, 5), torch.randn(3, 5))
    coef = torch.randn(2, 3, 5, dtype=torch.complex64)
    powers = (log_a[..., None] * torch.arange(150)).exp()  # [3, 5, 150]
    torch.testing.assert_close(vandermonde(coef, log_a, 150), (coef[..., None] * powers).sum(-2))
    v = torch.randn(2, 3, 150)
    torch.testing.assert_close(vandermonde_t(v, log_a), (v[:, :, None, :] * powers).sum(-1), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
@pytest.mark.parametrize("chunks", [[37], [1, 1, 35], [9, 1, 20, 1, 6], [1] * 37], ids=lambda c: f"{len(c)}-steps")
def test_every_form_agrees(disc, chunks):
    """Convolution (FFT) = prefill from a state (convolution + the state's Vandermonde terms) =
    the O(N) recurrence."""
    assert_step_matches_forward(_model(disc), torch.randint(0, 64, (2, 37)), chunks, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunks", [[37], [9, 1, 20, 1, 6], [1] * 37], ids=lambda c: f"{len(c)}-steps")
def test_dplr_every_form_agrees(chunks):
    """Cauchy-kernel convolution = the Woodbury recurrence, from any state."""
    model = _model("bilinear", ", rank=2", mode="dplr")
    assert_step_matches_forward(model, torch.randint(0, 64, (2, 37)), chunks, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["diag", "dplr"])
def test_forward_exports_with_a_dynamic_length_and_compiles(mode):
    model = _model("bilinear", mode=mode)
    ids = torch.randint(0, 64, (2, 24))

    ep = torch.export.export(exportable_logits(model), (ids,), dynamic_shapes=({0: Dim("b", max=64), 1: Dim("t", min=2, max=8192)},))
    torch._dynamo.reset()
    compiled = torch.compile(model, dynamic=True)
    for t in (5, 150):
        x = torch.randint(0, 64, (3, t))
        torch.testing.assert_close(ep.module()(x), model(x).logits, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(compiled(x).logits, model(x).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("disc,mode", [("zoh", "diag"), ("bilinear", "dplr")])
def test_step_exports(disc, mode):
    assert_exported_step_matches_forward(_model(disc, mode=mode), 64, 12)


@pytest.mark.parametrize("disc,mode,extra", [("zoh", "diag", ""), ("bilinear", "diag", ", bidirectional=true"),
                                             ("bilinear", "dplr", ", rank=2"),
                                             ("bilinear", "dplr", ", rank=2, bidirectional=true")],
                         ids=["s4d-zoh", "s4d-bilinear-bidirectional", "dplr", "dplr-bidirectional"])
def test_exported_form_equals_the_eager_kernels(disc, mode, extra):
    """The real-arithmetic form under export (`real_system` through `lti_scan`) against the eager
    FFT/Cauchy kernels and recurrences, from a state, at lengths across its blocks."""
    model = _model(disc, extra, mode)
    mod = next(m for m in model.modules() if type(m).__name__ in ("S4", "S4DPLR"))
    # two fp32 algorithms (an FFT over 2L points or Cauchy sums, against squarings and a blocked
    # recurrence) on outputs up to ~10: observed ≤ 1.6e-5 here; 1e-4 leaves room for other FFTs
    tol = dict(atol=1e-4, rtol=1e-5)
    torch.manual_seed(1)
    for length in (1, 7, 32, 70):
        u = torch.randn(2, mod.h, length)
        state = None if mod.channels == 2 else torch.randn(2, mod.h, 2 * mod.m) * 0.3
        with torch.no_grad():
            y_ref, x_ref = mod._conv(u, state) if state is not None else (mod._convolve(u), None)
            y, x = mod.exported_conv(u, state)
        torch.testing.assert_close(y, y_ref, **tol)
        if state is not None:
            torch.testing.assert_close(x, x_ref, **tol)
