"""The fused linear + cross-entropy (`archc::linear_cross_entropy`, templates/cross_entropy.py.jinja)
against F.linear and PyTorch's F.cross_entropy (kernels/linear_cross_entropy/naive.py), in Triton's
interpreter: the summed loss and the gradients of the hidden states, the weight and the bias, with
ignored rows, a vocabulary over several blocks and not a power of two, Gemma 2's soft cap, rows in
several chunks, fp32 and bf16; and a model trained with it equals its torch build without ever
forming the logits."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

import archc  # noqa: E402
from archc.backends.torch import build  # noqa: E402
from archc.backends.torch.kernels.linear_cross_entropy.naive import naive_linear_cross_entropy  # noqa: E402
from archc.backends.torch.kernels.linear_cross_entropy.specialize import chunk_rows  # noqa: E402
from archc.backends.torch.kernels.linear_cross_entropy.triton import triton_linear_cross_entropy  # noqa: E402
from tests.backends.torch.kernels.criteria import BF16_FORWARD, BF16_GRAD, FP32, rel_rms  # noqa: E402
from tests.conftest import tiny_lm_spec  # noqa: E402

CASES = [(37, 24, 5000, None, False, torch.float32), (33, 16, 300, 5.0, True, torch.float32),
         (20, 32, 700, None, True, torch.bfloat16)]


@pytest.mark.parametrize(("rows", "width", "vocab", "softcap", "bias", "dtype"), CASES,
                         ids=["5000-vocab", "softcap-bias", "bf16"])
def test_kernel_equals_cross_entropy_over_the_logits(rows, width, vocab, softcap, bias, dtype):
    assert chunk_rows(rows, vocab, width) < rows  # the rows run in several chunks
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(rows, width, generator=g)
    weight = torch.randn(vocab, width, generator=g) * width ** -0.5
    b = torch.randn(vocab, generator=g) if bias else None
    labels = torch.randint(0, vocab, (rows,), generator=g)
    labels[::4] = -100
    results = []
    for fn, cast in ((naive_linear_cross_entropy, torch.float32), (triton_linear_cross_entropy, dtype)):
        leaves = [t.detach().to(cast, copy=True).requires_grad_() for t in (hidden, weight, *([b] if bias else []))]
        loss = fn(leaves[0], leaves[1], leaves[2] if bias else None, labels, -100, softcap)
        (loss * 0.5).backward()
        results.append((loss.detach(), [t.grad for t in leaves]))
    (want, want_grads), (got, grads) = results
    fwd, grad = (FP32, FP32 * 10) if dtype == torch.float32 else (BF16_FORWARD, BF16_GRAD)
    assert rel_rms(got, want) <= fwd
    for a, b_ in zip(grads, want_grads, strict=True):
        assert rel_rms(a, b_) <= grad


def test_a_model_trains_on_the_fused_loss_as_on_the_logits():
    graph = archc.loads(tiny_lm_spec(vocab=300, d=32), "t.arch").graph
    ids = torch.randint(0, 300, (2, 9), generator=torch.Generator().manual_seed(1))
    runs = []
    for kernels in ("torch", "triton"):
        model = build(graph, seed=0, kernels=kernels).train()
        out = model(ids, labels=ids)
        out.loss.backward()
        runs.append((out, {n: p.grad for n, p in model.named_parameters()}))
    (plain, plain_grads), (fused, fused_grads) = runs
    assert plain.logits is not None and fused.logits is None  # the fused loss never formed them
    torch.testing.assert_close(fused.loss, plain.loss, rtol=1e-5, atol=1e-6)
    for name, want in plain_grads.items():
        torch.testing.assert_close(fused_grads[name], want, rtol=1e-4, atol=1e-6, msg=name)
    model.eval()  # evaluation and skip_logits=False form the logits as before
    assert model(ids, labels=ids).logits is not None
    assert model.train()(ids, labels=ids, skip_logits=False).logits is not None
