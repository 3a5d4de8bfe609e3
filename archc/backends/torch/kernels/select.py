"""Which nodes run a Triton kernel, and why not where not (`build(kernels=...)`, `archc kernels`).

`kernels="torch"` runs every op's torch form. `"triton"` runs the kernel of every node whose op
has one (`KERNELS`), and is an error where Triton cannot run here or a node's kernel cannot be
specialized to it. `"auto"` does what `"triton"` would on a CUDA device where Triton imports, the
torch form elsewhere and for nodes the template cannot take — silently, as Liger-Kernel's rule.
ONNX export always traces the torch forms.

A kernel family is a template (`archc/backends/triton/templates/<name>.py.jinja`) and the ops it
replaces; `specialize(node's params, input types)` gives the template's parameters for the node,
why it cannot take it, or None where the node has nothing for it (attention without rotary); `bind(module, params)` gives what the module's forward calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

from archc.backends.triton import KernelError, why_unavailable
from archc.ir.graph import Graph

Mode = Literal["torch", "triton", "auto"]
MODES: tuple[str, ...] = ("torch", "triton", "auto")


@dataclass(frozen=True)
class Family:
    """A kernel family: its template and the ops it runs."""

    template: str
    ops: tuple[str, ...]
    specialize: Callable[[str, dict[str, Any], list[Any]], dict[str, Any] | str | None]
    bind: Callable[[dict[str, Any]], Callable[..., Any]]
    reference: str  # the module whose `naive_*` it is tested against


def _rms_norm_params(op: str, params: dict[str, Any], in_types: list[Any]) -> dict[str, Any] | str:
    from archc.backends.torch.kernels.rms_norm.specialize import MAX_WIDTH
    from archc.backends.torch.kernels.rms_norm.specialize import params as template_params

    width = in_types[0].width
    if width > MAX_WIDTH:
        return f"rows of {width} features exceed one program's {MAX_WIDTH}"
    return template_params(width, op == "add_rmsnorm", bool(params.get("unit_offset", False)))


def _rms_norm_bind(params: dict[str, Any]) -> Callable[..., Any]:
    from archc.backends.torch.kernels.rms_norm.triton import triton_rms_norm

    return triton_rms_norm


def _layer_norm_params(op: str, params: dict[str, Any], in_types: list[Any]) -> dict[str, Any] | str:
    from archc.backends.torch.kernels.layer_norm.specialize import MAX_WIDTH
    from archc.backends.torch.kernels.layer_norm.specialize import params as template_params

    width = in_types[0].width
    if width > MAX_WIDTH:
        return f"rows of {width} features exceed one program's {MAX_WIDTH}"
    affine = params.get("affine", True)
    return template_params(width, op == "add_layernorm", affine, affine and params.get("bias", True))


def _layer_norm_bind(params: dict[str, Any]) -> Callable[..., Any]:
    from archc.backends.torch.kernels.layer_norm.triton import triton_layer_norm

    return triton_layer_norm


def _glu_params(op: str, params: dict[str, Any], in_types: list[Any]) -> dict[str, Any] | str:
    from archc.backends.torch.kernels.glu.specialize import params as template_params

    return template_params(params["hidden"], "silu" if op.startswith("swiglu") else "gelu_tanh",
                           op.endswith("_packed"))


def _glu_bind(params: dict[str, Any]) -> Callable[..., Any]:
    from archc.backends.torch.kernels.glu.triton import triton_glu

    return triton_glu


def _rotary_params(op: str, params: dict[str, Any], in_types: list[Any]) -> dict[str, Any] | str | None:
    from archc.backends.torch.kernels.rotary.specialize import params as template_params
    from archc.ops.registry import REGISTRY

    pos = params.get("pos") or {}
    if pos.get("op") != "rope":
        return None  # no rotary embedding: nothing for the kernel to do
    p = REGISTRY[op].params(**params)
    head_dim = p.head_dim_for(in_types[0].width)
    rot = int(head_dim * pos.get("params", {}).get("fraction", 1.0))
    return template_params(head_dim, rot, False)


def _rotary_bind(params: dict[str, Any]) -> Callable[..., Any]:
    from archc.backends.torch.kernels.rotary.triton import triton_rope

    return triton_rope


def _recurrent_step_params(op: str, params: dict[str, Any], in_types: list[Any]) -> dict[str, Any] | str | None:
    from archc.backends.torch.kernels.recurrent_step.specialize import MAX_KEY
    from archc.backends.torch.kernels.recurrent_step.specialize import params as template_params
    from archc.ops.registry import REGISTRY

    p = REGISTRY[op].params(**params)
    if op == "mamba2":  # S [P, N]: keys are the state's N features, values the head's P
        rule, key, value, v_major = "decay", p.d_state, p.head_dim, True
    elif op == "gated_deltanet":
        rule, key, value, v_major = "delta", p.head_dim, p.value_dim, False
    elif op == "mlstm":
        head = p.head_dim_for(in_types[0].width)
        rule, key, value, v_major = "mlstm", head, head, False
    elif op == "rwkv_time_mix":
        if p.version != 6:
            return None  # RWKV-4's WKV keeps a vector state: not this kernel's
        rule, key, value, v_major = "wkv", p.head_size, p.head_size, False
    elif op in ("linear_attention", "performer_attention"):
        if not p.causal:
            return None  # bidirectional: no recurrent step
        head = p.head_dim_for(in_types[0].width)
        # S and the normalizer z as one [m, head_dim + 1] state (v with a column of ones), undecayed
        rule, key, value, v_major = "decay", p.features if op == "performer_attention" else head, head + 1, False
    else:
        rule, (key, value), v_major = "decay", p.head_dims_for(in_types[0].width), False
    if key > MAX_KEY:
        return f"keys of {key} features exceed one program's {MAX_KEY}"
    return template_params(rule, key, value, v_major)


def _recurrent_step_bind(params: dict[str, Any]) -> Callable[..., Any]:
    from archc.backends.torch.kernels.gated_delta_rule.triton import triton_delta_rule_step
    from archc.backends.torch.kernels.mlstm.triton import triton_mlstm_step
    from archc.backends.torch.kernels.ssd.triton import triton_decay_step
    from archc.backends.torch.kernels.wkv6.triton import triton_wkv6_step

    return {"decay": triton_decay_step, "delta": triton_delta_rule_step, "wkv": triton_wkv6_step,
            "mlstm": triton_mlstm_step}[params["RULE"]]


def _selective_step_params(op: str, params: dict[str, Any], in_types: list[Any]) -> dict[str, Any] | str:
    from archc.backends.torch.kernels.selective_scan.specialize import MAX_STATE
    from archc.backends.torch.kernels.selective_scan.specialize import params as template_params
    from archc.ops.registry import REGISTRY

    p = REGISTRY[op].params(**params)
    if p.d_state > MAX_STATE:
        return f"a state of {p.d_state} exceeds one program's {MAX_STATE}"
    return template_params(p.inner(in_types[0].width), p.d_state)


def _selective_step_bind(params: dict[str, Any]) -> Callable[..., Any]:
    from archc.backends.torch.kernels.selective_scan.triton import triton_selective_step

    return triton_selective_step


def _cross_entropy_params(op: str, params: dict[str, Any], in_types: list[Any]) -> dict[str, Any] | str:
    from archc.backends.torch.kernels.linear_cross_entropy.specialize import params as template_params

    return template_params(int(params["vocab"]), params.get("softcap"))


def _cross_entropy_bind(params: dict[str, Any]) -> Callable[..., Any]:
    from archc.backends.torch.kernels.linear_cross_entropy.triton import triton_linear_cross_entropy

    return triton_linear_cross_entropy


def _decay_chunk_params(op: str, params: dict[str, Any], in_types: list[Any]) -> dict[str, Any] | str:
    from archc.backends.torch.kernels.ssd.chunk_specialize import MAX_KEY
    from archc.backends.torch.kernels.ssd.chunk_specialize import params as template_params
    from archc.ops.registry import REGISTRY

    p = REGISTRY[op].params(**params)
    key, value = (p.d_state, p.head_dim) if op == "mamba2" else p.head_dims_for(in_types[0].width)
    if key > MAX_KEY:
        return f"keys of {key} features exceed one program's {MAX_KEY}"
    return template_params(key, value, p.chunk)


def _decay_chunk_bind(params: dict[str, Any]) -> Callable[..., Any]:
    from archc.backends.torch.kernels.ssd.triton import triton_chunked_decay_attention

    return triton_chunked_decay_attention


def _delta_chunk_params(op: str, params: dict[str, Any], in_types: list[Any]) -> dict[str, Any] | str:
    from archc.backends.torch.kernels.gated_delta_rule.chunk_specialize import MAX_WIDTH
    from archc.backends.torch.kernels.gated_delta_rule.chunk_specialize import params as template_params
    from archc.ops.registry import REGISTRY

    p = REGISTRY[op].params(**params)
    if max(p.head_dim, p.value_dim) > MAX_WIDTH:
        return f"heads of {p.head_dim}×{p.value_dim} exceed one program's {MAX_WIDTH}×{MAX_WIDTH}"
    return template_params(p.head_dim, p.value_dim, p.chunk)


def _delta_chunk_bind(params: dict[str, Any]) -> Callable[..., Any]:
    from archc.backends.torch.kernels.gated_delta_rule.triton import triton_chunk_gated_delta_rule

    return triton_chunk_gated_delta_rule


def _wkv6_chunk_params(op: str, params: dict[str, Any], in_types: list[Any]) -> dict[str, Any] | str | None:
    from archc.backends.torch.kernels.wkv6.chunk_specialize import MAX_KEY
    from archc.backends.torch.kernels.wkv6.chunk_specialize import params as template_params
    from archc.ops.registry import REGISTRY

    p = REGISTRY[op].params(**params)
    if p.version != 6:
        return None  # RWKV-4's WKV keeps a vector state: the wkv4 kernels'
    if p.head_size > MAX_KEY:
        return f"heads of {p.head_size} exceed one program's {MAX_KEY}"
    return template_params(p.head_size, p.head_size)


def _wkv6_chunk_bind(params: dict[str, Any]) -> Callable[..., Any]:
    from archc.backends.torch.kernels.wkv6.triton import triton_wkv6

    return triton_wkv6


def _mlstm_chunk_params(op: str, params: dict[str, Any], in_types: list[Any]) -> dict[str, Any] | str:
    from archc.backends.torch.kernels.mlstm import MLSTM_CHUNK
    from archc.backends.torch.kernels.mlstm.chunk_specialize import MAX_KEY
    from archc.backends.torch.kernels.mlstm.chunk_specialize import params as template_params
    from archc.ops.registry import REGISTRY

    head = REGISTRY[op].params(**params).head_dim_for(in_types[0].width)
    if head > MAX_KEY:
        return f"heads of {head} exceed one program's {MAX_KEY}"
    return template_params(head, head, MLSTM_CHUNK)


def _mlstm_chunk_bind(params: dict[str, Any]) -> Callable[..., Any]:
    from archc.backends.torch.kernels.mlstm.triton import triton_mlstm

    return triton_mlstm


def _wkv4_step_params(op: str, params: dict[str, Any], in_types: list[Any]) -> dict[str, Any] | None:
    from archc.backends.torch.kernels.wkv4.specialize import params as template_params

    if params.get("version", 4) != 4:
        return None  # RWKV-6's WKV has a matrix state: the recurrent_step kernel's
    return template_params(int(params.get("hidden") or in_types[0].width))


def _wkv4_step_bind(params: dict[str, Any]) -> Callable[..., Any]:
    from archc.backends.torch.kernels.wkv4.triton import triton_wkv4_step

    return triton_wkv4_step


def _wkv4_scan_params(op: str, params: dict[str, Any], in_types: list[Any]) -> dict[str, Any] | None:
    from archc.backends.torch.kernels.wkv4.specialize import scan_params

    if params.get("version", 4) != 4:
        return None  # RWKV-6's WKV has a matrix state: the wkv6_chunk kernels'
    return scan_params(int(params.get("hidden") or in_types[0].width))


def _wkv4_scan_bind(params: dict[str, Any]) -> Callable[..., Any]:
    from archc.backends.torch.kernels.wkv4.triton import triton_wkv4

    return triton_wkv4


def _slstm_step_params(op: str, params: dict[str, Any], in_types: list[Any]) -> dict[str, Any] | str:
    from archc.backends.torch.kernels.slstm.specialize import MAX_HEAD
    from archc.backends.torch.kernels.slstm.specialize import params as template_params
    from archc.ops.registry import REGISTRY

    head = REGISTRY[op].params(**params).head_dim_for(in_types[0].width)
    if head > MAX_HEAD:
        return f"heads of {head} exceed one program's {MAX_HEAD}"
    return template_params(head)


def _slstm_step_bind(params: dict[str, Any]) -> Callable[..., Any]:
    from archc.backends.torch.kernels.slstm.triton import triton_slstm_step

    return triton_slstm_step


def _grouped_matmul_params(op: str, params: dict[str, Any], in_types: list[Any]) -> dict[str, Any] | None:
    from archc.backends.torch.kernels.grouped_matmul.specialize import params as template_params

    expert = params.get("expert") or {}
    if expert.get("op") not in ("swiglu", "geglu") or expert.get("params", {}).get("bias"):
        return None  # the grouped path is written for bias-free GLU experts (Mixtral, Qwen-MoE, Jamba)
    return template_params(int(expert["params"]["hidden"]), in_types[0].width, False)


def _grouped_matmul_bind(params: dict[str, Any]) -> Callable[..., Any]:
    from archc.backends.torch.kernels.grouped_matmul.triton import triton_grouped_matmul

    return triton_grouped_matmul


def _selective_scan_params(op: str, params: dict[str, Any], in_types: list[Any]) -> dict[str, Any] | str:
    from archc.backends.torch.kernels.selective_scan.scan_specialize import MAX_STATE
    from archc.backends.torch.kernels.selective_scan.scan_specialize import params as template_params
    from archc.ops.registry import REGISTRY

    p = REGISTRY[op].params(**params)
    if p.d_state > MAX_STATE:
        return f"a state of {p.d_state} exceeds one program's {MAX_STATE}"
    return template_params(p.inner(in_types[0].width), p.d_state)


def _selective_scan_bind(params: dict[str, Any]) -> Callable[..., Any]:
    from archc.backends.torch.kernels.selective_scan.triton import triton_selective_scan

    return triton_selective_scan


KERNELS: dict[str, Family] = {f.template: f for f in (
    Family("rms_norm", ("rmsnorm", "add_rmsnorm"), _rms_norm_params, _rms_norm_bind,
           "archc/backends/torch/kernels/rms_norm/naive.py"),
    Family("layer_norm", ("layernorm", "add_layernorm"), _layer_norm_params, _layer_norm_bind,
           "archc/backends/torch/kernels/layer_norm/naive.py"),
    Family("glu", ("swiglu", "geglu", "swiglu_packed", "geglu_packed"), _glu_params, _glu_bind,
           "archc/backends/torch/kernels/glu/naive.py"),
    Family("rotary", ("attention", "attention_packed"), _rotary_params, _rotary_bind,
           "archc/backends/torch/kernels/rotary/naive.py"),
    Family("recurrent_step", ("mamba2", "retention", "retention_packed", "gated_deltanet", "rwkv_time_mix", "mlstm",
                              "linear_attention", "performer_attention"),
           _recurrent_step_params, _recurrent_step_bind, "archc/backends/torch/kernels/ssd/naive.py"),
    Family("selective_scan", ("mamba",), _selective_scan_params, _selective_scan_bind,
           "archc/backends/torch/kernels/selective_scan/naive.py"),
    Family("selective_step", ("mamba",), _selective_step_params, _selective_step_bind,
           "archc/backends/torch/kernels/selective_scan/naive.py"),
    Family("decay_chunk", ("mamba2", "retention", "retention_packed"), _decay_chunk_params, _decay_chunk_bind,
           "archc/backends/torch/kernels/ssd/naive.py"),
    Family("delta_chunk", ("gated_deltanet",), _delta_chunk_params, _delta_chunk_bind,
           "archc/backends/torch/kernels/gated_delta_rule/naive.py"),
    Family("wkv6_chunk", ("rwkv_time_mix",), _wkv6_chunk_params, _wkv6_chunk_bind,
           "archc/backends/torch/kernels/wkv6/naive.py"),
    Family("mlstm_chunk", ("mlstm",), _mlstm_chunk_params, _mlstm_chunk_bind,
           "archc/backends/torch/kernels/mlstm/naive.py"),
    Family("wkv4_step", ("rwkv_time_mix",), _wkv4_step_params, _wkv4_step_bind,
           "archc/backends/torch/kernels/wkv4/step.py"),
    Family("wkv4_scan", ("rwkv_time_mix",), _wkv4_scan_params, _wkv4_scan_bind,
           "archc/backends/torch/kernels/wkv4/naive.py"),
    Family("slstm_step", ("slstm",), _slstm_step_params, _slstm_step_bind,
           "archc/backends/torch/ops/xlstm.py"),
    Family("grouped_matmul", ("moe",), _grouped_matmul_params, _grouped_matmul_bind,
           "archc/backends/torch/kernels/grouped_matmul/naive.py"),
    Family("cross_entropy", ("lm_head",), _cross_entropy_params, _cross_entropy_bind,
           "archc/backends/torch/kernels/linear_cross_entropy/naive.py"),
)}

#: op -> the families that have a kernel for it (Mamba-2: its chunked forward and its decode step)
BY_OP: dict[str, tuple[Family, ...]] = {}
for _family in KERNELS.values():
    for _op in _family.ops:
        BY_OP[_op] = (*BY_OP.get(_op, ()), _family)


@dataclass(frozen=True)
class Choice:
    """One node's kernel: the family's template and its parameters, or None (the torch form) and why."""

    node: str
    op: str
    template: str | None
    why: str
    params: dict[str, Any] = field(default_factory=dict)
    #: the family considered (its template, also where the node runs the torch form)
    family: str = ""


def choose(graph: Graph, mode: str, device_type: str) -> list[Choice]:
    """Each node whose op has a kernel family: the kernel it runs under `mode` on `device_type`.
    KernelError for `mode="triton"` where a node cannot run its kernel."""
    if mode not in MODES:
        raise KernelError(f"kernels={mode!r}: one of {', '.join(MODES)}")
    unavailable = why_unavailable(device_type)
    if mode == "auto" and device_type != "cuda":
        unavailable = unavailable or f"kernels=auto runs Triton on CUDA devices; this model is on {device_type}"
    out = []
    for node in graph.nodes.values():
        for family in BY_OP.get(node.op, ()):
            choice = _choose_one(node, family, graph.input_types(node), mode, unavailable)
            if choice is not None:
                out.append(choice)
    return out


def _choose_one(node: Any, family: Family, in_types: list[Any], mode: str, unavailable: str) -> Choice | None:
    spec = family.specialize(node.op, node.params, in_types)
    if spec is None:
        return None
    if mode == "torch":
        return Choice(node.id, node.op, None, "kernels=torch", family=family.template)
    if isinstance(spec, str) or unavailable:
        why = spec if isinstance(spec, str) else unavailable
        if mode == "triton":
            raise KernelError(f"kernels=triton: `{node.id}` ({node.op}) cannot run the {family.template} kernel: {why}")
        return Choice(node.id, node.op, None, why, family=family.template)
    return Choice(node.id, node.op, family.template, "specialized: " + ", ".join(
        f"{k}={v}" for k, v in spec.items() if k != "REFERENCE"), spec, family.template)


def use_kernels(model: nn.Module, mode: str = "auto") -> list[Choice]:
    """Bind each op module of `model` (an `ArchModel`) to the kernel `choose` gives it (its
    `triton_kernels`, which its forward calls; empty for the torch form); returns the choices."""
    first = next(model.parameters(), None)
    device_type = first.device.type if first is not None else "cpu"
    choices = choose(model.graph, mode, device_type)
    modules = dict(model.op_modules())
    bound: dict[str, dict[str, Callable[..., Any]]] = {}
    for c in choices:
        if c.template:
            bound.setdefault(c.node, {})[c.template] = KERNELS[c.template].bind(c.params)
    for nid in {c.node for c in choices}:
        if (mod := modules.get(nid)) is not None:
            mod.triton_kernels = bound.get(nid, {})
    model.kernels = mode
    return choices
