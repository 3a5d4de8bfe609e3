"""One rank of tests/backends/torch/test_distributed.py, started by torchrun: builds a small spec,
applies a plan (tensor / data / FSDP degrees) with archc/backends/torch/distributed.py, takes one
training step's loss and gradients on a global batch, and compares them with the same step in
this process without any parallelism (same seed, same batch). Rank 0 writes the largest
differences, and what the ranks hold against what the planner predicted, to `--out` (JSON).

    python -m torch.distributed.run --standalone --nproc-per-node 2 distributed_step.py \
        --case moe --tp 2 --out result.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

CASES = {
    # attention (GQA, rope) and a MoE, tied embedding
    "moe": """model m(tokens) {
  block decoder(x) {
    x = x + attention(rmsnorm(x), heads=4, kv_heads=2, causal=true, pos=rope(theta=10000))
    return x + moe(rmsnorm(x), experts=4, top_k=2, expert=swiglu(hidden=24))
  }
  x = embed(tokens, 64, 32)
  x = repeat(2, decoder)(x)
  return lm_head(rmsnorm(x), tied=true)
}
""",
    # a hybrid: Mamba-2, attention, a MoE whose load-balancing loss is off (that loss is computed
    # per data-parallel rank's rows, as Megatron computes it per micro-batch: not the global one)
    "hybrid": """model m(tokens) {
  block ssm(x) {
    x = x + mamba2(rmsnorm(x), d_state=16, head_dim=16, chunk=8)
    return x + swiglu(rmsnorm(x), hidden=48)
  }
  block attn(x) {
    x = x + attention(rmsnorm(x), heads=4, causal=true)
    return x + moe(rmsnorm(x), experts=4, top_k=2, expert=swiglu(hidden=24), aux_loss=0.0)
  }
  x = embed(tokens, 64, 32)
  x = pattern("SA", S=ssm, A=attn)(x)
  return lm_head(rmsnorm(x), tied=false)
}
""",
    # a MoE without its load-balancing loss (computed per data-parallel rank's rows), for ep
    "experts": """model m(tokens) {
  block decoder(x) {
    x = x + attention(rmsnorm(x), heads=4, causal=true)
    return x + moe(rmsnorm(x), experts=4, top_k=2, expert=swiglu(hidden=24), aux_loss=0.0)
  }
  x = embed(tokens, 64, 32)
  x = repeat(2, decoder)(x)
  return lm_head(rmsnorm(x), tied=false)
}
""",
    # many experts, one chosen a token: some expert no token of a rank reaches while another rank's
    # do (FSDP's reduce-scatter must still hold it on every rank)
    "sparse_moe": """model m(tokens) {
  block decoder(x) {
    x = x + attention(rmsnorm(x), heads=4, causal=true)
    return x + moe(rmsnorm(x), experts=16, top_k=1, expert=swiglu(hidden=8), aux_loss=0.0)
  }
  x = embed(tokens, 64, 32)
  x = repeat(2, decoder)(x)
  return lm_head(rmsnorm(x), tied=false)
}
""",
    # recurrent mixers for context parallelism: Mamba-2 and Gated DeltaNet, chunks crossing ranks
    "mamba2": """model m(tokens) {
  block decoder(x) {
    x = x + mamba2(rmsnorm(x), d_state=16, head_dim=16, chunk=4)
    return x + swiglu(rmsnorm(x), hidden=48)
  }
  x = embed(tokens, 64, 32)
  x = repeat(2, decoder)(x)
  return lm_head(rmsnorm(x), tied=true)
}
""",
    "gdn": """model m(tokens) {
  block decoder(x) {
    x = x + gated_deltanet(rmsnorm(x), heads=2, head_dim=16, v_heads=4, v_head_dim=8, chunk=4)
    return x + swiglu(rmsnorm(x), hidden=48)
  }
  x = embed(tokens, 64, 32)
  x = repeat(2, decoder)(x)
  return lm_head(rmsnorm(x), tied=false)
}
""",
    # mLSTM (its gates' pre-activations summed inside the op) beside a replicated sLSTM
    "xlstm": """model m(tokens) {
  block m_block(x) {
    return x + mlstm(layernorm(x), heads=4, expand=2, d_conv=4, qkv_block=4)
  }
  block s_block(x) {
    x = x + slstm(layernorm(x), heads=4, d_conv=4)
    return x + swiglu(layernorm(x), hidden=48)
  }
  x = embed(tokens, 64, 32)
  x = pattern("MS", M=m_block, S=s_block)(x)
  return lm_head(layernorm(x), tied=false)
}
""",
    # the sparse and linear attentions, each split by heads as the op pruned to the rank's heads
    "heads": """model m(tokens) {
  block kernels(x) {
    x = x + linear_attention(rmsnorm(x), heads=4, causal=true, bias=true)
    return x + performer_attention(rmsnorm(x), heads=4, features=16)
  }
  block sparse(x) {
    x = x + longformer_attention(layernorm(x), heads=4, window=4, global_tokens=[0], bias=true)
    x = x + bigbird_attention(layernorm(x), heads=4, block=4, window_blocks=3, global_blocks=2, random_blocks=1)
    return x + linformer_attention(layernorm(x), heads=4, k=8, max_len=16)
  }
  x = embed(tokens, 64, 32)
  x = pattern("KS", K=kernels, S=sparse)(x)
  return lm_head(rmsnorm(x), tied=false)
}
""",
    # ring attention's cases: a learned position bias with capped logits (written-out blocks; the
    # bias's gradient comes from every block), and ALiBi with a sliding window and GQA (the fused
    # kernel with a mask; whole blocks skipped, and queries that see none of a block, on a ring of 4)
    "ring": """model m(tokens) {
  block biased(x) {
    x = x + attention(rmsnorm(x), heads=4, causal=true, softcap=20.0, pos=relative_bias(buckets=8, max_distance=16))
    return x + swiglu(rmsnorm(x), hidden=48)
  }
  block banded(x) {
    x = x + attention(rmsnorm(x), heads=4, kv_heads=2, causal=true, window=5, pos=alibi())
    return x + swiglu(rmsnorm(x), hidden=48)
  }
  x = embed(tokens, 64, 32)
  x = pattern("BW", B=biased, W=banded)(x)
  return lm_head(rmsnorm(x), tied=true)
}
""",
    # Mamba-1 as Jamba has it (learned Δ/B/C norms, replicated inside the op) beside attention:
    # by inner channels, x_proj's output all-reduced inside the op
    "mamba": """model m(tokens) {
  block ssm(x) {
    x = x + mamba(rmsnorm(x), d_state=8, expand=2, d_conv=4, norm_dt_bc=true, norm_dt_bc_weights=true)
    return x + swiglu(rmsnorm(x), hidden=48)
  }
  block attn(x) {
    x = x + attention(rmsnorm(x), heads=4, kv_heads=2, causal=true)
    return x + swiglu(rmsnorm(x), hidden=48)
  }
  x = embed(tokens, 64, 32)
  x = pattern("SA", S=ssm, A=attn)(x)
  return lm_head(rmsnorm(x), tied=true)
}
""",
    # retention (its decays per head) and RWKV-6 (plain decay parameters, low-rank mixes): the
    # rank's shard is the op pruned to its heads
    "recurrent": """model m(tokens) {
  block ret(x) {
    x = x + retention(layernorm(x), heads=4, value_factor=2)
    return x + rwkv_channel_mix(layernorm(x), hidden=48)
  }
  block rwkv(x) {
    x = x + rwkv_time_mix(layernorm(x), version=6, head_size=8, mix_rank=4, decay_rank=8)
    return x + swiglu(layernorm(x), hidden=48)
  }
  x = embed(tokens, 64, 32)
  x = pattern("RW", R=ret, W=rwkv)(x)
  return lm_head(layernorm(x), tied=false)
}
""",
    # a dense decoder with an untied head
    "dense": """model m(tokens) {
  block decoder(x) {
    x = x + attention(rmsnorm(x), heads=4, kv_heads=2, causal=true, pos=rope(theta=10000))
    return x + swiglu(rmsnorm(x), hidden=48)
  }
  x = embed(tokens, 64, 32)
  x = repeat(2, decoder)(x)
  return lm_head(rmsnorm(x), tied=false)
}
""",
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", choices=sorted(CASES), required=True)
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--fsdp", action="store_true")
    ap.add_argument("--ep", action="store_true", help="experts split over the data-parallel ranks")
    ap.add_argument("--cp", action="store_true", help="every sequence split into one chunk a rank")
    ap.add_argument("--sp", action="store_true", help="sequence parallelism over the tensor-parallel ranks")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    from torch.distributed.tensor import DTensor

    import archc
    from archc.backends.torch import build
    from archc.backends.torch import distributed as D
    from archc.backends.torch.activation_profile import SavedBytes, activation_profiles, charge_to_ops
    from archc.backends.torch.tensor_shards import full_tensor, sync_grads
    from archc.ir.cost import CostCtx
    from archc.parallel.profile import Unit, units

    graph = archc.loads(CASES[args.case], "m.arch").graph
    world = int(__import__("os").environ["WORLD_SIZE"])
    # the planner's activations for the rank, from the eager modules' profile (its chunk under cp)
    seq = 12 // world if args.cp else 12
    n_rows = 4 // (1 if args.cp else world // args.tp)  # each rank's sequences of the batch of 4
    # measured on rank 0 only (it alone reports), before the process group exists
    rank0 = int(__import__("os").environ["RANK"]) == 0
    profiles = activation_profiles(graph, seq, "fp32", (args.tp,) if args.sp else (), batch=n_rows) if rank0 else None
    eager = units(graph, CostCtx(seq=seq, dtype="fp32"), profiles)
    rt = D.start(D.Degrees(cp=world) if args.cp else D.Degrees(args.tp, world // args.tp, args.fsdp))
    reference = build(graph, seed=0, pipeline="O0")
    model = build(graph, seed=0, pipeline="O0")
    whole = D.tensor_parallel(model, rt.mesh["tp"], sequence=args.sp) if args.tp > 1 else []
    # what a tensor-parallel rank holds, before data parallelism shards it further
    held = sum(p.to_local().numel() if isinstance(p, DTensor) else p.numel() for p in model.parameters())
    predicted = sum(u.at(args.tp, 1).params for u in units(graph, CostCtx(seq=12)))
    act_predicted = sum(u.at(args.tp, 1).act for u in eager) * n_rows * seq
    experts = D.expert_parallel(model, rt.mesh["dp"]) if args.ep else []
    if rt.deg.dp > 1:
        D.data_parallel(model, rt.mesh["dp"], args.fsdp, ignored=experts)

    # the tokens a norm sees: the whole sequence, or (sequence parallelism) the rank's chunk
    seen: list[int] = []
    norm = next(m for nid, m in model.op_modules() if graph.nodes[nid].op in ("rmsnorm", "layernorm"))
    norm.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[1]) and None)

    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 64, (4, 12), generator=gen)
    labels = ids.clone()
    rows, row_labels, scored = D.shard_batch(rt, model, ids, labels)
    aux = None
    # what the rank keeps for backward (its local shards, parameters excluded), by op
    saved = SavedBytes([*model.parameters(), *model.buffers()])
    charge_to_ops(model, saved)
    if args.cp:
        from archc.backends.torch.context_parallel import context_parallel

        context_parallel(model, rt.mesh["cp"])
        with saved.counting():
            loss, _, _ = D.context_loss(rt, model, rows, row_labels, scored)
        loss.backward()
        D.sum_grads(model, rt.mesh["cp"].get_group())
    else:
        with D.loss_context(model):
            with saved.counting():
                loss, aux, _ = D.rank_loss(model, rows, row_labels, scored)
            (loss * rt.deg.dp + (aux if aux is not None else 0.0)).backward()
        if args.tp > 1:
            sync_grads(model)
            D.sequence_grads(model, rt.mesh["tp"].get_group())
    D.expert_grads_to_sums(model, rt.deg.dp)
    total = loss.detach().clone()
    dist.all_reduce(total, group=rt.mesh["dp" if not args.cp else "cp"].get_group())
    if aux is not None:  # each rank's auxiliary loss is the same as the single process's when dp = 1
        total += aux.detach()

    memory = {}
    if args.fsdp and args.tp == 1:  # what FSDP ranks hold after an AdamW step, against the planner's bytes
        from archc.parallel import Layout, Workload, cluster_for, estimate
        from archc.parallel.estimate import Sums

        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        opt.step()
        local = [p.to_local() for p in model.parameters()]
        moments = [t.to_local() for st in opt.state.values() for k, t in st.items() if k in ("exp_avg", "exp_avg_sq")]
        plan_units = units(graph, CostCtx(seq=12))
        est = estimate(plan_units, Layout(dp=rt.deg.dp, zero="fsdp"), cluster_for(rt.deg.dp, "h100"),
                       Workload(seq=12, global_batch=4)).memory
        memory = {"weights": 4 * sum(t.numel() for t in local),
                  "weights_predicted": est["weights"] - 4 * Sums(plan_units, 1, 1).max_params,
                  "gradients": 4 * sum(p.grad.to_local().numel() for p in model.parameters()),
                  "gradients_predicted": est["gradients"],
                  "optimizer": 4 * sum(t.numel() for t in moments), "optimizer_predicted": est["optimizer"]}

    ref = reference(ids, labels=labels)
    ref.loss.backward()
    # gathered: DTensors, and local shards' pieces (un-permuted)
    grads = {n: full_tensor(model, n, p.grad)
             for n, p in model.named_parameters() if p.grad is not None or not args.ep}
    if args.ep:  # each rank has its own experts' gradients: compare those, and the rest
        owners = model.expert_owners
        grads = {n: g for n, g in grads.items()
                 if not any(n.startswith(k) and o != rt.rank for k, o in owners.items())}
    ref_grads = dict(reference.named_parameters())
    # an expert no token reached has no gradient in one process, zeros under data parallelism
    unused = [n for n, p in ref_grads.items() if p.grad is None]
    for n in unused:
        ref_grads[n].grad = torch.zeros_like(ref_grads[n])
    result = {"loss": float(total), "reference_loss": float(ref.loss.detach()),
              "grad_error": max(float((g - ref_grads[n].grad).abs().max()) for n, g in grads.items()),
              "grad_worst": max(grads, key=lambda n: float((grads[n] - ref_grads[n].grad).abs().max())),
              "grad_names": args.ep or sorted(grads) == sorted(ref_grads),
              "grad_missing": sorted(set(ref_grads) - set(grads))[:5],
              "unused_in_reference": len(unused), "held": held, "predicted": predicted,
              "whole": whole, "memory": memory, "norm_tokens": seen[0] if seen else None,
              "act_measured": saved.total, "act_predicted": act_predicted,
              "act_by_op": {graph.nodes[k].op + ":" + k: v for k, v in saved.by_key().items()},
              "act_pred_by_op": {n.op + ":" + n.id: Unit(n.id, [n], 0).at(args.tp, 1).act * n_rows * seq
                                 for u in eager for n in u.nodes}}
    if rt.rank == 0:
        Path(args.out).write_text(json.dumps(result))
    rt.close()


if __name__ == "__main__":
    main()
