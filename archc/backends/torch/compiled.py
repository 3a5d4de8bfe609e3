"""Compiled paths: `torch.compile` of the forward and the training step, and a compiled decode
step in gpt-fast's style.

* **Forward and train step** (`compile_model`, `build(compile=True)`, `archc train --compile`):
  `nn.Module.compile` compiles the module's call in place, so AOTAutograd traces the backward with
  the forward and the state dict keeps its names (`torch.compile(model)` would prefix them with
  `_orig_mod.`, and every checkpoint archc writes would change).
* **Decode** (`DecodeStep`, `generate(compile=True)`, `archc generate --compile`): the one-token
  `ArchModel.step` compiled whole (`fullgraph=True`: no graph break per token) with static shapes,
  over a state allocated once and updated in place, so a token is one compiled call with no
  allocation of state. The position is a 0-d tensor, so a new position is not a new graph; the
  state's length is rounded up to a power of two (`capacity`), so a prompt a few tokens longer does
  not recompile either: each batch size and capacity compiles once per process (and Inductor's
  on-disk cache makes a later process's compile cheaper). The prompt is prefilled by the eager
  step, whose shapes change with every prompt. A step with an op Dynamo cannot trace (a
  `torch.compiler.disable`d call) runs eagerly, with a warning (`graph_break` says why): compiled
  around the break, S4-DPLR's step (when its one-token recurrence was such a call) measured 5.9 ms
  a token against 4.9 eager. Every spec's step is one graph today (tools/check_compiled.py).

Compilation needs a C++ compiler on the CPU (Inductor generates C++) and Triton on CUDA; where
it fails, `CompileError` says why (ARC1702).
"""

from __future__ import annotations

import time
import types
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from archc.backends.torch.module import State

if TYPE_CHECKING:
    from archc.backends.torch.model import ArchModel

#: `torch.compile` modes a user may ask for (`--compile-mode`)
MODES = ("default", "reduce-overhead", "max-autotune")
#: the smallest state capacity of a compiled decoder (tokens); larger ones are powers of two
MIN_CAPACITY = 128


class CompileError(Exception):
    """`torch.compile` could not compile a model here; the message says why."""


def compile_model(model: ArchModel, mode: str = "default", dynamic: bool | None = None) -> ArchModel:
    """Compile `model`'s forward (and so its backward) in place; returns it. `dynamic=None`
    (torch's default): a shape that changes between calls recompiles once, then symbolically;
    `False`: every shape its own static graph (a training run's one shape, a benchmark). The
    first call compiles; Dynamo's and Inductor's errors then derive from
    `torch._dynamo.exc.TorchDynamoException` (`why` words them)."""
    _check_mode(mode)
    model.compile(mode=None if mode == "default" else mode, dynamic=dynamic)
    model.compiled_mode = mode
    return model


def capacity(tokens: int) -> int:
    """The state length a compiled decoder allocates for `tokens` tokens: a power of two, at
    least `MIN_CAPACITY`."""
    return max(MIN_CAPACITY, 1 << max(tokens - 1, 0).bit_length())


@dataclass
class DecodeStep:
    """One model's decode step compiled for one batch size and state capacity (gpt-fast's
    `decode_one_token`): `prefill(ids)` runs the prompt eagerly into the preallocated state,
    then each `__call__(ids, pos)` is one compiled call that updates the state in place."""

    model: ArchModel
    batch: int
    capacity: int
    mode: str = "default"
    #: seconds the first compiled call took (tracing and code generation included); None before
    compile_seconds: float | None = None
    #: why the step is not one graph ("" when it is): an op Dynamo cannot trace (a
    #: `torch.compiler.disable`d call); the step then runs eagerly (compiled around the break it
    #: measured slower)
    graph_break: str = ""
    state: State = field(init=False)
    _fn: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        _check_mode(self.mode)
        self.state = self.model.init_state(self.batch, self.capacity)
        self._fn = self._compile()

    def _compile(self) -> Any:
        # Dynamo keeps its compiled graphs, and counts recompiles against its limit (8), per code
        # object: every DecodeStep's `_step` shares one, so the ninth model or batch size would
        # fail. A copy of the code per instance keeps each one's graph apart.
        own = types.FunctionType(DecodeStep._step.__code__.replace(), globals(), "decode_step")
        # on the CPU, Inductor's C++ wrapper calls the kernels without a Python frame each
        # (llama-tiny's step: 0.90 → 0.82 ms a token)
        cpu = next(self.model.parameters()).device.type == "cpu"
        return torch.compile(types.MethodType(own, self), fullgraph=True, dynamic=False,
                             mode=None if self.mode == "default" else self.mode,
                             options={"cpp_wrapper": True} if cpu and self.mode == "default" else None)

    def _step(self, ids: Tensor, pos: Tensor, *state: Tensor) -> Tensor:
        logits, new = self.model.step(ids, pos, state)
        for old, now in zip(state, new, strict=True):
            old.copy_(now)
        return logits

    def reset(self) -> None:
        """Fill the state with its initial values again (a new batch of prompts)."""
        for old, now in zip(self.state, self.model.init_state(self.batch, self.capacity), strict=True):
            old.copy_(now)

    @torch.no_grad()
    def prefill(self, ids: Tensor) -> Tensor:
        """Logits of the prompt `ids` [batch, T] from a fresh state (eager: the prompt's length
        varies); the state then holds the prompt."""
        if ids.shape[0] != self.batch or ids.shape[1] > self.capacity:
            raise ValueError(f"this decoder takes {self.batch} sequences of up to {self.capacity} tokens, "
                             f"not {ids.shape[0]} of {ids.shape[1]}")
        self.reset()
        logits, new = self.model.step(ids, 0, self.state)
        for old, now in zip(self.state, new, strict=True):
            old.copy_(now)
        return logits

    @torch.no_grad()
    def __call__(self, ids: Tensor, pos: int) -> Tensor:
        """Logits of one token per sequence (`ids` [batch, 1]) at position `pos`."""
        if pos >= self.capacity:
            raise ValueError(f"position {pos} is past this decoder's capacity of {self.capacity} tokens")
        p = torch.tensor(pos, device=ids.device)
        if self.compile_seconds is not None:
            if ids.shape != (self.batch, 1) or self.model.training or self.graph_break:
                return self._fn(ids, p, *self.state)  # Dynamo's guards decide (a recompile, or eager)
            # what Dynamo's guards would check each token is fixed by construction here — the state's
            # shapes (this decoder's), one token per sequence (checked above), eval mode, no grad
            # (this method's decorator) — so they are skipped: 0.15 ms a token on llama-tiny
            with torch.compiler.set_stance("default", skip_guard_eval_unsafe=True):
                return self._fn(ids, p, *self.state)
        t0 = time.perf_counter()
        try:
            try:
                out = self._fn(ids, p, *self.state)
            except torch._dynamo.exc.Unsupported as e:  # an op that cannot be traced: the eager step
                self.graph_break = str(e).strip().splitlines()[0]
                warnings.warn(f"{self.model.graph.name}: the decode step is not one graph ({self.graph_break}); "
                              "it runs eagerly", stacklevel=2)
                self._fn = self._step
                out = self._fn(ids, p, *self.state)
        except torch._dynamo.exc.TorchDynamoException as e:  # Inductor's errors included
            raise CompileError(why(e)) from e
        self.compile_seconds = time.perf_counter() - t0
        return out


def decode_step(model: ArchModel, batch: int, tokens: int, mode: str = "default") -> DecodeStep:
    """The compiled decode step of `model` for `batch` sequences of up to `tokens` tokens, made
    once per process and kept on the model (so `generate(compile=True)` compiles on its first
    call only)."""
    cache: dict[tuple[int, int, str], DecodeStep] = model.__dict__.setdefault("_decode_steps", {})
    key = (batch, capacity(tokens), mode)
    if key not in cache:
        cache[key] = DecodeStep(model, batch, key[1], mode)
    return cache[key]


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"compile mode {mode!r}: one of {', '.join(MODES)}")


def why(e: Exception) -> str:
    """A compile failure in one line, with what to do where there is something."""
    text = str(e).strip().splitlines()
    first = text[0] if text else type(e).__name__
    if "Compiler" in first or "cpp" in first.lower() or "gcc" in first.lower() or "c++" in first.lower():
        return f"torch.compile could not build its C++ kernels ({first}); install a C++ compiler (g++)"
    return f"torch.compile failed: {type(e).__name__}: {first}"
