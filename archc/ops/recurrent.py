"""Classic recurrent cells: LSTM and GRU, laid out as torch.nn.LSTM / torch.nn.GRU."""

from __future__ import annotations

from pydantic import Field, PositiveInt

from archc.ir.cost import Cost, CostCtx, StateTensor
from archc.ir.types import TensorType, hidden
from archc.ir.weights import Weight
from archc.ops.registry import OpDef, Params, register, replicated_because, unless_bidirectional, width_of


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
        flops = 0
        d_in = width_of(ins)
        for _ in range(p.layers):
            flops += dirs * 2 * gates * h * (d_in + h)
            d_in = h * dirs
        return Cost(flops=flops, act_bytes=p.layers * dirs * (gates + 2) * h * ctx.dtype_bytes)

    cost.__doc__ = f"Per layer and direction: 2·{gates}h·(d_in + h) FLOPs (W_ih and W_hh)."
    return cost


def _rnn_weights(gates: int):
    def weights(p: RNNParams, ins: list[TensorType]) -> tuple[Weight, ...]:
        dirs = ("", "_reverse") if p.bidirectional else ("",)
        h, d_in, out = p.hidden, width_of(ins), []
        for layer in range(p.layers):
            for sfx in dirs:
                out += [Weight(f"rnn.weight_ih_l{layer}{sfx}", (gates * h, d_in), "recurrent", "own"),
                        Weight(f"rnn.weight_hh_l{layer}{sfx}", (gates * h, h), "recurrent", "own"),
                        Weight(f"rnn.bias_ih_l{layer}{sfx}", (gates * h,), "recurrent", "own"),
                        Weight(f"rnn.bias_hh_l{layer}{sfx}", (gates * h,), "recurrent", "own")]
            d_in = h * len(dirs)
        return tuple(out)

    weights.__doc__ = (f"torch.nn's layout: per layer and direction W_ih [{gates}h, d_in], W_hh [{gates}h, h] "
                       f"and two biases [{gates}h], all U(±1/√h) (own init).")
    return weights


def _rnn_state(cells: tuple[str, ...]):
    def state(p: RNNParams, ins: list[TensorType]) -> tuple[StateTensor, ...]:
        return () if p.bidirectional else tuple(StateTensor(c, (p.layers, p.hidden)) for c in cells)

    state.__doc__ = f"{', '.join(cells)} [layers, h] in fp32; none when bidirectional."
    return state



_RNN_PARALLEL = replicated_because(
    "the recurrence couples every hidden unit at every step; not split",
    why_context="a nonlinear recurrence: the ranks would run one after another")


register(OpDef(name="lstm", params=RNNParams, shape=_rnn_shape, cost=_rnn_cost(4, ("h", "c")),
               summary="LSTM (Hochreiter & Schmidhuber), single or bidirectional, stacked.",
               default_name="lstm", role="mixer", causal=unless_bidirectional, state=_rnn_state(("h", "c")),
               weights=_rnn_weights(4), parallel=_RNN_PARALLEL))
register(OpDef(name="gru", params=RNNParams, shape=_rnn_shape, cost=_rnn_cost(3, ("h",)),
               summary="GRU (Cho et al.), single or bidirectional, stacked.", default_name="gru",
               role="mixer", causal=unless_bidirectional, state=_rnn_state(("h",)),
               weights=_rnn_weights(3), parallel=_RNN_PARALLEL))
