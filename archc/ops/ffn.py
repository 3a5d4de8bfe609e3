"""Feed-forward layers: mlp (relu/gelu), the gated GLU variants swiglu and geglu, and linear.

These are also the expert networks of `moe(expert=swiglu(hidden=...))`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt

from archc.ir.cost import Cost, CostCtx
from archc.ir.types import TensorType, hidden
from archc.ops.registry import OpDef, Params, PruneAxis, hidden_to_hidden, linear, register, width_of

Activation = Literal["relu", "gelu", "gelu_tanh", "silu"]


class MLPParams(Params):
    hidden: PositiveInt = Field(description="inner width")
    act: Activation = Field("gelu", description="activation between the two projections")
    bias: bool = Field(True, description="biases on both projections")


class GLUParams(Params):
    hidden: PositiveInt = Field(description="inner width (of each of the gate and up projections)")
    bias: bool = Field(False, description="biases on the three projections")


def _mlp_cost(p: MLPParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """up d→hidden, down hidden→d: params = 2·d·hidden (+ hidden + d biases); saves x, pre-act, act."""
    d = width_of(ins)
    up, down = linear(d, p.hidden, p.bias), linear(p.hidden, d, p.bias)
    return Cost(params=up[0] + down[0], flops=up[1] + down[1], act_bytes=(d + 2 * p.hidden) * ctx.dtype_bytes)


def _glu_cost(p: GLUParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """gate and up d→hidden, down hidden→d: params = 3·d·hidden (Shazeer, 2020); saves x, gate, up, product."""
    d = width_of(ins)
    gate, up, down = linear(d, p.hidden, p.bias), linear(d, p.hidden, p.bias), linear(p.hidden, d, p.bias)
    return Cost(params=gate[0] + up[0] + down[0], flops=gate[1] + up[1] + down[1],
                act_bytes=(d + 3 * p.hidden) * ctx.dtype_bytes)


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


register(OpDef("mlp", MLPParams, hidden_to_hidden, _mlp_cost,
               "Two-layer feed-forward network with relu/gelu (Vaswani et al.; GPT-2, BERT).", "ffn",
               default_name="mlp", role="ffn", residual_weights=("down_proj.weight",),
               prune=lambda p, ins: (ffn_axis(p, gated=False),)))
register(OpDef("swiglu", GLUParams, hidden_to_hidden, _glu_cost,
               "SiLU-gated feed-forward, down(silu(gate(x)) * up(x)) (Shazeer; Llama).", "ffn",
               default_name="mlp", role="ffn", residual_weights=("down_proj.weight",),
               prune=lambda p, ins: (ffn_axis(p, gated=True),)))
register(OpDef("geglu", GLUParams, hidden_to_hidden, _glu_cost,
               "GELU-gated feed-forward, down(gelu(gate(x)) * up(x)) (Shazeer; T5 v1.1, Gemma).", "ffn",
               default_name="mlp", role="ffn", residual_weights=("down_proj.weight",),
               prune=lambda p, ins: (ffn_axis(p, gated=True),)))


class LinearParams(Params):
    out: PositiveInt = Field(description="output width")
    bias: bool = True


def _linear_shape(p: LinearParams, ins: list[TensorType]) -> TensorType:
    width_of(ins)
    return hidden(ins[0].shape[0], ins[0].shape[1], p.out)


def _linear_cost(p: LinearParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """params = d·out (+ out); FLOPs = 2·d·out; saves x."""
    d = width_of(ins)
    n, f = linear(d, p.out, p.bias)
    return Cost(params=n, flops=f, act_bytes=d * ctx.dtype_bytes)


register(OpDef("linear", LinearParams, _linear_shape, _linear_cost,
               "A dense projection to `out` features.", "ffn", default_name="proj", role="ffn"))


class DropoutParams(Params):
    p: float = Field(0.1, ge=0.0, lt=1.0, description="probability of zeroing an element in training")


def _elementwise_cost(p: Params, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """No parameters; a few FLOPs per element; saves its input (or mask)."""
    return Cost(flops=width_of(ins), act_bytes=width_of(ins) * ctx.dtype_bytes)


register(OpDef("dropout", DropoutParams, hidden_to_hidden, _elementwise_cost,
               "Dropout (identity at inference).", "misc", default_name="drop", role="misc"))


class NoParams(Params):
    pass


for _act in ("relu", "gelu", "silu", "sigmoid", "tanh"):
    register(OpDef(_act, NoParams, hidden_to_hidden, _elementwise_cost, f"Elementwise {_act}.", "misc",
                   role="activation"))
