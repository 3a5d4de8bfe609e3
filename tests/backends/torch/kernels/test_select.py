"""Choosing kernels (archc/backends/torch/kernels/select.py): a whole model built with
`kernels="triton"` equals its torch build, in Triton's interpreter; `auto` runs Triton only on
CUDA and says why not elsewhere, an explicit `triton` refuses what cannot run; `archc kernels`
lists the choice per node and writes the rendered files without touching the user's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

import archc  # noqa: E402
from archc.backends.torch import build  # noqa: E402
from archc.backends.torch.kernels.select import choose  # noqa: E402
from archc.backends.triton import KernelError  # noqa: E402
from archc.passes.manager import run  # noqa: E402
from tests.conftest import tiny_lm_spec  # noqa: E402

ROOT = Path(__file__).resolve().parents[4]

#: GPT-2's layout at two layers, with an embedding LayerNorm (BLOOM's) that no add precedes:
#: LayerNorm with and without its shift, a GELU MLP
GPT_STYLE = """model g(tokens) {
  block decoder(x) {
    x = x + attention(layernorm(x), heads=2, causal=true)
    return x + mlp(layernorm(x, bias=false), hidden=96, act="gelu")
  }
  x = layernorm(embed(tokens, 256, 48), affine=false)
  x = repeat(2, decoder)(x)
  return lm_head(layernorm(x), tied=true)
}
"""


#: Gemma's layout at O0 (nothing fused or packed): GeGLU apart, RMSNorm with a unit offset
GEMMA_STYLE = """model e(tokens) {
  block decoder(x) {
    x = x + attention(rmsnorm(x, unit_offset=true), heads=2, causal=true)
    return x + geglu(rmsnorm(x, unit_offset=true), hidden=80)
  }
  x = embed(tokens, 256, 48)
  x = repeat(2, decoder)(x)
  return lm_head(rmsnorm(x, unit_offset=true), tied=true)
}
"""


@pytest.mark.parametrize(("spec", "pipeline", "ops"), [
    (tiny_lm_spec(d=48, hidden=96), "O1", ["add_rmsnorm", "attention_packed", "lm_head", "rmsnorm", "swiglu_packed"]),
    (GPT_STYLE, "O1", ["add_layernorm", "layernorm", "lm_head"]),
    (GEMMA_STYLE, "O0", ["geglu", "lm_head", "rmsnorm"]),
], ids=["llama-style", "gpt-style", "gemma-style-O0"])
def test_a_model_with_triton_kernels_equals_its_torch_build(spec, pipeline, ops):
    """Two layers (at O1 the residual add is fused into the norm after it, the gate and up
    projections packed): logits and every gradient of `kernels="triton"` equal `kernels="torch"`
    (fp32)."""
    graph = archc.loads(spec, "t.arch").graph
    ids = torch.randint(0, 256, (2, 7), generator=torch.Generator().manual_seed(1))
    runs = []
    for kernels in ("torch", "triton"):
        model = build(graph, seed=0, pipeline=pipeline, kernels=kernels)
        out = model(ids, labels=ids, skip_logits=False)  # the fused loss: test_linear_cross_entropy.py
        out.loss.backward()
        runs.append((out.logits.detach(), {n: p.grad for n, p in model.named_parameters()}, model))
    (a, ga, torch_model), (b, gb, triton_model) = runs
    kernel_ops = sorted({m.op for _, m in triton_model.op_modules() if m.triton_kernels})
    assert kernel_ops == ops
    assert not any(m.triton_kernels for _, m in torch_model.op_modules())
    assert "kernel=triton:" in repr(triton_model)
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    for n in ga:
        torch.testing.assert_close(gb[n], ga[n], rtol=1e-5, atol=1e-5, msg=n)


def test_the_choice_per_node_and_its_refusals(monkeypatch):
    graph = run(archc.loads(tiny_lm_spec(), "t.arch").graph, "O1").graph
    auto = choose(graph, "auto", "cpu")  # auto: Triton on CUDA only, silently
    assert auto and all(c.template is None and "CUDA" in c.why for c in auto)
    on_cuda = choose(graph, "auto", "cuda")
    assert {(c.op, c.template) for c in on_cuda} == {("rmsnorm", "rms_norm"), ("add_rmsnorm", "rms_norm"),
                                                     ("swiglu_packed", "glu"), ("attention_packed", "rotary"),
                                                     ("lm_head", "cross_entropy")}
    assert [c.template for c in choose(graph, "triton", "cpu")] == [c.template for c in on_cuda]  # the interpreter
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(KernelError, match="TRITON_INTERPRET"):  # triton insists: an error, not a fallback
        choose(graph, "triton", "cpu")
    with pytest.raises(KernelError, match="one of torch, triton, auto"):
        choose(graph, "fast", "cuda")


def test_archc_kernels_lists_and_emits(tmp_path):
    def archc_(*args):
        return subprocess.run([sys.executable, "-m", "archc", "kernels", *args], capture_output=True, text=True,
                              cwd=ROOT, timeout=300)

    r = archc_("specs/llama-tiny.arch", "--json")
    assert r.returncode == 0, r.stderr
    nodes = json.loads(r.stdout)["nodes"]
    assert {(n["op"], n["kernel"]) for n in nodes} == {("rmsnorm", "rms_norm"), ("add_rmsnorm", "rms_norm"),
                                                       ("swiglu_packed", "glu"), ("attention_packed", "rotary"),
                                                       ("lm_head", "cross_entropy")}
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep")
    r = archc_("specs/llama-tiny.arch", "--emit", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    written = json.loads((tmp_path / "out" / "kernels.json").read_text())["nodes"]
    names = {f for per_node in written.values() for f in per_node.values()}
    assert len(names) == 5  # the plain norm, add + norm, the packed SwiGLU gating, rotary, the loss
    for name in names:
        assert "@triton.jit" in (tmp_path / "out" / name).read_text()
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep"
    r = archc_("specs/llama-tiny.arch", "--emit", str(tmp_path / "out"))  # its own files: only with --force
    assert r.returncode != 0 and "--force" in r.stderr
