"""The RMSNorm kernels (archc/backends/triton/templates/rms_norm.py.jinja, bound in
archc/backends/torch/kernels/rms_norm/triton.py) against `naive.py`, in Triton's interpreter:
forward and backward, alone and fused with the residual add, Gemma's unit offset, widths that are
not powers of two, lengths 1, 15, 63 and 300; fp32 to rounding, bf16 by flash-linear-attention's
criterion (relative RMS error ≤ 0.005 forward, ≤ 0.008 gradients) against the fp32 reference —
the interpreter rounds fp32 → bf16 by truncation (triton/runtime/interpreter.py `cast_impl`), a
GPU to nearest, so the bf16 error measured here is the larger of the two. A whole model built with
`kernels="triton"` equals its torch build; the choice per node is explained."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from archc.backends.torch.kernels.rms_norm.naive import naive_rms_norm  # noqa: E402
from archc.backends.torch.kernels.rms_norm.triton import triton_rms_norm  # noqa: E402

ROOT = Path(__file__).resolve().parents[4]


def _rel(a, b) -> float:
    """Relative RMS error (flash-linear-attention's `get_err_ratio`)."""
    a, b = a.float(), b.float()
    return float((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt().clamp_min(1e-12))


def _run(fn, dtype, x0, r0, w0, dy, dsum, unit_offset):
    x = x0.to(dtype).requires_grad_()
    r = r0.to(dtype).requires_grad_() if r0 is not None else None
    w = w0.to(dtype).requires_grad_()
    y, s = fn(x, w, 1e-6, unit_offset, r)
    loss = (y.float() * dy).sum() + ((s.float() * dsum).sum() if r is not None else 0.0)
    loss.backward()
    return y.detach(), s.detach(), x.grad, (r.grad if r is not None else None), w.grad


@pytest.mark.parametrize("shape", [(1, 1, 96), (1, 15, 100), (1, 63, 48), (1, 300, 40)], ids=lambda s: f"T{s[1]}-d{s[2]}")
@pytest.mark.parametrize("residual", [False, True], ids=["norm", "add+norm"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_kernel_equals_naive(shape, residual, dtype):
    gen = torch.Generator().manual_seed(0)
    unit_offset = shape[2] == 100  # Gemma's (1 + w) on one width
    x0, r0, dy, dsum = (torch.randn(shape, generator=gen) for _ in range(4))
    w0 = torch.randn(shape[2], generator=gen) * 0.1 + (0.0 if unit_offset else 1.0)
    if dtype == torch.bfloat16:  # the inputs as bf16 holds them; the reference in fp32
        x0, r0, w0 = x0.bfloat16(), r0.bfloat16(), w0.bfloat16()
    ref = _run(naive_rms_norm, torch.float32, x0, r0 if residual else None, w0, dy, dsum, unit_offset)
    out = _run(triton_rms_norm, dtype, x0, r0 if residual else None, w0, dy, dsum, unit_offset)
    fwd, grad = (1e-6, 1e-6) if dtype == torch.float32 else (0.005, 0.008)
    for name, a, b, tol in zip(("y", "s", "dx", "dresidual", "dw"), out, ref, (fwd, fwd, grad, grad, grad), strict=True):
        if b is not None:
            assert a.dtype == dtype and a.shape == b.shape, name
            assert _rel(a, b) <= tol, (name, _rel(a, b))


def test_a_model_with_triton_kernels_equals_its_torch_build():
    """llama-style two layers at O1 (the residual add fused into the norm): logits and every
    gradient of `kernels="triton"` equal `kernels="torch"` (fp32)."""
    import archc
    from archc.backends.torch import build
    from tests.conftest import tiny_lm_spec

    graph = archc.loads(tiny_lm_spec(d=48, hidden=96), "t.arch").graph
    ids = torch.randint(0, 256, (2, 7), generator=torch.Generator().manual_seed(1))
    runs = []
    for kernels in ("torch", "triton"):
        model = build(graph, seed=0, kernels=kernels)
        out = model(ids, labels=ids)
        out.loss.backward()
        runs.append((out.logits.detach(), {n: p.grad for n, p in model.named_parameters()}, model))
    (a, ga, torch_model), (b, gb, triton_model) = runs
    kernel_ops = sorted({m.op for _, m in triton_model.op_modules() if m.kernel is not None})
    assert kernel_ops == ["add_rmsnorm", "rmsnorm"]
    assert not any(m.kernel is not None for _, m in torch_model.op_modules())
    assert "kernel=triton:rms_norm" in repr(triton_model)
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    for n in ga:
        torch.testing.assert_close(gb[n], ga[n], rtol=1e-5, atol=1e-5, msg=n)


def test_the_choice_per_node_and_its_refusals(monkeypatch):
    import archc
    from archc.backends.torch.kernels.select import choose
    from archc.backends.triton import KernelError
    from archc.passes.manager import run
    from tests.conftest import tiny_lm_spec

    graph = run(archc.loads(tiny_lm_spec(), "t.arch").graph, "O1").graph
    auto = choose(graph, "auto", "cpu")  # auto: Triton on CUDA only, silently
    assert auto and all(c.template is None and "CUDA" in c.why for c in auto)
    assert all(c.template == "rms_norm" for c in choose(graph, "auto", "cuda"))
    assert all(c.template == "rms_norm" for c in choose(graph, "triton", "cpu"))  # the interpreter
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(KernelError, match="TRITON_INTERPRET"):  # triton insists: an error, not a fallback
        choose(graph, "triton", "cpu")
    with pytest.raises(KernelError, match="one of torch, triton, auto"):
        choose(graph, "fast", "cuda")


def test_rendering_is_cached_and_readable():
    from archc.backends.triton import KernelError
    from archc.backends.triton.render import render, source

    a = render("rms_norm", N=40, BLOCK=64, RESIDUAL=True, UNIT_OFFSET=False)
    assert render("rms_norm", N=40, BLOCK=64, RESIDUAL=True, UNIT_OFFSET=False) is a  # imported once
    text = a.path.read_text()
    assert "# N = 40" in text and "tl.arange(0, 64)" in text and "r_ptr" in text
    assert "r_ptr" not in source("rms_norm", N=40, BLOCK=64, RESIDUAL=False, UNIT_OFFSET=False)
    with pytest.raises(Exception, match="UNIT_OFFSET"):  # StrictUndefined: a missing parameter is an error
        source("rms_norm", N=40, BLOCK=64, RESIDUAL=True)
    with pytest.raises(KernelError, match="no kernel template"):
        source("flash", N=1)


def test_archc_kernels_lists_and_emits(tmp_path):
    def archc_(*args):
        return subprocess.run([sys.executable, "-m", "archc", "kernels", *args], capture_output=True, text=True,
                              cwd=ROOT, timeout=300)

    r = archc_("specs/llama-tiny.arch", "--json")
    assert r.returncode == 0, r.stderr
    nodes = json.loads(r.stdout)["nodes"]
    assert {n["op"] for n in nodes} == {"rmsnorm", "add_rmsnorm"} and all(n["kernel"] == "rms_norm" for n in nodes)
    r = archc_("specs/llama-tiny.arch", "--device", "cpu", "--kernels", "auto", "--json")
    assert all(n["kernel"] is None for n in json.loads(r.stdout)["nodes"])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep")
    r = archc_("specs/llama-tiny.arch", "--emit", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    written = json.loads((tmp_path / "out" / "kernels.json").read_text())["nodes"]
    assert len(set(written.values())) == 2  # one file for the plain norm, one for add + norm
    for name in set(written.values()):
        assert "@triton.jit" in (tmp_path / "out" / name).read_text()
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep"
    r = archc_("specs/llama-tiny.arch", "--emit", str(tmp_path / "out"))  # its own files: only with --force
    assert r.returncode != 0 and "--force" in r.stderr


def test_tracers_see_one_op_not_the_kernel():
    """`torch.export` holds `archc.add_rms_norm` (its fake implementation gives the shapes) and
    Dynamo traces the call without a graph break."""
    import torch._dynamo

    class Norm(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(40))

        def forward(self, x, r):
            return triton_rms_norm(x, self.w, 1e-6, False, r)[0]

    m, x, r = Norm(), torch.randn(2, 5, 40), torch.randn(2, 5, 40)
    ep = torch.export.export(m, (x, r))
    calls = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    assert "archc.add_rms_norm.default" in calls, calls
    torch.testing.assert_close(ep.module()(x, r), m(x, r))
    assert torch._dynamo.explain(m)(x, r).graph_break_count == 0
