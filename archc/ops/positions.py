"""Relative position schemes, passed to attention as `pos=`: rope, alibi, relative_bias.

These are components: they are never applied to a tensor on their own, their parameters are
validated here and the attention op that receives them accounts for their cost.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt

from archc.ir.types import TensorType
from archc.ops.registry import OpDef, Params, ShapeError, no_cost, register


class RopeParams(Params):
    theta: PositiveFloat = Field(10000.0, description="base of the rotation frequencies")
    scaling: Literal["none", "linear", "ntk", "llama3", "yarn"] = Field("none", description="context-extension scaling")
    factor: float = Field(1.0, ge=1.0, description="scaling factor for `linear`/`ntk`/`llama3`/`yarn`")
    low_freq_factor: PositiveFloat = Field(1.0, description="`llama3`: wavelengths above original_max_len / this "
                                                           "are divided by factor")
    high_freq_factor: PositiveFloat = Field(4.0, description="`llama3`: wavelengths below original_max_len / this "
                                                            "are kept; those between are blended")
    original_max_len: PositiveInt = Field(8192, description="`llama3`/`yarn`: the context length the model was "
                                                           "trained at")
    beta_fast: PositiveFloat = Field(32.0, description="`yarn`: frequencies turning more than this often over "
                                                       "original_max_len are kept (extrapolated)")
    beta_slow: PositiveFloat = Field(1.0, description="`yarn`: frequencies turning fewer times than this are "
                                                      "divided by factor (interpolated); those between are blended")
    attention_factor: PositiveFloat | None = Field(None, description="`yarn`: cos/sin multiplier (attention "
                                                                     "temperature); default 0.1·ln(factor) + 1")
    truncate: bool = Field(True, description="`yarn`: round the blend's dimension range outwards to integers")
    fraction: float = Field(1.0, gt=0.0, le=1.0, description="fraction of head_dim rotated (partial rotary)")


class AlibiParams(Params):
    pass


class RelativeBiasParams(Params):
    buckets: PositiveInt = Field(32, description="number of log-spaced relative-distance buckets (T5)")
    max_distance: PositiveInt = Field(128, description="distance beyond which all offsets share a bucket")


def _component_only(p: Params, ins: list[TensorType]) -> TensorType:
    raise ShapeError("position schemes are passed to attention as `pos=...`, not applied to a tensor",
                     "write `attention(x, heads=..., pos=rope(theta=10000))`", code="ARC0304")


for _name, _schema, _summary in (
    ("rope", RopeParams, "Rotary position embedding of queries and keys (Su et al.); linear / NTK / Llama 3 / YaRN scaling."),
    ("alibi", AlibiParams, "Attention with linear biases (Press et al.): per-head distance penalties, no weights."),
    ("relative_bias", RelativeBiasParams,
     "T5's learned bucketed relative position bias: buckets·heads parameters per attention op."),
):
    register(OpDef(name=_name, params=_schema, shape=_component_only, cost=no_cost, summary=_summary, inputs=(),
                   role="position"))
