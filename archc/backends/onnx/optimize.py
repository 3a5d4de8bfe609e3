"""Graphs simplified with onnxscript's optimizer, their weights left as they are.

Each distinct node graph is optimized once, when it is exported (`simplify_unit`): the assembled
model holds one copy of it per layer, and optimizing the whole model repeated that work per
copy (rwkv-tiny: 20 s of its 39 s export). The assembled model then only loses what no node
uses (`prune`).

onnxscript's optimizer folds constants, removes dead nodes and unused initializers and
simplifies patterns (`CastLike` of a known type to `Cast`, shape arithmetic on known shapes). Run
as is it would also fold `Transpose(weight)` into a new constant under a new name, which breaks
the contract that initializers are the state_dict's tensors under its keys (and would store a
tied weight twice). So the weights are graph inputs while it runs, and initializers again after;
onnxruntime folds those transposes in memory when it loads the model.
"""

from __future__ import annotations

import onnx
import onnx_ir as ir
import onnxscript.optimizer

#: A unit graph's own weights (`units.py`: `m.<attribute>`, and `tied.<i>.<attribute>`).
UNIT_WEIGHT_PREFIXES = ("m.", "tied.")


def simplify_unit(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A node graph, optimized with its weights held as inputs."""
    return ir.serde.serialize_model(_optimized(proto, lambda name: name.startswith(UNIT_WEIGHT_PREFIXES)))


def prune(proto: onnx.ModelProto) -> ir.Model:
    """The assembled model without nodes, initializers and opsets nothing uses."""
    model = ir.serde.deserialize_model(proto)
    for p in (ir.passes.common.RemoveUnusedNodesPass(), ir.passes.common.RemoveUnusedOpsetsPass()):
        p(model)
    return model


def _optimized(proto: onnx.ModelProto, is_weight) -> ir.Model:
    model = ir.serde.deserialize_model(proto)
    g = model.graph
    weights = [v for name, v in g.initializers.items() if is_weight(name)]
    for v in weights:
        g.initializers.pop(v.name)
        g.inputs.append(v)
    onnxscript.optimizer.optimize_ir(model, num_iterations=2)
    used = {v.name for v in weights if v.uses() or v.is_graph_output()}
    for v in weights:
        g.inputs.remove(v)
        if v.name in used:
            g.register_initializer(v)
    return model
