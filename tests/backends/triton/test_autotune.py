"""Autotuning that deployment does not repeat (archc/backends/triton/autotune.py): a kernel's
chosen config is written beside its rendered file when Triton's autotuner picks it, and a later
process reads it back before the first launch — so it launches without benchmarking. Triton's
interpreter cannot benchmark (it has no driver), which is what makes this testable here: a launch
of an autotuned kernel succeeds only if the choice was read back."""

from __future__ import annotations

import importlib.util
import json

import pytest

torch = pytest.importorskip("torch")
triton = pytest.importorskip("triton")

from archc.backends.torch.kernels.recurrent_step.specialize import params  # noqa: E402
from archc.backends.triton import autotune  # noqa: E402
from archc.backends.triton.render import render, source  # noqa: E402


def _fresh_import(path):
    """The rendered file imported again, as a new process would (render keeps one import a process)."""
    spec = importlib.util.spec_from_file_location(f"fresh_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_tuned_choice_persists_and_a_later_process_launches_it_without_tuning():
    p = {**params("decay", 8, 16), "AUTOTUNE": True}  # what a GPU renders (the tests run interpreted)
    assert not autotune.tuning()
    assert "@triton.autotune" in source("recurrent_step", **p)
    assert "@triton.autotune" not in source("recurrent_step", **{**p, "AUTOTUNE": False})
    rendered = render("recurrent_step", **p)
    kernel = rendered.module.recurrent_step
    json_path = autotune.tuned_path(rendered.path, "recurrent_step")
    json_path.unlink(missing_ok=True)
    # what Triton's autotuner does on a GPU: choose a config for a key, then tell its listener
    b, h = 2, 3
    args = [torch.randn(b, h, 8), torch.randn(b, h, 8), torch.randn(b, h, 16), -torch.rand(b, h), torch.zeros(1),
            torch.randn(b, h, 8, 16), torch.empty(b, h, 8, 16), torch.empty(b, h, 16)]
    key = (h, *(str(a.dtype) for a in args))
    kernel.cache[key] = kernel.configs[2]
    triton.knobs.autotuning.listener(fn=autotune._jitted(kernel), key=key, best_config=kernel.configs[2],
                                     configs_timings={}, duration=1.0, cache_hit=False)
    saved = json.loads(json_path.read_text())
    assert saved == [{"key": list(key), "config": {"kwargs": {}, "num_warps": 4, "num_stages": 3}}]

    fresh = _fresh_import(rendered.path)  # a later process: nothing tuned in memory
    assert fresh.recurrent_step.cache == {}
    assert autotune.attach(fresh, rendered.path) == 1
    fresh.recurrent_step[(b * h, 1)](*args, h)  # the interpreter would fail to benchmark: it does not
    q, k, v, log_a, _, s, new, y = args
    want = log_a.exp()[..., None, None] * s + k[..., None] * v[..., None, :]
    torch.testing.assert_close(new, want)
    torch.testing.assert_close(y, (q[..., None] * want).sum(-2))
