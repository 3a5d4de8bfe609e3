"""Parallel plans: how a model's training step splits over many devices (`archc plan`).

Torch-free, like the front end: the planner reads the op records' parallelism rules
(`archc.ir.sharding`, `OpDef.parallel`) and the cost model (`estimate_cost`), searches the
layouts of data (DDP, ZeRO-1, FSDP), tensor (+ sequence), context, expert and pipeline
parallelism (1F1B, interleaved, GPipe), microbatching and activation checkpointing, and
returns a `ParallelPlan` (docs/distributed.md).

    >>> from archc.parallel import plan, cluster_for, Workload
    >>> p = plan(graph, cluster_for(1024, "h100"), Workload(seq=4096, global_batch=1024))
    >>> p.best.layout.text(), p.best.step
"""

from archc.parallel.cluster import DEVICES, Cluster, Device, Workload, cluster_for
from archc.parallel.estimate import Estimate, Layout, estimate
from archc.parallel.search import ParallelPlan, PlanError, parse_plan, plan

__all__ = ["DEVICES", "Cluster", "Device", "Estimate", "Layout", "ParallelPlan", "PlanError", "Workload",
           "cluster_for", "estimate", "parse_plan", "plan"]
