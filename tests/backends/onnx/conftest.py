from __future__ import annotations

import pytest

pytest.importorskip("onnxruntime")

DECODER = """
model small(tokens) {
  block layer(x) {
    x = x + attention(rmsnorm(x), heads=4, kv_heads=2, causal=true, pos=rope())
    return x + swiglu(rmsnorm(x), hidden=64)
  }
  x = embed(tokens, 300, 64)
  x = repeat(2, layer)(x)
  return lm_head(rmsnorm(x), tied=true)
}
"""


@pytest.fixture(scope="session")
def decoder_export(tmp_path_factory):
    """A 2-layer GQA decoder with tied embeddings, weights moved off the init, saved and exported once
    (head_dim 16: at the default `--target ort` its attention is onnxruntime's GroupQueryAttention)."""
    import archc
    from archc.backends.onnx.export import export_model
    from archc.backends.torch import build
    from archc.backends.torch.checkpoint import save_weights

    root = tmp_path_factory.mktemp("decoder")
    (root / "small.arch").write_text(DECODER)
    import torch

    model = build(archc.loads(DECODER, "small.arch").graph, seed=3).eval()
    # off the init, so that greedy decoding does not settle on one token; by 0.15 and not more:
    # the fp32 logits of this model then differ from its own float64 ones by ~1e-5 at 512 tokens
    # (at 0.3: 7.5e-5), so the 1e-4 parity bound has room for another CPU's summation order
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.15)
    save_weights(model, root / "w.safetensors")
    report = export_model(model, root / "out", DECODER, "small", "w.safetensors")
    return model, root, report
