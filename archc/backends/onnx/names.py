"""Graph input and output names of the decode state, in onnxruntime-genai's conventions.

KV caches are `past_key_values.N.key` / `.value` in, `present.N.key` / `.value` out (genai's
decoder-only models); a recurrent layer's convolution window and recurrent state are
`.conv_state` / `.recurrent_state` (its model builder's names for Qwen3-Next's linear-attention
layers). Every other state is numbered by layer and named by the op record's state name the same
way (`past_key_values.3.shift`). N is the layer: the first all-digit component of the node id
(`layers.3.attn`, `h.3.attn`, `blocks.3.attention`); when one layer holds several stateful nodes
(RWKV's time mix and channel mix), the node's name inside the layer goes in between
(`past_key_values.3.attention.shift`); a node outside any numbered layer uses its id. Where
those numbers repeat (two repeats, `lower.0` and `upper.0`), the layers are numbered in graph
order instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from archc.ir.cost import StateTensor

#: The op records' state names genai has names for.
GENAI_NAMES = {"key": "key", "value": "value", "conv": "conv_state", "ssm": "recurrent_state",
               "recurrent": "recurrent_state"}


@dataclass(frozen=True)
class StateName:
    node: str  # the IR node holding the state
    state: str  # the record's name, relative to the node (`key`, `body.attn.key`)
    past: str  # graph input
    present: str  # graph output


def _layer(node_id: str) -> tuple[str, str]:
    """(layer, the node's name inside it): `layers.3.attn` -> ("3", "attn")."""
    parts = node_id.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return part, ".".join(parts[i + 1:])
    return node_id, ""


def _ordinal_layers(states: list[tuple[str, tuple[StateTensor, ...]]]):
    """`_layer` with the layers numbered in graph order, for specs whose layer numbers repeat
    (two repeats, `lower.0` and `upper.0`): the layer is the node id up to its first all-digit
    component (or the whole id), numbered 0, 1, … as genai numbers its layers."""
    order: dict[str, str] = {}

    def layer(node_id: str) -> tuple[str, str]:
        parts = node_id.split(".")
        cut = next((i + 1 for i, part in enumerate(parts) if part.isdigit()), len(parts))
        key = ".".join(parts[:cut])
        return order.setdefault(key, str(len(order))), ".".join(parts[cut:])

    for node, state in states:
        if state:
            layer(node)
    return layer


def state_names(states: list[tuple[str, tuple[StateTensor, ...]]]) -> list[StateName]:
    """Names for each (node id, its declared state) in graph order."""
    out = _names(states, _layer)
    if len({n.past for n in out}) != len(out):  # layer numbers repeat: number the layers in order
        out = _names(states, _ordinal_layers(states))
    seen = [n.past for n in out]
    assert len(set(seen)) == len(seen), f"state names collide: {seen}"
    return out


def _names(states: list[tuple[str, tuple[StateTensor, ...]]], layer_of) -> list[StateName]:
    per_layer: dict[str, set[str]] = {}
    for node, state in states:
        if state:
            layer, local = layer_of(node)
            per_layer.setdefault(layer, set()).add(local)
    out: list[StateName] = []
    for node, state in states:
        layer, local = layer_of(node)
        shared = len(per_layer.get(layer, ())) > 1
        for s in state:
            name = GENAI_NAMES.get(s.name, s.name) if not shared else f"{local}.{s.name}"
            out.append(StateName(node, s.name, f"past_key_values.{layer}.{name}", f"present.{layer}.{name}"))
    return out
