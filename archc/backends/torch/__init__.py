"""The PyTorch backend: a checked `Graph` becomes a trainable `ArchModel` (an `nn.Module`).

    >>> from archc.backends.torch import build
    >>> model = build("specs/llama-tiny.arch", seed=0)
    >>> out = model(input_ids, labels=input_ids); out.loss.backward()

`build` constructs the module tree on the meta device (no memory, no wasted default init), then
materializes it on the target device and initializes every parameter from `seed`, so the same
seed gives the same weights bit for bit on any device.
"""

from __future__ import annotations

from pathlib import Path

import torch

from archc.backends.torch.model import ArchModel, BackendError, ModelOutput
from archc.ir.graph import Graph
from archc.passes.manager import BUILD_LEVEL


def build(spec: str | Path | Graph, seed: int = 0, device: str | torch.device = "cpu",
          dtype: torch.dtype = torch.float32, pipeline: str = BUILD_LEVEL, kernels: str = "auto",
          compile: bool | str = False) -> ArchModel:
    """A spec path (or a lowered `Graph`) → an initialized `ArchModel`, after the optimization
    pipeline `pipeline` (`O0`: the graph as lowered; `O1` (default), `O2`: fused, docs/passes.md).
    The weights do not depend on the pipeline (the same seed gives the same model), and the
    `state_dict` has the canonical layout at every level.

    `kernels`: `"auto"` (default) runs Triton kernels where they apply on a CUDA device and the
    torch forms elsewhere; `"triton"` insists (a `KernelError` where one cannot run); `"torch"`
    never (docs/kernels.md; `archc.backends.torch.kernels.select`).

    `compile`: `True` (or a `torch.compile` mode, `"max-autotune"`) compiles the forward, and so
    the training step's backward, in place (`compiled.compile_model`; the first call compiles).
    Decoding compiles its own step: `model.generate(ids, compile=True)`.

    `device="meta"` builds the module tree without allocating (parameter counts of huge specs).
    """
    from archc.backends.torch.kernels.select import use_kernels

    _check_level(pipeline)
    graph = spec if isinstance(spec, Graph) else _load(spec)
    with torch.device("meta"):
        model = ArchModel(graph)
    if torch.device(device).type != "meta":
        model = model.to_empty(device=device).initialize(seed).to(dtype)
    model = optimize(model, pipeline)
    use_kernels(model, kernels)
    if compile:
        from archc.backends.torch.compiled import compile_model

        compile_model(model, "default" if compile is True else compile)
    return model


def optimize(model: ArchModel, pipeline: str) -> ArchModel:
    """`model` rebuilt after the pipeline `pipeline` from its canonical graph, holding the same
    weights: the modules load the canonical state dict through their load hooks (a meta model
    stays meta). How `build` and `archc export --pipeline` get a fused model from a canonical one
    after loading or pruning it; any level goes to any other."""
    from archc.passes.manager import run

    _check_level(pipeline)
    if pipeline == model.pipeline:
        return model
    with torch.device("meta"):
        fused = ArchModel(run(model.canonical_graph, pipeline).graph)
    fused.pipeline = pipeline
    fused.canonical_graph = model.canonical_graph
    fused.train(model.training)
    first = next(model.parameters(), None)
    if first is None or first.is_meta:
        return fused
    fused = fused.to_empty(device=first.device).to(first.dtype)
    fused.load_state_dict(model.state_dict())
    return fused


def _check_level(pipeline: str) -> None:
    from archc.passes.manager import LEVELS

    if pipeline not in LEVELS:
        raise ValueError(f"unknown pipeline `{pipeline}`; levels: {', '.join(LEVELS)}")


def _load(path: str | Path) -> Graph:
    from archc.frontend import load

    return load(str(path)).graph


__all__ = ["ArchModel", "BackendError", "ModelOutput", "build", "optimize"]
