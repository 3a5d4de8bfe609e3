"""An encoder–decoder's generation graphs, written beside its forward graph (`model.onnx`):

* `encoder.onnx`: `input_ids` [batch, seq] (the source) and `attention_mask` → what the encoder
  hands the decoder (`seq2seq.EncoderDecoder.encoder_outputs`): the memory, each cross-attention's
  keys and values (the cross-attention cache, computed once per source) and the source mask;
* `decoder.onnx`: the target tokens `input_ids` [batch, tgt], their first `position`, the
  decoder's own state `past.<name>` (self-attention caches preallocated to the decode length) and
  the encoder's outputs under their names → `logits` and `present.<name>`.

Each is one `torch.onnx.export(dynamo=True)` of the torch backend's encoder and decoder step, not
the per-node assembly of `model.onnx`: the cut between them (which nodes read the target) and the
hand-over are `EncoderDecoder`'s, so the ONNX graphs compute exactly what `generate` does in torch.
`archc run` generates from them (`runtime.OnnxSeq2Seq`: greedy or beam search, numpy only).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.export import Dim

from archc.backends.onnx import ExportError
from archc.backends.onnx.manifest import Seq2Seq, Seq2SeqState
from archc.backends.torch.model import ArchModel
from archc.backends.torch.seq2seq import EncoderDecoder

ENCODER, DECODER = "encoder.onnx", "decoder.onnx"
#: above this many bytes of weights they go to `<graph>.data` (protobuf's limit is 2 GB)
EXTERNAL_DATA_BYTES = 1_800_000_000
#: the largest length the exported graphs are traced for (any batch or length up to this)
MAX_DIM = 1 << 20


class _Encoder(nn.Module):
    def __init__(self, model: ArchModel, stepper: EncoderDecoder) -> None:
        super().__init__()
        self.model, self.stepper = model, stepper

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, ...]:
        return self.stepper.encoder_outputs(input_ids, attention_mask)


class _Decoder(nn.Module):
    def __init__(self, model: ArchModel, stepper: EncoderDecoder, n_own: int) -> None:
        super().__init__()
        self.model, self.stepper, self.n_own = model, stepper, n_own

    def forward(self, input_ids: Tensor, position: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        logits, new = self.stepper.step(input_ids, position, state)
        return (logits, *new[:self.n_own])


def export_seq2seq(model: ArchModel, folder: Path, opset: int) -> Seq2Seq:
    """Write `encoder.onnx` and `decoder.onnx` for `model` into `folder`; their manifest entry."""
    stepper = EncoderDecoder(model.eval())
    if any(isinstance(st.fill, str) for mod in stepper.stateful for st in mod.declared_state):
        raise ExportError("the decoder's state starts from a parameter (a memory op's learned tokens), which the "
                          "generation graphs' manifest cannot hold", "its forward graph (model.onnx) is unaffected")
    names = [f"{nid}.{s}" for mod in stepper.stateful for nid in [mod.node_id] for s in mod.state_names]
    enc_names = stepper.encoder_output_names
    src = torch.randint(0, model.out_type_vocab(), (2, 7))
    mask = torch.ones(2, 7, dtype=torch.long)
    batch, seq = Dim("batch", min=1, max=MAX_DIM), Dim("seq", min=2, max=MAX_DIM)
    tgt_len, cache = Dim("tgt", min=1, max=MAX_DIM), Dim("max_len", min=2, max=MAX_DIM)
    with torch.no_grad():
        enc = stepper.encoder_outputs(src, mask)
        own, longer = stepper.decoder_state(2, 16), stepper.decoder_state(2, 24)
    # a state axis that follows the decode length is dynamic; the encoder's outputs follow the source
    own_dyn = [{0: batch, **{k: cache for k in range(1, a.dim()) if a.shape[k] != b.shape[k]}}
               for a, b in zip(own, longer, strict=True)]
    enc_dyn = [{0: batch, (2 if t.dim() == 4 else 1): seq} for t in enc]
    # weights inline below protobuf's 2 GB limit, else beside each graph (`<graph>.data`)
    external = sum(p.numel() * p.element_size() for p in model.parameters()) > EXTERNAL_DATA_BYTES
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(_Encoder(model, stepper), (src, mask), str(folder / ENCODER), dynamo=True,
                              opset_version=opset, dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq}),
                              input_names=["input_ids", "attention_mask"], output_names=enc_names, verbose=False,
                              external_data=external)
            torch.onnx.export(_Decoder(model, stepper, len(own)), (torch.zeros(2, 3, dtype=torch.long), torch.tensor(0),
                                                                   *own, *enc),
                              str(folder / DECODER), dynamo=True, opset_version=opset,
                              dynamic_shapes=({0: batch, 1: tgt_len}, None, (*own_dyn, *enc_dyn)),
                              input_names=["input_ids", "position", *(f"past.{n}" for n in names), *enc_names],
                              output_names=["logits", *(f"present.{n}" for n in names)], verbose=False,
                              external_data=external)
    except Exception as e:  # torch.export / torch.onnx could not take the encoder or the decoder step
        first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise ExportError(f"the encoder–decoder's generation graphs could not be exported: {type(e).__name__}: "
                          f"{first[:200]}", "its forward graph (model.onnx) is unaffected; `archc generate` "
                          "decodes it in torch") from e
    fills = [st.fill for mod in stepper.stateful for st in mod.declared_state]
    states = [Seq2SeqState(name=n, dtype=str(t.dtype).removeprefix("torch."), fill=float(fill),
                           shape=["max_len" if d.get(k) is cache else int(t.shape[k]) for k in range(1, t.dim())])
              for n, t, d, fill in zip(names, own, own_dyn, fills, strict=True)]
    return Seq2Seq(encoder=ENCODER, decoder=DECODER, encoder_outputs=enc_names, state=states)
