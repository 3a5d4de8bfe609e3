"""`genai_config.json`: the file onnxruntime-genai reads to run an exported decoder.

genai's generic decoder-only model (`"type": "decoder"`) feeds `input_ids` and `attention_mask`
and carries `past_key_values.%d.key` / `.value` caches of shape [batch, kv_heads, past, head_size]
that grow by each step's tokens — the layout archc's decoder graphs take — for layers 0 … N−1.
That is what is written when every state of the spec is such a KV cache. Recurrent state genai
could name (`conv_state` / `recurrent_state`) it binds in place (its `RecurrentState` shares
the past and present buffers on the CPU), which archc's graphs, computing the new state from the
old, do not support; ring buffers and the other states it has no notion of. For those specs no
config is written, and `archc_export.json` says why (`archc run` runs them).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from archc.backends.onnx.manifest import Manifest
from archc.ir.graph import Graph

CONFIG = "genai_config.json"
_KV = re.compile(r"past_key_values\.(\d+)\.(key|value)")


def genai_support(manifest: Manifest) -> tuple[bool, str]:
    """(whether onnxruntime-genai can run the export, the reason in words)."""
    if manifest.kind != "decoder":
        return False, "a forward graph: onnxruntime-genai runs decoders only"
    others = [s.input for s in manifest.state if not _KV.fullmatch(s.input) or s.shape[2] != "past_seq"]
    if others:
        kind = "recurrent state" if any(s.endswith(("conv_state", "recurrent_state")) for s in others) else "state"
        return False, (f"its {kind} ({others[0]}, …) is not a growing KV cache: onnxruntime-genai binds recurrent "
                       "state in place and has no notion of the rest; run it with `archc run`")
    layers = sorted({int(_KV.fullmatch(s.input).group(1)) for s in manifest.state})  # type: ignore[union-attr]
    if not layers:
        return False, "it has no KV cache: onnxruntime-genai's decoder needs one"
    if layers != list(range(len(layers))):
        return False, "its KV caches are not numbered 0 … N−1 as onnxruntime-genai counts layers"
    shapes = {tuple(s.shape[1::2]) for s in manifest.state}  # (kv_heads, head_size)
    if len(shapes) != 1:
        return False, "its layers' KV caches differ in shape; onnxruntime-genai takes one head layout"
    return True, f"onnxruntime-genai runs it ({CONFIG}, model type `decoder`)"


def genai_dims(graph: Graph) -> tuple[int, int]:
    """(attention heads, model width) as genai's config states them, read from the IR."""
    from archc.ops.registry import REGISTRY

    # softmax attention as written, or as a fusion pass made it (`attention_packed`)
    heads = [int(n.params["heads"]) for n in graph.walk() if "attention" in (n.op, *REGISTRY[n.op].fuses)]
    width = next(int(n.type.width) for n in graph.walk() if n.op == "embed")
    return (heads[0] if heads else 1), width


def write_genai_config(folder: Path, manifest: Manifest, heads: int, hidden: int, context: int) -> None:
    """The config for a manifest `genai_support` accepts. An archc vocabulary has no special
    tokens and genai needs an end-of-sequence id inside the vocabulary: it is the last id
    (`archc run --stop-token <vocab − 1>` stops the same way)."""
    kv_heads, head_size = manifest.state[0].shape[1], manifest.state[0].shape[3]
    n_layers = len(manifest.state) // 2
    config = {
        "model": {
            "type": "decoder", "bos_token_id": 0, "eos_token_id": manifest.vocab - 1, "pad_token_id": 0,
            "vocab_size": manifest.vocab, "context_length": context,
            "decoder": {
                "filename": manifest.model, "head_size": head_size, "hidden_size": hidden,
                "num_attention_heads": heads, "num_key_value_heads": kv_heads, "num_hidden_layers": n_layers,
                "session_options": {"log_id": "onnxruntime-genai"},
                "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                           "past_key_names": "past_key_values.%d.key", "past_value_names": "past_key_values.%d.value"},
                "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                            "present_value_names": "present.%d.value"},
            },
        },
        "search": {"max_length": context, "past_present_share_buffer": False, "do_sample": False, "num_beams": 1},
    }
    (folder / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
