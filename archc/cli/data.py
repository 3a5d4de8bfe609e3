"""The flags and checks the text-speaking commands share (`train --data`, `eval`, `generate`,
`export`, `run`): which tokenizer, whether the spec's vocabulary holds it, and the corpus read with
a progress bar (docs/hf.md "Your own text")."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from archc.cli.common import CommandError
from archc.cli.flags import count, field_name, fraction, input_path, output
from archc.errors import Diagnostic


def add_tokenizer_flag(sp: argparse.ArgumentParser, default_beside: str = "--weights") -> None:
    sp.add_argument("--tokenizer", metavar="TOKENIZER", type=input_path,
                    help="a tokenizer.json, a folder with one (a Hugging Face model folder), or `bytes` "
                         f"(default: the tokenizer.json beside {default_beside}, else bytes)")


def add_data_flags(sp: argparse.ArgumentParser, required: bool) -> None:
    """`--data`, `--text-field`, `--cache-dir`, `--tokenizer`."""
    sp.add_argument("--data", metavar="PATH", required=required, type=input_path,
                    help="your text: a .txt/.md file, .jsonl (one record per line), .parquet, or a folder of them")
    sp.add_argument("--text-field", default="text", metavar="NAME", type=field_name,
                    help="the field of .jsonl/.parquet records that holds the text (text)")
    sp.add_argument("--cache-dir", metavar="DIR", type=output,
                    help="where the tokenized corpus is cached (default: .archc-cache beside the data)")
    add_tokenizer_flag(sp)


def add_split_flags(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--val-fraction", type=fraction, default=0.05, metavar="F",
                    help="held-out share of --data, the end of the token stream (0.05)")
    sp.add_argument("--val-every", type=count(1), metavar="N",
                    help="held-out loss every N steps (default: 10 times a run)")
    sp.add_argument("--val-tokens", type=count(2), default=16384, metavar="N",
                    help="held-out tokens scored each time (16384)")


def tokenizer_for(name: str | None, weights: str | None, log: bool = True):
    """`--tokenizer` when given; else the `tokenizer.json` beside the weights (a run folder of
    `archc train --data`); else the byte vocabulary."""
    return find_tokenizer(name, weights, log) or _bytes()


def find_tokenizer(name: str | None, weights: str | None, log: bool = True):
    """`--tokenizer` when given, else the `tokenizer.json` beside the weights, else None."""
    from archc.data.tokenizer import TOKENIZER_FILE, load_tokenizer

    if name is None and weights:
        beside = Path(weights).parent / TOKENIZER_FILE
        if beside.is_file():
            if log:
                print(f"tokenizer: {beside} (beside the weights)", file=sys.stderr)
            name = str(beside)
    return load_tokenizer(name) if name else None


def _bytes():
    from archc.data.tokenizer import ByteTokenizer

    return ByteTokenizer()


def check_vocab(tokenizer, graph, vocab: int) -> None:
    """ARC1502 at the spec's embedding when the tokenizer has more ids than the vocabulary."""
    from archc.data.tokenizer import check_vocab as mismatch

    problem = mismatch(tokenizer, vocab)
    if problem is None:
        return
    embed = next((n for n in graph.walk() if n.op == "embed"), None)
    raise CommandError(Diagnostic("ARC1502", problem, embed.span if embed is not None else None,
                                  f"raise the vocabulary on this line (or the constant it names) to at least "
                                  f"{tokenizer.vocab_size:,} — a multiple of 64 is common — or use a "
                                  f"tokenizer with at most {vocab:,} tokens"))


def load_text(args: argparse.Namespace, tokenizer, quiet: bool = False):
    """The corpus of `--data` through `tokenizer`, with a progress bar while it is tokenized."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from archc.data.corpus import load_corpus

    with Progress(TextColumn("tokenizing"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeRemainingColumn(), disable=quiet, transient=True, console=_stderr()) as bar:
        task = bar.add_task("tokenize", total=None)
        corpus = load_corpus(args.data, tokenizer, args.text_field, args.cache_dir,
                             progress=lambda done, total: bar.update(task, completed=done, total=total))
    how = "read from the cache" if corpus.cached else "tokenized and cached"
    print(f"{args.data}: {len(corpus.files)} file{'s' if len(corpus.files) != 1 else ''}, "
          f"{len(corpus.doc_ends):,} documents, {corpus.n_bytes:,} bytes → {corpus.n_tokens:,} tokens "
          f"({tokenizer.name}; {how} in {corpus.seconds:.1f} s)", file=sys.stderr)
    return corpus


def _stderr():
    from rich.console import Console

    return Console(stderr=True)
