"""Classic recurrent cells: LSTM and GRU, laid out as torch.nn.LSTM / torch.nn.GRU."""

from __future__ import annotations

from pydantic import Field, PositiveInt

from archc.ir.cost import Cost, CostCtx, StateTensor
from archc.ir.types import TensorType, hidden
from archc.ops.registry import OpDef, Params, register, unless_bidirectional, width_of


class RNNParams(Params):
    hidden: PositiveInt = Field(description="hidden size h; the output width is h·directions")
    layers: PositiveInt = Field(1, description="stacked layers")
    bidirectional: bool = False


def _rnn_shape(p: RNNParams, ins: list[TensorType]) -> TensorType:
    width_of(ins)
    return hidden(ins[0].shape[0], ins[0].shape[1], p.hidden * (2 if p.bidirectional else 1))


def _rnn_cost(gates: int, cells: tuple[str, ...]):
    def cost(p: RNNParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
        dirs = 2 if p.bidirectional else 1
        h = p.hidden
        params = flops = 0
        d_in = width_of(ins)
        for _ in range(p.layers):
            # per direction: W_ih [g·h, d_in], W_hh [g·h, h], b_ih and b_hh [g·h] (torch.nn layout)
            params += dirs * (gates * h * (d_in + h) + 2 * gates * h)
            flops += dirs * 2 * gates * h * (d_in + h)
            d_in = h * dirs
        return Cost(params, flops, p.layers * dirs * (gates + 2) * h * ctx.dtype_bytes)

    cost.__doc__ = (f"Per layer and direction: W_ih {gates}h·d_in, W_hh {gates}h·h, two biases {gates}h each "
                    f"(torch.nn layout).")
    return cost


def _rnn_state(cells: tuple[str, ...]):
    def state(p: RNNParams, ins: list[TensorType]) -> tuple[StateTensor, ...]:
        return () if p.bidirectional else tuple(StateTensor(c, (p.layers, p.hidden)) for c in cells)

    state.__doc__ = f"{', '.join(cells)} [layers, h] in fp32; none when bidirectional."
    return state



register(OpDef("lstm", RNNParams, _rnn_shape, _rnn_cost(4, ("h", "c")),
               "LSTM (Hochreiter & Schmidhuber), single or bidirectional, stacked.", "recurrent",
               default_name="lstm", role="mixer", causal=unless_bidirectional, state=_rnn_state(("h", "c")),
               precision=(("rnn.*", "recurrent"),)))
register(OpDef("gru", RNNParams, _rnn_shape, _rnn_cost(3, ("h",)),
               "GRU (Cho et al.), single or bidirectional, stacked.", "recurrent", default_name="gru",
               role="mixer", causal=unless_bidirectional, state=_rnn_state(("h",)),
               precision=(("rnn.*", "recurrent"),)))
