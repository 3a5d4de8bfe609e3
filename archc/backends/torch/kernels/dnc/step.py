"""One token of the Differentiable Neural Computer's memory, vectorized (Graves et al. 2016,
Methods, "Memory addressing"), with DeepMind's guards: usage kept in [ε, 1] before sorting (ties
broken deterministically) and ε in the cosine's denominator."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

EPS = 1e-6


def oneplus(x: Tensor) -> Tensor:
    """1 + softplus(x): the paper's `oneplus`, strengths ≥ 1."""
    return 1 + F.softplus(x)


class DNCInterface(NamedTuple):
    """The interface vector after its activations: read keys [B, R, W], read strengths [B, R],
    write key [B, W], write strength [B], erase [B, W] (σ), write vector [B, W], free gates
    [B, R] (σ), allocation and write gates [B] (σ), read modes [B, R, 3] (softmax; backward,
    content, forward)."""

    read_keys: Tensor
    read_strengths: Tensor
    write_key: Tensor
    write_strength: Tensor
    erase: Tensor
    write_vector: Tensor
    free_gates: Tensor
    allocation_gate: Tensor
    write_gate: Tensor
    read_modes: Tensor

    @classmethod
    def parse(cls, raw: Tensor, width: int, reads: int) -> DNCInterface:
        """raw [B, W(R + 3) + 5R + 3] in the paper's order."""
        sizes = (reads * width, reads, width, 1, width, width, reads, 1, 1, 3 * reads)
        rk, rs, wk, ws, er, wv, fg, ag, wg, rm = raw.split(sizes, -1)
        return cls(rk.unflatten(-1, (reads, width)), oneplus(rs), wk, oneplus(ws[..., 0]), torch.sigmoid(er), wv,
                   torch.sigmoid(fg), torch.sigmoid(ag[..., 0]), torch.sigmoid(wg[..., 0]),
                   rm.unflatten(-1, (reads, 3)).softmax(-1))


def content(memory: Tensor, keys: Tensor, strengths: Tensor) -> Tensor:
    """C(M, k, β) = softmax_i(β · cos(k, M_i)): memory [B, N, W], keys [B, K, W], β [B, K] → [B, K, N]."""
    sim = F.cosine_similarity(keys[:, :, None, :], memory[:, None], dim=-1, eps=EPS)
    return (strengths[..., None] * sim).softmax(-1)


def allocation(usage: Tensor) -> Tensor:
    """a[φ_j] = (1 − u[φ_j]) Π_{i<j} u[φ_i], φ the locations by ascending usage: [B, N] → [B, N]."""
    usage = EPS + (1 - EPS) * usage
    sorted_usage, order = usage.sort(-1)
    # the exclusive product as exp of a cumulative sum of logs (usage ≥ ε, so finite): ONNX has no CumProd
    logs = sorted_usage.log()
    before = (logs.cumsum(-1) - logs).exp()
    return torch.zeros_like(usage).scatter(-1, order, (1 - sorted_usage) * before)


def dnc_step(memory: Tensor, usage: Tensor, precedence: Tensor, link: Tensor, read_prev: Tensor, write_prev: Tensor,
             i: DNCInterface) -> tuple[Tensor, tuple[Tensor, ...]]:
    """State: memory [B, N, W], usage, precedence [B, N], link [B, N, N], the previous read
    [B, R, N] and write [B, N] weightings. Writes first, then reads the new memory (the paper's
    order). Returns (read vectors [B, R, W], the new state)."""
    retention = torch.prod(1 - i.free_gates[..., None] * read_prev, dim=1)             # ψ
    usage = (usage + write_prev - usage * write_prev) * retention
    write_content = content(memory, i.write_key[:, None], i.write_strength[:, None])[:, 0]
    ag, wg = i.allocation_gate[:, None], i.write_gate[:, None]
    write = wg * (ag * allocation(usage) + (1 - ag) * write_content)
    memory = memory * (1 - write[..., None] * i.erase[:, None, :]) + write[..., None] * i.write_vector[:, None, :]
    n = link.shape[-1]
    link = (1 - write[:, :, None] - write[:, None, :]) * link + write[:, :, None] * precedence[:, None, :]
    link = link * (1 - torch.eye(n, dtype=link.dtype, device=link.device))
    precedence = (1 - write.sum(-1, keepdim=True)) * precedence + write
    forward = read_prev @ link.transpose(1, 2)                                         # f = L w
    backward = read_prev @ link                                                        # b = Lᵀ w
    read_content = content(memory, i.read_keys, i.read_strengths)
    modes = i.read_modes
    read = modes[..., 0:1] * backward + modes[..., 1:2] * read_content + modes[..., 2:3] * forward
    return read @ memory, (memory, usage, precedence, link, read, write)
