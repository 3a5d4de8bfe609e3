"""Direct ONNX lowerings: how an IR node becomes ONNX nodes without tracing its torch module.

The ONNX backend's entries in the lowering table are `Lowering`s: `emit(ctx)` writes the node's
ONNX nodes through a `LowerCtx` and returns the value that stands for it (a list for a node with
several outputs), and `refuse(ctx)` says why this node cannot be lowered so (a sentence), or
nothing. Two tables hold them (`archc.backends.lowering`, keyed by backend):

* `onnx` (`archc/backends/onnx/ops/<family>.py`): standard ONNX operators, used by every target
  (the IR's arithmetic);
* `ort` (`archc/backends/onnx/ort/<family>.py`): onnxruntime's fused contrib operators
  (`GroupQueryAttention`, `SkipSimplifiedLayerNormalization`, …), used by `--target ort`.

A node whose op has no entry, or whose entry refuses it, is lowered by tracing its torch module
(`units.py`), which stays the one implementation of the numerics every direct lowering is
checked against (`archc export --check`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from archc.backends.lowering import register_lowering
from archc.ir.graph import Node

Mode = Literal["decode", "prefill", "forward"]

#: `--target`: `ort` uses onnxruntime's fused operators where a node's math is theirs; `onnx`
#: keeps to standard ONNX operators (other runtimes).
TARGETS = ("ort", "onnx")
#: The contrib operators' domain and version.
MS_DOMAIN = "com.microsoft"


@dataclass
class LowerCtx:
    """What a direct lowering may use: the node, the ONNX values of its inputs and of its state,
    the names its outputs must take, and the assembler's services (weights by state_dict key,
    shared constants, the attention mask's lengths)."""

    node: Node
    ins: list[Any]
    #: the name the node's (first) value must take
    out: str
    mode: Mode
    #: the node's state as it comes in (a KV cache holding the tokens so far, not padded)
    past: list[str]
    #: the names the node's new state must take
    present: list[str]
    #: the assembler (weights, constants, opsets) and the scope being filled
    services: Any
    scope: Any = None
    made: list[str] = field(default_factory=list)  # the ONNX op types emitted (for the report)
    #: the new tokens' positions (int64 [seq]; a decoder's `attention_mask` length minus seq onward)
    positions: str = ""

    @property
    def params(self) -> dict[str, Any]:
        return self.node.params

    def emit(self, op: str, inputs: list[str], outputs: int | list[str] = 1, domain: str = "",
             widths: list[int | None] | None = None, **attrs: Any) -> list[str]:
        """One ONNX node; returns its outputs' names (given, or made under the node's name).
        `widths` types the outputs of a contrib operator ([batch, seq, width] floats)."""
        return self.services.emit(self, op, inputs, outputs, domain, widths, **attrs)

    def weight(self, name: str) -> str:
        """The initializer of the node's module tensor `name` (stored once, by state_dict key)."""
        return self.services.weight_key(self.node, name)

    def linear(self, x: str, layer: str, out: str | None = None) -> str:
        """`layer`(x) for a declared dense layer `layer` (`layer.weight` [out, in], `layer.bias`
        if declared): `Transpose` of the weight (onnxruntime folds it at load; the quantizers
        find the MatMul's weight through it, as in traced graphs), `MatMul`, `Add`. `out` names
        the result (the node's value, for its last layer)."""
        bias = self.bias(layer)
        y = self.matmul(x, layer, out if not bias else None)
        if bias:
            (y,) = self.emit("Add", [y, bias], [out] if out else 1)
        return y

    def matmul(self, x: str, layer: str, out: str | None = None) -> str:
        """x @ `layer.weight`ᵀ, without its bias (`linear` adds it; a fused activation takes it)."""
        (w,) = self.emit("Transpose", [self.weight(f"{layer}.weight")], perm=[1, 0])
        return self.emit("MatMul", [x, w], [out] if out else 1)[0]

    def bias(self, layer: str) -> str:
        """The initializer of `layer.bias`, or "" where the layer has none."""
        return self.weight(f"{layer}.bias") if self.services.holds(self.node, f"{layer}.bias") else ""

    def constant(self, key: str, value: np.ndarray) -> str:
        """A model-level initializer `key` (the first call with a key stores it; later ones reuse
        it: one rotary table per model, not one per layer)."""
        return self.services.constant(key, value)

    def ones(self, n: int) -> str:
        """A shared fp32 [n] constant of ones (a unit scale for a norm whose math has none)."""
        return self.constant(f"const.ones_{n}", np.ones(n, dtype=np.float32))

    def ints(self, *values: int) -> str:
        """A shared int64 [len(values)] constant (Slice bounds, Reshape shapes, Split sizes)."""
        return self.constant("const.i64." + "_".join(str(v) for v in values).replace("-", "m"),
                             np.array(values, dtype=np.int64))

    def per_token(self, key: str, value: np.ndarray) -> str:
        """`value` [...] broadcast to [batch, seq, ...] once per model (a per-head constant an
        operator wants per token, as LinearAttention's decay)."""
        return self.services.per_token(key, value)

    def mask_lengths(self) -> tuple[str, str]:
        """(`seqlens_k` int32 [batch]: tokens so far minus one, `total_sequence_length` int32
        scalar) from the decoder's `attention_mask`, computed once per model (the inputs of
        `GroupQueryAttention`, as onnxruntime-genai's builder makes them)."""
        return self.services.mask_lengths()


def _never(ctx: LowerCtx) -> str | None:
    return None


def in_branches(ctx: LowerCtx) -> str | None:
    """Why a contrib operator is not used inside a decoder's prefill/decode `If` (a recurrent
    mixer keeps two forms). Measured on mamba-tiny (SkipSimplifiedLayerNormalization) and
    jamba-tiny (GroupQueryAttention): ONNX's shape inference cannot type a contrib operator's
    outputs inside a subgraph, and onnxruntime's static int8 quantizer then writes a graph
    onnxruntime will not load (its QDQ-to-MatMulNBits rewrite looks for the weights in the
    branch); the traced module stays there."""
    if ctx.services.branched:
        return ("inside the decoder's prefill/decode branches (kept because a stateful node is traced), where onnxruntime's "
                "quantizers cannot type a contrib operator's outputs")
    return None


#: For each of a node's state tensors, the order in which a lowering keeps its axes after the
#: batch axis (None: as the op's record declares them).
Layout = tuple[tuple[int, ...] | None, ...]


@dataclass(frozen=True)
class Lowering:
    emit: Callable[[LowerCtx], Any]
    refuse: Callable[[LowerCtx], str | None] = _never
    #: the layout its operators keep the node's state in, where it is not the declared one (the
    #: decoder's state inputs and outputs take it, and `archc_export.json` records it as `axes`),
    #: so that no transpose runs on the state at every step; fixed-size state only
    layout: Callable[[LowerCtx], Layout] | None = None
    #: whether its operator keeps a full-length cache where the op's record declares a ring buffer
    #: of a few slots (`GroupQueryAttention`'s sliding window, `local_window_size`, reads the last
    #: slots of a cache that grows): the decoder's cache ports then grow with the tokens
    full_cache: Callable[[LowerCtx], bool] | None = None


def lowers(backend: str, *ops: str, refuse: Callable[[LowerCtx], str | None] = _never,
           layout: Callable[[LowerCtx], Layout] | None = None, full_cache: Callable[[LowerCtx], bool] | None = None
           ) -> Callable[[Callable[[LowerCtx], Any]], Callable[[LowerCtx], Any]]:
    """`@lowers("ort", "rmsnorm")`: register the decorated function as `backend`'s direct
    lowering of `ops` (with `refuse` saying which nodes it cannot take, `layout` the state layout
    its operators want, `full_cache` whether it grows a cache the op keeps as a ring buffer)."""

    def deco(fn: Callable[[LowerCtx], Any]) -> Callable[[LowerCtx], Any]:
        register_lowering(backend, *ops)(Lowering(fn, refuse, layout, full_cache))
        return fn

    return deco
