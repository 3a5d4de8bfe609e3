"""`archc build`, `archc train` and `archc generate`: the commands that need PyTorch.

They live apart from `archc/cli/frontend.py` so that the fast commands never import torch. Every failure a
user can cause (an op without a module yet, weights that do not fit the spec, an output that
already exists, a bad option) is a diagnostic with a code, never a traceback.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys

from archc.cli.common import (
    EXIT_ERRORS,
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    _fail,
    add_limit_flags,
    load_spec,
    print_diags,
)
from archc.cli.data import add_data_flags, add_split_flags, add_tokenizer_flag
from archc.cli.flags import (
    add_memory_flag,
    count,
    output,
    plan_degrees,
    positive,
    probability,
    processes,
    seed,
    temperature,
    unit_interval,
)
from archc.errors import ArchError, Diagnostic
from archc.passes.manager import BUILD_LEVEL


def _need_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise _fail("ARC0904", "this command needs PyTorch, which is not installed",
                    'install the torch extra: pip install "archc[torch]"') from None


def _build_model(path: str, seed: int, sources: dict[str, str], limits: argparse.Namespace,
                 device: str = "cpu", pipeline: str | None = None):
    """The spec's model after `pipeline` (default: the command's `--pipeline`, else `O0`: commands
    that rewrite a model — prune, export before its own pipeline — start from the canonical one)."""
    _need_torch()
    from archc.backends.torch import BackendError, build
    from archc.backends.triton import KernelError

    prog = load_spec(path, limits, sources)
    pipeline = pipeline or getattr(limits, "pipeline", None) or "O0"
    device = getattr(limits, "device", None) or device
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise _fail("ARC0904", "--device cuda: PyTorch sees no CUDA device here",
                        "run on a machine with an NVIDIA GPU and a CUDA build of PyTorch, or leave out --device")
    try:
        return build(prog.graph, seed=seed, device=device, pipeline=pipeline,
                     kernels=getattr(limits, "kernels", None) or "auto"), prog
    except BackendError as e:
        raise _fail("ARC0901", f"{e.message} (node `{e.node.id}`)", e.hint, e.node.span) from None
    except KernelError as e:
        raise _fail("ARC1701", str(e), "use --kernels auto (the torch forms where Triton cannot run)") from None


def add_runtime_flags(sp: argparse.ArgumentParser, what: str) -> None:
    """`--device`, `--kernels`, `--compile`: where the model runs and what code runs it."""
    sp.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the model runs (cpu)")
    sp.add_argument("--kernels", choices=("auto", "triton", "torch"), default="auto",
                    help="Triton kernels: auto (on CUDA where they apply), triton (an error where one cannot run), "
                         "torch (never); docs/kernels.md")
    sp.add_argument("--compile", action="store_true", help=f"torch.compile {what} (the first call compiles; "
                    "docs/performance.md)")


def _compile_failed(e: Exception) -> CommandError:
    from archc.backends.torch.compiled import why

    return _fail("ARC1702", why(e), "run without --compile (eager PyTorch computes the same)")




def _run(fn, args: argparse.Namespace) -> int:
    from archc.files import FileError

    sources: dict[str, str] = {}
    try:
        return fn(args, sources)
    except ArchError as e:
        print_diags(e.diagnostics, sources)
    except CommandError as e:
        print_diags([e.diag], sources)
        return e.status
    except FileError as e:
        print_diags([Diagnostic(e.code, e.message, None, e.hint)], sources)
        return EXIT_USAGE if e.usage else EXIT_ERRORS
    except (MemoryError, RuntimeError) as e:  # the estimates before the work are not every intermediate
        if not isinstance(e, MemoryError) and "out of memory" not in str(e) and "not enough memory" not in str(e):
            raise
        print_diags([Diagnostic("ARC1306", f"out of memory: {str(e).splitlines()[0][:200] if str(e) else 'MemoryError'}",
                                None, "ask for less (a smaller batch, fewer or shorter sequences, fewer tokens)")],
                    sources)
    return EXIT_ERRORS


# -- build ----------------------------------------------------------------------------------


def _cmd_build(args: argparse.Namespace, sources: dict[str, str]) -> int:
    from archc.backends.torch.checkpoint import save_weights
    from archc.files.output import check_file, output_file

    out = check_file(args.output, args.force) if args.output else None  # before the build, not after
    model, prog = _build_model(args.file, args.seed, sources, args)
    n = model.num_parameters()
    print(f"{prog.graph.name} ({model.pipeline}): {n:,} parameters, {len(list(model.named_parameters()))} tensors, "
          f"state {', '.join(model.state_names[:4])}{' …' if len(model.state_names) > 4 else ''}")
    if out is not None:
        with output_file(out, args.force) as tmp:
            save_weights(model, tmp, {"spec": prog.graph.name, "seed": args.seed})
        print(f"wrote {out}")
    return EXIT_OK


def cmd_build(args: argparse.Namespace) -> int:
    return _run(_cmd_build, args)


# -- train ----------------------------------------------------------------------------------


def _cmd_train(args: argparse.Namespace, sources: dict[str, str]) -> int:
    _need_torch()
    from archc.backends.torch.train import RUN
    from archc.files.output import check_folder

    if args.nproc > 1 or args.plan:
        return _train_distributed(args, sources)

    # first: links, a file in the way, and a save a kill cut short finished from its journal
    out = check_folder(args.out, RUN, force=True)
    if (out / "last.safetensors").exists() and not (args.resume or args.force):
        raise _fail("ARC0903", f"{out} already holds a training run; refusing to overwrite it",
                    "pass --resume to continue it, --force to start over, or --out for a new folder")
    if args.resume and not (out / "train_state.safetensors").exists():
        from archc.backends.torch.distributed_checkpoint import STATE_DIR

        raise _fail("ARC0905", f"--resume: {out} has no train_state.safetensors to resume from",
                    f"it holds a distributed run's state ({STATE_DIR}/): resume it with --nproc and a --plan"
                    if (out / STATE_DIR / ".metadata").exists() else
                    "start the run without --resume, or point --output at the run folder", usage=True)
    model, prog = _build_model(args.file, args.seed, sources, args)
    import torch

    from archc.backends.torch.checkpoint import CheckpointError
    from archc.backends.torch.tasks import make_task
    from archc.backends.torch.train import config_from_section, train

    if args.init and not args.resume:
        _load_weights(model, args.init, "--init")
    distill = _teacher(args, model, prog, sources)
    if args.compile:
        from archc.backends.torch.compiled import compile_model

        compile_model(model, dynamic=False)  # a run's batches share one shape (a held-out set: one more)

    torch.manual_seed(args.seed)
    section = prog.graph.sections.get("train")
    if model.head_loss != "lm":
        raise _fail("ARC0906", f"archc train trains language models; {prog.graph.name} ends in {model.head}",
                    "end the spec with lm_head(...) to train it here; other heads train in your own loop")
    vocab = model.out_type_vocab()
    cfg = config_from_section(section, steps=args.steps, batch=args.batch, seq=args.seq, lr=args.lr,
                              accum=args.accum, warmup=args.warmup, seed=args.seed,
                              checkpointing=args.checkpointing or None, bf16=args.bf16 or None)
    val, tokenizer = None, None
    if args.data:
        task, val, tokenizer = _text_task(args, model, prog, cfg)
    else:
        task_name = args.task or (section or {}).get("task") or "induction"
        try:
            task = make_task(task_name, vocab, passages=args.passages, pairs=args.pairs, seq=cfg.seq)
        except ValueError as e:
            raise _fail("ARC0907", str(e)) from None
    check_train_memory(prog.graph, cfg.batch, cfg.seq, vocab, args.max_memory)
    threads = torch.get_num_threads()
    print(f"training {prog.graph.name} ({model.num_parameters():,} parameters) on `{task.name}`"
          f"{' — ' + task.source if hasattr(task, 'source') else ''}: {cfg.steps} steps × {cfg.batch}×{cfg.seq} "
          f"tokens, lr {cfg.lr:g}, {threads} threads", file=sys.stderr)
    if distill is not None:
        print(f"distilling from {args.distill} ({distill.teacher.num_parameters():,} parameters): "
              f"{distill.alpha:g}·T²·KL at T = {distill.temperature:g} + {1 - distill.alpha:g}·hard loss", file=sys.stderr)
    try:
        res = train(model, task, cfg, out_dir=out, resume=args.resume, progress=not args.quiet,
                    spec_name=prog.graph.name, distill=distill, val=val, tokenizer=tokenizer)
    except CheckpointError as e:
        raise _fail("ARC1308", f"--resume: {e}", "start the run again without --resume (--force replaces it), "
                    "or resume from a run folder archc train wrote") from None
    except torch._dynamo.exc.TorchDynamoException as e:
        raise _compile_failed(e) from None
    first = sum(res.losses[:10]) / max(1, len(res.losses[:10]))
    last = sum(res.losses[-10:]) / max(1, len(res.losses[-10:]))
    print(f"loss {first:.3f} → {last:.3f} (mean of first/last 10 steps), accuracy on scored tokens "
          f"{res.accuracy:.3f}, {res.tokens_per_s:,.0f} tokens/s")
    if res.val_losses:
        v0, v1 = res.val_losses[0], res.val_losses[-1]
        print(f"held-out loss {v0[1]:.3f} (step {v0[0]}) → {v1[1]:.3f} (step {v1[0]}), "
              f"perplexity {math.exp(min(v1[1], 700)):,.2f}")
    print(f"wrote {out / 'last.safetensors'}, {out / 'train_state.safetensors'}, {out / 'loss.png'}")
    if res.interrupted:
        again = " ".join(shlex.quote(a) for a in getattr(args, "argv", ["train", args.file]) if a not in ("--resume", "--force"))
        print(f"interrupted after step {res.steps} of {cfg.steps}; saved. Continue with:\n"
              f"  archc {again} --resume", file=sys.stderr)
        return 130
    return EXIT_OK


def _train_distributed(args: argparse.Namespace, sources: dict[str, str]) -> int:
    """`archc train --nproc N --plan "tp=2,fsdp=2"`: this process launches N under torchrun, and
    each of those runs one rank (archc/backends/torch/distributed.py, docs/distributed.md)."""
    from archc.backends.torch import distributed as D
    from archc.backends.torch.train import RUN
    from archc.files.output import check_folder
    from archc.parallel import PlanError, parse_plan

    try:
        deg = D.degrees(parse_plan(args.plan or ""), args.nproc)
    except (PlanError, D.DistributedError) as e:
        raise _fail("ARC1602", f"--plan {args.plan!r}: {e.message}", e.hint, usage=True) from None
    from archc.backends.torch.distributed_checkpoint import STATE_DIR

    if args.distill:
        raise _fail("ARC1602", "--distill with --nproc: distillation runs in one process",
                    "drop --distill, or train in one process", usage=True)
    if args.compile or args.kernels == "triton" or args.device != "cpu":
        flag = "--compile" if args.compile else "--kernels triton" if args.kernels == "triton" else "--device"
        raise _fail("ARC1602", f"{flag} with --nproc: a distributed run places its ranks itself (NCCL on CUDA, "
                    "gloo on the CPU) and runs eager PyTorch with the torch forms of the ops",
                    f"drop {flag}, or train in one process", usage=True)
    worker = D.is_worker()
    if not worker:  # the launcher checks the run folder once; rank 0 alone writes it
        out = check_folder(args.out, RUN, force=True)
        if (out / "last.safetensors").exists() and not (args.resume or args.force):
            raise _fail("ARC0903", f"{out} already holds a training run; refusing to overwrite it",
                        "pass --resume to continue it (under any plan), --force to start over, or --out for a new "
                        "folder")
        if args.resume and not (out / STATE_DIR / ".metadata").exists():
            raise _fail("ARC0905", f"--resume: {out} has no distributed train state ({STATE_DIR}/) to resume from",
                        "a run trained in one process resumes without --nproc; its weights start a distributed "
                        "run with --init" if (out / "train_state.safetensors").exists() else
                        "start the run without --resume, or point --output at the run folder", usage=True)
    else:
        from pathlib import Path

        out = Path(args.out)
    if not worker:
        try:
            D.check_plan(load_spec(args.file, args, sources).graph, deg)
        except D.DistributedError as e:
            raise _fail("ARC1602", e.message, e.hint) from None
        how = (f"a pipeline of {deg.pp} stages{f' × {deg.virtual} virtual' if deg.virtual > 1 else ''}, {deg.schedule}"
               + (f", × {deg.dp} data-parallel replicas (FSDP)" if deg.dp > 1 else "")
               if deg.pp > 1 else f"tensor-parallel {deg.tp} × data-parallel {deg.dp}{' (FSDP)' if deg.fsdp else ''}"
               + (f", experts split {deg.ep} ways (all-to-all)" if deg.ep > 1 else "")
               + (f", sequences in {deg.cp} chunks (state passing)" if deg.cp > 1 else ""))
        print(f"launching {deg.world} processes under torchrun: {how}", file=sys.stderr)
        return D.launch(args.argv, deg.world)
    rt = D.start(deg)
    try:
        # the canonical build: tensor parallelism splits each projection by its rows or columns (a
        # packed q/k/v would need its parts split), and the checkpoint's gathered state dict is the
        # modules' own (a fused build's load/save hooks repack around FSDP's and DTensor's)
        model, prog = _build_model(args.file, args.seed, sources, args, pipeline="O0")
        from archc.backends.torch.checkpoint import CheckpointError
        from archc.backends.torch.tasks import make_task
        from archc.backends.torch.train import config_from_section

        if args.init and not args.resume:
            _load_weights(model, args.init, "--init")
        if model.head_loss != "lm":
            raise _fail("ARC0906", f"archc train trains language models; {prog.graph.name} ends in {model.head}",
                        "end the spec with lm_head(...) to train it here")
        section = prog.graph.sections.get("train")
        cfg = config_from_section(section, steps=args.steps, batch=args.batch, seq=args.seq, lr=args.lr,
                                  accum=args.accum, warmup=args.warmup, seed=args.seed,
                                  checkpointing=args.checkpointing or None, bf16=args.bf16 or None)
        tokenizer = None
        if args.data:
            task, _, tokenizer = _text_task(args, model, prog, cfg)
        else:
            try:
                task = make_task(args.task or (section or {}).get("task") or "induction", model.out_type_vocab(),
                                 passages=args.passages, pairs=args.pairs, seq=cfg.seq)
            except ValueError as e:
                raise _fail("ARC0907", str(e)) from None
        model.to(rt.device)
        try:
            whole = D.tensor_parallel(model, rt.mesh["tp"], sequence=True) if deg.tp > 1 else []
            experts = D.expert_parallel(model, rt.mesh["dp"]) if deg.ep > 1 else []
            if deg.cp > 1:
                from archc.backends.torch.context_parallel import context_parallel

                context_parallel(model, rt.mesh["cp"])
            if deg.dp > 1 and deg.pp == 1:  # a pipeline's stages are sharded as they are cut
                D.data_parallel(model, rt.mesh["dp"], deg.fsdp, ignored=experts)
            lead = rt.is_lead  # a pipeline's loss is on its last stage
            if lead:
                for w in whole:
                    print(f"note: whole on every tensor-parallel rank: {w}", file=sys.stderr)
                print(f"training {prog.graph.name} on `{task.name}`: {cfg.steps} steps × {cfg.batch}×{cfg.seq} "
                      f"tokens over {deg.world} ranks", file=sys.stderr)
            res = D.train_parallel(model, task, cfg, rt, out, prog.graph.name, progress=lead and not args.quiet,
                                   tokenizer=tokenizer, resume=args.resume)
        except D.DistributedError as e:
            raise _fail("ARC1602", e.message, e.hint) from None
        except CheckpointError as e:
            raise _fail("ARC1308", f"--resume: {e}", "start the run again without --resume (--force replaces it), "
                        "or resume from a run folder archc train wrote") from None
        if lead:
            first = sum(res.losses[:10]) / max(1, len(res.losses[:10]))
            last = sum(res.losses[-10:]) / max(1, len(res.losses[-10:]))
            print(f"loss {first:.3f} → {last:.3f} (mean of first/last 10 steps), {res.tokens_per_s:,.0f} tokens/s")
            print(f"wrote {out / 'last.safetensors'} (consolidated), {out / STATE_DIR}/ (distributed train state), "
                  f"{out / 'loss.png'}")
        return EXIT_OK
    finally:
        rt.close()


def _text_task(args: argparse.Namespace, model, prog, cfg):
    """`--data` as a training task, the held-out loss, and the tokenizer for the run folder
    (refusals: --task with --data, a vocabulary the tokenizer does not fit, too little text)."""
    from archc.backends.torch.text import TextTask, evaluate
    from archc.cli.data import check_vocab, load_text, tokenizer_for

    if args.task:
        raise _fail("ARC1307", "--task and --data both name the training data", "give one of them", usage=True)
    if not model.causal:
        raise _fail("ARC0906", f"{prog.graph.name} is bidirectional; --data trains causal language models",
                    "train bidirectional models on a built-in task or in your own loop")
    tokenizer = tokenizer_for(args.tokenizer, None)
    check_vocab(tokenizer, prog.graph, model.out_type_vocab())
    corpus = load_text(args, tokenizer, quiet=args.quiet)
    train_tokens, held_out = corpus.split(args.val_fraction)
    if len(train_tokens) < cfg.seq or len(held_out) < 2:
        raise _fail("ARC1505", f"--data: {corpus.n_tokens:,} tokens leave {len(train_tokens):,} for training and "
                    f"{len(held_out):,} held out; training needs at least one sequence of {cfg.seq}",
                    "add text, shorten --seq, or change --val-fraction")
    cfg.val_every = args.val_every or max(1, cfg.steps // 10)
    task = TextTask(f"text ({tokenizer.name})", tokenizer.vocab_size, train_tokens,
                    f"{args.data}: {len(train_tokens):,} training tokens, {len(held_out):,} held out")

    def val(m) -> float:
        return evaluate(m, held_out, tokenizer.eos_id, cfg.seq, cfg.batch, max_tokens=args.val_tokens).loss

    return task, val, tokenizer


def _teacher(args: argparse.Namespace, student, prog, sources: dict[str, str]):
    """The `Distill` of --distill/--teacher, or None; mismatched vocabularies or objectives are
    diagnostics."""
    from archc.backends.torch.train import Distill

    if args.distill is None:
        if args.teacher:
            raise _fail("ARC0910", "--teacher without --distill", "give the teacher's spec with --distill", usage=True)
        return None
    if not 0 <= args.alpha <= 1 or args.temperature <= 0:
        raise _fail("ARC0910", "--alpha must be in [0, 1] and --temperature positive", usage=True)
    teacher, tprog = _build_model(args.distill, args.seed, sources, args)
    if args.teacher:
        _load_weights(teacher, args.teacher, "--teacher")
    else:
        print(f"warning: --distill without --teacher: the teacher {tprog.graph.name} is a random init",
              file=sys.stderr)
    tv, sv = teacher.out_type_vocab(), student.out_type_vocab()
    if tv != sv:
        raise _fail("ARC0910", f"the teacher {tprog.graph.name} predicts {tv:,} tokens, the student "
                    f"{prog.graph.name} {sv:,}: soft targets need one vocabulary",
                    "distill between specs with the same vocab (lm_head over the same tokens)")
    if teacher.head_loss != "lm" or teacher.causal != student.causal:
        raise _fail("ARC0910", f"the teacher {tprog.graph.name} is not a language model of the student's kind "
                    f"({'causal' if student.causal else 'bidirectional'})",
                    "distill a causal student from a causal teacher")
    return Distill(teacher, args.temperature, args.alpha)


def cmd_train(args: argparse.Namespace) -> int:
    return _run(_cmd_train, args)


# -- generate -------------------------------------------------------------------------------


def _cmd_generate(args: argparse.Namespace, sources: dict[str, str]) -> int:
    model, prog = _build_model(args.file, args.seed, sources, args)
    import torch

    from archc.backends.torch.compiled import CompileError

    if args.weights:
        _load_weights(model, args.weights, "--weights")
    seq2seq = len(model.input_names) == 2
    if seq2seq:  # an encoder–decoder: the prompt is the source, the output the decoded target
        from archc.backends.torch.seq2seq import EncoderDecoder

        try:
            EncoderDecoder(model)
        except ValueError as e:
            raise _fail("ARC0906", str(e), "generate decodes encoder–decoders whose decoder is causal") from None
        if args.draft:
            raise _fail("ARC0908", "--draft decodes single-input language models", "leave out --draft", usage=True)
        if args.compile:
            raise _fail("ARC1702", "--compile decodes single-input language models; an encoder–decoder runs the "
                        "eager step", "leave out --compile", usage=True)
    if model.head_loss != "lm" or not (model.causal or seq2seq):
        raise _fail("ARC0906", f"{prog.graph.name} is not a causal language model; generate needs one",
                    "generate decodes specs that end in lm_head and whose mixers are all causal")
    vocab = model.out_type_vocab()
    tokenizer = text_tokenizer(args, prog.graph, vocab, args.weights)
    ids, byte_level = prompt_ids(args, vocab, tokenizer)
    if args.top_k is not None and args.top_k > vocab:
        raise _fail("ARC1307", f"--top-k {args.top_k}: the model has {vocab:,} tokens; top-k must be between 1 and "
                    f"{vocab:,}", usage=True)
    check_decode_memory(prog.graph, args.num_beams, len(ids) + args.max_new_tokens, vocab, args.max_memory)
    draft = None
    if args.draft:
        draft, dprog = _build_model(args.draft, args.seed, sources, args)
        if draft.out_type_vocab() != vocab:
            raise _fail("ARC0908", f"the draft {dprog.graph.name} predicts {draft.out_type_vocab():,} tokens, "
                        f"{prog.graph.name} {vocab:,}: speculative decoding needs one vocabulary",
                        "draft with a spec over the same tokens")
        if args.draft_weights:
            _load_weights(draft, args.draft_weights, "--draft-weights")
    elif args.draft_weights:
        raise _fail("ARC0908", "--draft-weights without --draft", "give the draft's spec with --draft", usage=True)
    if args.compile and (args.num_beams > 1 or draft is not None):
        raise _fail("ARC1702", "--compile decodes greedily or by sampling; --num-beams and --draft run the eager step",
                    "leave out --compile, or --num-beams / --draft", usage=True)
    x = torch.tensor([ids], device=next(model.parameters()).device)
    try:
        out = model.generate(x, max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                             top_p=args.top_p, num_beams=args.num_beams, draft=draft, seed=args.seed,
                             compile=args.compile)
    except (CompileError, torch._dynamo.exc.TorchDynamoException) as e:
        raise _compile_failed(e.__cause__ if isinstance(e, CompileError) and e.__cause__ else e) from None
    if seq2seq:  # the target after its start token
        new = out[0, 1:].tolist()
        if tokenizer is not None:
            sys.stdout.write(tokenizer.decode(new) + "\n")
        elif byte_level:
            sys.stdout.write(b"".join(bytes([t]) if t < 256 else "\ufffd".encode() for t in new)
                             .decode("utf-8", errors="replace") + "\n")
        else:
            print(" ".join(str(t) for t in new))
        return EXIT_OK
    new = out[0, len(ids):].tolist()
    if tokenizer is not None:
        sys.stdout.write(tokenizer.decode(ids + new) + "\n")
    elif byte_level:
        # ids ≥ 256 are not bytes (the vocabulary is wider than the byte range): shown as U+FFFD
        data = b"".join(bytes([t]) if t < 256 else "\ufffd".encode() for t in new)
        sys.stdout.write((prompt_bytes(args.prompt) + data).decode("utf-8", errors="replace") + "\n")
    else:
        print(" ".join(str(t) for t in ids + new))
    return EXIT_OK


# -- eval -----------------------------------------------------------------------------------


def _cmd_eval(args: argparse.Namespace, sources: dict[str, str]) -> int:
    from archc.backends.torch.text import evaluate
    from archc.cli.data import check_vocab, load_text, tokenizer_for

    if bool(args.task) == bool(args.data):
        raise _fail("ARC1307", "--task and --data both name what to score" if args.task else
                    "archc eval needs --data (your text) or --task (a built-in synthetic task)", "give one of them",
                    usage=True)
    model, prog = _build_model(args.file, args.seed, sources, args)
    if args.weights:
        _load_weights(model, args.weights, "--weights")
    else:
        print(f"warning: no --weights: evaluating a random init of {prog.graph.name}", file=sys.stderr)
    if model.head_loss != "lm" or not model.causal:
        raise _fail("ARC0906", f"{prog.graph.name} is not a causal language model; archc eval scores next tokens",
                    "evaluate specs that end in lm_head and whose mixers are all causal")
    if args.task:
        return _eval_task(args, model, prog)
    vocab = model.out_type_vocab()
    tokenizer = tokenizer_for(args.tokenizer, args.weights)
    check_vocab(tokenizer, prog.graph, vocab)
    corpus = load_text(args, tokenizer, quiet=args.quiet)
    seq = args.seq or (prog.graph.sections.get("train") or {}).get("seq") or 512
    n = min(corpus.n_tokens, args.max_tokens or corpus.n_tokens)
    check_memory(args.batch * seq * (vocab * 4 * 2 + 8), args.max_memory, f"scoring {args.batch} × {seq} tokens")
    res = evaluate(model, corpus.tokens, tokenizer.eos_id, seq, args.batch, max_tokens=n, text_bytes=corpus.bytes_of(n))
    bpb = res.bits_per_byte
    print(f"{args.data}: {res.tokens:,} tokens ({'all' if n == corpus.n_tokens else f'the first {n:,}'} of "
          f"{corpus.n_tokens:,}; {res.bytes:,.0f} bytes of text), windows of {seq}")
    print(f"loss {res.loss:.4f} nats/token, perplexity {res.perplexity:,.3f}"
          + (f", {bpb:.4f} bits/byte" if bpb is not None else ""))
    if args.json:
        import json

        print(json.dumps({"tokens": res.tokens, "bytes": res.bytes, "loss": res.loss, "perplexity": res.perplexity,
                          "bits_per_byte": bpb, "seq": seq, "tokenizer": tokenizer.name}))
    return EXIT_OK


#: offset of the seed of `archc eval --task`'s draws from training's (`--seed`): held-out sequences
EVAL_SEED_OFFSET = 1_000_003


def _eval_task(args: argparse.Namespace, model, prog) -> int:
    """Accuracy and loss on a built-in synthetic task's scored tokens: `--batches` × `--batch`
    fresh sequences of `--seq` tokens (longer than training's to test length extrapolation),
    drawn with a seed training never uses."""
    import torch

    from archc.backends.torch.tasks import make_task
    from archc.backends.torch.train import accuracy

    seq = args.seq or (prog.graph.sections.get("train") or {}).get("seq") or 128
    try:
        task = make_task(args.task, model.out_type_vocab(), passages=args.passages, pairs=args.pairs, seq=seq)
    except ValueError as e:
        raise _fail("ARC1307", str(e), usage=True) from None
    check_memory(args.batch * seq * (model.out_type_vocab() * 4 * 2 + 8), args.max_memory,
                 f"scoring {args.batch} × {seq} tokens")
    gen = torch.Generator().manual_seed(args.seed + EVAL_SEED_OFFSET)
    device = next(model.parameters()).device
    correct = scored = 0
    loss_sum = 0.0
    model.eval()
    with torch.no_grad():
        for _ in range(args.batches):
            ids, labels = (t.to(device) for t in task.batch(args.batch, seq, gen))
            out = model(ids, labels=labels)
            n = int((labels[:, 1:] != -100).sum())
            correct += round(accuracy(out.logits, labels, causal=True) * n)
            scored += n
            loss_sum += float(out.loss) * n
    acc, loss = correct / max(scored, 1), loss_sum / max(scored, 1)
    print(f"{task.name}: {scored:,} scored tokens in {args.batches * args.batch} sequences of {seq}")
    print(f"accuracy {acc:.4f}, loss {loss:.4f} nats/token")
    if args.json:
        import json

        print(json.dumps({"task": task.name, "seq": seq, "sequences": args.batches * args.batch, "scored": scored,
                          "accuracy": acc, "loss": loss}))
    return EXIT_OK


def cmd_eval(args: argparse.Namespace) -> int:
    return _run(_cmd_eval, args)


def check_decode_memory(graph, batch: int, total: int, vocab: int, limit: int | None) -> None:
    """Refuse, before allocating, a decode whose state (the cost model's declared state at `total`
    tokens, in fp32) and prefill logits exceed `--max-memory` (ARC1306)."""
    from archc.ir.cost import CostCtx
    from archc.passes.estimate_cost import estimate_cost

    state = estimate_cost(graph, CostCtx(seq=total, batch=batch, dtype="fp32")).total.state_bytes * batch
    check_memory(state + batch * total * vocab * 4, limit,
                 f"decoding {total:,} tokens ({batch} × the state and the logits)")


def check_memory(needed: int, limit: int | None, what: str) -> None:
    """Refuse, before allocating, a plan whose buffers exceed `--max-memory` (ARC1306)."""
    from archc.cli.flags import default_max_memory

    limit = limit or default_max_memory()
    if needed > limit:
        raise _fail("ARC1306", f"{what} needs about {needed / 1e9:,.2f} GB, more than --max-memory "
                    f"{limit / 1e9:,.2f} GB", "ask for less (fewer or shorter sequences, a smaller batch), or raise "
                    "--max-memory if the machine has the memory")


def data_bytes(count: int, seq: int, vocab: int) -> int:
    """Token ids of `count` sequences of `seq` tokens, and the fp32 logits of one of them."""
    return count * seq * 8 + seq * vocab * 4


def check_train_memory(graph, batch: int, seq: int, vocab: int, limit: int | None) -> None:
    """A training step's activations (the cost model's bytes per token, fp32) and logits (with
    their gradient and softmax), and the weights with their gradients and AdamW's two moments."""
    from archc.ir.cost import CostCtx
    from archc.passes.estimate_cost import estimate_cost

    cost = estimate_cost(graph, CostCtx(seq=seq, batch=batch, dtype="fp32")).total
    needed = batch * seq * (cost.act_bytes + 3 * vocab * 4) + 16 * cost.params
    check_memory(needed, limit, f"a training step of {batch} × {seq} tokens")


def add_sampling_flags(sp: argparse.ArgumentParser) -> None:
    """The prompt and sampling flags `archc generate` and `archc run` share."""
    sp.add_argument("--prompt", default="", help="text prompt, through the tokenizer (without one: UTF-8 bytes)")
    sp.add_argument("--prompt-ids", help="token ids instead of text, e.g. '3 4 5'")
    sp.add_argument("--max-new-tokens", type=count(0), default=64, help="tokens to generate (64)")
    sp.add_argument("--temperature", type=temperature, default=0.0, help="0: greedy (default); finite, ≥ 0")
    sp.add_argument("--top-k", type=count(1), help="sample from the k most likely tokens (1 … vocab)")
    sp.add_argument("--top-p", type=probability,
                    help="sample from the smallest set of tokens with probability ≥ p, in (0, 1]")


def prompt_bytes(prompt: str) -> bytes:
    """The bytes the user typed, also when they are not UTF-8: Python decodes argv with
    surrogateescape, and encoding back the same way restores them."""
    try:
        return prompt.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as e:
        raise _fail("ARC0908", f"--prompt holds {e.object[e.start]!r} at character {e.start}, which is not text",
                    "pass the prompt as UTF-8, or token ids with --prompt-ids", usage=True) from None


def text_tokenizer(args: argparse.Namespace, graph, vocab: int, weights: str | None):
    """The tokenizer `generate` speaks text through: `--tokenizer`, else the tokenizer.json beside
    the weights; None for the byte vocabulary (a `--prompt` as UTF-8 bytes, as before tokenizers)."""
    from archc.cli.data import check_vocab, find_tokenizer
    from archc.data.tokenizer import HFTokenizer

    tokenizer = find_tokenizer(args.tokenizer, weights)
    if not isinstance(tokenizer, HFTokenizer):
        return None
    check_vocab(tokenizer, graph, vocab)
    return tokenizer


def prompt_ids(args: argparse.Namespace, vocab: int, tokenizer=None) -> tuple[list[int], bool]:
    """The prompt's token ids (`--prompt` through `tokenizer`, else as UTF-8 bytes; or
    `--prompt-ids`) and whether it is byte-level text; shared by `archc generate` and `archc run`."""
    if tokenizer is not None and args.prompt_ids is None:
        return tokenizer.encode(args.prompt) or [tokenizer.eos_id], False
    byte_level = args.prompt_ids is None
    if byte_level:
        if vocab < 256:
            raise _fail("ARC0908", f"text prompts are UTF-8 bytes, which needs a vocabulary ≥ 256 (this has {vocab})",
                        "pass token ids with --prompt-ids '3 4 5'")
        ids = list(prompt_bytes(args.prompt)) or [10]
    else:
        try:
            ids = [int(t) for t in args.prompt_ids.replace(",", " ").split()]
        except ValueError:
            raise _fail("ARC0908", "--prompt-ids takes integers separated by spaces or commas", usage=True) from None
        if not ids or max(ids) >= vocab or min(ids) < 0:
            raise _fail("ARC0908", f"--prompt-ids must be non-empty token ids in [0, {vocab})", usage=True)
    return ids, byte_level


def _load_weights(model, path: str, flag: str) -> None:
    from safetensors import SafetensorError

    from archc.backends.torch.checkpoint import load_weights

    try:
        load_weights(model, path)
    except (OSError, ValueError, SafetensorError) as e:  # missing, mismatched, or not a safetensors file
        raise _fail("ARC0902", f"{flag}: cannot load {path}: {e}",
                    "weights must come from `archc build -o` or `archc train` of the same spec") from None


def cmd_generate(args: argparse.Namespace) -> int:
    return _run(_cmd_generate, args)


def add_pipeline_flag(sp: argparse.ArgumentParser, default: str) -> None:
    """`--pipeline O0|O1|O2`: the optimization level the command builds (docs/passes.md)."""
    from archc.passes.manager import LEVELS

    sp.add_argument("--pipeline", choices=LEVELS, default=default,
                    help=f"optimization level: O0 the graph as written, O1 the fusions that pay in eager "
                         f"PyTorch, O2 those and the export fusions ({default}; docs/passes.md)")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("build", help="compile a spec to a PyTorch module; optionally save its initial weights")
    b.add_argument("file", metavar="FILE", help="spec file (.arch)")
    b.add_argument("--seed", "--init-seed", dest="seed", type=seed, default=0,
                   help="seed of the weight initialization (0)")
    b.add_argument("-o", "--output", type=output, help="write the weights to this .safetensors file")
    b.add_argument("--force", action="store_true", help="replace an existing output file")
    add_pipeline_flag(b, BUILD_LEVEL)
    add_limit_flags(b)
    b.set_defaults(fn=cmd_build)

    t = sub.add_parser("train", help="train a spec on a built-in synthetic task (no downloads)")
    t.add_argument("file", metavar="FILE", help="spec file (.arch)")
    t.add_argument("--task", choices=("copy", "selective_copy", "mqar", "induction", "induction_heads", "facts", "chars"),
                   help="a built-in synthetic task (default: the spec's train section, else induction)")
    dg = t.add_argument_group("your own text, instead of a task (docs/hf.md)")
    add_data_flags(dg, required=False)
    add_split_flags(dg)
    t.add_argument("--passages", type=count(0), help="--task facts: the facts a BM25 retriever puts before each "
                   "question (default 2; 0: closed book, the same model without retrieval)")
    t.add_argument("--pairs", type=count(1), help="--task mqar: key-value pairs per sequence (default: a quarter of "
                   "its tokens; fewer leave blanks between the queries, as Zoology's)")
    t.add_argument("--steps", type=count(1), help="optimizer steps (default: the train section's, else 300)")
    t.add_argument("--batch", type=count(1), help="sequences per step (default: the train section's, else 16)")
    t.add_argument("--seq", type=count(2), help="tokens per sequence (default: the train section's, else 128)")
    t.add_argument("--lr", type=positive, help="peak learning rate of AdamW (default: the train section's)")
    t.add_argument("--warmup", type=count(0), help="linear warmup steps before the cosine decay")
    t.add_argument("--accum", type=count(1), help="gradient accumulation steps")
    t.add_argument("--checkpointing", action="store_true", help="activation checkpointing per layer")
    t.add_argument("--bf16", action="store_true", help="bf16 autocast")
    t.add_argument("--seed", type=seed, default=0, help="seed of the init and the data (0)")
    t.add_argument("-o", "--output", "--out", dest="out", default="run", type=output,
                   help="run folder for checkpoints and loss.png (run)")
    t.add_argument("--nproc", type=processes, default=1,
                   help="processes to train in on this machine, 1 to 4 × its cores, under torchrun (gloo on CPU, "
                        "NCCL on CUDA; docs/distributed.md)")
    t.add_argument("--plan", default=None, type=plan_degrees, metavar="DEGREES",
                   help='how the processes split the work, e.g. "tp=2", "fsdp=2", "tp=2,fsdp=2" (default: data '
                        "parallelism over all of them; `archc plan` chooses one)")
    t.add_argument("--resume", action="store_true", help="continue the run in --output")
    t.add_argument("--force", action="store_true", help="overwrite a previous run in --output")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    t.add_argument("--init", metavar="WEIGHTS", help="start from these weights (e.g. `archc prune`'s) instead of the init")
    t.add_argument("--distill", metavar="TEACHER.arch", help="distill from this teacher spec (its --teacher weights)")
    t.add_argument("--teacher", metavar="WEIGHTS", help="the teacher's .safetensors (with --distill)")
    t.add_argument("--temperature", type=positive, default=2.0, help="distillation temperature T (2)")
    add_memory_flag(t)
    t.add_argument("--alpha", type=unit_interval, default=0.5,
                   help="weight of the soft (teacher) loss; 1 − alpha weighs the hard loss (0.5)")
    add_pipeline_flag(t, BUILD_LEVEL)
    add_runtime_flags(t, "the forward and backward")
    add_limit_flags(t)
    t.set_defaults(fn=cmd_train)

    e = sub.add_parser("eval", help="loss, perplexity and bits per byte of a causal language model on your text, "
                                    "or its accuracy on a built-in synthetic task")
    e.add_argument("file", metavar="FILE", help="spec file (.arch)")
    e.add_argument("--weights", help=".safetensors from `archc train` (default: random init)")
    add_data_flags(e, required=False)
    e.add_argument("--task", choices=("copy", "selective_copy", "mqar", "induction", "induction_heads", "facts", "chars"),
                   help="score a built-in synthetic task instead: accuracy on its scored tokens, over sequences "
                        "drawn with a seed training never uses")
    e.add_argument("--batches", type=count(1), default=8, help="--task: batches of --batch sequences (8)")
    e.add_argument("--passages", type=count(0), help="--task facts: the facts a BM25 retriever puts before each "
                   "question (default 2; 0: closed book)")
    e.add_argument("--pairs", type=count(1), help="--task mqar: key-value pairs per sequence (default: a quarter of "
                   "its tokens)")
    e.add_argument("--seq", type=count(2), help="tokens per window (default: the train section's, else 512; "
                                               "--task: else 128)")
    e.add_argument("--batch", type=count(1), default=8, help="windows per forward pass (8)")
    e.add_argument("--max-tokens", type=count(1), help="score only the first N tokens")
    e.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    e.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    e.add_argument("--seed", type=seed, default=0, help="seed of the init without --weights (0)")
    add_pipeline_flag(e, BUILD_LEVEL)
    add_memory_flag(e)
    add_limit_flags(e)
    e.set_defaults(fn=cmd_eval)

    g = sub.add_parser("generate", help="sample from a (trained) causal language model")
    g.add_argument("file", metavar="FILE", help="spec file (.arch)")
    g.add_argument("--weights", help=".safetensors from `archc train` / `archc build -o` (default: random init)")
    add_sampling_flags(g)
    add_tokenizer_flag(g)
    g.add_argument("--num-beams", type=count(1, 64), default=1, help="beam search with this many beams (1: none)")
    g.add_argument("--draft", help="a draft spec for speculative decoding")
    g.add_argument("--draft-weights", help=".safetensors of the draft spec (default: random init)")
    g.add_argument("--seed", type=seed, default=0, help="seed of the init (without --weights) and the sampling (0)")
    add_pipeline_flag(g, BUILD_LEVEL)
    add_runtime_flags(g, "the one-token decode step (static shapes, the state updated in place)")
    add_memory_flag(g)
    add_limit_flags(g)
    g.set_defaults(fn=cmd_generate)
