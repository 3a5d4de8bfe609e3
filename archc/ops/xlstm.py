"""xLSTM's sLSTM and mLSTM layers (Beck et al., 2024), laid out as the `xlstm` package."""

from __future__ import annotations

from pydantic import Field, PositiveInt

from archc.ir.cost import NEG_FILL, Cost, CostCtx, StateTensor
from archc.ir.sharding import CannotShard, Parallel, Reduction, Sharding, Split, by_cuts, split_units
from archc.ir.types import TensorType
from archc.ir.weights import Weight, conv1d, dense
from archc.ops.registry import (
    CannotPrune,
    Expands,
    Heads,
    OpDef,
    Params,
    PruneAxis,
    divides,
    mixes_causally,
    register,
    replicated_because,
    rows,
    width_of,
)


class SLSTMParams(Params, Heads):
    heads: PositiveInt = Field(4, description="heads; the recurrent matrices are block-diagonal per head")
    d_conv: int = Field(4, ge=0, description="causal conv before the i/f gates (0: none)")


def _slstm_shape(p: SLSTMParams, ins: list[TensorType]) -> TensorType:
    divides(p.heads, width_of(ins), "heads", "the width", arg="heads")
    return ins[0]


def _slstm_cost(p: SLSTMParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """The four gates' headwise input maps and the block-diagonal recurrent maps, 2·8·d²/H
    FLOPs per token, and the conv 2·d·k."""
    d, h = width_of(ins), p.heads
    return Cost(flops=2 * (8 * d * d // h) + 2 * d * p.d_conv, act_bytes=10 * d * ctx.dtype_bytes)


def _slstm_weights(p: SLSTMParams, ins: list[TensorType]) -> tuple[Weight, ...]:
    """As xlstm's sLSTMLayer, all with its own init: the optional depthwise conv1d, the gates'
    headwise input maps {i,f,z,o}gate.weight [H, d/H, d/H] (i, f: exponential gates; z, o:
    projections), the block-diagonal recurrent_kernel [H, d/H, 4, d/H], the gate biases
    [H, 4, d/H] (the forget gate's power-law init) and the head norm's group_norm.weight [d]."""
    d, h = width_of(ins), p.heads
    hd = d // h
    conv = conv1d("conv1d", d, p.d_conv, "conv") if p.d_conv else ()
    gates = tuple(Weight(f"{g}gate.weight", (h, hd, hd), "gate" if g in "if" else "projection", "own")
                  for g in "ifzo")
    return (conv + gates + (Weight("recurrent_kernel", (h, hd, 4, hd), "recurrent", "own"),
                            Weight("bias", (h, 4, hd), "gate", "own"),
                            Weight("group_norm.weight", (d,), "norm", "own")))


def _slstm_state(p: SLSTMParams, ins: list[TensorType]) -> tuple[StateTensor, ...]:
    """h, c, n [d], the stabilizer m [d] (starting far below any gate), and the conv window
    [d, k] when there is a conv; fp32."""
    d = width_of(ins)
    state = (StateTensor("h", (d,)), StateTensor("c", (d,)), StateTensor("n", (d,)),
             StateTensor("m", (d,), fill=NEG_FILL))
    return state + ((StateTensor("conv", (d, p.d_conv)),) if p.d_conv else ())


register(OpDef(name="slstm", params=SLSTMParams, shape=_slstm_shape, cost=_slstm_cost,
               summary="xLSTM sLSTM: exponential gating with normalizer and stabilizer states, head-wise memory mixing.", default_name="slstm", role="mixer", causal=mixes_causally, state=_slstm_state,
               weights=_slstm_weights,
               parallel=replicated_because("a nonlinear loop over tokens whose heads are small; not split", why_context="a nonlinear recurrence: the ranks would run one after another")))


class MLSTMParams(Params, Expands):
    heads: PositiveInt = Field(4, description="heads of the matrix memory")
    expand: PositiveInt = Field(2, description="inner width E = expand·d (up-projection block)")
    inner_width: PositiveInt | None = Field(None, description="inner width E, instead of expand·d (archc prune)")
    d_conv: PositiveInt = 4
    qkv_block: PositiveInt = Field(4, description="block size of the block-diagonal q/k/v maps")

    def head_dim_for(self, d: int) -> int:
        """The width of one head of the matrix memory, E/H."""
        return self.inner(d) // self.heads


def _mlstm_shape(p: MLSTMParams, ins: list[TensorType]) -> TensorType:
    e = p.inner(width_of(ins))
    divides(p.heads, e, "heads", "the inner width expand·d", arg="heads")
    divides(p.qkv_block, e, "qkv_block", "the inner width expand·d", arg="qkv_block")
    return ins[0]


def _mlstm_cost(p: MLSTMParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """up_proj d→2E, conv over E channels, q/k/v block-diagonal 3·E·block, i/f gates
    Linear(3E, H) each, down_proj E→d (xlstm's mLSTMLayer). Per token the matrix memory costs
    4·E·(E/H)."""
    d = width_of(ins)
    e, h = p.inner(d), p.heads
    dh = p.head_dim_for(d)
    flops = 2 * (2 * e * d + e * d + 3 * e * p.qkv_block + 6 * e * h) + 2 * e * p.d_conv + 4 * e * dh
    return Cost(flops=flops, act_bytes=(d + 8 * e) * ctx.dtype_bytes)


def _mlstm_weights(p: MLSTMParams, ins: list[TensorType]) -> tuple[Weight, ...]:
    """As xlstm's mLSTMLayer, all with its own (small / depth-scaled) init: proj_up d→2E (x_m and
    z), the block-diagonal {q,k,v}_proj.weight [E/block, block, block], the depthwise conv1d,
    igate and fgate Linear(3E, H) (exponential gates), the head norm's outnorm.weight [E], the
    learnable_skip [E] and proj_down E→d. A head's channels are cut from each."""
    d = width_of(ins)
    e, h, b = p.inner(d), p.heads, p.qkv_block
    heads = (("heads", 0),)
    gates = tuple(w for g in ("igate", "fgate")
                  for w in dense(g, 3 * e, h, "gate", True, "own", cuts_out=("heads",), cuts_in=("heads",),
                                 bias_init="own"))
    return (dense("proj_up", d, 2 * e, "projection", init="own", cuts_out=("heads",))
            + tuple(Weight(f"{n}_proj.weight", (e // b, b, b), "projection", "own", heads) for n in "qkv")
            + conv1d("conv1d", e, p.d_conv, "conv", cuts=("heads",)) + gates
            + (Weight("outnorm.weight", (e,), "norm", "own", heads), Weight("learnable_skip", (e,), "mix", "own", heads))
            + dense("proj_down", e, d, "projection", init="own", cuts_in=("heads",)))


def _mlstm_state(p: MLSTMParams, ins: list[TensorType]) -> tuple[StateTensor, ...]:
    """C [H, E/H, E/H], n [H, E/H], the stabilizer m [H], conv [E, k]; fp32."""
    d = width_of(ins)
    e, dh = p.inner(d), p.head_dim_for(d)
    return (StateTensor("C", (p.heads, dh, dh)), StateTensor("n", (p.heads, dh)),
            StateTensor("m", (p.heads,), fill=NEG_FILL), StateTensor("conv", (e, p.d_conv)))


def _mlstm_prune(p: MLSTMParams, ins: list[TensorType]) -> tuple[PruneAxis, ...]:
    """Heads: head h's inner channels c ∈ [h·D, (h+1)·D) — proj_up's rows c (x_m) and E + c (z),
    the conv's channels, the q/k/v blocks inside the head, the skip and the norm's channels,
    proj_down's columns — and the head's own input- and forget-gate rows, whose input columns
    (c, E + c, 2E + c of [q, k, v]) go with them. Zeroed, x_m = z = 0 on the head's channels, so
    x̃ = silu(0) = 0, q = k = v = 0, the head's memory reads 0, its HeadNorm (no bias) gives 0
    and silu(z) = 0 gates it; the other heads' gates saw 0 in those columns: exact."""
    d = width_of(ins)
    e, dh = p.inner(d), p.head_dim_for(d)
    if dh % p.qkv_block:
        raise CannotPrune(f"mLSTM's q/k/v blocks ({p.qkv_block}) straddle its heads (head width {dh}): a head "
                          "cannot be removed without cutting a block", ("heads",))
    per = dh // p.qkv_block

    def head(h: int) -> dict:
        c = rows(h, dh)
        blocks = list(range(h * per, (h + 1) * per))
        gate = [(0, [h]), (1, c + [e + i for i in c] + [2 * e + i for i in c])]
        return {"proj_up.weight": (0, c + [e + i for i in c]), "conv1d.weight": (0, c), "conv1d.bias": (0, c),
                "q_proj.weight": (0, blocks), "k_proj.weight": (0, blocks), "v_proj.weight": (0, blocks),
                "igate.weight": gate, "fgate.weight": gate, "igate.bias": (0, [h]), "fgate.bias": (0, [h]),
                "outnorm.weight": (0, c), "learnable_skip": (0, c), "proj_down.weight": (1, c)}

    return (PruneAxis("heads", p.heads, head, lambda kept: {"heads": len(kept), "inner_width": len(kept) * dh},
                      lambda h: ("proj_down", rows(h, dh))),)


def _mlstm_parallel(p: MLSTMParams, ins: list[TensorType]) -> Parallel:
    """By heads, as the prune rule cuts them: proj_up's x_m and z rows, the conv, the q/k/v
    blocks, the skip and head norm, proj_down's columns, C, n, m and the conv state. The input and
    forget gates read every head's q, k and v: each rank multiplies its heads' columns (every gate
    row), and the 2·H pre-activations a token are all-reduced inside the op before the exponential
    gates (their biases added once, after). proj_down's partial sums are all-reduced. A split
    sequence scans from the handed-on (C, n, m) and conv window."""
    d = width_of(ins)
    e = p.inner(d)
    ws = _mlstm_weights(p, ins)

    def tensor(t: int) -> Sharding:
        split_units("heads", p.heads, t, "mLSTM")
        if (e // p.qkv_block) % t:
            raise CannotShard(f"mLSTM's {e // p.qkv_block} q/k/v blocks do not split {t} ways")
        splits = {k: v for k, v in by_cuts(ws, "heads").items() if not k.startswith(("igate", "fgate"))}
        splits["proj_up.weight"] = Split(0, (e, e))
        gate = Split(1, (e, e, e))
        splits.update({"igate.weight": gate, "fgate.weight": gate})
        rows = Split(0)
        return Sharding("heads", p.heads, t, splits, state={"C": rows, "n": rows, "m": rows, "conv": rows},
                        reductions=(Reduction("the input and forget gates' pre-activations", 2 * p.heads),),
                        after_reduce=("igate.bias", "fgate.bias"))

    return Parallel(tensor=tensor, context="state")


register(OpDef(name="mlstm", params=MLSTMParams, shape=_mlstm_shape, cost=_mlstm_cost,
               summary="xLSTM mLSTM: matrix memory with covariance update, parallel and recurrent forms.", default_name="mlstm", role="mixer", causal=mixes_causally, state=_mlstm_state,
               weights=_mlstm_weights, prune=_mlstm_prune, parallel=_mlstm_parallel))
