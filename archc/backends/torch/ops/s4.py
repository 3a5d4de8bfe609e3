"""S4 (Gu et al. 2022: DPLR, Cauchy kernel and Woodbury identity) and S4D (diagonal, Vandermonde
kernel), FFT convolution for sequences and the recurrence for `step`."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from archc.backends.torch.blocks import num_blocks
from archc.backends.torch.context import Context
from archc.backends.torch.init import Init
from archc.backends.torch.kernels.lti_scan import lti_scan, lti_step
from archc.backends.torch.layers import mask_padding
from archc.backends.torch.module import OpModule, State
from archc.backends.torch.registry import BuildCtx, implements

#: Block length of the two-level Vandermonde products (memory O(H·N·(block + L/block))).
VANDERMONDE_BLOCK = 64


def hippo_legs_diagonal(n: int) -> tuple[Tensor, Tensor, Tensor]:
    """S4's NPLR form of HiPPO-LegS (Gu et al. 2022, §3.1; S4D-LegS, Gu et al. 2022b, §4):

        A_nk = −√(2n+1)√(2k+1) (n > k), −(n+1) (n = k), 0 (n < k);   B_n = √(2n+1)
        A = V (Λ − P̃P̃^*) V^*,   P_n = √(n + ½),   Λ = −½ + iω (A + PPᵀ is −½I + skew)

    Returns (Λ, B̃ = V^*B, P̃ = V^*P) for the n/2 modes with ω > 0 (the others are their
    conjugates), complex64."""
    q = torch.arange(n, dtype=torch.float64)
    r = (2 * q + 1).sqrt()
    a = -torch.where(q[:, None] > q[None, :], r[:, None] * r[None, :], torch.diag(q + 1))
    p = (q + 0.5).sqrt()
    s = a + p[:, None] * p[None, :]  # −½I + skew-symmetric
    w, v = torch.linalg.eigh(-1j * (s + 0.5 * torch.eye(n, dtype=torch.float64)))  # Hermitian: s_skew = iW
    keep = w > 0
    lam = (-0.5 + 1j * w[keep]).to(torch.complex64)
    vh = v[:, keep].conj().T
    return lam, (vh @ r.to(torch.complex128)).to(torch.complex64), (vh @ p.to(torch.complex128)).to(torch.complex64)


def vandermonde(coef: Tensor, log_a: Tensor, length: int) -> Tensor:
    """out[..., h, l] = Σ_n coef[..., h, n] · exp(l · log_a[h, n]) for l < length (complex).

    l = q·b + r is split so that exp(r·log_a) [H, N, b] and exp(q·b·log_a) [H, N, ⌈L/b⌉] are the
    only Vandermonde factors materialized (O(H·N·(b + L/b)) instead of O(H·N·L))."""
    b = VANDERMONDE_BLOCK
    nq = num_blocks(length, b)  # one spare block: never specialized to 1 under export
    inner = (log_a[..., None] * torch.arange(b, device=log_a.device)).exp()  # [H, N, b]
    outer = (log_a[..., None] * (b * torch.arange(nq, device=log_a.device))).exp()  # [H, N, nq]
    part = (coef[..., None] * inner).transpose(-1, -2)  # [..., H, b, N]
    out = (part @ outer).transpose(-1, -2).flatten(-2)  # [..., H, nq·b]
    return out.index_select(-1, torch.arange(length, device=out.device))


def vandermonde_t(v: Tensor, log_a: Tensor) -> Tensor:
    """out[..., h, n] = Σ_l v[..., h, l] · exp(l · log_a[h, n]): the transposed product, blocked
    the same way (v real or complex [..., H, L])."""
    b = VANDERMONDE_BLOCK
    length = v.shape[-1]
    nq = num_blocks(length, b)
    vb = F.pad(v, (0, nq * b - length)).unflatten(-1, (nq, b)).to(log_a.dtype)  # [..., H, nq, b]
    inner = (log_a[..., None] * torch.arange(b, device=log_a.device)).exp()  # [H, N, b]
    outer = (log_a[..., None] * (b * torch.arange(nq, device=log_a.device))).exp()  # [H, N, nq]
    per_block = vb @ inner.transpose(-1, -2)  # [..., H, nq, N]
    return (per_block * outer.transpose(-1, -2)).sum(-2)


Pair = tuple[Tensor, Tensor]  # a complex tensor as (real, imaginary) parts: the exported form's arithmetic


def cmul(a: Pair, b: Pair) -> Pair:
    return a[0] * b[0] - a[1] * b[1], a[0] * b[1] + a[1] * b[0]


def cdiv(a: Pair, b: Pair) -> Pair:
    norm = b[0] * b[0] + b[1] * b[1]
    return (a[0] * b[0] + a[1] * b[1]) / norm, (a[1] * b[0] - a[0] * b[1]) / norm


def cexp(z: Pair) -> Pair:
    e = z[0].exp()
    return e * z[1].cos(), e * z[1].sin()


def cexpm1(z: Pair) -> Pair:
    """exp(z) − 1 without cancellation for small |z|: Re = expm1(x)·cos y − 2 sin²(y/2)."""
    return torch.expm1(z[0]) * z[1].cos() - 2 * (z[1] / 2).sin() ** 2, z[0].exp() * z[1].sin()


def interleave(z: Pair) -> Tensor:
    """[..., m] pairs -> [..., 2m] real coordinates (Re, Im interleaved), the state's layout."""
    return torch.stack(z, dim=-1).flatten(-2)


def diagonal_in_real_coordinates(z: Pair) -> Tensor:
    """The map x ↦ z ⊙ x of [..., m] complex numbers as a real [..., 2m, 2m] matrix acting on
    interleaved coordinates: 2×2 blocks [[Re z, −Im z], [Im z, Re z]] on the diagonal."""
    blocks = torch.stack((torch.stack((z[0], -z[1]), -1), torch.stack((z[1], z[0]), -1)), -2)  # [..., m, 2, 2]
    eye = torch.eye(z[0].shape[-1], dtype=z[0].dtype, device=z[0].device)
    return torch.einsum("...mij,mn->...minj", blocks, eye).flatten(-4, -3).flatten(-2)


def fft_conv(u: Tensor, k: Tensor) -> Tensor:
    """Causal convolution y_t = Σ_{j ≤ t} k_j u_{t−j} of u [B, H, L] with k [H, L] by FFT over 2L
    points (no wrap-around), O(L log L)."""
    n = 2 * u.shape[-1]
    y = torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(k, n=n), n=n)
    return y[..., :u.shape[-1]]


@implements("s4")
class S4(OpModule):
    """`s4(x, d_state=N, mode="diag", discretization, bidirectional, dt_min, dt_max)`: per channel
    h an N/2-mode complex diagonal SSM (S4D; mode="dplr" is `S4DPLR`), discretized with learned Δ_h:

        zoh:      Ā = exp(ΔA),  B̄ = (Ā − 1)/A · B        bilinear: Ā = (1 + ΔA/2)/(1 − ΔA/2),  B̄ = ΔB/(1 − ΔA/2)
        K_l = 2·Re(Σ_n C_n B̄_n Ā_n^l),   y = K ∗ u + D·u   (FFT, O(L log L));   out = GLU(W·GELU(y))

    The recurrent form (`step`) is x_t = Ā x_{t−1} + B̄ u_t, y_t = 2·Re(C x_t) + D u_t, O(N) per
    token. Bidirectional: a second C runs the kernel right to left (strictly future tokens), as
    S4's `bidirectional`. Parameters (S4's names): `log_dt` [H], `A_real` (log of −Re A) and
    `A_imag` [H, N/2], `B` [H, N/2, 2] and `C` [c, H, N/2, 2] (complex as real pairs), `D` [H],
    `output_linear` d→2d. Init: HiPPO-LegS (Λ, B̃ of `hippo_legs_diagonal`), C ~ CN(0, 1),
    D ~ N(0, 1), Δ log-uniform in [dt_min, dt_max]. State: `ssm` [B, H, N] (N/2 complex as
    real pairs), fp32."""


    @classmethod
    def build(cls, p, in_types, out_type, bctx: BuildCtx) -> S4:
        return (S4DPLR if p.mode == "dplr" else cls)(p, in_types, out_type)

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        h, m = in_types[0].width, p.d_state // 2
        self.h, self.m = h, m
        self.channels = 2 if p.bidirectional else 1
        for name in ("log_dt", "A_real", "A_imag", "B", "C", "D"):
            setattr(self, name, self.make_parameter(name))
        self.output_linear = self.make_linear("output_linear")

    def init_weights(self, init: Init) -> None:
        init.default(self)
        lam, b, _ = hippo_legs_diagonal(self.params.d_state)
        init.uniform_(self.log_dt, math.log(self.params.dt_min), math.log(self.params.dt_max))
        init.normal_(self.C, 0.5 ** 0.5)
        init.normal_(self.D, 1.0)
        with torch.no_grad():
            self.A_real.copy_((-lam.real).log().expand(self.h, -1))
            self.A_imag.copy_(lam.imag.expand(self.h, -1))
            self.B.copy_(torch.view_as_real(b).expand(self.h, -1, -1))

    def discrete(self) -> tuple[Tensor, Tensor, Tensor]:
        """(log Ā [H, N/2], B̄ [H, N/2], C [c, H, N/2]) in complex64."""
        dt = self.log_dt.float().exp()[:, None]
        A = torch.complex(-self.A_real.float().exp(), self.A_imag.float())
        B = torch.view_as_complex(self.B.float().contiguous())
        C = torch.view_as_complex(self.C.float().contiguous())
        dta = dt * A
        if self.params.discretization == "zoh":
            log_da = dta
            db = torch.expm1(dta) / A * B
        else:
            log_da = torch.log((1 + dta / 2) / (1 - dta / 2))
            db = dt * B / (1 - dta / 2)
        return log_da, db, C

    def readout(self) -> Tensor:
        """c [channels, H, N] with 2·Re(C x) = c·x_R in real coordinates."""
        cr, ci = self.C.float().unbind(-1)
        return interleave((2 * cr, -2 * ci))

    def real_discrete(self) -> tuple[Pair, Pair]:
        """(Ā, B̄) [H, N/2] as (real, imaginary) pairs: `discrete`'s system computed in real
        arithmetic, which Inductor fuses and exports to ONNX (complex exp is neither: in eager
        mode it is a scalar loop, 0.15 ms a layer for [256, 32])."""
        dt = self.log_dt.float().exp()[:, None]
        a = (-self.A_real.float().exp(), self.A_imag.float())
        b = self.B.float().unbind(-1)
        z = (dt * a[0], dt * a[1])
        if self.params.discretization == "zoh":
            return cexp(z), cmul(cdiv(cexpm1(z), a), b)
        den = (1 - z[0] / 2, -z[1] / 2)
        return cdiv((1 + z[0] / 2, z[1] / 2), den), cdiv((dt * b[0], dt * b[1]), den)

    def real_system(self) -> tuple[Tensor, Tensor, Tensor]:
        """(Ā [H, N, N], B̄ [H, N], c [channels, H, N]) in real coordinates: the exported form's
        system (`lti_scan`), the same discretization as `discrete`."""
        a_bar, b_bar = self.real_discrete()
        return diagonal_in_real_coordinates(a_bar), interleave(b_bar), self.readout()

    def exported_conv(self, u: Tensor, state: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """`_conv` in real arithmetic for torch.export / ONNX: the blocked recurrence of
        `lti_scan` (one token: `lti_step`) over `real_system`, and the right-to-left channel as
        `_convolve`'s (strictly future tokens)."""
        a, b, c = self.real_system()
        if u.shape[-1] == 1 and state is not None:
            y, x = lti_step(a, b, c[0], u[..., 0], state.float())
            return y[..., None], x
        y, x = lti_scan(a, b, c[0], u, None if state is None else state.float())
        if self.channels == 2:
            future = F.pad(u.flip(-1), (1, 0))[..., :u.shape[-1]]
            y = y + lti_scan(a, b, c[1], future)[0].flip(-1)
        return y, x

    def kernel(self, length: int) -> Tensor:
        """K [c, H, L]: K_l = C Ā^l B̄ for each direction's C (real)."""
        log_da, db, C = self.discrete()
        return 2 * vandermonde(C * db, log_da, length).real

    def _convolve(self, u: Tensor) -> Tensor:
        """K ∗ u [B, H, L] by FFT, plus the right-to-left kernel over strictly future tokens."""
        length = u.shape[-1]
        k = self.kernel(length)
        y = fft_conv(u, k[0])
        if self.channels == 2:  # future tokens only: lag −1 − j gets k1_j
            y = y + fft_conv(F.pad(u.flip(-1), (1, 0))[..., :length], k[1]).flip(-1)
        return y

    def _conv(self, u: Tensor, state: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """y [B, H, L] (before D, the activation and the output map) and the state after u."""
        y = self._convolve(u)
        if state is None:
            return y, None
        log_da, db, C = self.discrete()
        length = u.shape[-1]
        x0 = torch.view_as_complex(state.unflatten(-1, (self.m, 2)).contiguous())  # [B, H, N/2]
        y = y + 2 * vandermonde(C[0] * x0 * log_da.exp(), log_da, length).real  # C Ā^{t+1} x0
        # x_L = Ā^L x0 + Σ_s Ā^{L−1−s} B̄ u_s
        x = (log_da * length).exp() * x0 + db * vandermonde_t(u.flip(-1), log_da)
        return y, torch.view_as_real(x).flatten(-2)

    def _finish(self, y: Tensor, u: Tensor, dtype: torch.dtype) -> Tensor:
        y = F.gelu(y + self.D.float()[:, None] * u).transpose(1, 2)
        return F.glu(self.output_linear(y.to(dtype)), dim=-1)

    def forward(self, x: Tensor, ctx: Context | None = None) -> Tensor:
        u = mask_padding(x, ctx).float().transpose(1, 2)  # [B, H, L]
        y, _ = self.exported_conv(u, None) if torch.compiler.is_exporting() else self._conv(u, None)
        return self._finish(y, u, x.dtype)

    def step(self, x: Tensor, *, state: State, ctx: Context) -> tuple[Tensor, State]:
        u = x.float().transpose(1, 2)
        if torch.compiler.is_exporting():
            y, new = self.exported_conv(u, state[0])
        elif x.shape[1] == 1:  # the recurrence: x ← Ā x + B̄ u, y = 2 Re(C x), in (re, im) pairs
            a_bar, b_bar = self.real_discrete()
            sr, si = state[0].float().unflatten(-1, (self.m, 2)).unbind(-1)
            s = (a_bar[0] * sr - a_bar[1] * si + b_bar[0] * u, a_bar[0] * si + a_bar[1] * sr + b_bar[1] * u)
            new = interleave(s)
            y = (new * self.readout()[0]).sum(-1, keepdim=True)
        else:
            y, new = self._conv(u, state[0])
        return self._finish(y, u, x.dtype), (new,)


def small_inverse(m: Tensor) -> Tensor:
    """The inverse of small matrices m [..., r, r] (S4's (I + ΔG), r = the rank): `linalg.inv` in
    eager mode; Gauss–Jordan elimination unrolled over r under export (ONNX has no inverse)."""
    if not torch.compiler.is_exporting():
        return torch.linalg.inv(m)
    r = m.shape[-1]
    aug = torch.cat((m, torch.eye(r, dtype=m.dtype, device=m.device).expand_as(m)), dim=-1)
    rows = list(aug.unbind(-2))
    for i in range(r):  # I + ΔG is near the identity: no pivoting needed
        rows[i] = rows[i] / rows[i][..., i:i + 1]
        rows = [row if j == i else row - row[..., i:i + 1] * rows[i] for j, row in enumerate(rows)]
    return torch.stack(rows, dim=-2)[..., r:]


#: Frequencies per block of S4's Cauchy sums (memory H·N·block complex numbers).
CAUCHY_BLOCK = 1024


class S4DPLR(S4):
    """`s4(x, mode="dplr", rank=r, discretization="bilinear", …)`: S4 proper (Gu et al. 2022), the
    state matrix diagonal plus low rank in HiPPO-LegS's eigenbasis of its normal part,

        A = Λ − P P*,   Λ = −exp(A_real) + i·A_imag,   P [r, H, N/2] (S4's `P`; init P̃ of
        `hippo_legs_diagonal` for the first rank, zeros for the rest),

    over the full N-dimensional complex space whose second half is the conjugate of the first
    (Λ, P, B, C all conjugate-symmetric, so the system is real). Only the bilinear discretization
    keeps the structure: Ā = (I − ΔA/2)⁻¹(I + ΔA/2), B̄ = Δ(I − ΔA/2)⁻¹B.

    Kernel (Algorithm 1 of the paper): C̃ = C(I − Ā^L) (binary powering of the dense Ā in real
    coordinates, O(N³ log L) per channel), then at the L-th roots of unity z the generating
    function Σ_{l<L} K_l z^l = Δ·[k₀₀ − α k₀₁ (I + α k₁₁)⁻¹ k₁₀], α = Δ(1+z)/2, where k_ab = Σ_n
    a_n b_n / ((1 − z) − α λ_n) are Cauchy sums (Woodbury's identity for the low-rank term), and
    an inverse real FFT. (The paper's 2/(1+z)·R(g(z)) is rewritten with (1+z) multiplied through,
    so z = −1 is not a singular point.) The Cauchy matrix is materialized in blocks of
    `CAUCHY_BLOCK` frequencies. This kernel runs eagerly (complex arithmetic); exported programs
    take `exported_conv` (the real-coordinate system through `lti_scan`) instead.

    `step`: x ← (I − ΔA/2)⁻¹((I + ΔA/2)x + ΔBu) applied in O(N·r) per token with Woodbury (the
    paper's recurrent form); several tokens loop over it (`exported_conv` under export). State
    `ssm` [B, H, N]: the first half's complex state as (Re, Im) pairs."""

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        self.P = self.make_parameter("P")

    def init_weights(self, init: Init) -> None:
        super().init_weights(init)
        _, _, p_tilde = hippo_legs_diagonal(self.params.d_state)
        with torch.no_grad():
            self.P.zero_()
            self.P[0].copy_(torch.view_as_real(p_tilde).expand(self.h, -1, -1))

    def continuous(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """(Δ [H], Λ [H, m], B [H, m], P [r, H, m], C [c, H, m]), complex64 (Δ real)."""
        lam = torch.complex(-self.A_real.float().exp(), self.A_imag.float())
        B, P, C = (torch.view_as_complex(t.float().contiguous()) for t in (self.B, self.P, self.C))
        return self.log_dt.float().exp(), lam, B, P, C

    def _recur(self, x: Pair, u: Tensor, consts: tuple) -> Pair:
        """One bilinear step of the half-space state x [..., H, m] (complex, as real pairs) with
        input u [..., H] (Woodbury: x' = d ⊙ (w − Δ P t), (I + ΔG) t = Re(P*(d ⊙ w)),
        w = (1 + Δλ/2) x − Δ P Re(P* x) + Δ B u). The map is only R-linear: the full-space inner
        products P_f* x_f are 2·Re(P* x). Real arithmetic, so that it exports as it runs."""
        dt, lam, B, P, d, g_inv = consts
        re_dot = lambda z: (torch.einsum("...hm,rhm->...rh", z[0], P[0])  # noqa: E731 — Re(P* z)
                            + torch.einsum("...hm,rhm->...rh", z[1], P[1]))
        along_p = lambda s: tuple(torch.einsum("...rh,rhm->...hm", s, p) for p in P)  # noqa: E731 — P s
        s = along_p(re_dot(x))
        w = cmul((1 + dt * lam[0] / 2, dt * lam[1] / 2), x)
        w = tuple(wi - dt * si + dt * bi * u[..., None] for wi, si, bi in zip(w, s, B, strict=True))
        t = along_p(torch.einsum("hrs,...sh->...rh", g_inv, re_dot(cmul(d, w))))
        return cmul(d, tuple(wi - dt * ti for wi, ti in zip(w, t, strict=True)))

    def _step_consts(self) -> tuple:
        """(Δ [H, 1], λ, B, P, d = (1 − Δλ/2)⁻¹ as pairs, (I + ΔG)⁻¹ [H, r, r]), G = Re(P* d P)."""
        dt = self.log_dt.float().exp()[:, None]
        lam = (-self.A_real.float().exp(), self.A_imag.float())
        B, P = self.B.float().unbind(-1), self.P.float().unbind(-1)
        d = cdiv((torch.ones_like(lam[0]), torch.zeros_like(lam[0])), (1 - dt * lam[0] / 2, -dt * lam[1] / 2))
        pd = cmul((P[0], -P[1]), d)  # P̄ ⊙ d
        g = torch.einsum("rhm,shm->hrs", pd[0], P[0]) - torch.einsum("rhm,shm->hrs", pd[1], P[1])
        eye = torch.eye(P[0].shape[0], device=g.device)
        return dt, lam, B, P, d, small_inverse(eye + dt[..., None] * g)

    def dense_transition(self) -> Tensor:
        """Ā in real coordinates [H, N, N]: the step map applied to the N real basis vectors."""
        consts = self._step_consts()
        eye = torch.eye(self.m, device=self.A_real.device)[:, None, :].expand(-1, self.h, -1)  # [m, H, m]
        zero = torch.zeros_like(eye)
        basis = (torch.stack((eye, zero), 1).flatten(0, 1), torch.stack((zero, eye), 1).flatten(0, 1))  # [N, H, m]
        cols = self._recur(basis, torch.zeros(2 * self.m, self.h, device=eye.device), consts)
        return interleave(cols).permute(1, 2, 0)  # [H, N (rows), N (columns)]

    def real_system(self) -> tuple[Tensor, Tensor, Tensor]:
        """(Ā [H, N, N], B̄ = the step map of input 1 from state 0 [H, N], c [channels, H, N])."""
        zero = torch.zeros(self.h, self.m, device=self.A_real.device)
        b_bar = self._recur((zero, zero), torch.ones(self.h, device=zero.device), self._step_consts())
        return self.dense_transition(), interleave(b_bar), self.readout()

    @torch.compiler.disable  # complex arithmetic: Inductor has no code generation for it
    def kernel(self, length: int) -> Tensor:
        dt, lam, B, P, _ = self.continuous()
        # C̃ = C (I − Ā^L), in real coordinates: C acts as 2·Re(C x) = [2 Re C, −2 Im C]·x_R
        c_real = self.readout()  # [c, H, N]: 2·Re(C x) = c·x
        c_real = c_real - (c_real[..., None, :] @ torch.linalg.matrix_power(self.dense_transition(), length))[..., 0, :]
        c_tilde = torch.view_as_complex(c_real.unflatten(-1, (self.m, 2))).conj() / 2
        full = lambda t: torch.cat((t, t.conj()), dim=-1)  # noqa: E731 — conjugate-symmetric full space
        lam_f, b_f, p_f, c_f = full(lam), full(B), full(P), full(c_tilde)
        # the generating function at the L-th roots of unity z_k = e^{−2πik/L}; K is real, so only
        # k ≤ L/2 (an inverse real FFT)
        freqs = torch.arange(length // 2 + 1, device=lam.device)
        z = torch.exp(-2j * math.pi * freqs / length).to(lam.dtype)
        alpha = dt[:, None] / 2 * (1 + z)  # [H, K]
        # the weights a_n·b_n of every Cauchy sum, one matmul for all of them
        c, r = c_f.shape[0], p_f.shape[0]
        rows = torch.cat((c_f, p_f.conj()), dim=0)  # a ∈ {C̃, P*}: [c + r, H, N]
        cols = torch.cat((b_f[None], p_f), dim=0)  # b ∈ {B, P}: [1 + r, H, N]
        weights = (rows[:, None] * cols[None]).flatten(0, 1).permute(1, 2, 0)  # [H, N, (c+r)(1+r)]

        def cauchy_sums(z: Tensor, alpha: Tensor) -> Tensor:
            return (1 / ((1 - z)[None, :, None] - alpha[..., None] * lam_f[:, None, :])) @ weights  # [H, K, ·]

        # frequencies in blocks, so the Cauchy matrix [H, K, N] is never whole
        sums = torch.cat([cauchy_sums(z[i:i + CAUCHY_BLOCK], alpha[:, i:i + CAUCHY_BLOCK])
                          for i in range(0, z.shape[0], CAUCHY_BLOCK)], dim=1)
        sums = sums.unflatten(-1, (c + r, 1 + r)).permute(2, 3, 0, 1)  # [c+r, 1+r, H, K]
        k00, k01 = sums[:c, 0], sums[:c, 1:]  # [c, H, K], [c, r, H, K]
        k10, k11 = sums[c:, 0], sums[c:, 1:]  # [r, H, K], [r, r, H, K]
        eye = torch.eye(r, dtype=k11.dtype, device=k11.device)[..., None, None]
        woodbury = torch.linalg.solve((eye + alpha * k11).permute(2, 3, 0, 1), k10.permute(1, 2, 0)[..., None])
        gen = k00 - alpha * torch.einsum("crhk,hkr->chk", k01, woodbury[..., 0])
        gen = dt[:, None] * gen
        return torch.fft.irfft(gen, n=length)

    def _conv(self, u: Tensor, state: Tensor | None) -> tuple[Tensor, Tensor | None]:
        if state is None:
            return self._convolve(u), None
        return _dplr_steps(self, u, state)

    def step(self, x: Tensor, *, state: State, ctx: Context) -> tuple[Tensor, State]:
        u = x.float().transpose(1, 2)
        if torch.compiler.is_exporting():
            y, new = self.exported_conv(u, state[0])
        elif x.shape[1] == 1:  # one token: the recurrence inline, so that a compiled decode step is one graph
            x_new = self._recur(state[0].float().unflatten(-1, (self.m, 2)).unbind(-1), u[..., 0], self._step_consts())
            new = interleave(x_new)
            y = (new * self.readout()[0]).sum(-1, keepdim=True)
        else:
            y, new = _dplr_steps(self, u, state[0])
        return self._finish(y, u, x.dtype), (new,)


@torch.compiler.disable
def _dplr_steps(mod: S4DPLR, u: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
    """The recurrence over u [B, H, T] from `state` [B, H, N], token by token: (2·Re(C x_t)
    [B, H, T], x_T); a graph break inside `torch.compile` (under export: `exported_conv`)."""
    consts = mod._step_consts()
    c = mod.readout()[0]
    x = state.float().unflatten(-1, (mod.m, 2)).unbind(-1)
    ys = []
    for ut in u.unbind(-1):
        x = mod._recur(x, ut, consts)
        ys.append((interleave(x) * c).sum(-1))
    return torch.stack(ys, dim=-1), interleave(x)
