"""The ONNX backend: a spec's torch modules exported per distinct node and laid out from the IR
(docs/onnx.md). `export.export_model` writes the folder `runtime.OnnxModel` (`archc run`) reads.
This package's `__init__` imports nothing heavy: the runtime must load without torch."""

#: The ONNX opset exported by default (onnxruntime ≥ 1.17 runs it).
DEFAULT_OPSET = 20


class ExportError(Exception):
    """A spec that cannot be exported as asked; `node` (an IR node) places the diagnostic at its
    `.arch` line."""

    def __init__(self, message: str, hint: str | None = None, node: object = None, code: str = "ARC1101") -> None:
        super().__init__(message)
        self.message, self.hint, self.node, self.code = message, hint, node, code
