"""The ONNX backend: a spec's torch modules exported per distinct node and laid out from the IR
(docs/onnx.md). `export.export_model` writes the folder `runtime.OnnxModel` (`archc run`) reads.
This package's `__init__` imports nothing heavy: the runtime must load without torch."""

#: The ONNX opset exported by default: 23 has the `Attention` operator, which torch.onnx emits for
#: scaled-dot-product attention and onnxruntime (≥ 1.23) runs fused — llama-tiny's prefill of 512
#: tokens 25–35% faster than opset 20's MatMul + Softmax (docs/onnx.md). onnxruntime 1.22 refuses an
#: opset-23 model, 1.23.0 runs it (both tried): the onnx extra needs ≥ 1.23; older runtimes: --opset 20.
DEFAULT_OPSET = 23
#: The oldest opset the exporter emits (torch.onnx's dynamo exporter starts at 18).
MIN_OPSET = 18
#: The newest opset torch.onnx emits.
MAX_OPSET = 23


class ExportError(Exception):
    """A spec that cannot be exported as asked; `node` (an IR node) places the diagnostic at its
    `.arch` line."""

    def __init__(self, message: str, hint: str | None = None, node: object = None, code: str = "ARC1101") -> None:
        super().__init__(message)
        self.message, self.hint, self.node, self.code = message, hint, node, code
