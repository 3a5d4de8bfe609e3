"""`archc bench`: a spec's forward, training step and decode, timed side by side against the
model people would otherwise run.

Runners (each a fresh model holding the same weights):
* `archc eager`: the built module as `archc train` runs it;
* `archc compiled`: the same with `torch.compile` (the forward and backward, `compiled.compile_model`;
  decoding through the compiled decode step, `compiled.DecodeStep`);
* `archc triton`: the Triton kernels (`kernels="triton"`), where they can run (a CUDA device);
* `transformers`: the Hugging Face model of the same config (`--vs hf`), where the spec is exactly
  a Hugging Face family (`archc.hf.match`; llama, mistral, mixtral, qwen2, gpt2, mamba, mamba2,
  rwkv, Qwen3-Next, …), random-initialized from the config and loaded with archc's weights — the
  report gives the largest logit difference, so a ratio compares two computations of one model.

Each workload is warmed up once per runner (the compiled runner compiles there; its compile time
is reported), then the runners are timed alternately, `repeat` times (a, b, c, a, b, c, …), so
drift in the machine's speed hits all alike; min, median and max are reported, and ratios are of
medians against `transformers` (else against `archc eager`). Decode is seconds per new token after
a prompt, as (time of n tokens − time of 1) / (n − 1) of the same generation call, so the prompt's
prefill cancels.

The peak matmul rate of the device (a 1024² matmul in the model's dtype, measured in the same
run) gives each forward's fraction of it, from the cost model's FLOPs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from archc.backends.torch.model import ArchModel
    from archc.ir.graph import Graph

WORKLOADS = ("forward", "train", "decode")
EAGER, COMPILED, TRITON, HF = "archc eager", "archc compiled", "archc triton", "transformers"


@dataclass
class Timing:
    workload: str
    #: the shape measured, in words ("1×512", "4×256", "after 128")
    shape: str
    runner: str
    #: seconds per call (forward, train), per new token (decode)
    times: list[float]
    #: the median's ratio to the reference runner's (transformers, else archc eager)
    ratio: float | None = None
    #: the forward's share of the device's peak matmul rate (cost model FLOPs / time / peak)
    peak_fraction: float | None = None

    @property
    def min(self) -> float:
        return min(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def max(self) -> float:
        return max(self.times)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "min": self.min, "median": self.median, "max": self.max}


@dataclass
class BenchReport:
    spec: str
    device: str
    dtype: str
    threads: int
    versions: dict[str, str]
    runners: list[str]
    #: why a runner asked for is absent (no CUDA for Triton; no Hugging Face family)
    skipped: dict[str, str] = field(default_factory=dict)
    #: the Hugging Face `model_type` compared against
    hf_model_type: str | None = None
    #: max |logits(archc) − logits(transformers)| over a forward of the first shape
    hf_max_abs_diff: float | None = None
    #: seconds of the first call of each compiled workload (tracing and code generation)
    compile_seconds: dict[str, float] = field(default_factory=dict)
    #: GFLOP/s of a 1024² matmul on this device in this dtype
    peak_gflops: float = 0.0
    timings: list[Timing] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "timings"}
        return {**out, "timings": [t.to_json() for t in self.timings]}


@dataclass
class Setup:
    """What to measure; the defaults are issue #25's shapes."""

    workloads: tuple[str, ...] = WORKLOADS
    forward_seqs: tuple[int, ...] = (512,)
    train_batch: int = 4
    train_seq: int = 256
    prompt: int = 128
    new_tokens: int = 33
    repeat: int = 5
    vs_hf: bool = True
    compile: bool = True
    triton: bool = True
    seed: int = 0


def matmul_peak_gflops(device: torch.device, dtype: torch.dtype, n: int = 1024, repeat: int = 20) -> float:
    """The device's matmul rate on an n×n×n product (2n³ FLOPs), best of `repeat`."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeat + 2):
        _sync(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def hf_counterpart(model: ArchModel) -> tuple[Any, str]:
    """(the transformers model of `model`'s family holding its weights, ""), or (None, why not).

    The weights travel as a user's would: `export_hf` writes the family's checkpoint (the
    published layout) into a temporary folder and transformers' own `from_pretrained` reads it,
    converting layouts as it does for every checkpoint (transformers 5 stacks a MoE's experts
    on load)."""
    try:
        import transformers
    except ImportError:
        return None, "transformers is not installed (pip install 'archc[hf]')"
    import tempfile

    from archc.hf.exporter import export_hf

    with tempfile.TemporaryDirectory(prefix="archc-bench-") as tmp:
        exported = export_hf(model, "", model.graph.name, Path(tmp) / "hf")
        if exported.why_not_family is not None:
            return None, f"not a Hugging Face family: {exported.why_not_family}"
        try:
            hf, info = transformers.AutoModelForCausalLM.from_pretrained(
                exported.folder, dtype=next(model.parameters()).dtype, output_loading_info=True)
        except (ValueError, KeyError, ImportError, OSError) as e:
            return None, f"transformers {transformers.__version__} cannot load {exported.model_type}: {e}"
    missing, unexpected = info.get("missing_keys", []), info.get("unexpected_keys", [])
    if missing or unexpected:
        return None, (f"the weights do not load into {type(hf).__name__}: missing {sorted(missing)[:3]}, "
                      f"unexpected {sorted(unexpected)[:3]}")
    return hf.to(next(model.parameters()).device).eval(), ""


def bench(spec: str | Graph, setup: Setup | None = None, device: str = "cpu", dtype: torch.dtype = torch.float32,
          pipeline: str = "O1", progress: Callable[[str], None] | None = None) -> BenchReport:
    """Time `spec`'s workloads on every runner that applies (module docstring)."""
    from archc.backends.torch import build
    from archc.backends.torch.compiled import compile_model
    from archc.backends.triton import why_unavailable

    setup = setup or Setup()
    dev = torch.device(device)
    say = progress or (lambda _: None)
    eager = build(spec, seed=setup.seed, device=dev, dtype=dtype, pipeline=pipeline, kernels="torch").eval()
    name = eager.graph.name
    vocab = eager.out_type_vocab() if eager.head_loss == "lm" else 0
    if len(eager.input_names) != 1 or not vocab:
        raise ValueError(f"{name}: archc bench times language models (one input, an lm_head); this spec takes "
                         f"{eager.input_names} and ends in {eager.head_loss or 'no loss'}")
    versions = {"torch": torch.__version__}
    report = BenchReport(name, str(dev), str(dtype).removeprefix("torch."), torch.get_num_threads(), versions, [EAGER])
    models: dict[str, Any] = {EAGER: eager}

    def fresh(kernels: str = "torch") -> ArchModel:
        return build(spec, seed=setup.seed, device=dev, dtype=dtype, pipeline=pipeline, kernels=kernels).eval()

    if setup.compile:
        models[COMPILED] = fresh()  # decode compiles its own step; forward and train a copy each
    if setup.triton:
        why = why_unavailable(dev.type) or ("" if dev.type == "cuda" else "Triton kernels run on CUDA devices")
        if why:
            report.skipped[TRITON] = why
        else:
            models[TRITON] = fresh("triton")
    if setup.vs_hf:
        hf, why = hf_counterpart(eager)
        if hf is None:
            report.skipped[HF] = why
        else:
            import transformers

            versions["transformers"] = transformers.__version__
            hf = hf.to(dtype)
            models[HF] = hf
            report.hf_model_type = hf.config.model_type
            ids = _ids(vocab, 1, setup.forward_seqs[0], dev, setup.seed)
            with torch.no_grad():
                report.hf_max_abs_diff = float((eager(ids).logits.float() - hf(ids).logits.float()).abs().max())
    report.runners = list(models)
    report.peak_gflops = matmul_peak_gflops(dev, dtype)
    flops_per_token = _forward_flops(eager.canonical_graph)
    reference = HF if HF in models else EAGER

    def static(runner: str, model: Any) -> Any:
        """The model a forward or train workload times: the compiled runner's is a copy compiled
        with static shapes for this workload alone."""
        return compile_model(fresh(), dynamic=False) if runner == COMPILED else model

    def measure(workload: str, shape: str, calls: dict[str, Callable[[], float]],
                flops: float | None = None) -> None:
        say(f"{workload} {shape}")
        for runner, call in calls.items():  # warm-up; the compiled runner compiles here
            t = call()
            if runner == COMPILED:
                steps = models[COMPILED].__dict__.get("_decode_steps", {}).values() if workload == "decode" else ()
                report.compile_seconds[f"{workload} {shape}"] = sum(s.compile_seconds or 0 for s in steps) or t
        times: dict[str, list[float]] = {r: [] for r in calls}
        for _ in range(setup.repeat):
            for runner, call in calls.items():
                times[runner].append(call())
        ref = statistics.median(times[reference])
        for runner, ts in times.items():
            t = Timing(workload, shape, runner, ts, statistics.median(ts) / ref if ref > 0 else None)
            if flops is not None:
                t.peak_fraction = flops / t.median / (report.peak_gflops * 1e9)
            report.timings.append(t)

    if "forward" in setup.workloads:
        for seq in setup.forward_seqs:
            ids = _ids(vocab, 1, seq, dev, setup.seed)
            measure("forward", f"1×{seq}", {r: _forward(static(r, m), ids) for r, m in models.items()},
                    flops=flops_per_token(seq) * seq)
    if "train" in setup.workloads:
        ids = _ids(vocab, setup.train_batch, setup.train_seq, dev, setup.seed)
        measure("train", f"{setup.train_batch}×{setup.train_seq}", {r: _train_step(static(r, m), ids) for r, m in models.items()})
    if "decode" in setup.workloads:
        if not eager.causal:
            report.skipped["decode"] = f"{name} is bidirectional: it has no decode step"
        else:
            ids = _ids(vocab, 1, setup.prompt, dev, setup.seed)
            calls = {r: _decode(m, ids, setup.new_tokens, compiled=r == COMPILED, hf=r == HF) for r, m in models.items()}
            measure("decode", f"after {setup.prompt}", calls)
    return report


def _ids(vocab: int, batch: int, seq: int, device: torch.device, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, seq), generator=g).to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


def _forward(model: Any, ids: torch.Tensor) -> Callable[[], float]:
    def call() -> float:
        with torch.no_grad():
            return _timed(lambda: model(ids), ids.device)
    return call


def _train_step(model: Any, ids: torch.Tensor) -> Callable[[], float]:
    """forward + backward + AdamW, the loss the model's own (labels = the inputs, shifted inside)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        model(ids, labels=ids).loss.backward()
        opt.step()

    def call() -> float:
        model.train()
        try:
            return _timed(step, ids.device)
        finally:
            model.eval()
    return call


def _decode(model: Any, prompt: torch.Tensor, new: int, compiled: bool, hf: bool) -> Callable[[], float]:
    def generate(n: int) -> None:
        if hf:
            model.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
        else:
            model.generate(prompt, max_new_tokens=n, compile=compiled)

    def call() -> float:
        with torch.no_grad():
            return (_timed(lambda: generate(new), prompt.device) - _timed(lambda: generate(1), prompt.device)) / (new - 1)
    return call


def _forward_flops(graph: Graph) -> Callable[[int], float]:
    """FLOPs per token of a forward at sequence length T (the cost model's, attention's T² term
    included)."""
    from archc.ir.cost import CostCtx
    from archc.passes.estimate_cost import estimate_cost

    return lambda seq: float(estimate_cost(graph, CostCtx(seq=seq, batch=1, dtype="fp32")).total.flops)
