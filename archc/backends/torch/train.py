"""The training loop behind `archc train`: AdamW, linear warmup + cosine decay, gradient clipping,
gradient accumulation, activation checkpointing, bf16 autocast, safetensors checkpoints with
resume, a rich progress bar (loss, accuracy, tokens/s) and a loss-curve PNG.

Checkpoints are transactions (`archc.files.output`): the weights, the optimizer state and the config
of one step are committed together, so a kill at any moment leaves the run resumable from its last
complete save. Ctrl-C (or SIGTERM) stops at the end of the current step and saves; a second one
stops at once, leaving the last save as it was.

Models built by archc are plain `nn.Module`s, so any PyTorch loop trains them too; this loop is the
one a user gets without writing code.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from archc.backends.torch.checkpoint import (
    CheckpointError,
    load_train_state,
    load_weights,
    save_train_state,
    save_weights,
)
from archc.backends.torch.model import IGNORE_INDEX, ArchModel
from archc.backends.torch.tasks import Task
from archc.data.tokenizer import COMPANIONS, TOKENIZER_FILE, Tokenizer, write_tokenizer_files
from archc.files.output import Owned, output_folder, write_text

#: one checkpoint: the files a save replaces together
CHECKPOINT = Owned(("last.safetensors", "train_state.safetensors", "train_config.json"),
                   marker="last.safetensors", what="training run")
#: the end of a run: the checkpoint, the loss curve, and the tokenizer of `--data` runs (so that
#: `generate` and `export` find it beside the weights)
RUN = Owned((*CHECKPOINT.files, "loss.png", TOKENIZER_FILE, *COMPANIONS), marker="last.safetensors",
            what="training run")


@dataclass
class TrainConfig:
    steps: int = 300
    optimizer: str = "adamw"  # adamw | sgd
    schedule: str = "cosine"  # cosine | linear | constant (all after a linear warmup)
    momentum: float = 0.9  # sgd only
    batch: int = 16
    seq: int = 128
    lr: float = 3e-4
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    warmup: int = 30
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    accum: int = 1
    checkpointing: bool = False
    bf16: bool = False
    seed: int = 0
    log_every: int = 10
    save_every: int = 0  # 0: only at the end
    #: held-out loss every this many steps and at the end (0: never; needs `train(val=...)`)
    val_every: int = 0


@dataclass
class Distill:
    """Knowledge distillation (Hinton et al., 2015): the loss is
    alpha·T²·KL(teacher_T ‖ student_T) + (1 − alpha)·(the student's own loss), with both
    distributions softened by the temperature T (T² keeps the soft term's gradients at the scale of
    the hard one's), over the positions the hard loss scores."""

    teacher: ArchModel
    temperature: float = 2.0
    alpha: float = 0.5


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, causal: bool,
                      temperature: float) -> torch.Tensor:
    """T²·KL(softmax(teacher/T) ‖ softmax(student/T)), averaged over scored positions (the
    positions whose next token a causal model predicts, as its hard loss)."""
    if causal:
        student, teacher, labels = student[:, :-1], teacher[:, :-1], labels[:, 1:]
    scored = labels != IGNORE_INDEX
    s = torch.log_softmax(student[scored].float() / temperature, -1)
    t = torch.log_softmax(teacher[scored].float() / temperature, -1)
    return torch.nn.functional.kl_div(s, t, log_target=True, reduction="batchmean") * temperature ** 2


@dataclass
class TrainResult:
    steps: int
    losses: list[float] = field(default_factory=list)
    accuracy: float = 0.0
    tokens_per_s: float = 0.0
    out_dir: Path | None = None
    #: stopped by Ctrl-C / SIGTERM after `steps` steps (saved, resumable), not at the configured end
    interrupted: bool = False
    #: (step, held-out loss) of each validation
    val_losses: list[tuple[int, float]] = field(default_factory=list)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Multiplier of the peak lr: linear warmup over `warmup` steps, then cosine (as nanoGPT /
    Chinchilla) or linear decay to `min_lr_ratio` at `steps`, or constant."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    if cfg.schedule == "constant":
        return 1.0
    shape = 1 - progress if cfg.schedule == "linear" else 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * shape


def config_from_section(section: dict | None, **overrides) -> TrainConfig:
    """A `TrainConfig` from a spec's validated `train { }` section, then explicit overrides (the
    command-line flags that were given)."""
    cfg: dict = {}
    if section:
        opt, sched = section["optimizer"], section["schedule"]
        cfg.update(steps=section["steps"], batch=section["batch"], seq=section["seq"],
                   accum=section["accumulate"], grad_clip=section["grad_clip"] or 0.0,
                   bf16=section["precision"] == "bf16", checkpointing=section["checkpointing"],
                   optimizer=opt["fn"], schedule=sched["fn"])
        kw = opt["kwargs"]
        for k in ("lr", "weight_decay", "momentum"):
            if k in kw:
                cfg[k] = float(kw[k])
        if "betas" in kw:
            cfg["betas"] = tuple(kw["betas"])
        if "warmup" in sched["kwargs"]:
            cfg["warmup"] = int(sched["kwargs"]["warmup"])
        if "min_lr" in sched["kwargs"] and "lr" in cfg:
            cfg["min_lr_ratio"] = float(sched["kwargs"]["min_lr"]) / cfg["lr"]
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    cfg.setdefault("warmup", min(TrainConfig.warmup, max(1, cfg.get("steps", TrainConfig.steps) // 10)))
    return TrainConfig(**cfg)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, zero: object = None) -> torch.optim.Optimizer:
    """AdamW (or SGD with momentum) with weight decay on matrices only (not on norms, biases, or
    1-D scales). With `zero` (a data-parallel process group), PyTorch's ZeroRedundancyOptimizer
    around it: each rank keeps and updates the state of its share of the parameters (ZeRO-1)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    cls, kwargs = ((torch.optim.SGD, {"lr": cfg.lr, "momentum": cfg.momentum}) if cfg.optimizer == "sgd"
                   else (torch.optim.AdamW, {"lr": cfg.lr, "betas": cfg.betas}))
    if zero is not None:
        from torch.distributed.optim import ZeroRedundancyOptimizer

        return ZeroRedundancyOptimizer(groups, optimizer_class=cls, process_group=zero, **kwargs)
    return cls(groups, **kwargs)


def accuracy(logits: torch.Tensor, labels: torch.Tensor, causal: bool) -> float:
    if causal:
        logits, labels = logits[:, :-1], labels[:, 1:]
    scored = labels != IGNORE_INDEX
    if not bool(scored.any()):
        return 0.0
    return float((logits.argmax(-1)[scored] == labels[scored]).float().mean())


def train(model: ArchModel, task: Task, cfg: TrainConfig, out_dir: str | Path | None = None,
          resume: bool = False, progress: bool = True, spec_name: str = "", distill: Distill | None = None,
          val: Callable[[ArchModel], float] | None = None, tokenizer: Tokenizer | None = None) -> TrainResult:
    """Train `model` on `task`; with `distill`, on the teacher's soft targets mixed with the hard
    loss (the teacher is frozen and in eval mode). `val(model)` is the held-out loss, taken every
    `cfg.val_every` steps and at the end (shown on the progress bar, drawn in `loss.png`).
    `tokenizer` (of `--data`) is copied into the run folder at the end."""
    out = Path(out_dir) if out_dir is not None else None
    if distill is not None:
        distill.teacher.eval().requires_grad_(False)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    model.gradient_checkpointing = cfg.checkpointing
    opt = make_optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s, cfg))
    start = 0
    losses: list[float] = []
    val_losses: list[tuple[int, float]] = []
    if resume and out is not None:
        try:
            meta = load_weights(model, out / "last.safetensors")
        except Exception as e:  # safetensors' errors, a truncated file, another spec's weights
            raise CheckpointError(f"{out / 'last.safetensors'} cannot be resumed from: {e}") from None
        start = load_train_state(out / "train_state.safetensors", model, opt, gen, weights_step=meta.get("step"))
        losses = list(meta.get("losses", []))
        val_losses = [(int(s), float(v)) for s, v in meta.get("val_losses", [])]
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s, cfg), last_epoch=start - 1)
    device = next(model.parameters()).device
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16)
    acc = 0.0
    tokens = 0
    done = start
    t0 = time.perf_counter()
    bar = _progress(progress)
    with bar, _StopAtStepEnd(out is not None) as stop:
        last_val = val_losses[-1][1] if val_losses else float("nan")
        task_id = bar.add_task("train", total=cfg.steps, completed=start, loss=float("nan"), acc=0.0, tps=0.0,
                               val=last_val)
        for step in range(start, cfg.steps):
            opt.zero_grad(set_to_none=True)
            total = 0.0
            for _ in range(cfg.accum):
                ids, labels = task.batch(cfg.batch, cfg.seq, gen)
                ids, labels = ids.to(device), labels.to(device)
                with autocast:  # distillation needs the logits the fused loss would not form
                    outp = model(ids, labels=labels, skip_logits=False if distill is not None else None)
                    loss = outp.loss
                    if distill is not None:
                        with torch.no_grad():
                            target = distill.teacher(ids).logits
                        soft = distillation_loss(outp.logits, target, labels, model.causal, distill.temperature)
                        loss = distill.alpha * soft + (1 - distill.alpha) * outp.loss
                (loss / cfg.accum).backward()
                total += float(loss.detach()) / cfg.accum
                tokens += ids.numel()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            losses.append(total)
            done = step + 1
            if step % cfg.log_every == 0 or step == cfg.steps - 1:
                acc = accuracy(outp.logits.detach(), labels, model.causal) if outp.logits is not None else float("nan")
            if val is not None and cfg.val_every and (done % cfg.val_every == 0 or done == cfg.steps):
                val_losses.append((done, float(val(model))))
                model.train()
                bar.update(task_id, val=val_losses[-1][1])
            tps = tokens / max(time.perf_counter() - t0, 1e-9)
            bar.update(task_id, advance=1, loss=total, acc=acc, tps=tps)
            if stop.requested:
                break
            if out is not None and cfg.save_every and done % cfg.save_every == 0 and done < cfg.steps:
                _save(model, opt, done, gen, cfg, out, losses, spec_name, val_losses)
        result = TrainResult(done, losses, acc, tokens / max(time.perf_counter() - t0, 1e-9), out,
                             interrupted=done < cfg.steps, val_losses=val_losses)
        if out is not None:  # inside: a Ctrl-C now waits for the save to be complete
            _save(model, opt, done, gen, cfg, out, losses, spec_name, val_losses,
                  plot_title=f"{spec_name} — {task.name}", tokenizer=tokenizer)
    model.eval()
    return result


class _StopAtStepEnd:
    """While training into a run folder: the first Ctrl-C or SIGTERM asks the loop to stop at the
    end of the current step (it then saves); a second one raises KeyboardInterrupt at once (the
    last save stays as it was). Only in the main thread, where Python delivers signals."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested = False
        self._saved: dict[int, object] = {}

    def _handle(self, signum: int, _frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(f"\n{signal.Signals(signum).name}: stopping at the end of this step and saving "
              "(Ctrl-C again to stop now, keeping the last save)", file=sys.stderr)

    def __enter__(self) -> _StopAtStepEnd:
        if self.enabled:
            for s in (signal.SIGINT, signal.SIGTERM):
                self._saved[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, h in self._saved.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


def _save(model: ArchModel, opt: torch.optim.Optimizer, step: int, gen: torch.Generator, cfg: TrainConfig,
          out: Path, losses: list[float], spec_name: str, val_losses: list[tuple[int, float]],
          plot_title: str | None = None, tokenizer: Tokenizer | None = None) -> None:
    """One checkpoint — weights, optimizer state and config of `step` — committed together; with
    `plot_title` (the end of the run), the loss curve and the tokenizer too."""
    meta = {"spec": spec_name, "step": step, "losses": losses, "val_losses": val_losses, "config": asdict(cfg)}
    from archc.backends.torch.distributed_checkpoint import with_state_files

    # a distributed run's train state in the folder is replaced by this one, not left beside it
    owned = with_state_files(RUN if plot_title is not None else CHECKPOINT, out)
    with output_folder(out, owned, force=True) as txn:
        save_weights(model, txn.stage / "last.safetensors", meta)
        save_train_state(txn.stage / "train_state.safetensors", model, opt, step, gen, {"config": asdict(cfg)})
        write_text(txn.stage / "train_config.json", json.dumps(asdict(cfg), indent=2) + "\n")
        if plot_title is not None:
            plot_losses(losses, txn.stage / "loss.png", title=plot_title, val=val_losses)
            if tokenizer is not None:
                write_tokenizer_files(tokenizer, txn.stage)


def plot_losses(losses: list[float], path: Path, title: str = "", val: list[tuple[int, float]] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot(range(1, len(losses) + 1), losses, lw=1, label="training")
    if val:
        ax.plot([s for s, _ in val], [v for _, v in val], "o-", lw=1.5, ms=3, label="held-out")
        ax.legend()
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]:.4f}  val {task.fields[val]:.4f}  acc {task.fields[acc]:.3f}  "
                               "{task.fields[tps]:,.0f} tok/s"), TimeRemainingColumn(), disable=not enabled)
