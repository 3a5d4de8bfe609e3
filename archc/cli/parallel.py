"""`archc plan`: a parallel plan for training a spec on many devices (docs/distributed.md)."""

from __future__ import annotations

import argparse
import json

from archc.cli.common import EXIT_ERRORS, EXIT_OK, EXIT_USAGE, add_limit_flags, load_or_report, print_diags
from archc.cli.flags import bandwidth, count, flops, fraction, memory, plan_degrees


def cmd_plan(args: argparse.Namespace) -> int:
    from archc.errors import Diagnostic
    from archc.parallel import PlanError, Workload, cluster_for, parse_plan, plan

    sources: dict[str, str] = {}
    prog = load_or_report(args.file, args, sources)
    if prog is None:
        return EXIT_ERRORS
    warnings = [d for d in prog.warnings if d.code != "ARC0502"]  # the section is read here
    if warnings:
        print_diags(warnings, sources)
    section = prog.graph.sections.get("parallel") or {}
    devices = args.devices or section.get("devices") or 8
    if args.nodes and devices % args.nodes:
        print_diags([Diagnostic("ARC1307", f"--nodes {args.nodes} does not divide {devices} devices", None,
                                "give a node count dividing --devices")], sources)
        return EXIT_USAGE
    cluster = cluster_for(devices, args.device, args.nodes, args.memory or section.get("memory"), args.peak,
                          args.intra_bandwidth, args.inter_bandwidth, args.efficiency)
    work = Workload(seq=args.seq, global_batch=args.global_batch, dtype=args.dtype)
    try:
        constraints = parse_plan(args.plan) if args.plan else {}
        activations = None
        if args.activations == "eager":
            from archc.backends.torch.activation_profile import ProfileError, activation_profiles

            try:
                activations = activation_profiles(prog.graph, args.seq, args.dtype)
            except ProfileError as e:
                print_diags([Diagnostic("ARC1603", str(e), None, "plan with --activations fused")], sources)
                return EXIT_ERRORS
        result = plan(prog.graph, cluster, work, constraints, keep=args.top, activations=activations)
    except PlanError as e:
        print_diags([Diagnostic("ARC1601", e.message, None, e.hint)], sources)
        return EXIT_ERRORS
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
        return EXIT_OK
    from archc.cost_table import print_plan

    print_plan(result)
    return EXIT_OK


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="a parallel plan for training on many devices: degrees, memory, step time")
    p.add_argument("file", metavar="FILE", help="spec file (.arch)")
    p.add_argument("--devices", type=count(1, 1 << 20), default=None,
                   help="accelerators in all (default: the spec's parallel section, else 8)")
    p.add_argument("--nodes", type=count(1, 1 << 20), default=None, help="nodes they are in (default: 8 a node)")
    p.add_argument("--device", choices=("a100", "a100-40gb", "h100", "h200"), default="h100",
                   help="datasheet figures to start from (h100)")
    p.add_argument("--memory", type=memory, default=None, metavar="SIZE", help="memory per device, e.g. 80GB")
    p.add_argument("--peak", type=flops, default=None, metavar="RATE", help="dense bf16 peak, e.g. 989TFLOPS")
    p.add_argument("--intra-bandwidth", type=bandwidth, default=None, metavar="RATE",
                   help="between devices of a node, per direction, e.g. 450GB/s")
    p.add_argument("--inter-bandwidth", type=bandwidth, default=None, metavar="RATE",
                   help="a device's share of the network, per direction, e.g. 50GB/s")
    p.add_argument("--efficiency", type=fraction, default=0.6,
                   help="fraction of peak the training kernels reach (0.6; docs/distributed.md)")
    p.add_argument("--seq", type=count(1), default=4096, help="tokens per sequence (4096)")
    p.add_argument("--global-batch", type=count(1), default=256, help="sequences per optimizer step (256)")
    p.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default="bf16", help="training dtype (bf16)")
    p.add_argument("--plan", default=None, type=plan_degrees, metavar="DEGREES",
                   help='fix degrees, e.g. "tp=8,pp=16" or "tp=2,fsdp=4" (cp, ep, dp, mbs, v, schedule, zero, '
                        "checkpoint)")
    p.add_argument("--activations", choices=("fused", "eager"), default="fused",
                   help="activation memory of fused kernels (the cost model, default) or of archc's eager PyTorch "
                        "modules, measured on fake tensors (what `archc train --nproc` keeps today)")
    p.add_argument("--top", type=count(0, 20), default=3, help="runners-up to show (3)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_limit_flags(p)
    p.set_defaults(fn=cmd_plan)
