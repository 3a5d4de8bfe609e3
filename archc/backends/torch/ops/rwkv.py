"""RWKV-4 time-mix and channel-mix (Peng et al., 2023, "RWKV: Reinventing RNNs for the Transformer
Era"), laid out as transformers' `RwkvSelfAttention` / `RwkvFeedForward` (the names of the RWKV-4
checkpoints: `time_decay`, `time_first`, `time_mix_*` [1, 1, d], `key`, `value`, `receptance`,
`output`).

Token shift mixes each token with the one before it (x_{t−1}: zeros at the start, the `shift`
state in `step`). The WKV recurrence is `scan.wkv4`, chunked and max-stabilized; its state is
the (num, den, max) triple of the reference kernels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archc.backends.torch.model import BackendError
from archc.backends.torch.module import Context, Init, OpModule, State
from archc.backends.torch.registry import BuildCtx, implements
from archc.backends.torch.scan import NEG, wkv4, wkv4_step


def token_shift(x: Tensor, last: Tensor | None) -> Tensor:
    """x_{t−1} for every t of x [B, T, d]: `last` [B, d] (zeros if None) then x[:, :-1]."""
    if last is None:
        return F.pad(x, (0, 0, 1, -1))
    return torch.cat((last[:, None].to(x.dtype), x[:, :-1]), dim=1)


def _mix(x: Tensor, shifted: Tensor, ratio: Tensor) -> Tensor:
    return x * ratio + shifted * (1 - ratio)


def _ratios(d: int, exponent: float) -> Tensor:
    """(i/d)^exponent for i < d, RWKV-4's token-shift init (1 → ~0 through the layers)."""
    return (torch.arange(d, dtype=torch.float32) / d).pow(exponent).view(1, 1, d)


@implements("rwkv_time_mix")
class TimeMix(OpModule):
    """`rwkv_time_mix(x, version=4, hidden=A)`:

        k, v, r = key/value/receptance(mix(x, x_{t−1}, time_mix_*))
        out = output(σ(r) ⊙ wkv(w = exp(time_decay), u = time_first, k, v))

    Init as RWKV-4 (layer l of L): time_decay_h = −5 + 8·(h/(A−1))^(0.7 + 1.3·l/(L−1)),
    time_first = log 0.3 + zigzag (the original repository's; transformers' port keeps it at 1),
    time_mix_k = (i/d)^(1 − l/L), time_mix_v = that + 0.3·l/(L−1), time_mix_r = (i/d)^((1 − l/L)/2).
    State: `shift` [B, d], `num`, `den`, `max` [B, A] (fp32)."""

    state_names = ("shift", "num", "den", "max")

    @classmethod
    def build(cls, p, in_types, out_type, bctx: BuildCtx) -> TimeMix:
        if p.version != 4:
            raise BackendError(bctx.node, "rwkv_time_mix version 6 (Finch) has no PyTorch module yet",
                               "use version=4; docs/backends.md lists what the torch backend builds")
        return cls(p, in_types, out_type)

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        d = in_types[0].width
        a = p.hidden or d
        self.d, self.a = d, a
        self.time_decay = nn.Parameter(torch.empty(a))
        self.time_first = nn.Parameter(torch.empty(a))
        self.time_mix_key = nn.Parameter(torch.empty(1, 1, d))
        self.time_mix_value = nn.Parameter(torch.empty(1, 1, d))
        self.time_mix_receptance = nn.Parameter(torch.empty(1, 1, d))
        self.key = nn.Linear(d, a, bias=False)
        self.value = nn.Linear(d, a, bias=False)
        self.receptance = nn.Linear(d, a, bias=False)
        self.output = nn.Linear(a, d, bias=False)

    def init_weights(self, init: Init) -> None:
        init.default(self)
        init.normal_(self.output.weight, init.residual_std)
        layer, layers = init.layer_index(self.op), init.op_counts[self.op]
        r01 = layer / max(layers - 1, 1)
        r10 = 1.0 - layer / layers
        h = torch.arange(self.a, dtype=torch.float32)
        zigzag = ((h + 1) % 3 - 1) * 0.5
        with torch.no_grad():
            self.time_decay.copy_(-5 + 8 * (h / max(self.a - 1, 1)) ** (0.7 + 1.3 * r01))
            self.time_first.copy_(torch.full_like(h, 0.3).log() + zigzag)
            self.time_mix_key.copy_(_ratios(self.d, r10))
            self.time_mix_value.copy_(_ratios(self.d, r10) + 0.3 * r01)
            self.time_mix_receptance.copy_(_ratios(self.d, 0.5 * r10))

    def _run(self, x: Tensor, ctx: Context | None, state: State | None) -> tuple[Tensor, State]:
        shifted = token_shift(x, None if state is None else state[0])
        k = self.key(_mix(x, shifted, self.time_mix_key))
        v = self.value(_mix(x, shifted, self.time_mix_value))
        r = torch.sigmoid(self.receptance(_mix(x, shifted, self.time_mix_receptance)))
        if ctx is not None and ctx.attention_mask is not None:  # padded tokens add nothing
            k = k.masked_fill(~ctx.attention_mask[..., None], NEG)
        w, u = self.time_decay.float().exp(), self.time_first.float()
        if state is not None and x.shape[1] == 1:  # one token: the recurrence itself
            wkv, (num, den, m) = wkv4_step(w, u, k[:, 0], v[:, 0], state[1:])
            wkv = wkv[:, None]
        else:
            wkv, (num, den, m) = wkv4(w, u, k, v, None if state is None else state[1:])
        return self.output(r * wkv.to(x.dtype)), (x[:, -1].float(), num, den, m)

    def forward(self, x: Tensor, ctx: Context | None = None) -> Tensor:
        return self._run(x, ctx, None)[0]

    def init_state(self, batch: int, max_len: int, device: torch.device, dtype: torch.dtype) -> State:
        zeros = torch.zeros(batch, self.a, device=device)
        return (torch.zeros(batch, self.d, device=device), zeros, zeros.clone(), torch.full_like(zeros, NEG))

    def step(self, x: Tensor, *, state: State, ctx: Context) -> tuple[Tensor, State]:
        return self._run(x, ctx, state)


@implements("rwkv_channel_mix")
class ChannelMix(OpModule):
    """`rwkv_channel_mix(x, hidden)`: out = σ(receptance(mix_r)) ⊙ value(relu(key(mix_k))²), the
    token shift as in the time-mix. Init: time_mix_k = time_mix_r = (i/d)^(1 − l/L).
    State: `shift` [B, d]."""

    state_names = ("shift",)

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        d = in_types[0].width
        self.d = d
        self.time_mix_key = nn.Parameter(torch.empty(1, 1, d))
        self.time_mix_receptance = nn.Parameter(torch.empty(1, 1, d))
        self.key = nn.Linear(d, p.hidden, bias=False)
        self.receptance = nn.Linear(d, d, bias=False)
        self.value = nn.Linear(p.hidden, d, bias=False)

    def init_weights(self, init: Init) -> None:
        init.default(self)
        init.normal_(self.value.weight, init.residual_std)
        layer, layers = init.layer_index(self.op), init.op_counts[self.op]
        with torch.no_grad():
            self.time_mix_key.copy_(_ratios(self.d, 1.0 - layer / layers))
            self.time_mix_receptance.copy_(_ratios(self.d, 1.0 - layer / layers))

    def _run(self, x: Tensor, last: Tensor | None) -> Tensor:
        shifted = token_shift(x, last)
        k = torch.relu(self.key(_mix(x, shifted, self.time_mix_key))).square()
        return torch.sigmoid(self.receptance(_mix(x, shifted, self.time_mix_receptance))) * self.value(k)

    def forward(self, x: Tensor, ctx: Context | None = None) -> Tensor:
        return self._run(x, None)

    def init_state(self, batch: int, max_len: int, device: torch.device, dtype: torch.dtype) -> State:
        return (torch.zeros(batch, self.d, device=device),)

    def step(self, x: Tensor, *, state: State, ctx: Context) -> tuple[Tensor, State]:
        return self._run(x, state[0]), (x[:, -1].float(),)
