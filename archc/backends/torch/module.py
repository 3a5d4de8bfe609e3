"""The module contract every op's torch module follows (DESIGN.md §3–4).

An `OpModule` is a plain `nn.Module` built from one IR node. Its parameters are the op record's
declared weights (`archc.ir.weights`): the module allocates them by name (`self.make_linear("q_proj")`,
`self.make_parameter("A_log")`), and the builder refuses a module whose parameters differ from the
declaration, so the cost model, compression and the fusion passes may rely on it. It has

* `forward(*inputs, ctx)`: the parallel form over a whole sequence (training, prefill);
* `init_state(batch, max_len, device, dtype)`: the per-sequence inference state as a tuple of
  tensors (empty for stateless ops) — KV caches, recurrent states, memories. It is built from the
  op record's declared state (`declared_state`, set by the builder): the module does not say
  what its state is, the record does, and `archc summary` and the ONNX backend read the same;
* `step(*inputs, state, ctx)`: the incremental form over the next `T_new ≥ 1` tokens given the
  state, returning the output and the new state. Stateless ops inherit `step = forward`.

State is a flat tuple of tensors, never Python lists or dicts, so that `step` exports with
`torch.export` and to ONNX as plain graph inputs and outputs. `state_names` names each tensor; the
model prefixes them with the node id.

`Context` carries what is shared by all ops of one call: the absolute positions of the tokens being
processed (so `step` at offset p sees positions p..p+T_new-1), the padding mask, optional token-type
ids, and the list that auxiliary losses (MoE balance, ACT ponder cost) are appended to.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor, nn

from archc.backends.torch.context import Context
from archc.backends.torch.init import Init
from archc.ir.cost import StateTensor
from archc.ir.types import TensorType
from archc.ir.weights import Weight
from archc.ops.registry import REGISTRY

State = tuple[Tensor, ...]


_STATE_DTYPES = {"fp32": torch.float32, "bool": torch.bool}


class OpModule(nn.Module):
    """Base class of the modules built from IR nodes; see the module docstring for the contract."""

    #: The op this module implements (set by `implements`: a class serving several ops gets one
    #: subclass per op, so that the module knows its op, and so its declared weights, when built).
    op: str = ""
    #: The id of the IR node it was built from (set by the builder).
    node_id: str = ""
    #: The op record's declared state for this node (set by the builder).
    declared_state: tuple[StateTensor, ...] = ()
    #: True when the exported multi-token `step` is a loop over the one-token step (RMT), so the
    #: ONNX exporter uses that one graph for one token too instead of exporting a second form.
    exported_step_loops_over_tokens: bool = False
    #: The Triton kernels its forward calls instead of torch forms, by family (`rms_norm`, `glu`;
    #: set by `kernels.select.use_kernels`; empty: the torch forms). Read-only at class level.
    triton_kernels: Mapping[str, Callable[..., Any]] = MappingProxyType({})

    @property
    def state_names(self) -> tuple[str, ...]:
        """Names of the state tensors, in `init_state` order."""
        return tuple(s.name for s in self.declared_state)

    def __init__(self, params: Any, in_types: list[TensorType], out_type: TensorType) -> None:
        super().__init__()
        self.params = params
        self.in_types = in_types
        self.out_type = out_type
        #: The op record's declared weights for these parameters and input types, by name.
        self.declared_weights: dict[str, Weight] = {
            w.name: w for w in REGISTRY[self.op].weights(params, in_types)} if self.op else {}
        if any(w.packs for w in self.declared_weights.values()):
            self.register_state_dict_post_hook(_unpack_state)
            self.register_load_state_dict_pre_hook(_pack_state)

    # -- allocating the declared weights -----------------------------------------------------

    def declared(self, name: str) -> Weight:
        """The declared weight `name`; a KeyError names what is declared."""
        if name not in self.declared_weights:
            raise KeyError(f"{self.op} declares no weight `{name}`; it declares {sorted(self.declared_weights)}")
        return self.declared_weights[name]

    def make_parameter(self, name: str) -> nn.Parameter:
        """A parameter of the declared shape (uninitialized: `init_weights` fills it)."""
        return nn.Parameter(torch.empty(self.declared(name).shape))

    def make_linear(self, name: str) -> nn.Linear:
        """`nn.Linear` for the declared `name.weight` [out, in], with a bias iff `name.bias` is declared."""
        out, d_in = self.declared(f"{name}.weight").shape
        return nn.Linear(d_in, out, bias=f"{name}.bias" in self.declared_weights)

    def make_conv1d(self, name: str, depthwise: bool = True, stride: int = 1) -> nn.Conv1d:
        """`nn.Conv1d` for the declared `name.weight` [out, in/groups, kernel] (depthwise: groups =
        channels), with a bias iff `name.bias` is declared."""
        out, per_group, kernel = self.declared(f"{name}.weight").shape
        groups = out if depthwise else 1
        return nn.Conv1d(per_group * groups, out, kernel, stride=stride, groups=groups,
                         bias=f"{name}.bias" in self.declared_weights)

    @property
    def residual_weights(self) -> tuple[str, ...]:
        """The weights of role `residual`: the residual branch's output projections (GPT-2's scaled
        init; zeroed, they make a pre-norm residual layer the identity)."""
        return tuple(w.name for w in self.declared_weights.values() if w.init == "residual")

    def undeclared(self) -> list[str]:
        """How the module's tensors differ from its declaration: one line per difference, empty
        when they agree (the builder checks this for every module it builds). A higher-order op's
        `body` is its body nodes' to declare."""
        held = {k: (tuple(v.shape), not isinstance(v, nn.Parameter)) for k, v in held_tensors(self).items() if not k.startswith("body.")}
        declared = {w.name: (w.shape, w.buffer) for w in self.declared_weights.values()}
        out = [f"`{k}` {held[k][0]} is not declared" for k in held.keys() - declared.keys()]
        out += [f"`{k}` {declared[k][0]} is declared but not held" for k in declared.keys() - held.keys()]
        out += [f"`{k}` is {held[k]}, declared {declared[k]}" for k in held.keys() & declared.keys()
                if held[k] != declared[k]]
        return sorted(out)

    def packed_weights(self) -> list[Weight]:
        """The declared weights a fusion packed (`Weight.packs`)."""
        return [w for w in self.declared_weights.values() if w.packs]

    def init_state(self, batch: int, max_len: int, device: torch.device, dtype: torch.dtype) -> State:
        """The declared state, allocated: [batch, *shape] with `max_len` bound, filled with the
        declared value (or broadcast from the named parameter)."""
        out = []
        for s in self.declared_state:
            shape = (batch, *s.sizes(max_len))
            dt = _STATE_DTYPES.get(s.dtype, dtype)
            if isinstance(s.fill, str):
                start = self.get_parameter(s.fill).detach().to(device=device, dtype=dt)
                out.append(start.expand(shape).contiguous())
            else:
                out.append(torch.full(shape, s.fill, dtype=dt, device=device))
        return tuple(out)

    def step(self, *inputs: Tensor, state: State, ctx: Context) -> tuple[Tensor, State]:
        return self(*inputs, ctx=ctx), state

    def export_identity(self) -> str:
        """What the module's traced graph depends on beyond its node's op, parameters, input
        types, ties and body, and its weights' values. The ONNX backend exports one graph for all
        nodes that agree on those and on this, binding each to its own weights, so a module that
        bakes anything else into its computation (a value drawn at build time, a table read from a
        file) must say it here. The default: nothing — every module's tensors are declared weights
        (`undeclared()` is empty), and its plain attributes are functions of its parameters and
        input types (tests/backends/torch/test_records.py checks that no module holds a tensor
        that is not a parameter or buffer)."""
        return ""

    def init_weights(self, init: Init) -> None:
        """Initialize this module's own parameters (default: `init.default` on every submodule)."""
        init.default(self)

    def extra_repr(self) -> str:
        text = ", ".join(f"{k}={v}" for k, v in self.params.model_dump().items() if not isinstance(v, dict))
        return text + "".join(f", kernel=triton:{name}" for name in self.triton_kernels)


def held_tensors(module: nn.Module) -> dict[str, Tensor]:
    """What a module holds as it holds it: its parameters and persistent buffers by name, packed
    weights packed (its `state_dict` would give the canonical layout)."""
    out: dict[str, Tensor] = dict(module.named_parameters())
    for k, b in module.named_buffers():
        owner, _, leaf = k.rpartition(".")
        if leaf not in module.get_submodule(owner)._non_persistent_buffers_set:
            out[k] = b
    return out


# -- checkpoints keep the canonical layout (gpt-fast's `wqkv` load hook, generalized) --------------


def _unpack_state(module: OpModule, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    """`state_dict()` of a fused module: each packed weight split back into the canonical weights
    it packs (`gate_up_proj.weight` → `gate_proj.weight`, `up_proj.weight`), so a checkpoint
    saved from any pipeline loads into any other."""
    _split_packed(module, state_dict, prefix)


def _split_packed(module: OpModule, tensors: dict[str, Any], prefix: str) -> None:
    for w in module.packed_weights():
        key = prefix + w.name
        if key not in tensors:
            continue
        whole = tensors.pop(key)
        for (name, _), part in zip(w.packs, whole.split([rows for _, rows in w.packs]), strict=True):
            tensors[prefix + name] = part


def canonical_layout(model: nn.Module, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """`tensors` keyed as `model`'s parameters (their gradients, say) in the canonical layout:
    every packed weight's tensor split into the weights it packs, as `state_dict` does."""
    out = dict(tensors)
    for prefix, mod in model.named_modules():
        if isinstance(mod, OpModule):
            _split_packed(mod, out, f"{prefix}." if prefix else "")
    return out


def _pack_state(module: OpModule, state_dict: dict[str, Any], prefix: str, local_metadata: Any, strict: bool,
                missing_keys: list[str], unexpected_keys: list[str], error_msgs: list[str]) -> None:
    """`load_state_dict` into a fused module: the canonical weights concatenated into the packed
    one (a checkpoint with the packed weight itself loads as it is)."""
    for w in module.packed_weights():
        names = [prefix + name for name, _ in w.packs]
        if prefix + w.name not in state_dict and all(n in state_dict for n in names):
            state_dict[prefix + w.name] = torch.cat([state_dict.pop(n) for n in names])

