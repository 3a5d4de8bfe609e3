"""The value types of archc's command-line flags: each refuses at parse time (exit 2, a message
naming the flag and the range it accepts) what the command could only turn into something else,
a crash or a runaway — `--top-p 0`, `--temperature nan`, `--threads 100000`, `-o ""`.

`ArgumentParser` renders argparse's usage errors as diagnostics (`error[ARC1307]`, a help line).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from typing import NoReturn

#: what a count is allowed to be at most: past this, arithmetic on it overflows or allocates forever
HUGE = 2**40


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are diagnostics with a code and a help line."""

    def error(self, message: str) -> NoReturn:
        from archc.errors import Diagnostic, render

        diag = Diagnostic("ARC1307", message, hint=f"`{self.prog} --help` lists every option and its range")
        self.print_usage(sys.stderr)
        colored = sys.stderr.isatty() and os.environ.get("NO_COLOR") is None
        print(render(diag, {}, colored), file=sys.stderr)
        self.exit(2)


def _number(text: str, kind: type) -> float | int:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
    return value


def count(minimum: int, maximum: int = HUGE) -> Callable[[str], int]:
    """An integer in [minimum, maximum]."""

    def parse(text: str) -> int:
        value = int(_number(text, int))
        if not minimum <= value <= maximum:
            upper = "2**40" if maximum == HUGE else f"{maximum:,}"
            raise argparse.ArgumentTypeError(f"must be an integer between {minimum} and {upper}, got {text}")
        return value

    parse.__name__ = f"integer ≥ {minimum}"
    return parse


def seed(text: str) -> int:
    """A random seed: an integer in [0, 2**63)."""
    value = int(_number(text, int))
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**63), got {text}")
    return value


def _finite(text: str) -> float:
    value = float(_number(text, float))
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def probability(text: str) -> float:
    """A probability mass to keep: in (0, 1]."""
    value = _finite(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def unit_interval(text: str) -> float:
    """A weight in [0, 1]."""
    value = _finite(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def fraction(text: str) -> float:
    """A share strictly between 0 and 1 (a held-out split that leaves both parts non-empty)."""
    value = _finite(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {text}")
    return value


def input_path(text: str) -> str:
    """A path to read: never empty (an empty `--data` would read the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("the path is empty (an unset shell variable?); name it explicitly")
    return text


def field_name(text: str) -> str:
    """A record field's name (`--text-field`): not empty."""
    if not text.strip():
        raise argparse.ArgumentTypeError("the field name is empty; name the field that holds the text")
    return text


def temperature(text: str) -> float:
    """A sampling temperature: finite and ≥ 0 (0 is greedy)."""
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0 (0 is greedy), got {text}")
    return value


def positive(text: str) -> float:
    """A finite number > 0 (a learning rate, a distillation temperature)."""
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def ratio(text: str) -> float:
    """A fraction of units to remove: in [0, 1) (all of them is never a model)."""
    value = _finite(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a fraction in [0, 1), got {text}")
    return value


def max_threads() -> int:
    return 4 * (os.cpu_count() or 1)


def _per_core(text: str) -> int:
    """An integer in 1 … 4 × this machine's cores."""
    value = int(_number(text, int))
    if not 1 <= value <= max_threads():
        raise argparse.ArgumentTypeError(f"must be between 1 and {max_threads()} (4 × this machine's "
                                         f"{os.cpu_count()} cores), got {text}")
    return value


def threads(text: str) -> int:
    """Intra-op threads: 1 … 4 × the machine's cores (more only thrashes)."""
    return _per_core(text)


def processes(text: str) -> int:
    """Processes to start on this machine (`train --nproc`): 1 … 4 × its cores, as threads are; each
    one loads torch and a replica, so 4,096 of them thrash or exhaust memory before the first step."""
    return _per_core(text)


def output(text: str) -> str:
    """An output path: never empty (an unset shell variable would make it the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("the path is empty (an unset shell variable?); name the output explicitly")
    return text


def data_source(text: str) -> str:
    """`TASK[:N]` or `FILE[:N]` with N ≥ 1 sequences."""
    name, sep, n = text.rpartition(":")
    if sep and n.lstrip("-").isdigit():
        if not name:
            raise argparse.ArgumentTypeError(f"{text!r} names no task or file before ':'")
        if not 1 <= int(n) <= 1_000_000:
            raise argparse.ArgumentTypeError(f"the number of sequences must be between 1 and 1,000,000, got {n}")
    elif not text.strip():
        raise argparse.ArgumentTypeError("empty: give TASK:N (e.g. chars:256) or FILE.txt:N")
    return text


_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 2**10, "mib": 2**20,
          "gib": 2**30, "tib": 2**40}


def memory(text: str) -> int:
    """A number of bytes: `512MB`, `8GB`, `2GiB`, `1e9`."""
    t = text.strip().lower().replace(" ", "")
    digits = t.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = t[len(digits):]
    if unit not in _UNITS:
        raise argparse.ArgumentTypeError(f"{text!r}: a size such as 512MB, 8GB or 2GiB")
    value = _finite(digits) * _UNITS[unit]
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least one byte, got {text}")
    return int(value)


def default_max_memory() -> int:
    """Half the machine's physical memory: what one command may plan to allocate up front."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError):
        return 8 * 10**9


def add_memory_flag(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--max-memory", type=memory, default=None, metavar="SIZE",
                    help="refuse to start when the decode state and prompt buffers would need more than this "
                         "(default: half of this machine's memory)")


def bandwidth(text: str) -> int:
    """Bytes per second: `900GB/s`, `50GB/s`, `400Gb/s` is refused as ambiguous (give bytes)."""
    t = text.strip()
    if t.endswith("b/s") and not t.endswith("B/s"):
        raise argparse.ArgumentTypeError(f"{text!r}: give bytes per second (400Gb/s is 50GB/s)")
    return memory(t.removesuffix("/s").removesuffix("/S"))


def flops(text: str) -> float:
    """FLOP/s: `989TFLOPS`, `989T`, `9.89e14`."""
    t = text.strip().upper().removesuffix("FLOPS").removesuffix("FLOP/S")
    scale = {"T": 1e12, "P": 1e15, "G": 1e9}.get(t[-1:], 1.0)
    try:
        value = float(t[:-1] if t[-1:] in "TPG" else t) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a rate such as 989TFLOPS or 9.89e14") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be positive")
    return value


def plan_degrees(text: str) -> str:
    """A parallel plan such as `tp=2,fsdp=2` (`archc.parallel.parse_plan`'s keys and values),
    checked when the command line is read; the command parses the same text again."""
    from archc.parallel import PlanError, parse_plan

    try:
        parse_plan(text)
    except PlanError as e:
        raise argparse.ArgumentTypeError(e.message + (f"; {e.hint}" if e.hint else "")) from None
    return text
