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

from archc.backends.onnx.manifest import MANIFEST, Manifest, NotAnExport, read_manifest
from archc.files import FileError
from archc.files.read import inside, printable

State = list[np.ndarray]
_DTYPES = {"float32": np.float32, "bool": np.bool_, "int64": np.int64, "float64": np.float64, "int8": np.int8}


class OutOfMemory(Exception):
    """onnxruntime could not allocate what a run needs."""


class OnnxModel:
    """An exported folder, loaded into an onnxruntime session (CPU provider by default)."""

    def __init__(self, folder: str | Path, threads: int | None = None,
                 providers: tuple[str, ...] = ("CPUExecutionProvider",)) -> None:
        import onnxruntime as ort

        from archc.files.output import reading

        self.folder = Path(folder)
        with reading(self.folder):  # no export commits into the folder while it is read
            self._load(ort, threads, providers)

    def _load(self, ort, threads: int | None, providers: tuple[str, ...]) -> None:
        self.manifest: Manifest = read_manifest(self.folder)
        path = self.folder / self.manifest.model  # inside the folder: read_manifest checked it
        if not path.is_file():
            raise NotAnExport(f"{printable(str(path))} is missing: the folder's manifest names a model file it "
                              "does not hold")
        check_external_data(self.folder, path)
        so = ort.SessionOptions()
        so.log_severity_level = 3  # errors only: its graph-optimizer notes are not the user's business
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), so, providers=list(providers))
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
            raise NotAnExport(f"onnxruntime cannot load {printable(str(path))}: {printable(str(e))}") from None
        check_ports(self.manifest, self.session, path)

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
        outs = self._run(["logits", *(s.output for s in self.manifest.state)], feeds)
        return outs[0], outs[1:]

    def _run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """`session.run`, with onnxruntime's failure to allocate as `OutOfMemory` (the estimate
        before decoding covers the state and the logits, not every intermediate of the graph)."""
        try:
            return self.session.run(names, feeds)
        except Exception as e:  # onnxruntime's RuntimeException: no public type to catch
            if "allocate" in str(e) or "bad_alloc" in str(e):
                tokens = feeds["input_ids"].shape
                raise OutOfMemory(f"onnxruntime could not allocate memory for {tokens[0]} × {tokens[1]} tokens of "
                                  f"{printable(self.manifest.spec)}") from None
            raise

    def logits(self, ids: np.ndarray, attention_mask: np.ndarray | None = None) -> np.ndarray:
        """Logits of whole sequences: the forward graph, or a decoder's prefill from a fresh state
        (the last position only for a `--logits last` export: `manifest.logits`)."""
        if self.manifest.kind == "decoder":
            return self.step(ids, 0, self.init_state(ids.shape[0], ids.shape[1]))[0]
        feeds = {"input_ids": np.ascontiguousarray(ids, dtype=np.int64),
                 "attention_mask": (np.ones(ids.shape, np.int64) if attention_mask is None
                                    else attention_mask.astype(np.int64))}
        if any(p.name == "token_type_ids" for p in self.manifest.inputs):
            feeds["token_type_ids"] = np.zeros(ids.shape, np.int64)
        return self._run(["logits"], feeds)[0]

    def generate(self, ids: np.ndarray, max_new_tokens: int = 32, temperature: float = 0.0,
                 top_k: int | None = None, top_p: float | None = None, eos_token_id: int | None = None,
                 seed: int | None = None, on_token: Callable[[np.ndarray], None] | None = None) -> np.ndarray:
        """Continue `ids` [B, T] by up to `max_new_tokens` tokens; returns [B, T + n]. Rows that
        produced `eos_token_id` are padded with it; `on_token` sees each new column."""
        b, t = ids.shape
        return decode_loop(ids, self.init_state(b, t + max_new_tokens), self.step, max_new_tokens, temperature,
                           top_k, top_p, eos_token_id, np.random.default_rng(seed), on_token)


def decode_loop(ids: np.ndarray, state: State, step: Callable[[np.ndarray, int, State], tuple[np.ndarray, State]],
                n: int, temperature: float, top_k: int | None, top_p: float | None, eos: int | None,
                rng: np.random.Generator, on_token: Callable[[np.ndarray], None] | None) -> np.ndarray:
    """Greedy or sampled decoding of up to `n` tokens after `ids` [B, T] from a fresh `state`:
    `step(ids, position, state)` → (logits, state). Rows that produced `eos` are padded with it;
    `on_token` sees each new column. Returns [B, T + n]. (The decoder's and the encoder–decoder's
    loop.)"""
    b, t = ids.shape
    logits, state = step(ids, 0, state)
    out, done = [ids.astype(np.int64)], np.zeros(b, dtype=bool)
    for i in range(n):
        nxt = pick(logits[:, -1], temperature, top_k, top_p, rng)
        if eos is not None:
            nxt = np.where(done, eos, nxt)
            done |= nxt == eos
        out.append(nxt[:, None])
        if on_token is not None:
            on_token(nxt)
        if (eos is not None and done.all()) or i == n - 1:
            break
        logits, state = step(nxt[:, None], t + i, state)
    return np.concatenate(out, axis=1)


class OnnxSeq2Seq:
    """An encoder–decoder export's generation graphs (the manifest's `seq2seq`: `encoder.onnx`
    once per source, `decoder.onnx` per target step over its own state) — greedy or sampled
    decoding and beam search, the same algorithms as `archc/backends/torch/generate.py`, so the
    target equals `model.generate`'s in torch token for token."""

    def __init__(self, folder: str | Path, threads: int | None = None,
                 providers: tuple[str, ...] = ("CPUExecutionProvider",)) -> None:
        import onnxruntime as ort

        from archc.files.output import reading

        self.folder = Path(folder)
        with reading(self.folder):
            self.manifest: Manifest = read_manifest(self.folder)
            info = self.manifest.seq2seq
            if info is None:
                raise NotAnExport(f"{printable(str(self.folder))} holds no encoder–decoder generation graphs",
                                  hint="export an encoder–decoder spec (two inputs, a causal decoder) in fp32")
            self.info = info
            so = ort.SessionOptions()
            so.log_severity_level = 3
            if threads:
                so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
            self.encoder, self.decoder = (self._session(ort, so, name, providers) for name in (info.encoder, info.decoder))

    def _session(self, ort, so, name: str, providers: tuple[str, ...]):
        path = self.folder / name  # inside the folder: read_manifest checked it
        if not path.is_file():
            raise NotAnExport(f"{printable(str(path))} is missing: the folder's manifest names a model file it "
                              "does not hold")
        try:
            return ort.InferenceSession(str(path), so, providers=list(providers))
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
            raise NotAnExport(f"onnxruntime cannot load {printable(str(path))}: {printable(str(e))}") from None

    @property
    def vocab(self) -> int:
        return self.manifest.vocab

    def encode(self, source: np.ndarray, attention_mask: np.ndarray | None = None) -> list[np.ndarray]:
        mask = np.ones(source.shape, np.int64) if attention_mask is None else attention_mask.astype(np.int64)
        return self.encoder.run(self.info.encoder_outputs, {"input_ids": np.ascontiguousarray(source, dtype=np.int64),
                                                            "attention_mask": mask})

    def init_state(self, batch: int, max_len: int) -> State:
        return [np.full((batch, *(max_len if d == "max_len" else d for d in s.shape)), s.fill, _DTYPES[s.dtype])
                for s in self.info.state]

    def step(self, ids: np.ndarray, pos: int, state: State, encoded: list[np.ndarray]) -> tuple[np.ndarray, State]:
        feeds = {"input_ids": np.ascontiguousarray(ids, dtype=np.int64), "position": np.array(pos, np.int64),
                 **{f"past.{s.name}": v for s, v in zip(self.info.state, state, strict=True)},
                 **dict(zip(self.info.encoder_outputs, encoded, strict=True))}
        outs = self.decoder.run(["logits", *(f"present.{s.name}" for s in self.info.state)], feeds)
        return outs[0], outs[1:]

    def generate(self, source: np.ndarray, attention_mask: np.ndarray | None = None, max_new_tokens: int = 32,
                 num_beams: int = 1, length_penalty: float = 1.0, temperature: float = 0.0, top_k: int | None = None,
                 top_p: float | None = None, eos_token_id: int | None = None, seed: int | None = None,
                 on_token: Callable[[np.ndarray], None] | None = None) -> np.ndarray:
        """The target [B, 1 + n] for the source [B, S] (padding in `attention_mask`), from the
        start token; rows that produced `eos_token_id` are padded with it."""
        b = source.shape[0]
        encoded = self.encode(source, attention_mask)
        start = np.full((b, 1), self.info.decoder_start_token_id, np.int64)
        if num_beams > 1:
            return self._beam_search(start, encoded, max_new_tokens, num_beams, length_penalty, eos_token_id)
        return decode_loop(start, self.init_state(b, 1 + max_new_tokens),
                           lambda ids, pos, state: self.step(ids, pos, state, encoded), max_new_tokens, temperature,
                           top_k, top_p, eos_token_id, np.random.default_rng(seed), on_token)

    def _beam_search(self, ids: np.ndarray, encoded: list[np.ndarray], n: int, beams: int, length_penalty: float,
                     eos: int | None) -> np.ndarray:
        """`generate.beam_search` over the ONNX graphs: the 2·beams best candidates a step, finished
        hypotheses scored Σ log p / length^length_penalty."""
        b, t = ids.shape
        expand = np.repeat(np.arange(b), beams)
        encoded = [e[expand] for e in encoded]
        state = [s[expand] for s in self.init_state(b, t + n)]
        logits, state = self.step(ids[expand], 0, state, encoded)
        seqs = ids[expand]
        scores = np.zeros((b, beams), np.float32)
        scores[:, 1:] = -np.inf
        finished: list[list[tuple[float, np.ndarray]]] = [[] for _ in range(b)]
        for i in range(n):
            last = logits[:, -1].astype(np.float32)
            logp = last - last.max(-1, keepdims=True)
            logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
            vocab = logp.shape[-1]
            cand = (scores.reshape(-1, 1) + logp).reshape(b, beams * vocab)
            idx = np.argsort(-cand, axis=-1, kind="stable")[:, :2 * beams]
            top = np.take_along_axis(cand, idx, -1)
            src_beam, token = idx // vocab, idx % vocab
            next_scores = np.empty((b, beams), np.float32)
            next_src = np.empty((b, beams), np.int64)
            next_tok = np.empty((b, beams), np.int64)
            for r in range(b):
                kept = 0
                for j in range(2 * beams):
                    src = r * beams + int(src_beam[r, j])
                    if eos is not None and int(token[r, j]) == eos:
                        if j < beams:
                            finished[r].append((float(top[r, j]) / (i + 1) ** length_penalty,
                                                np.concatenate((seqs[src], token[r, j:j + 1]))))
                        continue
                    next_scores[r, kept], next_src[r, kept], next_tok[r, kept] = top[r, j], src, token[r, j]
                    kept += 1
                    if kept == beams:
                        break
            flat = next_src.reshape(-1)
            seqs = np.concatenate((seqs[flat], next_tok.reshape(-1, 1)), axis=1)
            scores = next_scores
            if eos is not None and all(
                    len(finished[r]) >= beams and max(s for s, _ in finished[r]) >= float(scores[r].max()) /
                    (i + 1) ** length_penalty for r in range(b)):
                break
            if i == n - 1:
                break
            state = [s[flat] for s in state]
            logits, state = self.step(next_tok.reshape(-1, 1), t + i, state, encoded)
        length = seqs.shape[1] - t
        best = []
        for r in range(b):
            for j in range(beams):
                finished[r].append((float(scores[r, j]) / length ** length_penalty, seqs[r * beams + j]))
            best.append(max(finished[r], key=lambda h: h[0])[1])
        width = max(len(s) for s in best)
        pad = eos if eos is not None else 0
        return np.stack([np.pad(s, (0, width - len(s)), constant_values=pad) for s in best])


#: onnxruntime's element types of the dtypes a manifest names
_ORT_TYPES = {"float32": "tensor(float)", "bool": "tensor(bool)", "int64": "tensor(int64)",
              "float64": "tensor(double)", "int8": "tensor(int8)"}


def check_ports(manifest: Manifest, session, path: Path) -> None:
    """The manifest against the graph onnxruntime loaded: the same input and output names, and for
    each the same element type and shape (a fixed size equal; a symbol where the graph has one),
    the logits as wide as the vocabulary, every state's initial value of its shape. ARC1305."""
    graph = {v.name: v for v in [*session.get_inputs(), *session.get_outputs()]}
    where = f"{printable(str(path))} and its {MANIFEST}"
    want_in = {p.name for p in manifest.inputs}
    want_out = {p.name for p in manifest.outputs}
    got_in = {i.name for i in session.get_inputs()}
    got_out = {o.name for o in session.get_outputs()}
    if got_in != want_in or got_out != want_out:
        diff = sorted((got_in ^ want_in) | (got_out ^ want_out))
        raise NotAnExport(f"{where} disagree on the graph's inputs and outputs "
                          f"({printable(', '.join(diff[:4]))}{', …' if len(diff) > 4 else ''})", "ARC1305",
                          "export the folder again")
    for port in [*manifest.inputs, *manifest.outputs]:
        g = graph[port.name]
        if _DTYPES.get(port.dtype) is None or g.type != _ORT_TYPES[port.dtype]:
            raise NotAnExport(f"{where} disagree on {printable(port.name)}: {g.type} in the graph, "
                              f"{printable(port.dtype)} in the manifest", "ARC1305", "export the folder again")
        if len(g.shape) != len(port.shape) or any(
                isinstance(a, int) and a != b for a, b in zip(g.shape, port.shape, strict=True)) or any(
                isinstance(b, int) and isinstance(a, str) for a, b in zip(g.shape, port.shape, strict=True)):
            raise NotAnExport(f"{where} disagree on the shape of {printable(port.name)}: {g.shape} in the graph, "
                              f"{port.shape} in the manifest", "ARC1305", "export the folder again")
    logits = next((p for p in manifest.outputs if p.name == "logits"), None)
    if logits is not None and logits.shape[-1] != manifest.vocab:
        raise NotAnExport(f"{where} disagree on the vocabulary: logits of width {logits.shape[-1]}, vocab "
                          f"{manifest.vocab}", "ARC1305", "export the folder again")
    ports = {p.name: p for p in manifest.inputs}
    state_in = [s.input for s in manifest.state]
    tokens = {"input_ids", "attention_mask", "token_type_ids"} if manifest.kind == "decoder" else set(want_in)
    state_out = [s.output for s in manifest.state]
    if len(set(state_in)) != len(state_in) or set(state_in) != want_in - tokens or (
            manifest.kind == "forward" and state_in) or len(set(state_out)) != len(state_out) or (
            manifest.kind == "decoder" and set(state_out) != want_out - {"logits"}):
        raise NotAnExport(f"{where} disagree on the decode state: the graph takes "
                          f"{printable(', '.join(sorted(want_in - tokens))) or 'none'}, the manifest lists "
                          f"{printable(', '.join(state_in)) or 'none'}", "ARC1305", "export the folder again")
    for s in manifest.state:
        if s.input not in ports or s.output not in want_out or ports[s.input].shape != s.shape:
            raise NotAnExport(f"{where} disagree on the state {printable(s.input)}", "ARC1305", "export the folder again")
        fill = np.asarray(s.fill, dtype=np.float64) if not isinstance(s.fill, int | float) else None
        expect = tuple(d for d in s.shape if d != "batch")
        if fill is not None and fill.shape != expect:
            raise NotAnExport(f"{where}: the initial value of {printable(s.input)} has shape {fill.shape}, the "
                              f"state {expect}", "ARC1305", "export the folder again")


def check_external_data(folder: Path, model: Path) -> None:
    """Every external-data location the model names stays inside the folder (ARC1304), checked
    before onnxruntime opens anything (onnx/onnx#3991: `../../etc/passwd` as a location). A model
    whose bytes never spell `location` has none, and is not parsed a second time; without the
    onnx package (a bare runtime) onnxruntime's own refusal of paths outside the folder stands."""
    import mmap

    if model.stat().st_size == 0:
        raise NotAnExport(f"{printable(str(model))} is empty: not an ONNX model")
    with open(model, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data.find(b"location") < 0:
            return
    try:
        import onnx
    except ImportError:
        return
    try:
        proto = onnx.load(str(model), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends: not an ONNX file
        raise NotAnExport(f"{printable(str(model))} is not an ONNX model: {printable(str(e))[:200]}") from None
    try:
        for t in _initializers(proto.graph):
            if t.data_location == onnx.TensorProto.EXTERNAL:
                loc = next((e.value for e in t.external_data if e.key == "location"), "")
                inside(folder, loc, f"the external data of {t.name!r}")
    except FileError as e:
        raise NotAnExport(e.message, e.code, e.hint) from None


def _initializers(graph):
    """The initializers of a graph and of every subgraph (If branches, Loop and Scan bodies)."""
    import onnx

    yield from graph.initializer
    for node in graph.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from _initializers(a.g)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for g in a.graphs:
                    yield from _initializers(g)


def state_bytes(manifest: Manifest, batch: int, total: int) -> int:
    """Bytes of the decode state at `total` tokens (growing caches at their largest), and of the
    logits of a prefill of `total` tokens: what decoding plans to allocate, known before it does."""
    n = 0
    for s in manifest.state:
        size = np.dtype(_DTYPES[s.dtype]).itemsize
        for d in s.shape:
            size *= batch if d == "batch" else total if d in ("past_seq", "total_seq", "seq") else int(d)
        n += size
    return n + batch * total * manifest.vocab * 4


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
