from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# pytest-xdist runs one worker per core (pyproject's addopts): each worker gets its share of the
# cores for torch's intra-op threads, so two workers on two cores do not oversubscribe them. Set
# before any test module imports torch (conftest is imported first).
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    _share = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, str(_share))

# Triton kernels run in Triton's interpreter on this CPU machine (before anything imports triton),
# rendered into a cache of the test session's own, removed when the session (each xdist worker)
# exits
os.environ.setdefault("TRITON_INTERPRET", "1")
if "ARCHC_KERNEL_CACHE" not in os.environ:
    os.environ["ARCHC_KERNEL_CACHE"] = tempfile.mkdtemp(prefix="archc-kernels-")
    atexit.register(shutil.rmtree, os.environ["ARCHC_KERNEL_CACHE"], ignore_errors=True)

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


def assert_padding_is_exact(model, vocab: int, atol: float = 2e-5, rtol: float = 1e-4) -> None:
    """A left- and a right-padded sequence in one batch give each sequence's own outputs: padding
    neither writes nor decays a recurrent mixer's memory. (fp32, one layer over 20 tokens: the
    padded and unpadded runs differ only in summation order.)"""
    import torch

    ids = torch.randint(0, vocab, (2, 20))
    mask = torch.ones(2, 20, dtype=torch.bool)
    mask[0, :6] = False   # left padding
    mask[1, 15:] = False  # right padding
    with torch.no_grad():
        out = model(ids, attention_mask=mask).logits
        alone0, alone1 = model(ids[:1, 6:]).logits, model(ids[1:, :15]).logits
    torch.testing.assert_close(out[0, 6:], alone0[0], atol=atol, rtol=rtol)
    torch.testing.assert_close(out[1, :15], alone1[0], atol=atol, rtol=rtol)


def assert_trains(model, vocab: int, steps: int = 30) -> None:
    """`steps` of AdamW on one batch lower the loss by a fifth, with finite gradients for every
    trained parameter (Hyena's fixed decay rates have none)."""
    import torch

    model.train()
    ids = torch.randint(0, vocab, (4, 33))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(steps):
        loss = model(ids, labels=ids).loss
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.8 * first
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


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


def assert_exported_step_matches_forward(model, vocab: int, n_tokens: int, atol: float = 1e-4) -> None:
    """`model.step`, exported with the batch and every state dim that grows with max_len dynamic
    (traced at batch 2, position 3), decodes `n_tokens` one by one at batch 3 as the forward does.
    The tokens come from a fixed seed, not the global generator: which tokens a test drew depended
    on the order xdist ran the tests in, and retnet-tiny's random init has inputs on which its
    per-head GroupNorm of a near-zero head output amplifies fp32 rounding to 3e-4 even between the
    eager forward and the eager step (measured: 1 of 40 seeds; a property of the init, not of either
    form) — one such draw failed a CI run."""
    import torch
    from torch.export import Dim

    batch, cache = Dim("batch", min=1, max=64), Dim("cache", min=2, max=4096)
    a, b = model.init_state(1, 16), model.init_state(1, 32)
    state_dims = tuple({0: batch, **{i: cache for i in range(1, x.dim()) if x.shape[i] != y.shape[i]}}
                       for x, y in zip(a, b, strict=True))
    ep = torch.export.export(exportable_step(model), (torch.randint(0, vocab, (2, 1)), torch.tensor(3),
                                                      *model.init_state(2, 16)),
                             dynamic_shapes=({0: batch}, None, state_dims))
    seq = torch.randint(0, vocab, (3, n_tokens), generator=torch.Generator().manual_seed(0))
    st, outs = model.init_state(3, n_tokens + 12), []
    for i in range(n_tokens):
        lg, st = ep.module()(seq[:, i:i + 1], torch.tensor(i), *st)
        outs.append(lg)
    torch.testing.assert_close(torch.cat(outs, 1), model(seq).logits, atol=atol, rtol=atol)


def copy_weights(model, mapping) -> None:
    """Load a reference model's tensors into `model` by archc's canonical parameter names (a
    fused build packs them through its load hooks); every parameter must be covered and every
    shape must agree."""
    from archc.backends.torch.module import canonical_layout

    ours = canonical_layout(model, dict(model.named_parameters()))
    assert set(mapping) == set(ours), (set(ours) - set(mapping), set(mapping) - set(ours))
    for k, v in mapping.items():
        assert ours[k].shape == v.shape, (k, ours[k].shape, v.shape)
    assert not model.load_state_dict(mapping, strict=False).unexpected_keys


@pytest.fixture
def without_mamba_module(monkeypatch):
    """The lowering table as if `mamba` had no torch module: how a backend reports an op it lacks."""
    from archc.backends import lowering

    lowering.lowerings("torch")
    table = {k: v for k, v in lowering._TABLE.items() if k != ("mamba", "torch")}
    monkeypatch.setattr(lowering, "_TABLE", table)


#: text for the tokenizer tests: prose with punctuation, code, and non-ASCII characters
SAMPLE_TEXT = (
    "Once upon a time, a model read its own text. It learned that the cat sat on the mat, "
    "and that café, naïve and 東京 are words too.\n\n"
    "def add(a, b):\n    return a + b\n\n"
    "The quick brown fox jumps over the lazy dog; the dog did not mind.\n"
)


@pytest.fixture(scope="session")
def bpe_folder(tmp_path_factory) -> Path:
    """A byte-level BPE tokenizer (GPT-2's pre-tokenizer, 300 tokens, `<|endoftext|>` its end
    token) trained in-process and saved by transformers' `PreTrainedTokenizerFast.save_pretrained`
    — tokenizer.json and tokenizer_config.json, as a Hugging Face model folder has them."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([SAMPLE_TEXT] * 4, trainer)
    folder = tmp_path_factory.mktemp("bpe")
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>").save_pretrained(folder)
    return folder
