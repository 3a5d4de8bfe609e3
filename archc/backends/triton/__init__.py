"""The Triton backend: kernels rendered from jinja2 templates, specialized to what a spec fixes.

One template per kernel family (`templates/<name>.py.jinja`): plain Triton inside, Jinja only for
what the spec decides — widths, block sizes, flags such as has-residual — as Inductor's
templates. `render.render(name, **params)` renders one, writes the readable generated file into
the kernel cache (keyed by a hash of the template, the parameters and Triton's version) and
imports it. The torch backend binds the kernels to ops (`archc/backends/torch/kernels/<op>/
triton.py`, registered with `torch.library`) and chooses per node between them and the torch
forms (`archc/backends/torch/kernels/select.py`, `archc kernels`).

This package imports neither torch nor triton at import time: `available()` says whether Triton
can run here (a CUDA device, or `TRITON_INTERPRET=1`, which runs kernels on the CPU for tests).
"""

from __future__ import annotations

import os


class KernelError(Exception):
    """A kernel that cannot be rendered or run here; the message says why."""


def interpreted() -> bool:
    """Whether Triton runs kernels in its interpreter (`TRITON_INTERPRET=1`: on the CPU, for tests)."""
    return os.environ.get("TRITON_INTERPRET", "") == "1"


def why_unavailable(device_type: str) -> str:
    """'' when Triton kernels can run on tensors of `device_type` here, else why not."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return "Triton is not installed (pip install 'archc[triton]')"
    if device_type == "cuda" or interpreted():
        return ""
    return f"Triton compiles for CUDA devices; tensors on {device_type} run it only under TRITON_INTERPRET=1"


def available(device_type: str) -> bool:
    return not why_unavailable(device_type)
