"""The IR graph as a torch module: an interpreter over the nodes, as `torch.fx.Interpreter`.

`GraphModule` runs one `Graph` (the model's, or the body of a higher-order op); `ArchModel` adds
the Hugging Face-style surface users know (`input_ids`, `attention_mask`, `labels` → `loss`,
`logits`), the flat inference state, `step` and `generate`.

Why an interpreter and not generated code: the node loop is traced away by `torch.compile` and
`torch.export` (its trip count is the number of nodes, fixed by the spec), its overhead in eager
mode is ~1 µs per node against milliseconds of work per layer, and an error inside an op can be
reported at the node (and so at the `.arch` line) that made it.

Parameter names follow node ids: the node `layers.3.attn` owns `layers.3.attn.q_proj.weight`.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from archc.backends.torch.context import Context
from archc.backends.torch.init import Init
from archc.backends.torch.module import OpModule, State
from archc.backends.torch.registry import BuildCtx, modules
from archc.ir.graph import Graph, Node
from archc.ir.types import TensorType, TupleType, ValueType
from archc.ops.registry import REGISTRY
from archc.passes.facts import count_role, head_loss, is_causal, node_state

#: Label value ignored by the losses (the Hugging Face / PyTorch convention).
IGNORE_INDEX = -100


class BackendError(Exception):
    """An op of the spec has no torch module (yet); carries the node for a diagnostic."""

    def __init__(self, node: Node, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.node = node
        self.message = message
        self.hint = hint


def _put(root: nn.Module, path: str, module: nn.Module) -> None:
    """Register `module` at dotted `path` under `root`, creating plain containers on the way."""
    *scopes, leaf = path.split(".")
    parent = root
    for s in scopes:
        child = parent._modules.get(s)
        if child is None:
            child = nn.Module()
            parent.add_module(s, child)
        parent = child
    parent.add_module(leaf, module)


def build_op(op: str, params: dict[str, Any], in_types: list[TensorType], out_type: TensorType,
             bctx: BuildCtx | None = None) -> OpModule:
    """The module of one op, with the record's declared state attached; a module whose tensors
    differ from the record's declared weights is an internal error, refused here."""
    cls = modules()[op]
    record = REGISTRY[op]
    p = record.params(**params)
    mod = cls.build(p, in_types, out_type, bctx) if hasattr(cls, "build") else cls(p, in_types, out_type)
    differences = mod.undeclared()
    if differences:
        raise AssertionError(f"the torch module of `{op}` differs from its declared weights: "
                             + "; ".join(differences))
    mod.declared_state = (node_state(bctx.graph, bctx.node) if bctx is not None and bctx.node.op == op
                          else record.state(p, in_types))
    return mod


def _time_axis(t: ValueType) -> object:
    """The sequence dimension of a [batch, seq, ...] type (None for lower ranks; a node with
    several outputs: its first's)."""
    if isinstance(t, TupleType):
        t = t.items[0]
    return t.shape[1] if len(t.shape) >= 2 else None


class GraphModule(nn.Module):
    """Runs one `Graph`: its op nodes are submodules at their id paths; `add`/`mul` run inline."""

    def __init__(self, graph: Graph) -> None:
        super().__init__()
        self.graph = graph
        #: (node id, module or None, input ids, op, on the input's time axis) in topological order.
        self._plan: list[tuple[str, OpModule | None, tuple[str, ...], str, bool]] = []
        #: node id -> (the torch lowering, params) of the arithmetic nodes, run inline.
        self._inline: dict[str, tuple[Any, dict[str, Any]]] = {}
        #: (module, first state index, number of state tensors) for stateful modules.
        self._stateful: list[tuple[OpModule, int, int]] = []
        names: list[str] = []
        time_axis = _time_axis(graph.nodes[graph.inputs[0]].type) if graph.inputs else None
        for node in graph.nodes.values():
            kind = REGISTRY[node.op].kind
            if kind == "input":
                continue
            mod = None
            if kind == "arith":  # run inline by its lowering (archc/backends/torch/ops/arith.py)
                fn = modules().get(node.op)
                if fn is None:
                    raise BackendError(node, f"arithmetic op `{node.op}` has no torch lowering")
                self._inline[node.id] = (fn, node.params)
            else:
                in_types = [graph.nodes[i].type for i in node.inputs]
                bctx = BuildCtx(node, graph, lambda op, prm, ts: build_op(op, prm, ts, ts[0]), GraphModule)
                if node.op not in modules():
                    raise BackendError(node, f"op `{node.op}` has no PyTorch module yet",
                                       "see docs/backends.md for the ops the torch backend builds")
                mod = build_op(node.op, node.params, in_types, node.type, bctx)
                mod.node_id = node.id
                _put(self, node.id, mod)
                n_state = len(mod.state_names)
                if n_state:
                    self._stateful.append((mod, len(names), n_state))
                    names.extend(f"{node.id}.{s}" for s in mod.state_names)
            first = graph.nodes[node.inputs[0]].type if node.inputs else None
            same_axis = first is None or _time_axis(first) in (None, time_axis)
            self._plan.append((node.id, mod, node.inputs, node.op, same_axis))
        self.state_names: tuple[str, ...] = tuple(names)
        #: True when every state tensor is a position-indexed KV cache, so entries written past the
        #: current position are masked out and later overwritten (free rollback).
        #: Recompute each layer's activations in backward instead of storing them.
        self.gradient_checkpointing = False
        self.positional_state = all(getattr(m, "positional_state", False) for m, _, _ in self._stateful)

    def op_modules(self) -> list[tuple[str, OpModule]]:
        return [(nid, m) for nid, m, _, _, _ in self._plan if m is not None]

    def run(self, inputs: list[Tensor], ctx: Context, state: State | None = None) -> tuple[list[Tensor], State]:
        env: dict[str, Tensor] = dict(zip(self.graph.inputs, inputs, strict=True))
        new_state = self.run_nodes(env, self._plan, ctx, state)
        return [env[o] for o in self.graph.outputs], new_state

    def run_nodes(self, env: dict[str, Tensor], plan: list, ctx: Context, state: State | None = None) -> State:
        """Run the entries `plan` (a slice of `_plan`, in order) on the values in `env`, adding
        theirs to it; returns the new state. A pipeline stage runs its layers' slice this way."""
        new_state: list[Tensor] = []
        pos = 0
        own_ctx = ctx
        other: Context | None = None  # for ops on another time axis (after Perceiver's latents)
        for nid, mod, ins, op, same_axis in plan:
            args = [env[i] for i in ins]
            if not same_axis:
                if other is None:
                    other = ctx.on_new_axis(args[0].shape[1], args[0].device)
                ctx = other
            else:
                ctx = own_ctx
            if mod is None:
                fn, params = self._inline[nid]
                env[nid] = fn(args, params)
            elif state is not None and mod.state_names:
                n = len(mod.state_names)
                env[nid], s = mod.step(*args, state=tuple(state[pos:pos + n]), ctx=ctx)
                new_state.extend(s)
                pos += n
            elif state is not None:
                env[nid], _ = mod.step(*args, state=(), ctx=ctx)
            elif self.gradient_checkpointing and self.training and REGISTRY[op].kind == "layer":
                env[nid] = checkpoint(mod, *args, ctx=ctx, use_reentrant=False)
            else:
                env[nid] = mod(*args, ctx=ctx)
        return tuple(new_state)

    def init_state(self, batch: int, max_len: int, device: torch.device, dtype: torch.dtype) -> State:
        out: list[Tensor] = []
        for mod, _, _ in self._stateful:
            out.extend(mod.init_state(batch, max_len, device, dtype))
        return tuple(out)

    def init_weights(self, init: Init) -> None:
        for _, mod in self.op_modules():
            mod.init_weights(init)


@dataclass
class ModelOutput:
    """What `ArchModel.forward` returns (field names as in transformers' `CausalLMOutput`, and
    indexed as it is: by name, or by position over the fields that are set, the loss first — what
    `transformers.Trainer` reads as `outputs[0]`)."""

    #: None when the fused linear + cross-entropy computed the loss without them (`skip_logits`)
    logits: Tensor | None
    loss: Tensor | None = None
    aux_loss: Tensor | None = None

    def to_tuple(self) -> tuple[Tensor, ...]:
        return tuple(t for t in (self.loss, self.logits, self.aux_loss) if t is not None)

    def __getitem__(self, key: str | int) -> Any:
        return self.to_tuple()[key] if isinstance(key, int) else getattr(self, key)


# make the output a pytree node, so torch.export / torch.compile see through it
with contextlib.suppress(AttributeError, ValueError):  # older torch, or re-registration on reload
    torch.export.register_dataclass(ModelOutput)


class ArchModel(GraphModule):
    """A compiled spec: a trainable `nn.Module` with the Hugging Face calling convention.

    `forward(input_ids, attention_mask=None, labels=None, token_type_ids=None, **other_inputs)`
    returns a `ModelOutput(logits, loss, aux_loss)`. For an `lm_head` model, labels are the input
    ids (shifted inside, as `LlamaForCausalLM`, when the model is causal; unshifted, masked-LM
    style, when it is bidirectional); for `cls_head` one class per sequence (`classes = 1`:
    regression, MSE); for `token_cls_head` one per token. `-100` labels are ignored. Auxiliary
    losses of the ops (MoE balance, ACT ponder cost) are in `aux_loss` and added to `loss`.
    """

    def __init__(self, graph: Graph) -> None:
        super().__init__(graph)
        #: The optimization pipeline `graph` went through, and the graph before it (set by
        #: `optimize`): a model of any level can be rebuilt at another from its state dict.
        self.pipeline = "O0"
        self.canonical_graph = graph
        self.input_names = list(graph.inputs)
        self.head = graph.nodes[graph.outputs[0]].op
        #: The loss the head implies and whether the model is causal: facts of the op records.
        self.head_loss = head_loss(graph)
        self.causal = is_causal(graph)
        self._tie_weights()

    # -- construction ------------------------------------------------------------------------

    def _tie_weights(self) -> None:
        """Share the weights the IR's ties name ({own parameter: "node.parameter"})."""
        for nid, mod in self.op_modules():
            for param, target in self.graph.nodes[nid].ties.items():
                owner, owner_param = target.rsplit(".", 1)
                mod.tie(param, self.get_submodule(owner), owner_param)

    def initialize(self, seed: int = 0) -> ArchModel:
        """Initialize every parameter from `seed` (documented per op; see `Init`)."""
        n_layers = count_role(self.graph, "mixer")
        counts = Counter(n.op for n in self.graph.walk())
        super().init_weights(Init(seed, n_layers=n_layers, op_counts=counts))
        return self

    # -- forward -----------------------------------------------------------------------------

    def _inputs(self, input_ids: Tensor | None, named: dict[str, Tensor]) -> list[Tensor]:
        if input_ids is not None:
            named = {self.input_names[0]: input_ids, **named}
        missing = [n for n in self.input_names if n not in named]
        if missing:
            raise TypeError(f"{self.graph.name} takes inputs {self.input_names}; missing {missing}")
        extra = set(named) - set(self.input_names)
        if extra:
            raise TypeError(f"unexpected inputs {sorted(extra)}; {self.graph.name} takes {self.input_names}")
        return [named[n] for n in self.input_names]

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                labels: Tensor | None = None, token_type_ids: Tensor | None = None,
                num_items_in_batch: Tensor | int | None = None, positions: Tensor | None = None,
                skip_logits: bool | None = None, **inputs: Tensor) -> ModelOutput:
        """`num_items_in_batch` (as transformers' `Trainer` passes it under gradient accumulation):
        the scored tokens of the whole accumulated batch; the loss is then this micro-batch's sum
        over it, so the accumulated gradient is the mean over every scored token. `positions`:
        the tokens' absolute positions [T] when they are not 0..T−1 (a context-parallel rank's
        chunk of the sequence).

        `skip_logits` (Liger-Kernel's convention in transformers): with the fused linear +
        cross-entropy kernel bound to the head (`kernels="triton"`/`"auto"` on CUDA), a training
        forward with labels computes the loss without forming the [tokens, vocab] logits, and
        `logits` is None; `skip_logits=False` forms them (and the loss the usual way)."""
        xs = self._inputs(input_ids, inputs)
        t = xs[0].shape[1]
        mask = attention_mask.bool() if attention_mask is not None else None
        ctx = Context(torch.arange(t, device=xs[0].device) if positions is None else positions, mask, token_type_ids)
        head = self._fused_loss_head() if labels is not None and skip_logits is not False and self.training \
            and torch.is_grad_enabled() else None
        if head is not None:
            loss = self._fused_loss(xs, ctx, head, labels, num_items_in_batch)
            aux = torch.stack(ctx.aux_losses).sum() if ctx.aux_losses else None
            return ModelOutput(logits=None, loss=loss if aux is None else loss + aux, aux_loss=aux)
        (logits,), _ = self.run(xs, ctx)
        aux = torch.stack(ctx.aux_losses).sum() if ctx.aux_losses else None
        loss = None
        if labels is not None:
            loss = self.loss(logits, labels, num_items_in_batch, input_mask=attention_mask)
            if aux is not None:
                loss = loss + aux
        return ModelOutput(logits=logits, loss=loss, aux_loss=aux)

    @property
    def head_module(self) -> OpModule:
        """The module of the graph's output node (the head: `lm_head`, `crf_head`, …), whose
        loss and decoding (a CRF's `nll`, `viterbi`) `loss` and `tag` call."""
        nid = self.graph.outputs[0]
        return next(m for i, m in self.op_modules() if i == nid)

    def _fused_loss_head(self) -> tuple[OpModule, str] | None:
        """The causal-LM head whose fused linear + cross-entropy kernel is bound, and its input's
        node id; None where the loss runs over the logits."""
        nid, mod, ins, op, _ = self._plan[-1]
        if (op != "lm_head" or mod is None or self.graph.outputs != [nid] or self.head_loss != "lm"
                or "cross_entropy" not in mod.triton_kernels):
            return None
        return mod, ins[0]

    def _fused_loss(self, xs: list[Tensor], ctx: Context, head: tuple[OpModule, str], labels: Tensor,
                    num_items: Tensor | int | None) -> Tensor:
        """`loss(head(hidden), labels, num_items)` without the logits (see `forward`)."""
        mod, hidden_id = head
        env: dict[str, Tensor] = dict(zip(self.graph.inputs, xs, strict=True))
        self.run_nodes(env, self._plan[:-1], ctx)
        hidden = env[hidden_id]
        if self.causal:
            labels = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
        labels = labels.reshape(-1)
        total = mod.triton_kernels["cross_entropy"](hidden.reshape(-1, hidden.shape[-1]), mod.head_weight(),
                                                          mod.bias, labels, IGNORE_INDEX, mod.params.softcap)
        if num_items is None:
            num_items = (labels != IGNORE_INDEX).sum().clamp(min=1)
        return total / num_items

    def loss(self, logits: Tensor, labels: Tensor, num_items: Tensor | int | None = None,
             shifted: bool = False, input_mask: Tensor | None = None) -> Tensor:
        """The task loss of this model's head (see the class docstring); with `num_items`, a
        classification loss is summed and divided by it (see `forward`). `shifted`: a causal
        LM's labels are already each position's next token (a chunk of a longer sequence).
        `input_mask` [B, T]: the frames a CTC head's sequences have (its attention mask)."""
        if self.head_loss is None:
            raise ValueError(f"labels given, but the model's output `{self.head}` has no loss; "
                             "end the spec with lm_head, cls_head, token_cls_head, crf_head or ctc_head")
        if self.head_loss == "regression":
            return F.mse_loss(logits.squeeze(-1).float(), labels.float())
        if self.head_loss == "ctc":
            return ctc_loss(logits, labels, input_mask, num_items)
        if self.head_loss == "crf":  # per labelled token, as the token classifiers' cross-entropy
            mask = labels != IGNORE_INDEX
            total = self.head_module.nll(logits, labels, mask).sum()
            return total / (num_items if num_items is not None else mask.sum().clamp(min=1))
        if self.head_loss == "lm" and self.causal and not shifted:
            # shift the labels, not the logits: slicing [B, T, V] logits would copy them (as
            # transformers' ForCausalLMLoss, the last position gets the ignored label)
            labels = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
        flat = logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1)
        if num_items is None:
            return F.cross_entropy(*flat, ignore_index=IGNORE_INDEX)
        return F.cross_entropy(*flat, ignore_index=IGNORE_INDEX, reduction="sum") / num_items

    @torch.no_grad()
    def tag(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None, **inputs: Tensor) -> Tensor:
        """Each token's tag [B, T] for a tagging model (`token_cls_head`, `crf_head`): the CRF's
        best sequence (Viterbi) over the unpadded tokens, else each token's argmax; −100 at padding."""
        if self.head_loss not in ("token_classification", "crf"):
            raise ValueError(f"tag() takes a tagging model (token_cls_head or crf_head); this one ends in {self.head}")
        emissions = self(input_ids, attention_mask=attention_mask, **inputs).logits
        mask = attention_mask.bool() if attention_mask is not None else torch.ones(
            emissions.shape[:2], dtype=torch.bool, device=emissions.device)
        if self.head_loss == "crf":
            return self.head_module.viterbi(emissions, mask)
        return emissions.argmax(-1).masked_fill(~mask, IGNORE_INDEX)

    @torch.no_grad()
    def transcribe(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                   **inputs: Tensor) -> list[list[int]]:
        """A CTC model's output sequences (`ctc_head`), greedy best path: each frame's argmax,
        repeats merged, blanks (0) dropped; symbols are 1 … classes."""
        if self.head_loss != "ctc":
            raise ValueError(f"transcribe() takes a CTC model (ctc_head); this one ends in {self.head}")
        best = self(input_ids, attention_mask=attention_mask, **inputs).logits.argmax(-1)
        lengths = attention_mask.sum(-1).tolist() if attention_mask is not None else [best.shape[1]] * len(best)
        out = []
        for row, n in zip(best.tolist(), lengths, strict=True):
            merged = [s for i, s in enumerate(row[:n]) if i == 0 or s != row[i - 1]]
            out.append([s for s in merged if s != 0])
        return out

    # -- incremental decoding ----------------------------------------------------------------

    def init_state(self, batch: int, max_len: int, device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> State:
        """Fresh inference state for `batch` sequences of up to `max_len` tokens: a flat tuple
        named by `state_names` (e.g. `layers.0.attn.key`), preallocated."""
        p = next(self.parameters())
        return super().init_state(batch, max_len, torch.device(device) if device else p.device, dtype or p.dtype)

    def step(self, input_ids: Tensor, pos: Tensor | int, state: State) -> tuple[Tensor, State]:
        """Logits for `input_ids` [B, T_new] at positions pos..pos+T_new-1 given the state of the
        first `pos` tokens; returns the logits and the new state. A prefill is one step from
        `init_state` at pos 0; decoding is steps of one token."""
        if not self.causal:
            raise ValueError(f"{self.graph.name} is bidirectional: it has no incremental form")
        if len(self.input_names) != 1:
            raise ValueError(f"{self.graph.name} takes several inputs; step decodes single-input models")
        pos_t = torch.as_tensor(pos, device=input_ids.device).reshape(())
        ctx = Context(pos_t + torch.arange(input_ids.shape[1], device=input_ids.device), decoding=True)
        (logits,), new_state = self.run([input_ids], ctx, state)
        return logits, new_state

    # -- conveniences ------------------------------------------------------------------------

    def out_type_vocab(self) -> int:
        """Width of the output (the vocabulary of an `lm_head` model)."""
        return int(self.graph.nodes[self.graph.outputs[0]].type.width)

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """Parameters (shared ones once), as transformers' `num_parameters` counts them: only
        those that require grad, without the token and position embedding tables (a tied
        `lm_head`'s weight is the embedding's)."""
        from archc.ops.registry import REGISTRY

        skip: set[int] = set()
        if exclude_embeddings:
            skip = {id(p) for nid, mod in self.op_modules() if REGISTRY[self.graph.nodes[nid].op].role == "embedding"
                    for p in mod.parameters()}
        return sum(p.numel() for p in self.parameters()
                   if id(p) not in skip and (p.requires_grad or not only_trainable))

    def generate(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                 decoder_input_ids: Tensor | None = None, decoder_start_token_id: int = 0, **kwargs: Any) -> Tensor:
        """Continue `input_ids` (`generate.generate`'s options: greedy, sampling, beam search, …).
        An encoder–decoder (two inputs, as T5) encodes `input_ids` [B, S] (padding in
        `attention_mask`) once and decodes the target from `decoder_input_ids` (default one
        `decoder_start_token_id` per row, T5's pad 0), returning the target ids as transformers'
        `generate` does."""
        from archc.backends.torch.generate import generate

        if len(self.input_names) == 2:
            from archc.backends.torch.seq2seq import EncoderDecoder

            if decoder_input_ids is None:
                decoder_input_ids = torch.full((input_ids.shape[0], 1), decoder_start_token_id, dtype=torch.long,
                                               device=input_ids.device)
            if kwargs.get("compile") or kwargs.get("draft") is not None:
                raise ValueError("an encoder–decoder decodes with the eager step: compile and draft are for "
                                 "single-input language models")
            stepper = EncoderDecoder(self).encode(input_ids, attention_mask)
            return generate(stepper, decoder_input_ids, **kwargs)  # type: ignore[arg-type]
        if attention_mask is not None or decoder_input_ids is not None:
            raise TypeError("attention_mask and decoder_input_ids are for encoder–decoder models")
        return generate(self, input_ids, **kwargs)


def ctc_loss(logits: Tensor, labels: Tensor, input_mask: Tensor | None, num_items: Tensor | int | None) -> Tensor:
    """CTC's negative log-likelihood (PyTorch's `ctc_loss`, blank 0) per label symbol: logits
    [B, T, classes + 1]; labels [B, S] of symbols 1 … classes, −100 after each sequence's end;
    `input_mask` [B, T] the frames each sequence has (all if None). A sequence no alignment fits
    (more symbols than frames allow) adds 0 (`zero_infinity`)."""
    log_probs = F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1).transpose(0, 1)
    keep = labels != IGNORE_INDEX
    target_lengths = keep.sum(-1)
    input_lengths = input_mask.sum(-1) if input_mask is not None else torch.full_like(target_lengths, logits.shape[1])
    total = F.ctc_loss(log_probs, labels.clamp(min=0), input_lengths, target_lengths, blank=0, reduction="sum",
                       zero_infinity=True)
    return total / (num_items if num_items is not None else keep.sum().clamp(min=1))

