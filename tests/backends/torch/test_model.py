"""Module construction: parameter counts equal `archc summary`'s, names follow node ids, init is
reproducible, every form (forward / step / chunked prefill) agrees, exports keep dynamic dims."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import archc
from archc.backends.torch import BackendError, build
from archc.backends.torch.ops.attention import local_attention
from tests.conftest import SPECS


def _graph(text: str):
    return archc.loads(text, "t.arch").graph


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_parameter_count_equals_summary(spec):
    graph = archc.load(str(spec)).graph
    model = build(graph, device="meta")
    assert model.num_parameters() == archc.summary(str(spec)).total.params


@pytest.mark.parametrize("level", ["O0", "O1"])
def test_parameter_names_follow_node_ids(level):
    model = build("specs/llama-tiny.arch", device="meta", pipeline=level)
    names = dict(model.named_parameters())
    packed = level != "O0"
    assert ("layers.3.attn.qkv_proj.weight" in names) == packed  # a fused build holds q, k, v packed
    assert ("layers.3.attn.q_proj.weight" in names) != packed
    assert "layers.0.mlp.down_proj.weight" in names
    assert "lm_head.weight" not in names  # tied: counted and saved once, as the embedding
    assert "layers.3.attn.q_proj.weight" in model.state_dict()  # checkpoints: the canonical names


def test_init_is_reproducible_and_scaled():
    a = build("specs/llama-tiny.arch", seed=3)
    b = build("specs/llama-tiny.arch", seed=3)
    c = build("specs/llama-tiny.arch", seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    for n, p in sa.items():
        assert torch.equal(p, sb[n]), n
        if p.dim() > 1:
            assert not torch.equal(p, sc[n]), n
    std = sa["layers.0.attn.q_proj.weight"].std().item()
    res = sa["layers.0.attn.o_proj.weight"].std().item()
    assert abs(std - 0.02) < 0.001
    assert abs(res - 0.02 / (2 * 4) ** 0.5) < 0.001  # GPT-2 scaled residual init, 4 layers
    assert torch.equal(a.get_parameter("layers.0.norm.weight"), torch.ones(256))


DECODER = """
model t(tokens) {{
  block decoder(x) {{
    x = x + attention(layernorm(x), heads=4, kv_heads={kv}, causal=true{extra})
    return x + mlp(layernorm(x), hidden=64)
  }}
  x = embed(tokens, 50, 32)
  x = repeat(2, decoder)(x)
  return lm_head(layernorm(x))
}}
"""

VARIANTS = {
    "rope-gqa": (2, ", pos=rope(theta=100)"),
    "partial-rope-ntk": (4, ", pos=rope(theta=100, fraction=0.5, scaling=\"ntk\", factor=2)"),
    "alibi": (4, ", pos=alibi()"),
    "t5-bias": (4, ", pos=relative_bias(buckets=8, max_distance=16)"),
    "window": (2, ", window=5, pos=rope()"),
    "window-alibi": (1, ", window=3, pos=alibi()"),
}


@pytest.mark.parametrize("variant", VARIANTS, ids=list(VARIANTS))
@pytest.mark.parametrize("chunks", [(1,) * 23, (7, 1, 1, 9, 5), (23,), (4, 12, 7)])
def test_step_equals_forward(variant, chunks):
    kv, extra = VARIANTS[variant]
    torch.manual_seed(0)
    model = build(_graph(DECODER.format(kv=kv, extra=extra)), seed=1).eval()
    ids = torch.randint(0, 50, (2, sum(chunks)))
    full = model(ids).logits
    state = model.init_state(2, 30)
    out, pos = [], 0
    for c in chunks:
        lg, state = model.step(ids[:, pos:pos + c], pos, state)
        out.append(lg)
        pos += c
    torch.testing.assert_close(torch.cat(out, 1), full, atol=1e-5, rtol=1.3e-6)


def _dense_band(q, k, v, left, right, dilation, key_valid):
    t = q.shape[2]
    i = torch.arange(t)
    delta = i[:, None] - i[None, :]
    ok = (delta <= left) & (delta >= -right) & (delta.remainder(dilation) == 0)
    mask = ok[None, None] & key_valid[:, None, None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask), mask.any(-1)


@pytest.mark.parametrize("t", [1, 7, 16, 33])
@pytest.mark.parametrize("left,right,dil", [(4, 0, 1), (3, 3, 1), (6, 6, 2), (0, 5, 1), (8, 2, 3)])
def test_local_attention_equals_masked_dense(t, left, right, dil):
    g = torch.Generator().manual_seed(t)
    q, k, v = (torch.randn(2, 3, t, 8, generator=g) for _ in range(3))
    valid = torch.ones(2, t, dtype=torch.bool)
    valid[1, t // 2:] = False
    valid[1, 0] = True
    got = local_attention(q, k, v, left, right, dil, valid)
    ref, has_key = _dense_band(q, k, v, left, right, dil, valid)
    # rows without any allowed key (padding) are don't-care: compare the others
    rows = has_key.expand(-1, 3, -1)
    torch.testing.assert_close(got[rows], ref[rows], atol=1e-5, rtol=1.3e-6)


def test_padding_mask_matches_unpadded_rows():
    model = build("specs/llama-tiny.arch", seed=0).eval()
    ids = torch.randint(0, 4096, (2, 12))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 8:] = 0
    out = model(ids, attention_mask=mask).logits
    alone = model(ids[1:, :8]).logits
    torch.testing.assert_close(out[1:, :8], alone, atol=1e-5, rtol=1.3e-6)


def test_bidirectional_model_has_no_step():
    model = build(_graph(DECODER.format(kv=4, extra="").replace("causal=true", "causal=false")), seed=0)
    with pytest.raises(ValueError, match="bidirectional"):
        model.step(torch.zeros(1, 1, dtype=torch.long), 0, model.init_state(1, 4))


def test_missing_torch_module_is_a_backend_error(without_mamba_module):
    with pytest.raises(BackendError) as e:
        build("specs/mamba-tiny.arch", device="meta")
    assert e.value.node.op == "mamba" and e.value.node.span is not None
