"""Autotuning that deployment does not repeat: the configs Triton's autotuner chose, persisted
beside the rendered kernel in archc's cache (`<kernel>.autotune.json`) and read back before the
first launch, so a process that finds them launches the chosen config at once, without
benchmarking (a common complaint: helion #164, triton #3843). Ship the cache folder
(`$ARCHC_KERNEL_CACHE`) with a deployment and the kernels arrive tuned.

A template autotunes only on a GPU: Triton's interpreter cannot benchmark (it has no driver), so
the rendered file carries the autotune decorator only where `tuning()` is true, and the
specializations say so in their parameters (`AUTOTUNE`)."""

from __future__ import annotations

import json
import os
import tempfile
import types
from pathlib import Path
from typing import Any

from archc.backends.triton import interpreted


def tuning() -> bool:
    """Whether rendered kernels autotune here (not in Triton's interpreter)."""
    return not interpreted()


def tuned_path(kernel_file: Path, name: str) -> Path:
    """Where the configs chosen for the kernel function `name` of `kernel_file` are kept."""
    return kernel_file.with_name(f"{kernel_file.stem}.{name}.autotune.json")


def _key(key: tuple) -> list:
    return [str(k) if not isinstance(k, int | float | bool) else k for k in key]


def load(autotuner: Any, path: Path) -> int:
    """Fill `autotuner`'s choices (a `triton.runtime.autotuner.Autotuner`) from `path`; how many."""
    import triton

    if not path.exists():
        return 0
    entries = json.loads(path.read_text())
    for entry in entries:
        cfg = entry["config"]
        config = triton.Config(cfg["kwargs"], num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
        autotuner.cache[tuple(entry["key"])] = config
    return len(entries)


def save(autotuner: Any, path: Path) -> None:
    """Write `autotuner`'s choices to `path` atomically (concurrent processes never read half)."""
    entries = [{"key": _key(key), "config": {"kwargs": dict(c.kwargs), "num_warps": c.num_warps,
                                             "num_stages": c.num_stages}}
               for key, c in autotuner.cache.items()]
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(entries, f, indent=1)
    os.replace(tmp, path)


#: the autotuned kernels of rendered files: id of the jitted function -> (its autotuner, where its choices go)
_TRACKED: dict[int, tuple[Any, Path]] = {}
_LISTENING = False


def attach(module: Any, kernel_file: Path) -> int:
    """Read the persisted choices of every autotuned kernel in `module` (a rendered file, imported)
    and have later tuning written back (Triton's autotuning listener); how many choices were read."""
    from triton.runtime.autotuner import Autotuner

    read = 0
    for name, obj in vars(module).items():
        if isinstance(obj, Autotuner):
            path = tuned_path(kernel_file, name)
            read += load(obj, path)
            _TRACKED[id(_jitted(obj))] = (obj, path)
    if _TRACKED:
        _listen()
    return read


def _jitted(fn: Any) -> Any:
    """The jitted function under an autotuner (and other wrappers): what Triton's listener names
    (`JITFunction`; in the interpreter, the `InterpretedFunction` over the Python function)."""
    from triton.runtime.jit import JITFunction

    while not isinstance(fn, JITFunction) and not isinstance(getattr(fn, "fn", None), types.FunctionType):
        fn = fn.fn
    return fn


def _listen() -> None:
    """Install the listener once, after any the user set (which still hears every event)."""
    global _LISTENING
    if _LISTENING:
        return
    from triton import knobs

    before = knobs.autotuning.listener

    def listener(fn: Any, key: Any, best_config: Any, configs_timings: Any, duration: Any, cache_hit: bool) -> None:
        tracked = _TRACKED.get(id(fn))
        if tracked is not None and not cache_hit:
            save(*tracked)
        if before is not None:
            before(fn=fn, key=key, best_config=best_config, configs_timings=configs_timings, duration=duration,
                   cache_hit=cache_hit)

    knobs.autotuning.listener = listener
    _LISTENING = True
