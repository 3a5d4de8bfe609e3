"""Schemas of the deployment sections: `export <target> { }`, `parallel { }` and `train { }`.

Sections describe how a model is trained and shipped, not its structure. They are validated at
check time so a typo fails in the editor, not an hour into a run; the backends that read them
(training loop, ONNX exporter, planner) take the validated dicts from `Graph.sections`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, field_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _call(v: Any, allowed: dict[str, set[str]], what: str) -> dict[str, Any]:
    """Validate `fn(k=v, ...)` against the allowed functions and their keyword names."""
    if isinstance(v, str):
        v = {"fn": v, "args": [], "kwargs": {}}
    if not isinstance(v, dict) or "fn" not in v:
        raise ValueError(f"expected one of {', '.join(f'{k}(...)' for k in allowed)}")
    if v["fn"] not in allowed:
        raise ValueError(f"unknown {what} `{v['fn']}`; expected one of {', '.join(sorted(allowed))}")
    unknown = set(v["kwargs"]) - allowed[v["fn"]]
    if unknown:
        raise ValueError(f"{v['fn']}() has no argument {', '.join(sorted(unknown))}; "
                         f"it takes {', '.join(sorted(allowed[v['fn']])) or 'none'}")
    return v


class ExportSection(_Section):
    target: Literal["onnx"] = "onnx"
    opset: int | None = Field(None, ge=18, le=23, description="ONNX opset (default: the exporter's, 23)")
    quantize: Literal["none", "int8", "int8_dynamic", "int8_static", "int8_block", "int4"] = Field(
        "none", description="int8 (the best int8 scheme on held-out data), int8_dynamic, int8_static, int8_block "
                            "or int4")
    calibrate: str | None = Field(None, description="calibration data: TASK:N (chars:256) or FILE:N")
    quantize_state: Literal["fp32", "int8"] = Field(
        "fp32", description="int8: a decoder's KV caches stored in int8, one scale per row (opset >= 21)")
    prune: dict[str, Any] | None = Field(None, description="heads(f), ffn(f), experts(n) or magnitude(f)")
    step: bool = Field(True, description="a decoder with its state (false: a forward graph of logits only)")

    @field_validator("prune", mode="before")
    @classmethod
    def _prune(cls, v: Any) -> Any:
        if v is None:
            return v
        v = _call(v, {"heads": set(), "ffn": set(), "experts": set(), "magnitude": set()}, "pruning")
        if len(v["args"]) != 1 or not isinstance(v["args"][0], int | float) or not 0 < v["args"][0] < 1 + 1e9:
            raise ValueError(f"{v['fn']}(...) takes one positive number, e.g. {v['fn']}(0.25)")
        return v


class ParallelSection(_Section):
    devices: PositiveInt = 1
    memory: PositiveInt | None = Field(None, description="memory per device, e.g. 80GB")
    tensor: PositiveInt | None = None
    pipeline: PositiveInt | None = None
    data: PositiveInt | None = None
    expert: PositiveInt | None = None
    sequence: PositiveInt | None = None
    fsdp: bool = False


class TrainSection(_Section):
    optimizer: dict[str, Any] = Field(default_factory=lambda: {"fn": "adamw", "args": [], "kwargs": {}})
    schedule: dict[str, Any] = Field(default_factory=lambda: {"fn": "cosine", "args": [], "kwargs": {}})
    steps: PositiveInt = 1000
    batch: PositiveInt = 8
    seq: PositiveInt = 256
    grad_clip: PositiveFloat | None = 1.0
    accumulate: PositiveInt = 1
    precision: Literal["fp32", "bf16"] = "fp32"
    checkpointing: bool = False
    task: str | None = None

    @field_validator("optimizer", mode="before")
    @classmethod
    def _opt(cls, v: Any) -> Any:
        return _call(v, {"adamw": {"lr", "betas", "weight_decay", "eps"}, "sgd": {"lr", "momentum"}}, "optimizer")

    @field_validator("schedule", mode="before")
    @classmethod
    def _sched(cls, v: Any) -> Any:
        return _call(v, {"cosine": {"warmup", "min_lr"}, "constant": {"warmup"}, "linear": {"warmup"}}, "schedule")


SECTIONS: dict[str, type[_Section]] = {"export": ExportSection, "parallel": ParallelSection, "train": TrainSection}
