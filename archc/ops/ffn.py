"""Feed-forward layers: mlp (relu/gelu), the gated GLU variants swiglu and geglu, linear (and
`linear_act`, a linear fused with its activation).

These are also the expert networks of `moe(expert=swiglu(hidden=...))`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PositiveInt

from archc.ir.cost import Cost, CostCtx
from archc.ir.sharding import Parallel, Sharding, Split, split_units
from archc.ir.types import TensorType, hidden
from archc.ir.weights import Weight, dense, pack_dense
from archc.ops.registry import OpDef, Params, PruneAxis, hidden_to_hidden, register, width_of

Activation = Literal["relu", "gelu", "gelu_tanh", "silu"]


class MLPParams(Params):
    hidden: PositiveInt = Field(description="inner width")
    act: Activation = Field("gelu", description="activation between the two projections")
    bias: bool = Field(True, description="biases on both projections")


class GLUParams(Params):
    hidden: PositiveInt = Field(description="inner width (of each of the gate and up projections)")
    bias: bool = Field(False, description="biases on the three projections")


def _mlp_cost(p: MLPParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """up d→hidden, down hidden→d: 2·2·d·hidden FLOPs; saves x, pre-act, act."""
    d = width_of(ins)
    return Cost(flops=4 * d * p.hidden, act_bytes=(d + 2 * p.hidden) * ctx.dtype_bytes)


def _glu_cost(p: GLUParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """gate and up d→hidden, down hidden→d (Shazeer, 2020): 3·2·d·hidden FLOPs; saves x, gate,
    up, product."""
    d = width_of(ins)
    return Cost(flops=6 * d * p.hidden, act_bytes=(d + 3 * p.hidden) * ctx.dtype_bytes)


def ffn_weights(p: MLPParams | GLUParams, ins: list[TensorType], gated: bool,
                cls: str = "ffn") -> tuple[Weight, ...]:
    """Llama's MLP layout: `gate_proj` (gated only) and `up_proj` d→hidden, `down_proj` hidden→d
    (GPT-2's scaled residual init); hidden units are cut as rows of gate/up, columns of down.
    `cls` is `expert` for a MoE's experts."""
    d = width_of(ins)
    gate = dense("gate_proj", d, p.hidden, cls, p.bias, cuts_out=("ffn",)) if gated else ()
    return (gate + dense("up_proj", d, p.hidden, cls, p.bias, cuts_out=("ffn",))
            + dense("down_proj", p.hidden, d, cls, p.bias, "residual", cuts_in=("ffn",)))


def ffn_axis(p: MLPParams | GLUParams, gated: bool) -> PruneAxis:
    """Hidden units: row j of the up (and gate) projection and column j of the down projection;
    zeroed, unit j adds act(0)·0 = 0 — the masked model equals the pruned one exactly."""

    def slices(j: int) -> dict:
        out = {"up_proj.weight": (0, [j]), "down_proj.weight": (1, [j])}
        if gated:
            out["gate_proj.weight"] = (0, [j])
        if p.bias:
            out["up_proj.bias"] = (0, [j])
            if gated:
                out["gate_proj.bias"] = (0, [j])
        return out

    return PruneAxis("ffn", p.hidden, slices, lambda kept: {"hidden": len(kept)}, lambda j: ("down_proj", [j]))


def ffn_sharding(weights: tuple[Weight, ...], hidden: int, degree: int, what: str) -> Sharding:
    """Megatron's MLP split: gate/up projections column-parallel (rows; a packed gate_up_proj by
    its two parts), down_proj row-parallel (columns), its bias replicated and added once after
    the all-reduce. Output: down_proj's partial sums. Names may carry a prefix (`experts.3.`)."""
    split_units("hidden units", hidden, degree, what)
    splits: dict[str, Split] = {}
    for w in weights:
        layer, _, leaf = w.name.rpartition(".")
        role = layer.rsplit(".", 1)[-1]
        if role in ("gate_proj", "up_proj"):
            splits[w.name] = Split(0)
        elif role == "gate_up_proj":
            splits[w.name] = Split(0, (hidden, hidden))
        elif role == "down_proj" and leaf == "weight":
            splits[w.name] = Split(1)
    after = tuple(w.name for w in weights if w.name.endswith("down_proj.bias"))
    return Sharding("ffn", hidden, degree, splits, after_reduce=after)


def ffn_parallel(gated: bool, packed: bool = False) -> Any:
    """The parallelism rule of the dense FFNs: `ffn_sharding`; a split sequence needs nothing."""
    def rule(p: Any, ins: list[TensorType]) -> Parallel:
        ws = _packed_weights(p, ins) if packed else ffn_weights(p, ins, gated=gated)
        return Parallel(tensor=lambda t: ffn_sharding(ws, p.hidden, t, "the FFN"), context="pointwise")
    return rule


register(OpDef(name="mlp", params=MLPParams, shape=hidden_to_hidden, cost=_mlp_cost,
               summary="Two-layer feed-forward network with relu/gelu (Vaswani et al.; GPT-2, BERT).",
               default_name="mlp", role="ffn", weights=lambda p, ins: ffn_weights(p, ins, gated=False),
               prune=lambda p, ins: (ffn_axis(p, gated=False),), parallel=ffn_parallel(gated=False)))
register(OpDef(name="swiglu", params=GLUParams, shape=hidden_to_hidden, cost=_glu_cost,
               summary="SiLU-gated feed-forward, down(silu(gate(x)) * up(x)) (Shazeer; Llama).",
               default_name="mlp", role="ffn", weights=lambda p, ins: ffn_weights(p, ins, gated=True),
               prune=lambda p, ins: (ffn_axis(p, gated=True),), parallel=ffn_parallel(gated=True)))
register(OpDef(name="geglu", params=GLUParams, shape=hidden_to_hidden, cost=_glu_cost,
               summary="GELU-gated feed-forward, down(gelu(gate(x)) * up(x)) (Shazeer; T5 v1.1, Gemma).",
               default_name="mlp", role="ffn", weights=lambda p, ins: ffn_weights(p, ins, gated=True),
               prune=lambda p, ins: (ffn_axis(p, gated=True),), parallel=ffn_parallel(gated=True)))


def _packed_weights(p: GLUParams, ins: list[TensorType]) -> tuple[Weight, ...]:
    """`gate_up_proj` d→2·hidden, the canonical gate_proj and up_proj packed along the rows
    (gate first), then `down_proj` (the `pack_gate_up` pass makes these ops; checkpoints keep
    the canonical layout)."""
    return pack_dense(ffn_weights(p, ins, gated=True), "gate_up_proj", ("gate_proj", "up_proj"))


for _op in ("swiglu", "geglu"):
    register(OpDef(name=f"{_op}_packed", params=GLUParams, shape=hidden_to_hidden, cost=_glu_cost,
                   summary=f"`{_op}` with its gate and up projections packed into one matmul (made by the "
                   "`pack_gate_up` pass).", default_name="mlp", role="ffn",
                   weights=_packed_weights, fuses=(_op,), parallel=ffn_parallel(gated=True, packed=True)))


class LinearParams(Params):
    out: PositiveInt = Field(description="output width")
    bias: bool = True


def _linear_shape(p: LinearParams, ins: list[TensorType]) -> TensorType:
    width_of(ins)
    return hidden(ins[0].shape[0], ins[0].shape[1], p.out)


def _linear_cost(p: LinearParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """FLOPs = 2·d·out; saves x."""
    d = width_of(ins)
    return Cost(flops=2 * d * p.out, act_bytes=d * ctx.dtype_bytes)


register(OpDef(name="linear", params=LinearParams, shape=_linear_shape, cost=_linear_cost,
               summary="A dense projection to `out` features.", default_name="proj", role="ffn",
               weights=lambda p, ins: dense("proj", width_of(ins), p.out, "ffn", p.bias)))


LinearActivation = Literal["relu", "gelu", "silu", "sigmoid", "tanh"]


class LinearActParams(LinearParams):
    act: LinearActivation = Field(description="the activation applied to the projection")


register(OpDef(name="linear_act", params=LinearActParams, shape=_linear_shape, cost=_linear_cost,
               summary="`linear` and the activation that reads it in one op, bias added in the activation's kernel "
               "at `--target ort` (made by the `fuse_bias_act` pass).", default_name="proj",
               role="ffn", weights=lambda p, ins: dense("proj", width_of(ins), p.out, "ffn", p.bias),
               fuses=("linear",)))


class DropoutParams(Params):
    p: float = Field(0.1, ge=0.0, lt=1.0, description="probability of zeroing an element in training")


def _elementwise_cost(p: Params, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """No parameters; a few FLOPs per element; saves its input (or mask)."""
    return Cost(flops=width_of(ins), act_bytes=width_of(ins) * ctx.dtype_bytes)


register(OpDef(name="dropout", params=DropoutParams, shape=hidden_to_hidden, cost=_elementwise_cost,
               summary="Dropout (identity at inference).", default_name="drop", role="misc"))


class NoParams(Params):
    pass


for _act in ("relu", "gelu", "silu", "sigmoid", "tanh"):
    register(OpDef(name=_act, params=NoParams, shape=hidden_to_hidden, cost=_elementwise_cost, summary=f"Elementwise {_act}.",
                   role="activation"))
