"""The parallelism rules (`OpDef.parallel`, archc/ir/sharding.py) against the declared weights and
state, against the prune rules (a rank's shard is the op pruned to its units), and numerically:
the ranks' shards, run as pruned ops on the weights the rule cuts, sum to the whole op's output."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

import archc
from archc.ir.sharding import CannotShard, Sharding, Split
from archc.ops.registry import REGISTRY, unit_slices
from archc.passes.facts import node_parallel, node_state, node_weights

ROOT = Path(__file__).resolve().parents[2]
TINY = sorted(p for p in (ROOT / "specs").glob("*.arch")
              if not any(big in p.name for big in ("7b", "70b", "175b", "130m", "169m", "0.5b", "bert-base", "t5")))


def _shardings(spec: Path):
    g = archc.load(str(spec)).graph
    for n in g.nodes.values():
        rule = node_parallel(g, n)
        for kind, fn in (("tensor", rule.tensor), ("expert", rule.expert)):
            if fn is None:
                continue
            for t in (2, 4):
                try:
                    yield g, n, kind, fn(t)
                except CannotShard:
                    continue


@pytest.mark.parametrize("spec", TINY, ids=lambda p: p.stem)
def test_rules_name_declared_tensors_and_partition_them(spec):
    """Every split names a declared weight or state tensor, cuts its axis evenly, and the ranks'
    pieces cover the axis exactly (each position held by `replicas` ranks)."""
    for g, n, kind, s in _shardings(spec):
        weights = {w.name: w for w in node_weights(g, n)}
        state = {st.name: st.sizes(8) for st in node_state(g, n)}
        for table, shapes in ((s.weights, {k: w.shape for k, w in weights.items()}), (s.state, state)):
            for name, split in table.items():
                assert name in shapes, (n.id, kind, name)
                size = shapes[name][split.axis]
                split.check(size, s.degree, name)
                held = Counter(i for r in range(s.degree) for i in split.indices(size, s.degree, r))
                start = 0
                for part, end in enumerate(_ends(split, size)):
                    want = split.replicas[part] if split.replicas else 1
                    assert all(held[i] == want for i in range(start, end)), (n.id, name, part)
                    start = end
                assert sum(held.values()) == sum(held[i] for i in range(size)), (n.id, name)
                assert len(split.indices(size, s.degree, 0)) == split.local_size(size, s.degree)
        for name in s.owned:
            assert name in weights, (n.id, name)
        for name in s.after_reduce:
            assert name in weights and name not in s.weights, (n.id, name)


def _ends(split: Split, size: int) -> list[int]:
    ends, acc = [], 0
    for p in split.parts or (size,):
        acc += p
        ends.append(acc)
    return ends


@pytest.mark.parametrize("spec", TINY, ids=lambda p: p.stem)
def test_a_shard_is_the_op_pruned_to_its_units(spec):
    """Where the op's prune rule cuts the same units, rank r's indices along each split axis are
    exactly the prune slices of the units in its contiguous range."""
    checked = 0
    for g, n, kind, s in _shardings(spec):
        if kind != "tensor":
            continue
        op = REGISTRY[n.op]
        try:
            axes = op.prune(op.params(**n.params), g.input_types(n))
        except Exception:
            continue
        axis = next((a for a in axes if a.kind == s.unit and a.units == s.units), None)
        if axis is None:
            continue
        shapes = {w.name: w.shape for w in node_weights(g, n)}
        owned: dict[tuple[str, int], set[int]] = {}  # positions some unit owns (the rest are shared)
        for u in range(axis.units):
            for name, ax, idx in unit_slices(axis, u):
                owned.setdefault((name, ax), set()).update(idx)
        for r in range(s.degree):
            cut: dict[tuple[str, int], set[int]] = {}
            for u in range(r * s.units // s.degree, (r + 1) * s.units // s.degree):
                for name, ax, idx in unit_slices(axis, u):
                    cut.setdefault((name, ax), set()).update(idx)
            for (name, ax), idx in cut.items():
                split = s.weights.get(name)
                if name in s.after_reduce:
                    continue  # replicated on purpose: applied once, after the in-op reduction (mLSTM's gate biases)
                assert split is not None, f"{n.id}: the prune rule cuts {name}, the sharding replicates it"
                if split.axis != ax:
                    continue  # the prune rule also cuts an axis the shard keeps whole (mLSTM's gate rows)
                held = [i for i in split.indices(shapes[name][ax], s.degree, r) if i in owned[name, ax]]
                assert sorted(idx) == held, (n.id, name, r)
                checked += 1
    ops = {n.op for n in archc.load(str(spec)).graph.nodes.values()}
    if ops & {"attention", "swiglu", "mamba", "mamba2", "retention", "mlstm", "rwkv_time_mix", "gated_deltanet"}:
        assert checked, "no shard was compared with its op's prune rule"


#: op call -> the prune unit kind whose pruned op runs one rank's shard
EXACT = {
    "attention(x, heads=4, causal=true, bias=true, pos=rope())": "heads",
    "attention(x, heads=4, kv_heads=2, causal=true, bias=true, pos=rope())": "kv_heads",
    "swiglu(x, hidden=48)": "ffn",
    'mlp(x, hidden=48, act="gelu", bias=true)': "ffn",
    "retention(x, heads=4)": "heads",
    "rwkv_channel_mix(x, hidden=48)": "ffn",
    "gated_deltanet(x, heads=2, head_dim=8, v_heads=4, chunk=4)": "heads",
}


@pytest.mark.parametrize("call", EXACT, ids=lambda c: c.split("(")[0] + ("_gqa" if "kv_heads" in c else ""))
def test_ranks_shards_sum_to_the_whole_op(call):
    """fp64: for tp = 2, each rank's shard — the op pruned to its units, loaded with the weights
    the *sharding rule* cuts (`Split.indices`; weights applied after the reduction only on rank 0)
    — and the ranks' logits summed equal the whole model's (an untied, bias-free LM head is linear
    in the op's output). The pruned module's shapes equal the rule's local shapes."""
    torch = pytest.importorskip("torch")
    from archc.backends.torch import build
    from archc.backends.torch.prune import new_params, prunable
    from archc.passes.prune import prune

    kind, tp = EXACT[call], 2
    spec = f"model m(tokens) {{\n  x = embed(tokens, 64, 32)\n  return lm_head({call}, tied=false)\n}}\n"
    graph = archc.loads(spec, "m.arch").graph
    torch.manual_seed(0)
    model = build(graph, pipeline="O0").double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ids = torch.randint(0, 64, (2, 12))
    with torch.no_grad():
        full = model(ids).logits
    node = next(n for n in graph.nodes.values() if REGISTRY[n.op].role in ("mixer", "ffn"))
    sharding: Sharding = node_parallel(graph, node).tensor(tp)
    units = prunable(model, [kind])
    total = torch.zeros_like(full)
    whole = model.state_dict()
    for rank in range(tp):
        for u in units:
            u.keep = list(range(rank * u.axis.units // tp, (rank + 1) * u.axis.units // tp))
        shard = build(prune(graph, new_params(units)), pipeline="O0").double().eval()
        state = {}
        for key, value in whole.items():
            name = key.removeprefix(node.id + ".")
            if key.startswith(node.id + ".") and name in sharding.weights:
                split = sharding.weights[name]
                idx = torch.tensor(split.indices(value.shape[split.axis], tp, rank))
                value = value.index_select(split.axis, idx)
                assert tuple(value.shape) == sharding.local_shape(name, tuple(whole[key].shape))
            elif key.startswith(node.id + ".") and name in sharding.after_reduce and rank:
                value = torch.zeros_like(value)
            state[key] = value
        shard.load_state_dict(state)
        with torch.no_grad():
            total += shard(ids).logits
    assert float((total - full).abs().max()) < 1e-10
