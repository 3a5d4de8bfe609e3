"""The ONNX backend: a spec's torch modules exported per distinct node and laid out from the IR
(docs/onnx.md). `export.export_model` writes the folder `runtime.OnnxModel` (`archc run`) reads.
This package's `__init__` imports nothing heavy: the runtime must load without torch."""

#: The ONNX opset exported by default (onnxruntime ≥ 1.17 runs it).
DEFAULT_OPSET = 20
