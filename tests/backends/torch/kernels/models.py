"""Whole-model checks the kernel tests share: a small model built with `kernels="triton"` trains and
decodes as its `kernels="torch"` build does (the kernel's own test compares it with its reference;
this checks that the op module binds and calls it right).

Tolerances: fp32 throughout, one forward and backward over a dozen tokens, or a prompt and three
decode steps — the two builds differ only in summation order, so logits and states agree to 1e-5
and gradients (sums over the batch and sequence) to 1e-4 relative."""

from __future__ import annotations

import torch

import archc
from archc.backends.torch import build


def _builds(spec: str, family: str, ops: list[str], mode: str) -> tuple:
    graph = archc.loads(spec, "m.arch").graph
    plain, fused = (getattr(build(graph, seed=0, kernels=k), mode)() for k in ("torch", "triton"))
    assert sorted(m.op for _, m in fused.op_modules() if family in m.triton_kernels) == sorted(ops)
    return plain, fused


def assert_trains_as_torch(spec: str, family: str, ops: list[str], length: int = 12, vocab: int = 64) -> None:
    """Logits and every gradient of one training step (the logits formed: `skip_logits=False`)."""
    ids = torch.randint(0, vocab, (2, length), generator=torch.Generator().manual_seed(1))
    runs = []
    for model in _builds(spec, family, ops, "train"):
        out = model(ids, labels=ids, skip_logits=False)
        out.loss.backward()
        runs.append((out.logits.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (want, want_grads), (got, grads) = runs
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for name, g in want_grads.items():
        torch.testing.assert_close(grads[name], g, rtol=1e-4, atol=1e-5, msg=name)


def assert_decodes_as_torch(spec: str, family: str, ops: list[str], prompt: int = 4, steps: int = 3,
                            vocab: int = 64) -> None:
    """Logits and every state tensor of a prefill and `steps` greedy one-token steps."""
    plain, fused = _builds(spec, family, ops, "eval")
    ids = torch.randint(0, vocab, (2, prompt), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        outs = [m.step(ids, 0, m.init_state(2, prompt + steps)) for m in (plain, fused)]
        for i in range(steps):
            token = outs[0][0][:, -1:].argmax(-1)
            outs = [m.step(token, prompt + i, s) for m, (_, s) in zip((plain, fused), outs, strict=True)]
            torch.testing.assert_close(outs[1][0], outs[0][0], rtol=1e-5, atol=1e-5)
            for a, b in zip(outs[1][1], outs[0][1], strict=True):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
