"""Issue #25's GPU table, prepared so that one short run on a CUDA machine measures everything:
each Triton kernel family against eager PyTorch (archc's torch form of the same op),
`torch.compile` of that form, and the field's kernel where it is installed (flash-linear-attention's
chunk kernels, mamba_ssm's selective scan, Liger-Kernel's fused cross-entropy and RMSNorm), at the
tiny specs' widths and at 1B-class widths. Results go to docs/kernels_gpu_results.json and the
table of docs/kernels.md.

    python tools/bench_kernels.py                          # on a CUDA machine: one call, every case
    python tools/bench_kernels.py --device cpu --smoke     # here: Triton's interpreter, small shapes,
                                                           # checks that every case runs (no timings kept)

Per case: forward time (and forward + backward for the training kernels), median of
`triton.testing.do_bench`; the kernel's output against the torch form's (relative RMS error);
for the memory-bound kernels (norms, gating, rotary) the bytes they must move ÷ time ÷ the
device's copy bandwidth, measured in the same run (a 1 GiB device-to-device copy). Goals (issue
#25): ≥ 85% of peak bandwidth for the memory-bound kernels, ≥ 80% of flash-linear-attention's speed
for the chunk kernels.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

START, END = "<!-- gpu table: tools/bench_kernels.py -->", "<!-- end of gpu table -->"


@dataclass
class Case:
    """One kernel at one size: `make()` gives the inputs; each runner maps them to one tensor."""

    family: str
    size: str
    make: Callable[[], dict[str, Any]]
    archc: Callable[..., Any]
    torch_form: Callable[..., Any]
    #: bytes a memory-bound kernel must move (its inputs read, its outputs written once); 0: compute-bound
    bytes: Callable[[dict[str, Any]], int] = lambda _: 0
    backward: bool = False
    #: (the field's library, its kernel with the torch form's contract), where it imports
    field: list[tuple[str, Callable[..., Any]]] = field(default_factory=list)


def _size(x: Any) -> int:
    return x.numel() * x.element_size()


def cases(device: str, dtype: Any, smoke: bool) -> list[Case]:
    import torch
    import torch.nn.functional as F

    from archc.backends.torch.kernels.gated_delta_rule.chunk import chunk_gated_delta_rule
    from archc.backends.torch.kernels.gated_delta_rule.triton import triton_chunk_gated_delta_rule
    from archc.backends.torch.kernels.glu.naive import naive_glu
    from archc.backends.torch.kernels.glu.triton import triton_glu
    from archc.backends.torch.kernels.linear_cross_entropy.naive import naive_linear_cross_entropy
    from archc.backends.torch.kernels.linear_cross_entropy.triton import triton_linear_cross_entropy
    from archc.backends.torch.kernels.mlstm.chunk import mlstm_scan
    from archc.backends.torch.kernels.mlstm.triton import triton_mlstm
    from archc.backends.torch.kernels.rms_norm.naive import naive_rms_norm
    from archc.backends.torch.kernels.rms_norm.triton import triton_rms_norm
    from archc.backends.torch.kernels.rotary.naive import apply_rope
    from archc.backends.torch.kernels.rotary.triton import triton_rope
    from archc.backends.torch.kernels.selective_scan.chunk import selective_scan
    from archc.backends.torch.kernels.selective_scan.triton import triton_selective_scan
    from archc.backends.torch.kernels.ssd.chunk import chunked_decay_attention
    from archc.backends.torch.kernels.ssd.triton import triton_chunked_decay_attention
    from archc.backends.torch.kernels.wkv4.chunk import wkv4
    from archc.backends.torch.kernels.wkv4.triton import triton_wkv4
    from archc.backends.torch.kernels.wkv6.chunk import wkv6
    from archc.backends.torch.kernels.wkv6.triton import triton_wkv6

    g = torch.Generator(device=device).manual_seed(0)

    def randn(*shape: int, scale: float = 1.0, grad: bool = False, dt: Any = None) -> Any:
        x = (torch.randn(*shape, generator=g, device=device) * scale).to(dt or dtype)
        return x.requires_grad_(grad)

    # (tiny: the tiny specs' widths; 1b: a 1B-class model's), shrunk to a few rows for --smoke
    rows = {"tiny": 4 * 1024, "1b": 4 * 2048} if not smoke else {"tiny": 40, "1b": 40}
    seq = {"tiny": 512, "1b": 2048} if not smoke else {"tiny": 40, "1b": 40}
    width = {"tiny": 256, "1b": 2048}
    out: list[Case] = []
    for size in ("tiny", "1b"):
        n, t, d = rows[size], seq[size], width[size]
        hidden = {"tiny": 688, "1b": 5632}[size]
        out.append(Case("rms_norm (add)", size,
                        lambda n=n, d=d: {"x": randn(n, d), "weight": randn(d), "residual": randn(n, d)},
                        lambda x, weight, residual: triton_rms_norm(x, weight, 1e-6, residual=residual)[0],
                        lambda x, weight, residual: naive_rms_norm(x, weight, 1e-6, residual=residual)[0],
                        bytes=lambda i: 4 * _size(i["x"]) + _size(i["weight"])))
        out.append(Case("glu (SwiGLU)", size, lambda n=n, h=hidden: {"gate": randn(n, h), "up": randn(n, h)},
                        lambda gate, up: triton_glu(gate, up, "silu"), lambda gate, up: naive_glu(gate, up, "silu"),
                        bytes=lambda i: 3 * _size(i["gate"])))
        heads, hd = {"tiny": (8, 32), "1b": (32, 64)}[size]
        cos, sin = (randn(t, hd, dt=torch.float32) for _ in range(2))
        out.append(Case("rotary", size, lambda t=t, h=heads, hd=hd: {"x": randn(4, h, t, hd)},
                        lambda x, c=cos, s=sin: triton_rope(x, c, s), lambda x, c=cos, s=sin: apply_rope(x, c, s),
                        bytes=lambda i, c=cos: 2 * _size(i["x"]) + 2 * _size(c)))
        vocab = {"tiny": 4096, "1b": 32000}[size] if not smoke else 300
        out.append(Case("cross_entropy (fused head)", size,
                        lambda n=n, d=d, v=vocab: {"hidden": randn(n, d, grad=True), "weight": randn(v, d, scale=0.02, grad=True),
                                                   "labels": torch.randint(0, v, (n,), device=device)},
                        lambda hidden, weight, labels: triton_linear_cross_entropy(hidden, weight, None, labels),
                        lambda hidden, weight, labels: naive_linear_cross_entropy(hidden, weight, None, labels),
                        backward=True, field=_liger_ce()))
        b, h, k = 4, {"tiny": 8, "1b": 32}[size], {"tiny": 64, "1b": 128}[size]
        out.append(Case("decay_chunk (SSD)", size,
                        lambda b=b, h=h, t=t, k=k: {"q": randn(b, h, t, k, grad=True), "k": randn(b, h, t, k, scale=k ** -0.5, grad=True),
                                                    "v": randn(b, h, t, 64, grad=True),
                                                    "log_a": (-torch.rand(b, h, t, device=device) * 0.1).requires_grad_()},
                        lambda q, k, v, log_a: triton_chunked_decay_attention(q, k, v, log_a, 64),
                        lambda q, k, v, log_a: chunked_decay_attention(q, k, v, log_a, chunk=64)[0],
                        backward=True, field=_fla("simple_gla")))
        h, k = {"tiny": 4, "1b": 16}[size], {"tiny": 64, "1b": 128}[size]
        out.append(Case("delta_chunk (Gated DeltaNet)", size,
                        lambda b=b, h=h, t=t, k=k: {"q": (F.normalize(randn(b, h, t, k), dim=-1) * k ** -0.5).requires_grad_(),
                                                    "k": F.normalize(randn(b, h, t, k), dim=-1).requires_grad_(),
                                                    "v": randn(b, h, t, k, grad=True),
                                                    "g": (-torch.rand(b, h, t, device=device) * 0.1).requires_grad_(),
                                                    "beta": torch.rand(b, h, t, device=device).requires_grad_()},
                        lambda q, k, v, g, beta: triton_chunk_gated_delta_rule(q, k, v, g, beta, 64),
                        lambda q, k, v, g, beta: chunk_gated_delta_rule(q, k, v, g, beta)[0],
                        backward=True, field=_fla("gated_delta_rule")))
        h = {"tiny": 4, "1b": 32}[size]
        out.append(Case("wkv6_chunk (RWKV-6)", size,
                        lambda b=b, h=h, t=t: {"r": randn(b, h, t, 64, grad=True), "k": randn(b, h, t, 64, scale=0.5, grad=True),
                                               "v": randn(b, h, t, 64, grad=True),
                                               "w": (-randn(b, h, t, 64, dt=torch.float32).exp()).requires_grad_(),
                                               "u": randn(h, 64, dt=torch.float32, grad=True)},
                        lambda r, k, v, w, u: triton_wkv6(r, k, v, w, u), lambda r, k, v, w, u: wkv6(r, k, v, w, u)[0],
                        backward=True, field=_fla("rwkv6")))
        h, hd = {"tiny": (4, 64), "1b": (8, 256)}[size]
        out.append(Case("mlstm_chunk (xLSTM)", size,
                        lambda b=b, h=h, t=t, hd=hd: {"q": randn(b, h, t, hd, grad=True), "k": randn(b, h, t, hd, scale=hd ** -0.5, grad=True),
                                                      "v": randn(b, h, t, hd, grad=True),
                                                      "log_f": F.logsigmoid(randn(b, h, t, dt=torch.float32) + 3).detach().requires_grad_(),
                                                      "i": randn(b, h, t, dt=torch.float32, grad=True)},
                        lambda q, k, v, log_f, i: triton_mlstm(q, k, v, log_f, i, 64),
                        lambda q, k, v, log_f, i: mlstm_scan(q, k, v, log_f, i, chunk=64)[0], backward=True))
        e = {"tiny": 512, "1b": 4096}[size]
        out.append(Case("selective_scan (Mamba)", size,
                        lambda b=b, t=t, e=e: {"u": randn(b, t, e, grad=True), "dt": F.softplus(randn(b, t, e) - 3).detach().requires_grad_(),
                                               "A": (-torch.rand(e, 16, device=device) - 0.5).requires_grad_(),
                                               "B": randn(b, t, 16, grad=True), "C": randn(b, t, 16, grad=True)},
                        lambda u, dt, A, B, C: triton_selective_scan(u, dt, A, B, C),
                        lambda u, dt, A, B, C: selective_scan(u, dt, A, B, C)[0], backward=True, field=_mamba_ssm()))
        a = {"tiny": 256, "1b": 2048}[size]
        out.append(Case("wkv4_scan (RWKV-4)", size,
                        lambda b=b, t=t, a=a: {"w": torch.rand(a, device=device).exp().requires_grad_(),
                                               "u": randn(a, dt=torch.float32, grad=True), "k": randn(b, t, a, grad=True),
                                               "v": randn(b, t, a, grad=True)},
                        lambda w, u, k, v: triton_wkv4(w, u, k, v), lambda w, u, k, v: wkv4(w, u, k, v)[0], backward=True))
    return out


def _fla(which: str) -> list[tuple[str, Callable[..., Any]]]:
    """flash-linear-attention's chunk kernel with the torch form's contract ([B, H, T, ·] → [B, T, H, ·])."""
    try:
        if which == "simple_gla":
            from fla.ops.simple_gla import chunk_simple_gla

            def run(q, k, v, log_a):
                o, _ = chunk_simple_gla(*(x.transpose(1, 2) for x in (q, k, v, log_a)), scale=1.0)
                return o.transpose(1, 2)
        elif which == "gated_delta_rule":
            from fla.ops.gated_delta_rule import chunk_gated_delta_rule as fla_gdr

            def run(q, k, v, g, beta):
                o, _ = fla_gdr(*(x.transpose(1, 2) for x in (q, k, v, g, beta)), scale=1.0)
                return o.transpose(1, 2)
        else:
            from fla.ops.rwkv6 import chunk_rwkv6

            def run(r, k, v, w, u):
                o, _ = chunk_rwkv6(*(x.transpose(1, 2) for x in (r, k, v, w)), u, scale=1.0)
                return o.transpose(1, 2)
    except ImportError:
        return []
    return [("flash-linear-attention", run)]


def _mamba_ssm() -> list[tuple[str, Callable[..., Any]]]:
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except ImportError:
        return []

    def run(u, dt, A, B, C):
        return selective_scan_fn(u.transpose(1, 2), dt.transpose(1, 2), A, B.transpose(1, 2).contiguous(),
                                 C.transpose(1, 2).contiguous()).transpose(1, 2)

    return [("mamba_ssm", run)]


def _liger_ce() -> list[tuple[str, Callable[..., Any]]]:
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
    except ImportError:
        return []
    loss = LigerFusedLinearCrossEntropyLoss(reduction="sum")
    return [("Liger-Kernel", lambda hidden, weight, labels: loss(weight, hidden, labels))]


def _time(fn: Callable[[], Any], device: str, smoke: bool) -> float:
    """Seconds per call: Triton's do_bench (median) on a GPU; one call in the interpreter."""
    if device == "cuda" and not smoke:
        import triton.testing

        return triton.testing.do_bench(fn, warmup=25, rep=100) / 1e3
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _copy_bandwidth(device: str) -> float:
    """Bytes a second of a 1 GiB device-to-device copy (read + write)."""
    import torch

    x = torch.empty(256 * 1024 * 1024, dtype=torch.float32, device=device)
    y = torch.empty_like(x)
    return 2 * _size(x) / _time(lambda: y.copy_(x), device, device != "cuda")


def measure(case: Case, device: str, smoke: bool) -> dict:
    import torch

    inputs = case.make()
    leaves = [x for x in inputs.values() if isinstance(x, torch.Tensor) and x.requires_grad]
    compiled = torch.compile(case.torch_form, dynamic=False) if device == "cuda" and not smoke else None
    runners: dict[str, Callable[..., Any]] = {"archc triton": case.archc, "torch eager": case.torch_form}
    if compiled is not None:
        runners["torch.compile"] = compiled
    runners.update(dict(case.field))
    row: dict = {"family": case.family, "size": case.size, "shapes": {k: list(v.shape) for k, v in inputs.items()
                                                                        if isinstance(v, torch.Tensor)}}
    want = case.torch_form(**inputs)
    got = case.archc(**inputs)
    row["rel_rms_vs_torch"] = float((got.float() - want.float()).pow(2).mean().sqrt()
                                    / want.float().pow(2).mean().sqrt().clamp_min(1e-12))
    for name, fn in runners.items():
        try:
            with torch.no_grad():
                fwd = _time(lambda fn=fn: fn(**inputs), device, smoke)
            entry = {"forward_ms": 1e3 * fwd}
            if case.backward and leaves:
                def step(fn=fn):
                    out = fn(**inputs)
                    torch.autograd.grad(out.float().sum(), leaves)
                entry["forward_backward_ms"] = 1e3 * _time(step, device, smoke)
            if case.bytes(inputs):
                entry["bytes"] = case.bytes(inputs)
            row[name] = entry
        except Exception as e:  # a runner that cannot take this case: said in the table
            row[name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"}
    return row


def table(results: dict) -> str:
    peak = results.get("copy_bandwidth_GBps")
    rows = [f"Device: {results.get('device', '—')}; copy bandwidth {peak or '—'} GB/s.", "",
            "| kernel | size | archc ms (fwd / fwd+bwd) | torch eager | torch.compile | the field's | of copy bandwidth | error vs torch |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]

    def ms(e: dict | None) -> str:
        if not e:
            return "—"
        if "error" in e:
            return e["error"]
        return f"{e['forward_ms']:.3f}" + (f" / {e['forward_backward_ms']:.3f}" if "forward_backward_ms" in e else "")

    for r in results.get("cases", []):
        a = r.get("archc triton", {})
        frac = f"{a['bytes'] / (a['forward_ms'] / 1e3) / (peak * 1e9):.0%}" if a.get("bytes") and peak and "forward_ms" in a else ""
        fields = [k for k in r if k not in ("family", "size", "shapes", "rel_rms_vs_torch", "archc triton", "torch eager",
                                            "torch.compile")]
        field_text = "; ".join(f"{k}: {ms(r[k])}" for k in fields) or "not installed"
        rows.append(f"| {r['family']} | {r['size']} | {ms(a)} | {ms(r.get('torch eager'))} | {ms(r.get('torch.compile'))} "
                    f"| {field_text} | {frac} | {r['rel_rms_vs_torch']:.1e} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--smoke", action="store_true", help="small shapes, one call each (the interpreter on the CPU)")
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    ap.add_argument("--json", default=str(ROOT / "docs/kernels_gpu_results.json"))
    args = ap.parse_args()
    if args.device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")
        args.smoke = True
    warnings.filterwarnings("ignore")
    import torch

    from tools.results import publish, save_results

    dtype = getattr(torch, args.dtype)
    results: dict = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu (Triton's interpreter)",
                     "dtype": args.dtype, "torch": torch.__version__, "cases": []}
    if not args.smoke:
        results["copy_bandwidth_GBps"] = round(_copy_bandwidth(args.device) / 1e9, 1)
    for case in cases(args.device, dtype, args.smoke):
        row = measure(case, args.device, args.smoke)
        results["cases"].append(row)
        print(json.dumps(row), flush=True)
    if args.smoke:  # a check that every case runs: no figures are kept
        print(table(results))
        return
    out = Path(args.json)
    save_results(out, results)
    publish(out, ROOT / "docs/kernels.md", START, END, table(results))


if __name__ == "__main__":
    main()
