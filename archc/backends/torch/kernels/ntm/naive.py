"""The Neural Turing Machine's memory written out location by location (Graves et al. 2014,
eqs. 2–9): the reference `step.py` and `chunk.py` are tested against."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from archc.backends.torch.kernels.ntm.step import NTMHeads


def _weighting(memory: Tensor, key: Tensor, beta: Tensor, gate: Tensor, shift: Tensor, gamma: Tensor,
               previous: Tensor) -> Tensor:
    """One head of one sequence: memory [N, M], key [M], β, g, γ scalars, shift [2r + 1], previous [N]."""
    n = memory.shape[0]
    r = (shift.shape[0] - 1) // 2
    sims = [float(key @ memory[i]) / (math.sqrt(float(key @ key)) * math.sqrt(float(memory[i] @ memory[i])) + 1e-16)
            for i in range(n)]                                                  # eq. 6: K[u, v]
    scores = [math.exp(float(beta) * s) for s in sims]
    content = [s / sum(scores) for s in scores]                                 # eq. 5
    gated = [float(gate) * content[i] + (1 - float(gate)) * float(previous[i]) for i in range(n)]  # eq. 7
    shifted = [sum(gated[(i - k) % n] * float(shift[k + r]) for k in range(-r, r + 1)) for i in range(n)]  # eq. 8
    sharp = [s ** float(gamma) for s in shifted]
    return torch.tensor([s / (sum(sharp) + 1e-16) for s in sharp], dtype=memory.dtype)  # eq. 9


def naive_ntm(memory: Tensor, read_prev: Tensor, write_prev: Tensor, reads: list[NTMHeads],
              writes: list[NTMHeads], erase: Tensor, add: Tensor) -> tuple[Tensor, Tensor]:
    """Over T tokens: memory [B, N, M], previous weightings [B, R, N] / [B, W, N]; per token the
    heads' parameters (`NTMHeads` [B, H, ·]) and erase, add [B, T, W, M]. Reads (eq. 2) before the
    token's writes (eqs. 3–4, erasures first). Returns (read vectors [B, T, R, M], final memory)."""
    b = memory.shape[0]
    out = torch.zeros(b, len(reads), read_prev.shape[1], memory.shape[2], dtype=memory.dtype)
    for s in range(b):
        mem, rp, wp = memory[s].clone(), read_prev[s].clone(), write_prev[s].clone()
        for t, (rh, wh) in enumerate(zip(reads, writes, strict=True)):
            rw = torch.stack([_weighting(mem, rh.key[s, h], rh.beta[s, h], rh.gate[s, h], rh.shift[s, h],
                                         rh.gamma[s, h], rp[h]) for h in range(rp.shape[0])])
            for h in range(rp.shape[0]):
                out[s, t, h] = sum(rw[h, i] * mem[i] for i in range(mem.shape[0]))
            ww = torch.stack([_weighting(mem, wh.key[s, h], wh.beta[s, h], wh.gate[s, h], wh.shift[s, h],
                                         wh.gamma[s, h], wp[h]) for h in range(wp.shape[0])])
            new = mem.clone()
            for i in range(mem.shape[0]):
                for h in range(wp.shape[0]):
                    new[i] = new[i] * (1 - ww[h, i] * erase[s, t, h])
            for i in range(mem.shape[0]):
                for h in range(wp.shape[0]):
                    new[i] = new[i] + ww[h, i] * add[s, t, h]
            mem, rp, wp = new, rw, ww
        memory = memory.clone()
        memory[s] = mem
    return out, memory
