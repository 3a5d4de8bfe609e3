"""RetNet's multi-scale retention (Sun et al., 2023), laid out as torchscale's MultiScaleRetention."""

from __future__ import annotations

from pydantic import Field, PositiveInt

from archc.ir.cost import Cost, CostCtx, StateTensor
from archc.ir.types import TensorType
from archc.ops.registry import OpDef, Params, divides, mixes_causally, register, width_of


class RetentionParams(Params):
    heads: PositiveInt = Field(description="retention heads, each with its own decay γ")
    value_factor: PositiveInt = Field(2, description="value / gate width = value_factor·d")
    chunk: PositiveInt = Field(64, description="chunk length of the chunkwise form")

    def value_width(self, d: int) -> int:
        """The value / gate width, value_factor·d."""
        return self.value_factor * d

    def head_dims_for(self, d: int) -> tuple[int, int]:
        """(key, value) width of one head: d/H and value_factor·d/H."""
        return d // self.heads, self.value_width(d) // self.heads


def _shape(p: RetentionParams, ins: list[TensorType]) -> TensorType:
    d = width_of(ins)
    divides(p.heads, d, "heads", "the width", arg="heads")
    return ins[0]


def _cost(p: RetentionParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """q, k d→d; v, g d→vf·d; out vf·d→d; no biases; the GroupNorm has no affine weights:
    params = 2d² + 3·vf·d². Per token (recurrent form) 4·H·dk·dv for the state update and read.
    State: S [H, d/H, vf·d/H] in fp32."""
    d = width_of(ins)
    dv = p.value_width(d)
    dk_h, dv_h = p.head_dims_for(d)
    params = 2 * d * d + 3 * d * dv
    flops = 2 * params + 4 * p.heads * dk_h * dv_h
    return Cost(params, flops, (d + 2 * d + 2 * dv + dv) * ctx.dtype_bytes)


def _state(p: RetentionParams, ins: list[TensorType]) -> tuple[StateTensor, ...]:
    """S [H, d/H, vf·d/H] in fp32."""
    return (StateTensor("kv", (p.heads, *p.head_dims_for(width_of(ins)))),)


register(OpDef("retention", RetentionParams, _shape, _cost,
               "RetNet multi-scale retention: per-head decays, xPos rotation, GroupNorm, swish gate; "
               "parallel, recurrent and chunkwise forms.", "retention", default_name="retention",
               role="mixer", causal=mixes_causally, state=_state, residual_weights=("out_proj.weight",),
               precision=(("[qkvg]_proj.*", "projection"), ("out_proj.*", "projection"))))
