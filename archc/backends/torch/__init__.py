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


def build(spec: str | Path | Graph, seed: int = 0, device: str | torch.device = "cpu",
          dtype: torch.dtype = torch.float32, pipeline: str = "O0") -> ArchModel:
    """A spec path (or a lowered `Graph`) → an initialized `ArchModel`, after the optimization
    pipeline `pipeline` (`O0`: the graph as lowered; `O1`, `O2`: fused, docs/passes.md). The
    weights of a fused build are those of the `O0` build (the same seed gives the same model), and
    its `state_dict` has the canonical layout.

    `device="meta"` builds the module tree without allocating (parameter counts of huge specs).
    """
    graph = spec if isinstance(spec, Graph) else _load(spec)
    canonical = graph
    if pipeline != "O0":
        from archc.passes.manager import LEVELS, run

        if pipeline not in LEVELS:
            raise ValueError(f"unknown pipeline `{pipeline}`; levels: {', '.join(LEVELS)}")
        graph = run(graph, pipeline).graph
    with torch.device("meta"):
        model = ArchModel(graph)
    model.pipeline = pipeline
    if torch.device(device).type == "meta":
        return model
    if pipeline != "O0":  # the same weights as the canonical build: initialize that, load it
        reference = build(canonical, seed, device, torch.float32)
        model = model.to_empty(device=device)
        model.load_state_dict(reference.state_dict())
        return model.to(dtype)
    model = model.to_empty(device=device)
    if torch.device(device).type == "meta":
        return model
    model = model.to_empty(device=device)
    model.initialize(seed)
    return model.to(dtype)


def _load(path: str | Path) -> Graph:
    from archc.frontend import load

    return load(str(path)).graph


__all__ = ["ArchModel", "BackendError", "ModelOutput", "build"]
