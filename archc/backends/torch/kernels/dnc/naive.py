"""The Differentiable Neural Computer's memory written out location by location (Graves et al.
2016, Methods: eqs. for ψ, u, a, c^w, w^w, M, p, L, f, b, c^r, w^r, r), one sequence at a time."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from archc.backends.torch.kernels.dnc.step import EPS, DNCInterface


def _content(mem: list[list[float]], key: list[float], beta: float) -> list[float]:
    def cos(u: list[float], v: list[float]) -> float:
        dot = sum(a * b for a, b in zip(u, v, strict=True))
        return dot / max(math.sqrt(sum(a * a for a in u)) * math.sqrt(sum(b * b for b in v)), EPS)

    scores = [math.exp(beta * cos(key, row)) for row in mem]
    return [s / sum(scores) for s in scores]


def naive_dnc(state: tuple[Tensor, ...], interfaces: list[DNCInterface]) -> tuple[Tensor, tuple[Tensor, ...]]:
    """state (memory [B, N, W], usage, precedence [B, N], link [B, N, N], read weightings
    [B, R, N], write weighting [B, N]) and one `DNCInterface` per token. Returns (read vectors
    [B, T, R, W], the final state)."""
    b = state[0].shape[0]
    outs, finals = [], []
    for s in range(b):
        mem, u, p, link, rw, ww = (x[s].tolist() for x in state)
        n, reads = len(mem), len(rw)
        per_token = []
        for it in interfaces:
            f = it.free_gates[s].tolist()
            psi = [math.prod(1 - f[r] * rw[r][i] for r in range(reads)) for i in range(n)]
            u = [(u[i] + ww[i] - u[i] * ww[i]) * psi[i] for i in range(n)]
            guarded = [EPS + (1 - EPS) * x for x in u]
            phi = sorted(range(n), key=lambda i, g=guarded: (g[i], i))
            alloc = [0.0] * n
            for j, loc in enumerate(phi):
                alloc[loc] = (1 - guarded[loc]) * math.prod(guarded[phi[k]] for k in range(j))
            cw = _content(mem, it.write_key[s].tolist(), float(it.write_strength[s]))
            ga, gw = float(it.allocation_gate[s]), float(it.write_gate[s])
            ww_new = [gw * (ga * alloc[i] + (1 - ga) * cw[i]) for i in range(n)]
            e, v = it.erase[s].tolist(), it.write_vector[s].tolist()
            mem = [[mem[i][k] * (1 - ww_new[i] * e[k]) + ww_new[i] * v[k] for k in range(len(e))] for i in range(n)]
            link = [[0.0 if i == j else (1 - ww_new[i] - ww_new[j]) * link[i][j] + ww_new[i] * p[j]
                     for j in range(n)] for i in range(n)]
            p = [(1 - sum(ww_new)) * p[i] + ww_new[i] for i in range(n)]
            new_rw, read_vecs = [], []
            for r in range(reads):
                fwd = [sum(link[i][j] * rw[r][j] for j in range(n)) for i in range(n)]
                bwd = [sum(link[j][i] * rw[r][j] for j in range(n)) for i in range(n)]
                cr = _content(mem, it.read_keys[s, r].tolist(), float(it.read_strengths[s, r]))
                pi = it.read_modes[s, r].tolist()
                w = [pi[0] * bwd[i] + pi[1] * cr[i] + pi[2] * fwd[i] for i in range(n)]
                new_rw.append(w)
                read_vecs.append([sum(w[i] * mem[i][k] for i in range(n)) for k in range(len(mem[0]))])
            rw, ww = new_rw, ww_new
            per_token.append(read_vecs)
        outs.append(per_token)
        finals.append((mem, u, p, link, rw, ww))
    dt = state[0].dtype
    final = tuple(torch.tensor([f[k] for f in finals], dtype=dt) for k in range(6))
    return torch.tensor(outs, dtype=dt), final
