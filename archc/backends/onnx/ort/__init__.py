"""`archc export --target ort`: IR nodes lowered to onnxruntime's fused contrib operators, where
the operator computes exactly the op's math (`archc/backends/onnx/lower.py`). Family files mirror
the op records' (`archc/ops/<family>.py` → `ort/<family>.py`); a node an entry refuses (a
variant the operator does not compute, a size its CPU kernel does not take) is traced from its
torch module, and `archc export` says which and why.
"""
