"""The compiled paths (`archc.backends.torch.compiled`) against eager PyTorch: the training step's
loss and gradients of a two-layer Llama-style model, and the compiled decode step's logits and
tokens on a hybrid of softmax attention and Mamba-2 (a KV cache and a recurrent state in one step
graph). Each compiles once; every spec at full tiny size is tools/check_compiled.py's
(docs/performance.md), the compiled forward of every op family test_export.py's."""

from __future__ import annotations

import pytest
import torch

import archc
from archc.backends.torch.compiled import MIN_CAPACITY, DecodeStep, capacity, compile_model, decode_step
from tests.conftest import tiny_lm_spec

HYBRID = """
model h(tokens) {
  x = embed(tokens, 96, 32)
  x = x + attention(rmsnorm(x), heads=2, kv_heads=1, causal=true, pos=rope())
  x = x + swiglu(rmsnorm(x), hidden=48)
  x = x + mamba2(rmsnorm(x), d_state=8, head_dim=8, chunk=8)
  return lm_head(rmsnorm(x))
}
"""


@pytest.fixture(scope="module")
def hybrid(tmp_path_factory):
    path = tmp_path_factory.mktemp("compiled") / "h.arch"
    path.write_text(HYBRID)
    return archc.load(str(path)).graph


def test_capacity_rounds_up_to_powers_of_two():
    assert capacity(1) == capacity(MIN_CAPACITY) == MIN_CAPACITY
    assert capacity(MIN_CAPACITY + 1) == 2 * MIN_CAPACITY
    assert capacity(1000) == 1024 and capacity(1024) == 1024


def test_compiled_training_step_equals_eager(write_spec):
    graph = archc.load(str(write_spec(tiny_lm_spec(vocab=96)))).graph
    eager = archc.build(graph, seed=0)
    compiled = compile_model(archc.build(graph, seed=0), dynamic=False)
    ids = torch.randint(0, 96, (2, 21), generator=torch.Generator().manual_seed(0))
    losses = []
    for m in (eager, compiled):
        m.train()
        loss = m(ids, labels=ids).loss
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
    for (name, pe), pc in zip(eager.named_parameters(), compiled.parameters(), strict=True):
        torch.testing.assert_close(pc.grad, pe.grad, rtol=1e-4, atol=1e-6, msg=name)
    assert list(compiled.state_dict()) == list(eager.state_dict())  # compiled in place: the names stay


def test_compiled_decode_step_equals_the_eager_step(hybrid):
    model = archc.build(hybrid, seed=1).eval()
    prompt = torch.randint(0, 96, (2, 5), generator=torch.Generator().manual_seed(2))
    state = model.init_state(2, 5 + 12)
    step = decode_step(model, batch=2, tokens=5 + 12)
    assert isinstance(step, DecodeStep) and step.capacity == MIN_CAPACITY
    with torch.no_grad():
        eager_logits, state = model.step(prompt, 0, state)
        compiled_logits = step.prefill(prompt)
        for i in range(12):
            torch.testing.assert_close(compiled_logits[:, -1], eager_logits[:, -1], rtol=1e-4, atol=1e-5)
            token = eager_logits[:, -1:].argmax(-1)
            eager_logits, state = model.step(token, 5 + i, state)
            compiled_logits = step(token, 5 + i)
    assert step.compile_seconds is not None and step.compile_seconds > 0
    # generate(compile=True) reuses that compiled step (same batch, same capacity) and decodes the
    # eager tokens, from a prompt of another length
    again = torch.randint(0, 96, (2, 9), generator=torch.Generator().manual_seed(3))
    assert torch.equal(model.generate(again, max_new_tokens=6, compile=True), model.generate(again, max_new_tokens=6))
    assert list(model.__dict__["_decode_steps"]) == [(2, MIN_CAPACITY, "default")]
    with pytest.raises(ValueError, match="beam search"):
        model.generate(again, max_new_tokens=2, num_beams=2, compile=True)
    with pytest.raises(ValueError, match="capacity"):
        step(again[:, :1], MIN_CAPACITY)


@torch.compiler.disable
def _untraceable(y: torch.Tensor) -> torch.Tensor:
    return y * 1.0


def test_a_step_that_is_not_one_graph_runs_eagerly_with_a_warning(write_spec):
    """An op whose step Dynamo cannot trace whole (a `torch.compiler.disable`d call, as S4-DPLR's
    prompt recurrence is) is not compiled around: the decoder warns, says why in `graph_break`,
    and runs the eager step, which decodes what the model's own step does."""
    model = archc.build(str(write_spec(tiny_lm_spec(vocab=64))), seed=0).eval()
    _, norm = next((n, m) for n, m in model.op_modules() if m.op == "rmsnorm")
    plain = norm.forward
    norm.forward = lambda x, ctx=None: _untraceable(plain(x, ctx))  # type: ignore[method-assign]
    step = DecodeStep(model, batch=1, capacity=MIN_CAPACITY)
    ids = torch.randint(0, 64, (1, 4), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        step.prefill(ids)
        with pytest.warns(UserWarning, match="not one graph"):
            got = step(ids[:, -1:], 4)
        want, _ = model.step(ids[:, -1:], 4, model.step(ids, 0, model.init_state(1, MIN_CAPACITY))[1])
    assert step.graph_break and step.compile_seconds is not None
    torch.testing.assert_close(got, want)
