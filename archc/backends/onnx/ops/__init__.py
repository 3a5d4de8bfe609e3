"""The ONNX backend's entries in the lowering table (`archc.backends.lowering`), in family files
that mirror the op records' (`archc/ops/<family>.py` → `archc/backends/onnx/ops/<family>.py`).

An entry is a function `(node, inputs, out) -> (onnx nodes, value)`: the ONNX nodes that compute
the IR node from the ONNX values of its inputs, and the value (or, for a node with several
outputs, the values) that stands for it; `out` is the name to give it. The assembler
(`assemble.py`) places them. An op without an entry is lowered by tracing its torch module
(`units.py`: `torch.onnx.export` of the module's `step` or `forward`, once per distinct node),
which is what every layer op does today; ops of kind `arith`, which have no module, must have an
entry (the assembler refuses one that has none).
"""
