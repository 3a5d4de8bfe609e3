"""Run an exported folder with numpy and onnxruntime alone (`archc run`): no torch (a test
checks that loading and generating never import it).

`OnnxModel` mirrors the torch backend's decoding interface — `init_state(batch, max_len)`,
`step(ids, pos, state)` and `generate(...)` with greedy, temperature, top-k and top-p sampling and a
stop token — over the decoder graph and the state listed in `archc_export.json`. The sampling
warpers are the same as `archc/backends/torch/generate.py`'s (transformers' conventions), so
greedy output equals `archc generate`'s token for token.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from archc.backends.onnx.manifest import Manifest, NotAnExport, read_manifest

State = list[np.ndarray]
_DTYPES = {"float32": np.float32, "bool": np.bool_, "int64": np.int64, "float64": np.float64, "int8": np.int8}


class OnnxModel:
    """An exported folder, loaded into an onnxruntime session (CPU provider by default)."""

    def __init__(self, folder: str | Path, threads: int | None = None,
                 providers: tuple[str, ...] = ("CPUExecutionProvider",)) -> None:
        import onnxruntime as ort

        self.folder = Path(folder)
        self.manifest: Manifest = read_manifest(self.folder)
        path = self.folder / self.manifest.model
        if not path.is_file():
            raise NotAnExport(f"{path} is missing: the folder's manifest names a model file it does not hold")
        so = ort.SessionOptions()
        so.log_severity_level = 3  # errors only: its graph-optimizer notes are not the user's business
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), so, providers=list(providers))
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
            raise NotAnExport(f"onnxruntime cannot load {path}: {e}") from None
        graph_in = {i.name for i in self.session.get_inputs()}
        graph_out = {o.name for o in self.session.get_outputs()}
        want_in = {p.name for p in self.manifest.inputs}
        want_out = {p.name for p in self.manifest.outputs}
        if graph_in != want_in or graph_out != want_out:
            raise NotAnExport(f"{path} does not match {self.folder / 'archc_export.json'}: the graph takes "
                              f"{sorted(graph_in ^ want_in) or 'the listed inputs'} and returns "
                              f"{sorted(graph_out ^ want_out) or 'the listed outputs'} differently; export again")

    @property
    def vocab(self) -> int:
        return self.manifest.vocab

    def init_state(self, batch: int, max_len: int = 0) -> State:
        """A fresh state: position-indexed caches empty (`past_seq` = 0; they grow by each step's
        tokens), everything else at its declared fill. `max_len` is accepted for symmetry with
        the torch backend; nothing here is preallocated."""
        out = []
        for s in self.manifest.state:
            shape = [batch if d == "batch" else 0 if d == "past_seq" else int(d) for d in s.shape]
            out.append(np.broadcast_to(np.asarray(s.fill, dtype=_DTYPES[s.dtype]), shape).copy())
        return out

    def step(self, ids: np.ndarray, pos: int, state: State) -> tuple[np.ndarray, State]:
        """Logits for `ids` [B, T] at positions pos…pos+T−1 from the state of the first `pos`
        tokens; returns them and the new state (the old one is left as it was)."""
        if self.manifest.kind != "decoder":
            raise ValueError(f"{self.manifest.spec} was exported as a forward graph: it has no incremental form")
        # genai's convention: the mask covers the past and the new tokens; its length gives the position
        feeds = {"input_ids": np.ascontiguousarray(ids, dtype=np.int64),
                 "attention_mask": np.ones((ids.shape[0], pos + ids.shape[1]), dtype=np.int64)}
        feeds.update({s.input: v for s, v in zip(self.manifest.state, state, strict=True)})
        outs = self.session.run(["logits", *(s.output for s in self.manifest.state)], feeds)
        return outs[0], outs[1:]

    def logits(self, ids: np.ndarray, attention_mask: np.ndarray | None = None) -> np.ndarray:
        """Logits of whole sequences: the forward graph, or a decoder's prefill from a fresh state."""
        if self.manifest.kind == "decoder":
            return self.step(ids, 0, self.init_state(ids.shape[0], ids.shape[1]))[0]
        feeds = {"input_ids": np.ascontiguousarray(ids, dtype=np.int64),
                 "attention_mask": (np.ones(ids.shape, np.int64) if attention_mask is None
                                    else attention_mask.astype(np.int64))}
        if any(p.name == "token_type_ids" for p in self.manifest.inputs):
            feeds["token_type_ids"] = np.zeros(ids.shape, np.int64)
        return self.session.run(["logits"], feeds)[0]

    def generate(self, ids: np.ndarray, max_new_tokens: int = 32, temperature: float = 0.0,
                 top_k: int | None = None, top_p: float | None = None, eos_token_id: int | None = None,
                 seed: int | None = None, on_token: Callable[[np.ndarray], None] | None = None) -> np.ndarray:
        """Continue `ids` [B, T] by up to `max_new_tokens` tokens; returns [B, T + n]. Rows that
        produced `eos_token_id` are padded with it; `on_token` sees each new column."""
        rng = np.random.default_rng(seed)
        b, t = ids.shape
        state = self.init_state(b, t + max_new_tokens)
        logits, state = self.step(ids, 0, state)
        out = [ids.astype(np.int64)]
        done = np.zeros(b, dtype=bool)
        for i in range(max_new_tokens):
            nxt = pick(logits[:, -1], temperature, top_k, top_p, rng)
            if eos_token_id is not None:
                nxt = np.where(done, eos_token_id, nxt)
                done |= nxt == eos_token_id
            out.append(nxt[:, None])
            if on_token is not None:
                on_token(nxt)
            if (eos_token_id is not None and done.all()) or i == max_new_tokens - 1:
                break
            logits, state = self.step(nxt[:, None], t + i, state)
        return np.concatenate(out, axis=1)


def warp(logits: np.ndarray, temperature: float = 1.0, top_k: int | None = None,
         top_p: float | None = None) -> np.ndarray:
    """The sampling distribution's logits, as `archc.backends.torch.generate.warp`: divided by the
    temperature, all but the `top_k` most likely set to −∞, then outside the smallest set whose
    probability reaches `top_p`. At least one token always survives."""
    logits = logits.astype(np.float32) / max(temperature, 1e-6)
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = np.sort(logits, axis=-1)[..., -top_k][..., None]
        logits = np.where(logits < kth, -np.inf, logits)
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-logits, axis=-1, kind="stable")
        sorted_logits = np.take_along_axis(logits, order, -1)
        probs = _softmax(sorted_logits)
        drop = np.cumsum(probs, -1) - probs >= top_p
        drop[..., 0] = False
        mask = np.zeros_like(drop)
        np.put_along_axis(mask, order, drop, -1)
        logits = np.where(mask, -np.inf, logits)
    return logits


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def pick(logits: np.ndarray, temperature: float, top_k: int | None, top_p: float | None,
         rng: np.random.Generator) -> np.ndarray:
    """Greedy (temperature 0) or a sample from the warped distribution, per row."""
    if temperature <= 0:
        return logits.argmax(-1)
    probs = _softmax(warp(logits, temperature, top_k, top_p)).astype(np.float64)
    probs /= probs.sum(-1, keepdims=True)
    return np.array([rng.choice(probs.shape[-1], p=p) for p in probs], dtype=np.int64)


@dataclass
class Benchmark:
    prefill_tokens_per_s: float
    decode_ms_per_token: float


def benchmark(model: OnnxModel, prompt: int = 128, tokens: int = 64, batch: int = 1, seed: int = 0) -> Benchmark:
    """Prefill throughput of a `prompt`-token prompt and decode latency per token after it."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, model.vocab, (batch, prompt))
    state = model.init_state(batch, prompt + tokens + 1)
    model.step(ids, 0, state)  # warm-up
    t0 = time.perf_counter()
    logits, state = model.step(ids, 0, state)
    prefill = time.perf_counter() - t0
    nxt = logits[:, -1].argmax(-1)[:, None]
    t0 = time.perf_counter()
    for i in range(tokens):
        logits, state = model.step(nxt, prompt + i, state)
        nxt = logits[:, -1].argmax(-1)[:, None]
    decode = (time.perf_counter() - t0) / tokens
    return Benchmark(batch * prompt / prefill, decode * 1e3)
