"""Rendering kernel templates (archc/backends/triton/render.py): rendered once a process, cached
by a hash of what decides the text, readable, and strict about the parameters a template reads."""

from __future__ import annotations

import pytest

pytest.importorskip("triton")
pytest.importorskip("jinja2")


def test_rendering_is_cached_and_readable():
    from archc.backends.triton import KernelError
    from archc.backends.triton.render import render, source

    a = render("rms_norm", N=40, BLOCK=64, RESIDUAL=True, UNIT_OFFSET=False)
    assert render("rms_norm", N=40, BLOCK=64, RESIDUAL=True, UNIT_OFFSET=False) is a  # imported once
    text = a.path.read_text()
    assert "# N = 40" in text and "tl.arange(0, 64)" in text and "r_ptr" in text
    assert "r_ptr" not in source("rms_norm", N=40, BLOCK=64, RESIDUAL=False, UNIT_OFFSET=False)
    with pytest.raises(Exception, match="UNIT_OFFSET"):  # StrictUndefined: a missing parameter is an error
        source("rms_norm", N=40, BLOCK=64, RESIDUAL=True)
    with pytest.raises(KernelError, match="no kernel template"):
        source("flash", N=1)
