"""The assembled graph, simplified with onnxscript's optimizer, its weights left as they are.

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

#: Initializers the assembler names `const.<digest>` are the traced code's constants: foldable.
CONSTANT_PREFIX = "const."


def simplify(proto: onnx.ModelProto) -> ir.Model:
    model = ir.serde.deserialize_model(proto)
    g = model.graph
    weights = [v for name, v in g.initializers.items() if not name.startswith(CONSTANT_PREFIX)]
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
