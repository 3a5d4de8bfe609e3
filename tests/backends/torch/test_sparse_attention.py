"""Longformer against transformers' LongformerLayer; Longformer (dilated), BigBird and Linformer
against exact attention with explicit masks (or the paper's equation) — no T×T matrix inside."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import archc
from archc.backends.torch import build
from archc.backends.torch.context import Context
from archc.backends.torch.ops.sparse_attention import bigbird_layout

ENCODER = """
model t(tokens) {{
  block encoder(x) {{
    x = layernorm(x + {mixer})
    return layernorm(x + mlp(x, hidden=64, act="gelu"))
  }}
  x = embed(tokens, 50, 32)
  x = repeat(2, encoder)(x)
  return lm_head(x)
}}
"""


def _model(mixer: str, seed: int = 0):
    return build(archc.loads(ENCODER.format(mixer=mixer), "t.arch").graph, seed=seed).eval()


# ---- Longformer ----------------------------------------------------------------------------


def _hf_longformer(model, window: int, heads: int = 4):
    from transformers import LongformerConfig
    from transformers.models.longformer.modeling_longformer import LongformerLayer

    cfg = LongformerConfig(hidden_size=32, num_attention_heads=heads, intermediate_size=64, num_hidden_layers=2,
                           attention_window=[window] * 2, layer_norm_eps=1e-5, hidden_dropout_prob=0.0,
                           attention_probs_dropout_prob=0.0, hidden_act="gelu")
    layers = [LongformerLayer(cfg, layer_id=i).eval() for i in range(2)]
    names = {"attention.self.query": "attn.q_proj", "attention.self.key": "attn.k_proj",
             "attention.self.value": "attn.v_proj", "attention.self.query_global": "attn.q_global",
             "attention.self.key_global": "attn.k_global", "attention.self.value_global": "attn.v_global",
             "attention.output.dense": "attn.o_proj", "attention.output.LayerNorm": "norm",
             "intermediate.dense": "mlp.up_proj", "output.dense": "mlp.down_proj", "output.LayerNorm": "norm_1"}
    ours = dict(model.named_parameters())
    with torch.no_grad():
        for i, layer in enumerate(layers):
            for hf, mine in names.items():
                mod = layer.get_submodule(hf)
                mod.weight.copy_(ours[f"layers.{i}.{mine}.weight"])
                mod.bias.copy_(ours[f"layers.{i}.{mine}.bias"])
    return layers


@pytest.mark.parametrize("globals_", [[0], [0, 5]])
@pytest.mark.parametrize("padded", [False, True])
def test_longformer_equals_transformers(globals_, padded):
    model = _model(f"longformer_attention(x, heads=4, window=4, global_tokens={globals_})")
    assert {n.split(".")[3] for n, _ in model.named_parameters() if ".attn." in n} >= {"q_global", "k_global"}
    hf = _hf_longformer(model, window=4)
    t = 16  # transformers needs a multiple of the window
    ids = torch.randint(0, 50, (2, t))
    mask = torch.ones(2, t, dtype=torch.bool)
    if padded:
        mask[1, 11:] = False
    ours = model(ids, attention_mask=mask).logits
    is_global = torch.zeros(2, t, dtype=torch.bool)
    is_global[:, globals_] = True
    ext = torch.where(~mask, -10000.0, torch.where(is_global, 10000.0, 0.0))
    h = model.get_parameter("embed.weight")[ids]
    with torch.no_grad():
        for layer in hf:
            h = layer(h, attention_mask=ext, is_index_masked=~mask, is_index_global_attn=is_global,
                      is_global_attn=True)[0]
    ref = h @ model.get_parameter("lm_head.weight").T
    torch.testing.assert_close(ours[mask], ref[mask], atol=1e-5, rtol=1e-5)


def _dense_longformer(layer, x, mask, dilation):
    """Exact attention with an explicit T×T mask, the pattern written out directly."""
    t = x.shape[1]
    q, k, v = layer.qkv(x, x, None)
    gpos = [g for g in layer.global_tokens if g < t]
    i = torch.arange(t)
    delta = i[:, None] - i[None, :]
    allowed = (delta.abs() <= layer.reach) & (delta.remainder(dilation) == 0)
    allowed[:, gpos] = True
    allowed = allowed[None, None] & mask[:, None, None, :]
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    heads = lambda z: z.view(x.shape[0], -1, layer.heads, layer.head_dim).transpose(1, 2)  # noqa: E731
    xg = x[:, gpos]
    yg = F.scaled_dot_product_attention(heads(layer.q_global(xg)), heads(layer.k_global(x)),
                                        heads(layer.v_global(x)), attn_mask=mask[:, None, None, :])
    y[:, :, gpos] = yg
    return layer.out(y)


@pytest.mark.parametrize("t", [3, 21, 70])
@pytest.mark.parametrize("dilation", [1, 2, 3])
def test_dilated_longformer_equals_masked_dense(t, dilation):
    model = _model(f"longformer_attention(x, heads=4, window=6, dilation={dilation}, global_tokens=[0, 9])")
    layer = model.get_submodule("layers.0.attn")
    x = torch.randn(2, t, 32)
    mask = torch.ones(2, t, dtype=torch.bool)
    mask[1, max(1, t - 4):] = False
    got = layer(x, ctx=Context(torch.arange(t), mask))
    ref = _dense_longformer(layer, x, mask, dilation)
    torch.testing.assert_close(got[mask], ref[mask], atol=1e-5, rtol=1e-5)


# ---- BigBird -------------------------------------------------------------------------------


def _block_mask(layer, t):
    """The T×T mask of BigBird's layout, written out: window, global and random blocks per row,
    global rows and columns everywhere."""
    idx, ok = layer.layout(t, torch.device("cpu"))
    bs = layer.block
    blocks = torch.zeros(idx.shape[0], idx.shape[0], dtype=torch.bool)
    for i in range(idx.shape[0]):
        blocks[i, idx[i][ok[i]]] = True
    dense = blocks.repeat_interleave(bs, 0).repeat_interleave(bs, 1)[:t, :t]
    gpos, g_ok = layer.global_rows(t, torch.device("cpu"))
    dense[gpos[g_ok]] = True
    return dense


@pytest.mark.parametrize("t", [5, 40, 64, 100])
@pytest.mark.parametrize("cfg", [(8, 3, 2, 2), (4, 3, 2, 1), (4, 5, 1, 3), (8, 1, 0, 0)])
def test_bigbird_equals_masked_dense(t, cfg):
    block, win, glob, rnd = cfg
    model = _model(f"bigbird_attention(x, heads=4, block={block}, window_blocks={win}, global_blocks={glob}, "
                   f"random_blocks={rnd})")
    layer = model.get_submodule("layers.0.attn")
    x = torch.randn(2, t, 32)
    mask = torch.ones(2, t, dtype=torch.bool)
    mask[1, max(1, t - 7):] = False
    got = layer(x, ctx=Context(torch.arange(t), mask))
    q, k, v = layer.qkv(x, x, None)
    allowed = _block_mask(layer, t)[None, None] & mask[:, None, None, :]
    ref = layer.out(F.scaled_dot_product_attention(q, k, v, attn_mask=allowed))
    torch.testing.assert_close(got[mask], ref[mask], atol=1e-5, rtol=1e-5)


def test_bigbird_layout_has_window_global_and_distinct_random_blocks():
    n_real, w, g, r = 12, 3, 2, 3
    idx, ok = bigbird_layout(torch.tensor(n_real), n_real + 1, w, g, r, seed=7)
    for i in range(1, n_real - 1):  # the non-global rows
        chosen = idx[i][ok[i]].tolist()
        assert len(chosen) == len(set(chosen))  # no block counted twice
        assert {i - 1, i, i + 1, 0, n_real - 1} <= set(chosen)
        rand = set(chosen) - {i - 1, i, i + 1, 0, n_real - 1}
        assert 1 <= len(rand) <= r and all(0 <= j < n_real for j in rand)
    # random picks differ between rows and layers (seeds)
    other, _ = bigbird_layout(torch.tensor(n_real), n_real + 1, w, g, r, seed=8)
    assert not torch.equal(idx, other)


def test_bigbird_memory_is_linear_in_length():
    """The scores of one call are [n, block, K·block] plus the global rows: no T×T tensor."""
    model = _model("bigbird_attention(x, heads=2, block=16, window_blocks=3, global_blocks=2, random_blocks=1)")
    layer = model.get_submodule("layers.0.attn")
    seen = []

    def spy(q, k, v, **kw):
        seen.append(q.shape[-2] * k.shape[-2] * q.shape[:-2].numel())
        return real(q, k, v, **kw)

    real = F.scaled_dot_product_attention
    t = 2048
    try:
        F.scaled_dot_product_attention = spy
        layer(torch.randn(1, t, 32), ctx=Context(torch.arange(t)))
    finally:
        F.scaled_dot_product_attention = real
    assert sum(seen) < 0.1 * 2 * t * t


# ---- Linformer -----------------------------------------------------------------------------


@pytest.mark.parametrize("t", [1, 17, 40])
def test_linformer_equals_the_papers_equation(t):
    """head_i = softmax(Q W_q (E K W_k)ᵀ / √d) F V W_v (Wang et al. eq. 7), E, F cut to T rows."""
    model = _model("linformer_attention(x, heads=4, k=8, max_len=40)")
    layer = model.get_submodule("layers.0.attn")
    x = torch.randn(2, t, 32)
    mask = torch.ones(2, t, dtype=torch.bool)
    mask[1, t // 2 + 1:] = False
    got = layer(x, ctx=Context(torch.arange(t), mask))
    q, k, v = layer.qkv(x, x, None)
    k, v = k * mask[:, None, :, None], v * mask[:, None, :, None]
    kp = layer.e_proj[:t].T @ k  # [B, H, k, hd]
    vp = layer.f_proj[:t].T @ v
    att = (q @ kp.transpose(-1, -2) / layer.head_dim**0.5).softmax(-1)
    torch.testing.assert_close(got, layer.out(att @ vp), atol=1e-5, rtol=1e-5)


def test_linformer_rejects_sequences_past_max_len():
    model = _model("linformer_attention(x, heads=4, k=8, max_len=16)")
    with pytest.raises(RuntimeError, match="max_len=16"):
        model(torch.randint(0, 50, (1, 17)))
