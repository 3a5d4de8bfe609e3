"""Long explanations of every diagnostic code (`archc explain CODE`, docs/errors.md).

Codes are stable: a code is never reused for a different problem. The hundreds digit groups
them: 0xx files, 1xx syntax, 2xx arguments, 3xx shapes, 4xx names and structure, 5xx warnings,
6xx resource limits, 7xx includes, 8xx tools, 9xx the torch backend's commands, 10xx passes,
11xx ONNX export, 12xx pruning, 13xx the command line and the files archc reads and writes, 14xx
Hugging Face interop, 9999 internal errors.
"""

from __future__ import annotations

EXPLANATIONS: dict[str, tuple[str, str]] = {
    "ARC0001": ("cannot read the spec file", """
The file does not exist, is a directory, is not readable, or is not UTF-8 text.
Check the path; specs are UTF-8 text files ending in `.arch`.
"""),
    "ARC0101": ("unexpected character", """
The lexer met a character that starts no token of the language. Common causes: `//` comments
(comments start with `#`), single-quoted strings (use "double quotes"), or stray punctuation.

    x = embed(tokens, 'vocab')   # error
    x = embed(tokens, vocab)     # fine
"""),
    "ARC0102": ("unexpected end of file", """
The file ended in the middle of a construct, usually because a `}` or `)` is missing.
The diagnostic lists what the parser expected at the end.
"""),
    "ARC0103": ("unexpected token", """
A token appeared where the grammar does not allow it. The hint lists the tokens that would be
accepted there. Keyword arguments (`heads=8`) are only allowed inside a call's parentheses.

    x = attention(x heads=8)     # error: missing `,`
    x = attention(x, heads=8)    # fine
"""),
    "ARC0104": ("expression nested too deeply", """
Expressions may nest at most 64 levels. Name intermediate values instead:

    h = rmsnorm(x)
    x = x + attention(h, heads=8)
"""),
    "ARC0105": ("file too large", """
A spec (or an included file) is larger than 2 MB. Use `repeat(n, block)` and `pattern(...)`
rather than writing layers out, and `include` to split libraries.
"""),
    "ARC0201": ("bad arguments to a call", """
An argument is unknown, missing, given twice, or given in the wrong position. Tensor arguments
come first, then settings; settings can be given by name (`heads=8`) or in the order the op's
schema lists them (`embed(tokens, 32000, 4096)`). `archc ops NAME` prints an op's schema.

    x = attention(x, head=8)     # error: `attention` has no argument `head`; did you mean `heads`?
"""),
    "ARC0202": ("wrong type or value", """
An argument has the wrong type (a string where a number is needed, a tensor where a setting is
needed) or a value outside its allowed range (for example `dropout=1.5`, `heads=0`).
The message quotes the schema's rule and the value given.
"""),
    "ARC0301": ("shape mismatch", """
Two tensors that must have the same shape do not, e.g. a residual `x + f(x)` where `f` changes
the width, or a block wrapped by `mod`/`act`/`recurrent_memory` that does not map its input
type to itself. The message shows both types, as float[batch, seq, d].
"""),
    "ARC0302": ("wrong kind of tensor", """
An op received token ids where it needs hidden states (or the reverse), or a value of the wrong
kind was returned. Token ids (int[batch, seq]) go through `embed(tokens, vocab, d)` first.
"""),
    "ARC0303": ("size constraint violated", """
A size does not divide another as the op requires: heads must divide the width (unless
head_dim is given), kv_heads must divide heads (GQA groups), groups must divide the channels,
head_dim must divide the inner width of Mamba-2, rope needs an even rotated head dimension.
"""),
    "ARC0304": ("a component used as a layer", """
Position schemes (rope, alibi, relative_bias) are passed to attention, not applied to tensors:

    x = attention(x, heads=8, pos=rope(theta=10000))
"""),
    "ARC0305": ("inconsistent settings", """
Settings that are each valid contradict one another (e.g. S4's dt_min above dt_max) or pass an
op's own bound (e.g. ACT's max_steps above 64).
"""),
    "ARC0401": ("unknown name", """
A name is used before it is defined, or is misspelled; the hint suggests the closest known
names. Blocks and constants must be defined (or included) before use. `archc ops` lists ops.
"""),
    "ARC0402": ("constant arithmetic error", """
Constant folding failed: division by zero, a result above 2^63, a non-finite number, or a string
or list longer than 100,000 elements (e.g. `"MMA" * 1000000`).
"""),
    "ARC0403": ("not callable / op not called", """
A value that is not a block, op or layer stack was called, or an op name was used without
parentheses (`pos=rope` instead of `pos=rope()`).
"""),
    "ARC0405": ("missing return or model", """
Every block and the model must end with `return`; a spec file given to `check` must define a
model (files that only hold blocks are meant to be included).
"""),
    "ARC0406": ("more than one model", """
A spec defines exactly one model. Share blocks between models with `include`.
"""),
    "ARC0407": ("recursive block", """
A block calls itself, directly or through other blocks; the dataflow graph would have a cycle.
Use `repeat(n, block)` for depth.
"""),
    "ARC0408": ("duplicate input", "A model declares the same input name twice."),
    "ARC0409": ("value returned twice", "The model returns the same tensor more than once."),
    "ARC0410": ("misplaced statement", """
`include` goes at the top level of a file; `export`, `parallel` and `train` sections go at the
top level of the model, once each.
"""),
    "ARC0501": ("unused value (warning)", """
A computed value, a model input, or a pattern letter is never used. It would be dead weight in
the built model. Use it, return it or remove it. `archc check --strict` fails on warnings.
"""),
    "ARC0502": ("section not applied yet (warning)", """
The `parallel { }` section is parsed and validated (its degrees, memory and flags), and kept with
the model's graph. `archc plan` reads it as constraints (its degrees are fixed, its devices and
memory are the cluster's; docs/distributed.md), but no other command applies it yet: `archc
build`, `train` and `export` make single-device models. The warning says so, rather than letting
the settings look honored; `archc plan` does not print it.
"""),
    "ARC0601": ("parameter limit exceeded", """
The model's exact parameter count passes --max-params (default 1e13). The count is computed
symbolically, nothing is allocated. Raise the limit if the spec really means it:

    archc check big.arch --max-params 1e14
"""),
    "ARC0602": ("node or layer limit exceeded", """
The spec would lower to more IR nodes (or layers) than --max-nodes (default 200,000). archc
measures one layer and refuses before expanding the rest, so absurd depths fail instantly.
"""),
    "ARC0701": ("include outside the spec's folder", """
Includes are relative paths that must stay inside the folder of the spec being checked (after
resolving `..` and symbolic links). Absolute paths and paths escaping the folder are refused,
so a spec cannot read arbitrary files.
"""),
    "ARC0702": ("included file not found", "The included path does not name a readable file."),
    "ARC0703": ("include cycle", "Files include each other in a cycle; the message shows the chain."),
    "ARC0704": ("includes nested too deeply", "Includes may nest at most 16 levels."),
    "ARC0705": ("model in an included file", """
Included files contribute blocks and constants; the model is defined in the file being compiled.
"""),
    "ARC0801": ("cannot render the graph", """
SVG, PNG and PDF output needs Graphviz's `dot` program (Debian/Ubuntu: `apt install graphviz`;
macOS: `brew install graphviz`). DOT text (`-o graph.dot`) needs nothing.
"""),
    "ARC0901": ("op without a module in this backend", """
The spec is valid, but one of its ops has no implementation in the backend you asked for yet
(e.g. a recurrent mixer in the PyTorch backend before it lands). The diagnostic points at the call;
`docs/backends.md` lists what each backend builds.
"""),
    "ARC0902": ("weights do not fit the spec", """
A weights file could not be loaded into the model built from the spec: a parameter is missing,
unexpected, or has another shape. Weights are tied to the spec (and its sizes) that produced them:
load the file with the spec `archc train` / `archc build -o` used.
"""),
    "ARC0903": ("refusing to overwrite", """
archc never replaces a file or a training run you saved without being asked. Choose another
output path, continue a run with `--resume`, or pass `--force` to replace it.
"""),
    "ARC0904": ("a dependency is missing", """
The command needs an optional dependency that is not installed (PyTorch for build, train and
generate). The hint names the extra to install, e.g. `pip install "archc[torch]"`.
"""),
    "ARC0905": ("nothing to resume", """
`archc train --resume` continues the run in its output folder from `train_state.safetensors`;
the folder has none. Start the run without `--resume`, or point `--output` at the run to continue.
"""),
    "ARC0906": ("the model does not fit the command", """
The spec is valid, but the command needs another kind of model: the built-in training tasks and
`archc generate` need a language model (a spec ending in `lm_head`), and `generate` a causal one
(no bidirectional mixer, so that it can decode token by token).
"""),
    "ARC0907": ("the task does not fit the model", """
A built-in training task cannot run on this model, e.g. its token ids do not fit the model's
vocabulary. The message says what the task needs.
"""),
    "ARC0908": ("bad prompt", """
The prompt cannot be fed to the model: text prompts are UTF-8 bytes and need a vocabulary of at
least 256; `--prompt-ids` takes integers in [0, vocab) separated by spaces or commas;
`--draft-weights` needs `--draft`.
"""),
    "ARC0910": ("bad distillation setup", """
`archc train --distill TEACHER.arch --teacher W` trains the student on the teacher's soft targets:
both must be language models of the same kind (causal, or both bidirectional) over the same
vocabulary, since the loss compares their next-token distributions token by token. `--teacher`
needs `--distill`; `--alpha` is in [0, 1] (the soft loss's weight) and `--temperature` positive.
"""),
    "ARC1001": ("a pass failed", """
An IR pass (`archc passes --list`) could not transform the graph: a rewrite left a node whose
inputs no longer type-check (e.g. a pruned width that no longer divides the heads), or an edit
would break the graph's order. The message names the pass, the passes that ran before it, and the
node; the span points at the `.arch` call that made that node.
"""),
    "ARC1002": ("a pass broke an IR invariant", """
After a pass, the verifier found the graph broken: a node reading a value that is not defined
before it, a type that its op's shape rule does not give, a missing source span, parameters outside
the op's schema. This is a bug in the pass (archc's, or one you registered), not in the spec; the
message names the pass and the node. `archc passes SPEC --dump-after NAME` shows the IR it left.
"""),
    "ARC1101": ("this spec cannot be exported as asked", """
`archc export` met a part of the spec the ONNX backend does not export yet (the message names it,
and the span points at the op's `.arch` line), for instance a decode state that starts from a
parameter. Nothing is written. docs/onnx.md lists what exports; `archc generate` runs every spec
with PyTorch.
"""),
    "ARC1102": ("cannot write the output", """
An output (`archc export`'s or `archc prune`'s folder, `archc train`'s run folder, a `--json`
or `-o` file) cannot be written: the disk is full (the message gives the bytes needed and free),
permission is denied, the file system is read-only, or the path goes through a file. Nothing was
changed: archc builds every output in a transaction beside it and swaps it in only when it is
complete (docs/onnx.md). Free some space or choose another output.
"""),
    "ARC1103": ("unsupported opset", """
The ONNX opset asked for (with `--opset`, or `opset` in the spec's `export onnx { ... }` section)
is outside what the exporter emits: torch's ONNX exporter writes opsets 18 to 23. The default,
23, has the fused `Attention` operator; pass `--opset 20` for an onnxruntime older than 1.23.
"""),
    "ARC1104": ("not an archc export", """
`archc run` needs a folder written by `archc export`: `archc_export.json` beside `model.onnx`, the
manifest valid, and the graph taking and returning exactly the inputs and outputs the manifest
lists. A folder copied in part, edited by hand, or exported by another tool is refused rather than
run with a wrong state layout. Export again with `archc export SPEC -o DIR`.
"""),
    "ARC1105": ("quantization failed", """
onnxruntime's quantization tool could not quantize the exported graph as asked. Nothing was
written (the output folder is as it was); try another scheme (`--quantize
int8_dynamic`, `int8_static`, `int4`), or keep the class of the failing weight in fp32
(`--keep fp32:CLASS`, see `archc export --explain`). docs/compression.md lists what each scheme
quantizes.
"""),
    "ARC1106": ("bad --keep", """
`--keep PRECISION:CLASS[,CLASS…]` overrides the precision rule of a class of weights: `fp32` keeps
it unquantized, `int8`/`int4`/`quantized` quantizes it with the scheme. The classes are those of
the ops' precision rules: projection, ffn, expert, embedding, head, router, norm, ssm,
discretization, decay, gate, conv, recurrent, position, mix, memory (docs/compression.md).
"""),
    "ARC1107": ("no usable calibration data", """
Static int8 quantization calibrates activation ranges on token sequences: `--calibrate TASK:N`
draws N sequences from a built-in task generator (`chars:256`), `--calibrate FILE:N` N windows of
a text file's bytes (for byte-level vocabularies). The source must exist, fit the model's
vocabulary, and hold at least one sequence of `--calibrate-seq` tokens.
"""),
    "ARC1108": ("a decoder branch cannot be calibrated alone", """
Static quantization of a decoder cuts its prefill and decode branches out as models of their own
to calibrate them; a value they read from the enclosing graph had no inferable type, or the two
branches quantized one weight differently. Use `--quantize int8_dynamic` or `int4`, and report
the spec: it is a gap in archc.
"""),
    "ARC1109": ("nothing for --quantize-state to quantize", """
`--quantize-state int8` stores a decoder's KV caches (attention keys and values, one row per
token) in int8 with a scale per row. A spec whose state is recurrent only (Mamba, RWKV, RetNet,
xLSTM) has no such cache, and its recurrent state stays fp32 on purpose: an error in it reaches
every later token. A forward graph has no state at all. The per-row (blocked) QuantizeLinear
it uses needs opset 21 or later. Drop the flag, or export an attention decoder at opset >= 21.
"""),
    "ARC1201": ("pruning failed", """
`archc prune` could not prune the model as asked. The message says why.
"""),
    "ARC1202": ("an op cannot lose these units", """
The op has units of the kind asked for but cannot lose them as configured: attention with ALiBi
(each head's slope is a function of the head count) or RWKV-6's time-mix (no attention width
apart from the model width). `--only 'GLOB'` restricts pruning to other nodes.
"""),
    "ARC1203": ("nothing of that kind to prune", """
No op of the spec has the units asked for (`--heads`: attention, Mamba-2 and RetNet heads; `--ffn`:
FFN hidden channels, MoE experts' included; `--inner`: Mamba and RWKV-4 inner channels;
`--experts`: MoE experts), or a ratio is not a fraction in (0, 1). The hint lists what the spec can
lose. `--magnitude` zeroes small weights of any spec without changing shapes.
"""),
    "ARC1204": ("the call is not in the spec file", """
`archc prune` writes the pruned widths into the calls that made the pruned nodes; a call in an
included file would need that file rewritten too, which archc does not do behind your back.
Inline the block into the spec, or prune with `--only` outside it.
"""),
    "ARC1205": ("pruning needs data", """
Activation and Taylor importance, and ranking whole layers (`--layers`), run the model on token
sequences: pass `--calibrate TASK:N` (e.g. chars:64) or `--calibrate FILE.txt:N`.
"""),
    "ARC1206": ("one call, different widths", """
Several nodes come from one call in the spec (the layers of a `repeat`, or a block used twice),
and they were pruned to different widths, which one call cannot write. Prune them with one
ratio; a block bound with different settings per use keeps its own widths per use only when its
widths are block settings.
"""),
    "ARC1207": ("the layers cannot be removed", """
`--layers N` removes the N layers whose loss rises least when skipped from the spec's one layer
stack written as `repeat(n, block)`, and writes `repeat(n − N, block)`. A spec with several
stacks, a `pattern(...)`, or N ≥ n is refused.
"""),
    "ARC1301": ("empty output path", """
`-o ""` (typically an unset shell variable: `-o "$OUT"`) would mean the current folder, where
`--force` replaces archc's files. An output must be named explicitly.
"""),
    "ARC1302": ("a symbolic link where archc writes", """
The output folder, or a file archc writes in it (`model.onnx`, `reference/`, `last.safetensors`,
an output file), is a symbolic link. archc never creates links and never writes through one: a link
planted in an output folder could point anywhere (`model.onnx -> ~/.bashrc`). Remove the link, or
give the real folder. Folders *above* the output may be links (a `runs/` on another disk is fine).
"""),
    "ARC1303": ("another archc is writing this output", """
A live archc process (the message gives its pid) holds a transaction in this output folder. Two
writers to one folder would replace each other's files; wait for the other to finish or choose
another output. A transaction left by a killed process is not this error: the next run finishes or
removes it by itself.
"""),
    "ARC1304": ("a path in the folder leaves it", """
A file archc reads back names a path outside its folder: the manifest's `model` or
`quantization.reference`, or an ONNX external-data `location`, is absolute, has `..`, or passes a
symbolic link (or the manifest itself is a link). archc writes only relative paths inside the
folder, so the folder was edited or made by something else; nothing is opened. Export again.
(The rule is ONNX's for external data, onnx/onnx#3991 and CVE-2024-27318.)
"""),
    "ARC1305": ("the manifest and the graph disagree", """
`archc_export.json` and `model.onnx` describe different models: other input or output names,
element types, fixed sizes (a state longer than the graph's), a vocabulary that is not the logits'
width, or a state's initial value of another shape. Running such a folder would allocate or feed
tensors the graph does not take. Export the folder again rather than editing the manifest.
"""),
    "ARC1306": ("over the memory limit", """
What the command would allocate up front — the decode state at the prompt plus `--max-new-tokens`
tokens, the prefill's logits — is more than `--max-memory` (default: half of the machine's memory).
It is refused before anything is allocated, instead of swapping until the kernel kills the
process. Ask for fewer tokens or a shorter prompt, or raise `--max-memory` on a larger machine.
"""),
    "ARC1307": ("bad command-line option", """
A flag's value is outside what it accepts; the message names the flag and the range: counts from 0
or 1 up to 2^40 (or their own bound), probabilities (`--top-p`) in (0, 1], temperatures finite and ≥ 0, `--top-k` between 1 and
the vocabulary, learning rates finite and > 0, pruning ratios in [0, 1), held-out and efficiency
shares in (0, 1), `--threads` (run, compress-report, bench) and `train --nproc` between 1 and 4 ×
the cores, MatMulNBits block sizes powers of two from 16 to 256, data sources `TASK:N` with N ≥ 1,
output paths never empty (an unset shell variable). `archc COMMAND --help` lists every option.
"""),
    "ARC1308": ("cannot resume from this run folder", """
`--resume` found a checkpoint it cannot continue from: `last.safetensors` or
`train_state.safetensors` is damaged (truncated, not safetensors), belongs to another spec, or
the two are of different steps (a folder assembled by hand: archc saves both in one transaction, so
a kill during a save never leaves that). Start again without `--resume` (`--force` replaces the
run), or resume from a folder `archc train` wrote.
"""),
    "ARC1401": ("cannot import this Hugging Face model", """
`archc import-hf` read the config (and the checkpoint beside it) and found something it will not
turn into a spec: a `model_type` archc has no rule for yet, a field whose value archc does not
express (an activation, a rope scaling type, a bias flag — the message names the field and its
value), a field no rule reads, or weights the config does not describe (a tensor missing, of
another shape, or one the rule would leave out). archc refuses rather than import a model that
computes something else. docs/hf.md lists every family and the fields each reads; a pickled
checkpoint (`pytorch_model.bin`) is refused too — re-save it with safetensors.
"""),
    "ARC1402": ("cannot export this spec to Hugging Face", """
`archc export-hf` writes `AutoModelForCausalLM` folders: the spec must be a causal language model
(it ends in `lm_head`, its mixers are causal, it takes one input of token ids). A spec that is
exactly a Hugging Face family is written as that family; any other causal LM through archc's
modeling file (`trust_remote_code=True`). Of the encoders, BERT (with its classification or
masked-LM head) is written as itself; other encoders, taggers and encoder–decoders are refused
with the first way they differ from BERT.
"""),
    "ARC1501": ("not a tokenizer archc can use", """
`--tokenizer` takes a Hugging Face `tokenizer.json` (what `PreTrainedTokenizerFast.save_pretrained`
and `tokenizers.Tokenizer.save` write), a folder holding one (a model folder), or `bytes` (UTF-8
bytes, ids 0–255, and 256 ending a document). archc also needs the tokenizer's end-of-text token to
pack documents: it is the `eos_token` of the folder's `tokenizer_config.json`, else a special token
with a conventional name (`<|endoftext|>`, `</s>`, `<eos>`, …). Add one with
`tokenizer.add_special_tokens` and name it in `tokenizer_config.json`.
"""),
    "ARC1502": ("the vocabulary does not hold the tokenizer", """
The tokenizer produces ids up to its size, and the spec's embedding and `lm_head` have a row per
id: the spec's vocabulary must be at least the tokenizer's size (a larger one is fine; Hugging
Face models pad theirs to a multiple of 64 or 128). Raise the vocabulary on the line shown, or
train with a smaller tokenizer. The byte vocabulary has 257 ids.
"""),
    "ARC1503": ("cannot read the data", """
`--data` takes a text file (`.txt`, `.text`, `.md`: one document each), `.jsonl`/`.json` (one
JSON record per line), `.parquet`, or a folder of them searched recursively (hidden files and
folders, such as archc's own `.archc-cache`, are skipped). The message names the file the
`datasets` library could not read and why.
"""),
    "ARC1504": ("records without text", """
The records of `.jsonl` and `.parquet` files hold their text in one field, `text` by default:
name another with `--text-field`. Every record's field must be a string. The message lists the
fields the records have.
"""),
    "ARC1505": ("too little text", """
After the held-out split (`--val-fraction`), the training part must hold at least one sequence of
`--seq` tokens and the held-out part two tokens. Add text, shorten `--seq`, or change the split.
"""),
    "ARC1601": ("no parallel plan", """
`archc plan` found no layout to offer. Either the constraints allow none — the degrees fixed by
`--plan` or the spec's `parallel { }` section do not multiply to a divisor of the devices, tensor
parallelism would leave a node, a pipeline would have more stages than the model has layers, no
microbatch divides the global batch, or context parallelism was asked of a model with an op that
cannot run on a split sequence (the message names it) — or layouts exist and none fits in the
devices' memory: the message gives the smallest per-device figure found and its layout. Add
devices or memory, shorten `--seq`, or relax the fixed degrees.
"""),
    "ARC1602": ("cannot run this parallel plan", """
`archc train --nproc N --plan DEGREES` runs tensor parallelism (`tp`, with sequence parallelism;
with data parallelism it runs FSDP), data parallelism (`dp`, with `zero=zero1` or `fsdp`),
pipelines (`pp`, `v`, `schedule`; with tensor and data parallelism) and context parallelism
(`cp`) on their own or with data parallelism, and expert parallelism (`ep`, over DDP); the
degrees must multiply to N. Other
combinations (context parallelism with tensor parallelism, `tp` with `zero=ddp`) are costed by `archc
plan` but not run yet. An op whose tensor-parallel rule needs a reduction inside the op that
archc does not run, or has no prune rule to build a rank's shard from, is refused by name (run
it with tp=1; no op of the catalog is), as are auxiliary losses inside a pipeline and ops
without a context-parallel form under cp. A distributed run cannot `--distill`.
docs/distributed.md lists what runs.
"""),
    "ARC1603": ("cannot measure the activation profile", """
`archc plan --activations eager` runs one training forward of the spec's PyTorch modules on fake
tensors (shapes, no memory) to measure what they keep for the backward pass. The message names
the operation that could not run without real values (a data-dependent shape). Plan with
`--activations fused` (the cost model's figures) instead.
"""),
    "ARC1701": ("cannot use the Triton kernels", """
`kernels=triton` (the API's `build(..., kernels="triton")`, `archc kernels --kernels triton`)
insists on the Triton kernels, so a node that cannot run its kernel is an error rather than a
silent fallback: Triton is not installed (`pip install 'archc[triton]'`), the model's tensors are
not on a CUDA device (on the CPU Triton runs only in its interpreter, `TRITON_INTERPRET=1`, as the
tests do), or the kernel's template cannot be specialized to the node (the message says why, e.g.
rows wider than one program holds). `--kernels auto` runs the torch form there instead.
"""),
    "ARC1702": ("cannot compile the model", """
`torch.compile` (`archc train --compile`, `archc generate --compile`, `archc bench`, the API's
`build(..., compile=True)` and `generate(..., compile=True)`) generates C++ on the CPU and Triton
on CUDA, so it needs a C++ compiler (g++) on the CPU and a working Triton on CUDA; the message
gives the first line of torch's own error. Decoding compiles the whole one-token step as one graph
(`fullgraph=True`), so an op whose step cannot be traced is an error there too. Run without
`--compile` (eager PyTorch, the same numbers), or `archc bench --no-compile`; `TORCH_LOGS=graph_breaks`
shows where tracing stopped.
"""),
    "ARC9999": ("internal error", """
archc itself failed: this is a bug, not a problem with your spec. Please report it with the spec
that triggered it; `ARCHC_DEBUG=1` shows the Python traceback.
"""),
}
