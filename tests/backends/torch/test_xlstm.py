"""xLSTM's sLSTM and mLSTM against the `xlstm` package (NX-AI's reference layers: mLSTMLayer with
its parallel and recurrent PyTorch backends, sLSTMLayer with its `vanilla` PyTorch backend),
random-initialized and copied across; every form of each cell against the others. The chunked
mLSTM memory's own tests are in kernels/test_mlstm.py."""

from __future__ import annotations

import pytest
import torch

import archc
from archc.backends.torch import build
from archc.backends.torch.context import Context
from tests.conftest import assert_step_matches_forward, copy_weights

xlstm = pytest.importorskip("xlstm")

SPEC = """
model ref(tokens) {{
  x = embed(tokens, 64, 32)
  x = x + mlstm(layernorm(x), heads=4, expand=2, d_conv=4, qkv_block=4)
  x = x + slstm(layernorm(x), heads=4, d_conv={d_conv})
  return lm_head(layernorm(x))
}}
"""


def _model(d_conv: int = 4):
    return build(archc.loads(SPEC.format(d_conv=d_conv), "ref.arch").graph, seed=0).eval()


def _jitter(module: torch.nn.Module) -> None:
    """Move every parameter off its structured init (zero gate weights, constant biases) so that
    a swapped or ignored one shows."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.3)


def _reference_mlstm(seed: int = 0):
    torch.manual_seed(seed)
    cfg = xlstm.mLSTMLayerConfig(embedding_dim=32, num_heads=4, proj_factor=2.0, conv1d_kernel_size=4,
                                 qkv_proj_blocksize=4, context_length=256)
    ref = xlstm.mLSTMLayer(cfg).eval()
    _jitter(ref)
    return ref


def _copy_mlstm(ours, ref) -> None:
    sd = ref.state_dict()
    cell = {f"{g}.{n}": sd[f"mlstm_cell.{g}.{n}"] for g in ("igate", "fgate") for n in ("weight", "bias")}
    copy_weights(ours, {
        **{n: sd[n] for n in ("proj_up.weight", "q_proj.weight", "k_proj.weight", "v_proj.weight",
                              "learnable_skip", "proj_down.weight")},
        "conv1d.weight": sd["conv1d.conv.weight"], "conv1d.bias": sd["conv1d.conv.bias"], **cell,
        "outnorm.weight": 1 + sd["mlstm_cell.outnorm.weight"],  # xlstm stores the scale as 1 + w
    })


def _reference_slstm(d_conv: int, seed: int = 0):
    torch.manual_seed(seed)
    cfg = xlstm.sLSTMLayerConfig(embedding_dim=32, num_heads=4, conv1d_kernel_size=d_conv, backend="vanilla",
                                 dtype="float32")
    ref = xlstm.sLSTMLayer(cfg).eval()
    _jitter(ref)
    return ref


def _copy_slstm(ours, ref) -> None:
    cell = ref.slstm_cell
    mapping = {
        # xlstm's layer feeds its `fgate` map into the cell's input gate and `igate` into the forget
        # gate (sLSTMLayer.forward: `i, f, z, o = self.fgate(x), self.igate(x), …`): map by role
        "igate.weight": ref.fgate.weight, "fgate.weight": ref.igate.weight,
        "zgate.weight": ref.zgate.weight, "ogate.weight": ref.ogate.weight,
        "recurrent_kernel": cell._recurrent_kernel_int2ext(cell._recurrent_kernel),  # [H, D, 4, D]
        "bias": cell._bias_int2ext(cell._bias),  # [H, 4, D]
        "group_norm.weight": 1 + ref.group_norm.weight,
    }
    if ref.config.conv1d_kernel_size:
        mapping |= {"conv1d.weight": ref.conv1d.conv.weight, "conv1d.bias": ref.conv1d.conv.bias}
    copy_weights(ours, mapping)


@pytest.mark.parametrize("t", [5, 64, 150], ids=lambda t: f"T{t}")
def test_mlstm_matches_xlstm(t):
    """Below, at and across the chunk (64): xlstm's parallel form is one T×T matrix."""
    # fp64 throughout (xlstm's norm scale 1 + w included): differences are the algorithms'
    ours, ref = _model().get_submodule("mlstm").double(), _reference_mlstm().double()
    _copy_mlstm(ours, ref)
    x = torch.randn(2, t, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, ctx=Context(torch.arange(t))), ref(x), atol=1e-9, rtol=1e-9)


def test_mlstm_steps_match_xlstm_steps():
    """Token by token through both recurrent forms (xlstm's `step` with its conv and memory state).
    fp64, as the other xLSTM comparisons: in fp32, 20 exponential-gate steps differ by up to 2.6e-5
    depending on which CPU kernels run, which says nothing about the algorithm. Both start from the
    same empty memory (C = 0, n = 0, m = −1e38): xlstm's own default start m = 0 differs from its
    parallel form by ~5e-6 at the first token (the denominator's lower bound exp(−m)), ours does not."""
    ours, ref = _model().get_submodule("mlstm").double(), _reference_mlstm(1).double()
    _copy_mlstm(ours, ref)
    x = torch.randn(2, 20, 32, dtype=torch.float64)
    state = tuple(s.double() for s in ours.init_state(2, 20, x.device, x.dtype))
    c0, n0, m0 = state[0], state[1][..., None], state[2][..., None, None]
    ref_state: dict = {"mlstm_state": (c0, n0, m0), "conv_state": None}
    with torch.no_grad():
        for i in range(20):
            ctx = Context(torch.tensor([i]), decoding=True)
            y, state = ours.step(x[:, i:i + 1], state=state, ctx=ctx)
            y_ref, ref_state = ref.step(x[:, i:i + 1], **ref_state)
            torch.testing.assert_close(y, y_ref, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("d_conv", [4, 0], ids=["conv", "no-conv"])
def test_slstm_matches_xlstm(d_conv):
    ours, ref = _model(d_conv).get_submodule("slstm").double(), _reference_slstm(d_conv).double()
    _copy_slstm(ours, ref)
    x = torch.randn(2, 40, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, ctx=Context(torch.arange(40))), ref(x), atol=1e-9, rtol=1e-9)


def test_slstm_init_follows_xlstm_by_depth():
    """The forget-gate bias is xlstm's depth-dependent power law (`powerlaw_blockdependent`) for
    each block's depth among the model's xLSTM blocks; recurrent weights start at zero."""
    model = build(archc.loads("""
model t(tokens) {
  block s(x) {
    return x + slstm(layernorm(x), heads=2)
  }
  x = embed(tokens, 64, 16)
  x = repeat(3, s)(x)
  return lm_head(x)
}""", "t.arch").graph, seed=0)
    for depth in range(3):
        cfg = xlstm.sLSTMLayerConfig(embedding_dim=16, num_heads=2, backend="vanilla", dtype="float32",
                                     _block_idx=depth, _num_blocks=3)
        cell = xlstm.sLSTMLayer(cfg).slstm_cell
        ours = model.get_submodule(f"layers.{depth}.slstm")
        torch.testing.assert_close(ours.bias, cell._bias_int2ext(cell._bias).detach())
        assert not ours.recurrent_kernel.any()


def test_padding_gives_finite_gradients_in_fp32():
    """The chunk padding holds m = NEG; e^−m must not reach the backward pass as inf."""
    model = _model().train()
    loss = model(torch.randint(0, 64, (2, 37))).logits.sum()
    loss.backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in model.parameters())


@pytest.mark.parametrize("chunks", [[1] * 12, [5, 1, 1, 30], [37]], ids=["tokens", "mixed", "prefill"])
def test_every_form_agrees(chunks):
    ids = torch.randint(0, 64, (2, sum(chunks)))
    with torch.no_grad():
        assert_step_matches_forward(_model(), ids, chunks)
