"""`archc bench`: the runners, the transformers counterpart holding archc's weights, the report
and the CLI. Timings are not asserted (tools/ measures them); what is asserted is that every runner
ran every workload and that the transformers model computes the same logits."""

from __future__ import annotations

import json

import pytest

from archc.bench import EAGER, HF, TRITON, Setup, bench
from archc.cli import main
from tests.conftest import tiny_lm_spec

QUICK = Setup(workloads=("forward", "train", "decode"), forward_seqs=(16, 24), train_batch=2, train_seq=8, prompt=6,
              new_tokens=3, repeat=2, compile=False)


def test_bench_times_archc_against_its_transformers_twin(write_spec):
    report = bench(str(write_spec(tiny_lm_spec(vocab=64))), QUICK)
    assert report.runners == [EAGER, HF] and report.hf_model_type == "llama"
    assert report.hf_max_abs_diff is not None and report.hf_max_abs_diff < 1e-4
    assert TRITON in report.skipped  # no CUDA here
    shapes = [(t.workload, t.shape, t.runner) for t in report.timings]
    assert shapes == [(w, s, r) for w, s in (("forward", "1×16"), ("forward", "1×24"), ("train", "2×8"),
                                              ("decode", "after 6")) for r in (EAGER, HF)]
    for t in report.timings:
        assert len(t.times) == 2 and t.min <= t.median <= t.max and t.ratio is not None
        assert (t.peak_fraction is not None) == (t.workload == "forward")
        if t.runner == HF:
            assert t.ratio == pytest.approx(1.0)
    assert report.peak_gflops > 0


def test_bench_cli_json_plot_and_a_spec_without_a_family(tmp_path, write_spec, capsys):
    # a GeGLU feed-forward has no Hugging Face llama form: archc alone, and the reason said
    spec = write_spec(tiny_lm_spec(vocab=64).replace("swiglu(", "geglu("))
    plot = tmp_path / "fwd.png"
    args = ["bench", str(spec), "--no-compile", "--workloads", "forward", "--seq", "8,16", "--repeat", "1",
            "--plot", str(plot), "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["runners"] == [EAGER] and "not a Hugging Face family" in out["skipped"][HF]
    assert [t["shape"] for t in out["timings"]] == ["1×8", "1×16"]
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert main(args) == 1  # the plot is never overwritten without --force
    assert "ARC0903" in capsys.readouterr().err
    for bad in (["--workloads", "forward,sideways"], ["--train", "4by256"], ["--seq", "0"]):
        with pytest.raises(SystemExit) as e:
            main(["bench", str(spec), *bad])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "ARC1307" in err and "Traceback" not in err


MOE = """model m(tokens) {
  x = embed(tokens, 64, 32)
  x = x + attention(rmsnorm(x), heads=4, kv_heads=2, causal=true, pos=rope())
  x = x + moe(rmsnorm(x), experts=4, top_k=2, expert=swiglu(hidden=48))
  return lm_head(rmsnorm(x), tied=false)
}
"""


def test_a_moe_twin_loads_through_transformers_own_loader(write_spec):
    """Mixtral's experts are one module each in the published checkpoints and one stacked tensor
    in transformers 5's module: the twin is read by `from_pretrained`, which converts, as a user's
    checkpoint would be (a state-dict copy did not load)."""
    import torch

    from archc.backends.torch import build
    from archc.bench import hf_counterpart

    model = build(str(write_spec(MOE)), seed=0).eval()
    hf, why = hf_counterpart(model)
    assert hf is not None, why
    ids = torch.randint(0, 64, (2, 11), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids).logits, rtol=1e-5, atol=1e-5)
    assert hf.config.model_type == "mixtral"
