"""An encoder–decoder's generation graphs (`onnx/seq2seq.py`, `runtime.OnnxSeq2Seq`): the encoder
and decoder graphs against the torch model's forward (logits of a target fed through the decoder's
state: a prefill, then one token at a time), and the ONNX runtime's greedy and beam-search targets
against `model.generate`'s, with a padded source; `archc run` on the folder; a quantized export
leaves the fp32 graphs to its reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import archc
from archc.backends.onnx.export import export_model
from archc.backends.onnx.runtime import OnnxSeq2Seq
from archc.backends.torch import build
from archc.cli import main
from tests.backends.torch.test_seq2seq import SPEC, VOCAB


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = build(archc.loads(SPEC, "t5.arch").graph, seed=0).eval()
    with torch.no_grad():  # off the init, so the target depends on the source
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    folder = tmp_path_factory.mktemp("t5") / "export"
    report = export_model(model, folder, SPEC, "t5", "random init, perturbed")
    return model, folder, report


def test_the_decoder_graph_equals_the_forward(exported):
    model, folder, report = exported
    assert report.manifest.seq2seq is not None and (folder / "encoder.onnx").is_file()
    onnx_model = OnnxSeq2Seq(folder)
    g = torch.Generator().manual_seed(4)
    src, tgt = torch.randint(0, VOCAB, (3, 9), generator=g), torch.randint(0, VOCAB, (3, 8), generator=g)
    with torch.no_grad():
        want = model(src, tgt=tgt).logits.numpy()
    encoded = onnx_model.encode(src.numpy())
    state = onnx_model.init_state(3, 8)
    first, state = onnx_model.step(tgt[:, :5].numpy(), 0, state, encoded)
    rest = []
    for i in range(5, 8):
        lg, state = onnx_model.step(tgt[:, i:i + 1].numpy(), i, state, encoded)
        rest.append(lg)
    np.testing.assert_allclose(np.concatenate([first, *rest], 1), want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("beams", [1, 3])
def test_the_onnx_runtime_generates_what_torch_generates(exported, beams):
    model, folder, _ = exported
    src = torch.randint(0, VOCAB, (3, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[2, 6:] = 0
    want = model.generate(src, attention_mask=mask, max_new_tokens=6, num_beams=beams).numpy()
    got = OnnxSeq2Seq(folder).generate(src.numpy(), mask.numpy(), max_new_tokens=6, num_beams=beams)
    assert got.tolist() == want.tolist()


def test_archc_run_decodes_the_source(exported, capsys):
    model, folder, _ = exported
    assert main(["run", str(folder), "--prompt-ids", "1 2 3 4", "--max-new-tokens", "5", "--num-beams", "2"]) == 0
    printed = [int(t) for t in capsys.readouterr().out.split()]
    want = model.generate(torch.tensor([[1, 2, 3, 4]]), max_new_tokens=5, num_beams=2)[0, 1:].tolist()
    assert printed == want
