"""The decode state's graph names (`onnx/names.py`): genai's `past_key_values.N.key` by the layer
number in the node id, the node's name between where a layer holds several stateful nodes, and the
layers numbered in graph order where the ids' numbers repeat (two repeats)."""

from __future__ import annotations

from archc.backends.onnx.names import state_names
from archc.ir.cost import MAX_LEN, StateTensor

KV = (StateTensor("key", (2, MAX_LEN, 4), "model", kv=True), StateTensor("value", (2, MAX_LEN, 4), "model", kv=True))


def test_layer_numbers_from_the_node_ids():
    names = state_names([("layers.0.attn", KV), ("layers.0.ffn", ()), ("layers.1.attn", KV)])
    assert [n.past for n in names] == ["past_key_values.0.key", "past_key_values.0.value",
                                       "past_key_values.1.key", "past_key_values.1.value"]
    shift = (StateTensor("shift", (8,)),)
    names = state_names([("blocks.3.attention", shift), ("blocks.3.feed_forward", shift)])
    assert [n.present for n in names] == ["present.3.attention.shift", "present.3.feed_forward.shift"]


def test_repeated_numbers_are_numbered_in_graph_order():
    names = state_names([("lower.0.attn", KV), ("lower.1.attn", KV), ("memory_layer.attn", KV), ("upper.0.attn", KV)])
    assert [n.past for n in names][::2] == [f"past_key_values.{i}.key" for i in range(4)]
