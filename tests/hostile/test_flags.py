"""Every numeric flag validated at parse time: out-of-range values are exit status 2 with
ARC1307 naming the flag and its range, before any work starts. A property test (hypothesis) checks
each flag's accepted set against its documented range, written here independently of
`archc/cli/flags.py`."""

from __future__ import annotations

import contextlib
import io
import math
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archc.cli import build_parser, main

POSITIONAL = {"run": ["DIR"], "train": ["m.arch"], "prune": ["m.arch", "-o", "DIR"], "export": ["m.arch", "-o", "DIR"],
              "compress-report": ["DIR"], "generate": ["m.arch"], "summary": ["m.arch"], "eval": ["m.arch"],
              "bench": ["m.arch"], "plan": ["m.arch"]}


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _float(text: str) -> float | None:
    try:
        v = float(text)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def _ints(lo: int, hi: float = 2**40):
    return lambda t: (v := _int(t)) is not None and lo <= v <= hi


def _floats(ok):
    return lambda t: (v := _float(t)) is not None and ok(v)


CORES = os.cpu_count() or 1
#: (command, flag) -> the values docs/errors.md (ARC1307) and `--help` promise are accepted
RANGES = {
    ("run", "--top-p"): _floats(lambda v: 0 < v <= 1),
    ("generate", "--top-p"): _floats(lambda v: 0 < v <= 1),
    ("run", "--temperature"): _floats(lambda v: v >= 0),
    ("run", "--top-k"): _ints(1),
    ("run", "--max-new-tokens"): _ints(0),
    ("run", "--threads"): _ints(1, 4 * CORES),
    ("run", "--seed"): _ints(0, 2**63 - 1),
    ("generate", "--num-beams"): _ints(1, 64),
    ("train", "--lr"): _floats(lambda v: v > 0),
    ("train", "--steps"): _ints(1),
    ("train", "--seq"): _ints(2),
    ("train", "--accum"): _ints(1),
    ("train", "--temperature"): _floats(lambda v: v > 0),
    ("train", "--alpha"): _floats(lambda v: 0 <= v <= 1),
    ("prune", "--heads"): _floats(lambda v: 0 <= v < 1),
    ("prune", "--magnitude"): _floats(lambda v: 0 <= v < 1),
    ("prune", "--layers"): _ints(0),
    ("export", "--block-size"): lambda t: (v := _int(t)) is not None and v in (16, 32, 64, 128, 256),
    ("export", "--calibrate-seq"): _ints(2, 1_000_000),
    ("compress-report", "--seq"): _ints(2, 1_000_000),
    ("compress-report", "--threads"): _ints(1, 4 * CORES),
    ("summary", "--seq"): _ints(1),
    # the commands and flags that came after the first hostile sweep
    ("generate", "--temperature"): _floats(lambda v: v >= 0),
    ("generate", "--top-k"): _ints(1),
    ("generate", "--max-new-tokens"): _ints(0),
    ("eval", "--seq"): _ints(2),
    ("eval", "--batch"): _ints(1),
    ("eval", "--batches"): _ints(1),
    ("eval", "--max-tokens"): _ints(1),
    ("eval", "--pairs"): _ints(1),
    ("train", "--pairs"): _ints(1),
    ("train", "--passages"): _ints(0),
    ("train", "--warmup"): _ints(0),
    ("train", "--val-fraction"): _floats(lambda v: 0 < v < 1),
    ("train", "--val-every"): _ints(1),
    ("train", "--val-tokens"): _ints(2),
    ("train", "--nproc"): _ints(1, 4 * CORES),
    ("bench", "--threads"): _ints(1, 4 * CORES),
    ("bench", "--repeat"): _ints(1),
    ("bench", "--new-tokens"): _ints(2),
    ("bench", "--prompt"): _ints(1),
    ("plan", "--efficiency"): _floats(lambda v: 0 < v < 1),
    ("plan", "--top"): _ints(0, 20),
    ("plan", "--global-batch"): _ints(1),
}


def _parses(command: str, flag: str, value: str) -> tuple[bool, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            build_parser().parse_args([command, *POSITIONAL[command], f"{flag}={value}"])
            return True, ""
        except SystemExit as e:
            assert e.code == 2
            return False, err.getvalue()


values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    st.sampled_from(["0", "1", "-1", "0.5", "1.0", "1.5", "nan", "inf", "-inf", "1e-300", "16", "48", "64", "2", "", " ",
                     "abc", "1e400", "0x10", "2**63", "9223372036854775808", "9223372036854775807"]),
    st.text(max_size=8),
)


@settings(max_examples=400, deadline=None)
@given(key=st.sampled_from(sorted(RANGES)), value=values)
def test_each_numeric_flag_accepts_exactly_its_documented_range(key, value):
    command, flag = key
    if "\0" in value:
        value = value.replace("\0", "")
    ok, err = _parses(command, flag, value)
    assert ok == RANGES[key](value), (command, flag, value, err)
    if not ok:
        assert "ARC1307" in err and flag in err and "help:" in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [
    ["run", "DIR", "--top-p", "0"], ["run", "DIR", "--top-p", "1.5"], ["run", "DIR", "--top-p", "nan"],
    ["run", "DIR", "--temperature", "-1"], ["run", "DIR", "--top-k", "0"], ["run", "DIR", "--top-k", "-3"],
    ["run", "DIR", "--max-new-tokens", "-5"], ["run", "DIR", "--threads", "-1"], ["run", "DIR", "--threads", "100000"],
    ["train", "m.arch", "--distill", "t.arch", "--temperature", "nan"], ["train", "m.arch", "--lr", "nan"],
    ["train", "m.arch", "--seq", "0"], ["prune", "m.arch", "-o", "o", "--magnitude", "1"],
    ["prune", "m.arch", "-o", "o", "--heads", "-0.1"], ["prune", "m.arch", "-o", "o", "--experts", "2.5"],
    ["compress-report", "DIR", "--data", "chars:0"], ["export", "m.arch", "-o", "o", "--calibrate", "chars:0"],
    ["export", "m.arch", "-o", "o", "--block-size", "48"], ["export", "m.arch", "-o", ""],
    ["prune", "m.arch", "-o", " "], ["train", "m.arch", "-o", ""], ["compress-report", "DIR", "--json", ""],
    ["train", "m.arch", "--nproc", "100000"], ["bench", "m.arch", "--threads", "100000"],
    ["train", "m.arch", "--val-fraction", "1"], ["eval", "m.arch", "--seq", "0"], ["plan", "m.arch", "--efficiency", "nan"],
    ["import-hf", "DIR", "-o", ""], ["export-hf", "m.arch", "-o", ""], ["kernels", "m.arch", "--emit", ""],
    ["bench", "m.arch", "--plot", ""],
])
def test_out_of_range_flags_are_refused_before_any_work(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "error[ARC1307]" in err and "help:" in err and "Traceback" not in err
