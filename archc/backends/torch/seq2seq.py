"""Incremental decoding of encoder–decoder models (a spec with a source and a target input, as
T5): the encoder runs once, the decoder one step at a time over its own state.

The graph is cut in two by what its nodes read: nodes that depend on the target input are the
decoder, the rest the encoder. A decoding state is the decoder's declared state (its self-attention
KV caches, …) followed by what the encoder hands on — the encoder values the decoder reads (the
`memory`) and, per cross-attention, its keys and values computed once from the memory with the
source's padding mask (the cross-attention cache transformers and onnxruntime-genai keep). Every
part has the batch first, so beam search reorders it like any state (`generate._reorder`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from archc.backends.torch.context import Context
from archc.backends.torch.module import State
from archc.ops.registry import REGISTRY

if TYPE_CHECKING:
    from archc.backends.torch.model import ArchModel

#: ctx.memo key of a cross-attention's cached (keys, values, source mask): read by `Attention.step`.
CROSS_KV = "cross_kv"


class EncoderDecoder:
    """`init_state` / `step` of a two-input model over its target, from a source given to
    `encode` first — the interface `generate`'s loops drive (greedy, sampling, beam search)."""

    def __init__(self, model: ArchModel) -> None:
        if len(model.input_names) != 2:
            raise ValueError(f"{model.graph.name} takes {len(model.input_names)} inputs; an encoder–decoder takes a "
                             "source and a target")
        self.model = model
        src, tgt = model.graph.inputs
        decoder: set[str] = {tgt}
        for nid, _, ins, _, _ in model._plan:
            if any(i in decoder for i in ins):
                decoder.add(nid)
        if model.graph.outputs[0] not in decoder:
            raise ValueError(f"{model.graph.name}'s output does not read its second input `{tgt}`: not a decoder")
        graph = model.graph
        for nid in sorted(decoder - {tgt}):
            n = graph.nodes[nid]
            op = REGISTRY[n.op]
            if op.causal(op.params(**n.params), graph.input_types(n)) is False:
                raise ValueError(f"{graph.name}'s decoder node `{nid}` ({n.op}) lets a target token see later ones: "
                                 "it cannot decode one token at a time")
        self.encoder_plan = [e for e in model._plan if e[0] not in decoder]
        # the decoder's nodes run on the target's time axis: its context is theirs
        self.decoder_plan = [(nid, mod, ins, op, True) for nid, mod, ins, op, _ in model._plan if nid in decoder]
        ids = {e[0] for e in self.encoder_plan} | {src}
        self.handed_on = sorted({i for _, _, ins, _, _ in self.decoder_plan for i in ins if i in ids})
        # the cross-attentions: attention modules whose `kv=` input is an encoder value
        self.cross = [(nid, mod, ins[1]) for nid, mod, ins, _, _ in self.decoder_plan
                      if mod is not None and len(ins) > 1 and ins[1] in ids and hasattr(mod, "qkv")]
        self.stateful = [mod for _, mod, _, _, _ in self.decoder_plan if mod is not None and mod.state_names]
        self.source: Tensor | None = None
        self.source_mask: Tensor | None = None

    def encode(self, source: Tensor, attention_mask: Tensor | None = None) -> EncoderDecoder:
        """Set the source [B, S] (and its padding mask) the next `init_state` encodes."""
        self.source, self.source_mask = source, attention_mask
        return self

    @torch.no_grad()
    def init_state(self, batch: int, max_len: int) -> State:
        """The decoder's fresh state for `max_len` target tokens, then the encoder's outputs."""
        if self.source is None or self.source.shape[0] != batch:
            raise ValueError("call encode(source) with a batch of this size first")
        return self.decoder_state(batch, max_len) + self.encoder_outputs(self.source, self.source_mask)

    def decoder_state(self, batch: int, max_len: int) -> State:
        """The decoder's own fresh state (its self-attention caches, …) for `max_len` target tokens."""
        p = next(self.model.parameters())
        return tuple(s for mod in self.stateful for s in mod.init_state(batch, max_len, p.device, p.dtype))

    def encoder_outputs(self, source: Tensor, attention_mask: Tensor | None = None) -> State:
        """What the encoder hands the decoder: the values it reads, each cross-attention's keys and
        values, and the source's padding mask (bool [B, S])."""
        mask = attention_mask.bool() if attention_mask is not None else None
        env = {self.model.graph.inputs[0]: source}
        self.model.run_nodes(env, self.encoder_plan, Context(torch.arange(source.shape[1], device=source.device), mask))
        valid = mask if mask is not None else torch.ones(source.shape, dtype=torch.bool, device=source.device)
        cross: list[Tensor] = []
        for _, mod, memory in self.cross:
            _, k, v = mod.qkv(env[memory][:, :1], env[memory], None)
            cross += [k, v]
        return tuple(env[i] for i in self.handed_on) + tuple(cross) + (valid,)

    @property
    def encoder_output_names(self) -> list[str]:
        """Names of `encoder_outputs`, in order (the ONNX encoder graph's outputs)."""
        cross = [f"{nid}.cross_{kv}" for nid, _, _ in self.cross for kv in ("key", "value")]
        return [f"{i}.out" for i in self.handed_on] + cross + ["encoder_attention_mask"]

    def step(self, target: Tensor, pos: Tensor | int, state: State) -> tuple[Tensor, State]:
        """Logits for target tokens [B, T] at positions pos … pos + T − 1, and the new state."""
        n_own = sum(len(m.state_names) for m in self.stateful)
        own, rest = state[:n_own], state[n_own:]
        handed = rest[:len(self.handed_on)]
        cross, valid = rest[len(self.handed_on):-1], rest[-1]
        pos_t = torch.as_tensor(pos, device=target.device).reshape(())
        ctx = Context(pos_t + torch.arange(target.shape[1], device=target.device), decoding=True)
        for j, (nid, _, _) in enumerate(self.cross):
            ctx.memo[(CROSS_KV, nid)] = (cross[2 * j], cross[2 * j + 1], valid)
        env = dict(zip(self.handed_on, handed, strict=True))
        env[self.model.graph.inputs[1]] = target
        new_own = self.model.run_nodes(env, self.decoder_plan, ctx, own)
        return env[self.model.graph.outputs[0]], tuple(new_own) + tuple(rest)

    # the calls generate's loops make on a model
    def eval(self) -> EncoderDecoder:
        self.model.eval()
        return self

    @property
    def training(self) -> bool:
        return self.model.training

    def train(self, mode: bool = True) -> EncoderDecoder:
        self.model.train(mode)
        return self
