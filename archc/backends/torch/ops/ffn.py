"""Feed-forward layers (mlp, swiglu, geglu), linear, dropout and elementwise activations.

Weight names follow Llama's MLP (`gate_proj`, `up_proj`, `down_proj`); `mlp` has `up_proj` and
`down_proj`. `down_proj` is a residual output projection: GPT-2's scaled init (see `Init`).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from archc.backends.torch.context import Context
from archc.backends.torch.module import OpModule
from archc.backends.torch.registry import implements

ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
    "sigmoid": lambda x: x.sigmoid(),
    "tanh": lambda x: x.tanh(),
}


@implements("mlp")
class MLP(OpModule):
    """down(act(up(x)))."""

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        self.up_proj, self.down_proj = self.make_linear("up_proj"), self.make_linear("down_proj")
        self.act = ACTIVATIONS[p.act]

    def forward(self, x: Tensor, ctx: Context | None = None) -> Tensor:
        return self.down_proj(self.act(self.up_proj(x)))


@implements("swiglu", "geglu")
class GLU(OpModule):
    """down(act(gate(x)) · up(x)) with act = SiLU (swiglu) or GELU-tanh (geglu, as T5 v1.1/Gemma)."""

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        self.gate_proj, self.up_proj, self.down_proj = (self.make_linear(f"{n}_proj") for n in ("gate", "up", "down"))

    def forward(self, x: Tensor, ctx: Context | None = None) -> Tensor:
        if kernel := self.triton_kernels.get("glu"):  # the gating in one kernel (archc/backends/torch/kernels/glu)
            act_name = "silu" if self.op == "swiglu" else "gelu_tanh"
            return self.down_proj(kernel(self.gate_proj(x), self.up_proj(x), act_name))
        act = F.silu if self.op == "swiglu" else ACTIVATIONS["gelu_tanh"]
        return self.down_proj(act(self.gate_proj(x)) * self.up_proj(x))


@implements("swiglu_packed", "geglu_packed")
class PackedGLU(OpModule):
    """The GLU with `gate_up_proj` = [gate_proj; up_proj] (one matmul, then split): the same
    function as `GLU`, and the same checkpoint (the packed weight is saved and loaded as the two
    canonical ones, `OpModule`'s load hooks)."""

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        self.gate_up_proj, self.down_proj = self.make_linear("gate_up_proj"), self.make_linear("down_proj")

    def forward(self, x: Tensor, ctx: Context | None = None) -> Tensor:
        if kernel := self.triton_kernels.get("glu"):  # the packed output gated in place, never split
            act_name = "silu" if self.op == "swiglu_packed" else "gelu_tanh"
            return self.down_proj(kernel(self.gate_up_proj(x), None, act_name))
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        act = F.silu if self.op == "swiglu_packed" else ACTIVATIONS["gelu_tanh"]
        return self.down_proj(act(gate) * up)


@implements("linear")
class Linear(OpModule):
    """A dense projection (`proj.weight` [out, d], `proj.bias`)."""

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        self.proj = self.make_linear("proj")

    def forward(self, x: Tensor, ctx: Context | None = None) -> Tensor:
        return self.proj(x)


@implements("linear_act")
class LinearAct(OpModule):
    """act(proj(x)): `linear` and its activation as the `fuse_bias_act` pass fuses them (the same
    weights; eager PyTorch runs the two kernels it ran before, the fusion is the export's)."""

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        self.proj = self.make_linear("proj")
        self.act = ACTIVATIONS[p.act]

    def forward(self, x: Tensor, ctx: Context | None = None) -> Tensor:
        return self.act(self.proj(x))


@implements("dropout")
class Dropout(OpModule):
    def forward(self, x: Tensor, ctx: Context | None = None) -> Tensor:
        return F.dropout(x, self.params.p, self.training)


@implements("relu", "gelu", "silu", "sigmoid", "tanh")
class Activation(OpModule):
    def forward(self, x: Tensor, ctx: Context | None = None) -> Tensor:
        return ACTIVATIONS[self.op](x)
