from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.arch"))


def tiny_lm_spec(vocab: int = 256, d: int = 32, heads: int = 2, hidden: int = 64) -> str:
    """A two-layer Llama-style causal LM spec, small enough for a test to train in seconds."""
    return f"""
model t(tokens) {{
  block decoder(x) {{
    x = x + attention(rmsnorm(x), heads={heads}, causal=true, pos=rope())
    return x + swiglu(rmsnorm(x), hidden={hidden})
  }}
  x = embed(tokens, {vocab}, {d})
  x = repeat(2, decoder)(x)
  return lm_head(rmsnorm(x), tied=true)
}}
"""


@pytest.fixture
def write_spec(tmp_path: Path):
    """Write spec text to a file in a fresh folder and return its path."""

    def write(text: str, name: str = "m.arch") -> Path:
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        return p

    return write


def diagnostics(text: str, tmp_path: Path | None = None, name: str = "m.arch", **limits):
    """All diagnostics for a spec text (errors and warnings)."""
    import archc
    from archc.errors import ArchError

    try:
        if tmp_path is not None:
            p = tmp_path / name
            p.write_text(text)
            return list(archc.load(str(p), **limits).warnings)
        return list(archc.loads(text, name, **limits).warnings)
    except ArchError as e:
        return list(e.diagnostics)


def assert_step_matches_forward(model, ids, chunks, atol: float = 1e-5, rtol: float = 1.3e-6) -> None:
    """Decoding `ids` in the given chunk lengths with `model.step` reproduces the full forward."""
    import torch

    assert sum(chunks) == ids.shape[1]
    full = model(ids).logits
    state = model.init_state(ids.shape[0], ids.shape[1] + 3)
    out, pos = [], 0
    for c in chunks:
        lg, state = model.step(ids[:, pos:pos + c], pos, state)
        out.append(lg)
        pos += c
    torch.testing.assert_close(torch.cat(out, 1), full, atol=atol, rtol=rtol)


def exportable_logits(model):
    """`model` as a module from input ids to logits, for `torch.export` (which wants tensors out)."""
    import torch

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, ids):
            return self.model(ids).logits

    return Logits()


def exportable_step(model):
    """`model.step` as a module taking the state as flat tensor arguments, for `torch.export`."""
    import torch

    class Step(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, ids, pos, *state):
            return self.model.step(ids, pos, tuple(state))

    return Step()
