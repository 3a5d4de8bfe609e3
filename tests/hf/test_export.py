"""`archc export-hf` against transformers: every imported family exported back and loaded with
`AutoModelForCausalLM.from_pretrained` computes the original model's logits (the round trip
import → export-hf → transformers); a spec that is exactly a family is written under the family's
own names (the same tensors as the original checkpoint, loadable without archc), any other causal
LM through archc's modeling file (`trust_remote_code=True`), which `generate` and `Trainer` use."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

import archc
from archc.backends.torch.checkpoint import load_weights
from archc.cli import main
from archc.hf.exporter import export_hf
from tests.hf.test_import import FAMILIES, FP32_REFERENCE, _save

transformers = pytest.importorskip("transformers")

#: the families export-hf writes as themselves: every family archc imports
AS_FAMILY = set(FAMILIES)


def _keys(path) -> set[str]:
    with safe_open(str(path), "pt") as f:
        return set(f.keys())


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_import_then_export_hf_gives_transformers_the_same_model(tmp_path, family):
    dtype, tol = (torch.float32, 1e-4) if family in FP32_REFERENCE else (torch.float64, 1e-6)
    hf = _save(tmp_path / "hf", family).to(dtype)
    archc.import_hf(str(tmp_path / "hf"), str(tmp_path / "m.arch"), str(tmp_path / "m.safetensors"))
    text = (tmp_path / "m.arch").read_text()
    model = archc.build(archc.loads(text, "m.arch").graph, pipeline="O0")
    load_weights(model, tmp_path / "m.safetensors")
    out = export_hf(model, text, "m.arch", tmp_path / "out")
    assert (out.model_type == family) == (family in AS_FAMILY), out.why_not_family
    if family in AS_FAMILY:  # the family's own checkpoint: its tensor names, its config's model_type
        assert _keys(tmp_path / "out" / "model.safetensors") == _keys(tmp_path / "hf" / "model.safetensors")
        assert not (tmp_path / "out" / "modeling_archc.py").exists()
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out", trust_remote_code=True).to(dtype).eval()
    ids = torch.randint(0, 128, (2, 21))
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits.to(dtype), hf(ids).logits.to(dtype), atol=tol, rtol=tol)


HYBRID = """
model hybrid(tokens) {
  block attn(x) {
    x = x + attention(rmsnorm(x), heads=4, kv_heads=2, causal=true, pos=rope())
    return x + swiglu(rmsnorm(x), hidden=64)
  }
  block ssm(x) {
    x = x + mamba(rmsnorm(x), d_state=8)
    return x + swiglu(rmsnorm(x), hidden=64)
  }
  x = embed(tokens, 96, 32)
  x = pattern("MA", M=ssm, A=attn)(x)
  return lm_head(rmsnorm(x), tied=true)
}
"""


def test_a_hybrid_loads_through_the_modeling_file_and_generates_and_trains(tmp_path, write_spec, capsys):
    pytest.importorskip("accelerate")
    spec = write_spec(HYBRID, "hybrid.arch")
    model = archc.build(archc.load(str(spec)).graph, seed=2, pipeline="O0").eval()
    from archc.backends.torch.checkpoint import save_weights

    save_weights(model, tmp_path / "w.safetensors")
    out = tmp_path / "hf-out"
    assert main(["export-hf", str(spec), "--weights", str(tmp_path / "w.safetensors"), "-o", str(out)]) == 0
    assert "trust_remote_code=True" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "archc" and config["archc_spec"] == HYBRID
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    assert hf.get_input_embeddings().weight.shape == (96, 32)
    ids = torch.randint(0, 96, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids).logits, atol=1e-5, rtol=1e-5)
    got = hf.generate(ids[:1, :4], max_new_tokens=8, do_sample=False, min_new_tokens=8, pad_token_id=0)
    assert got[0].tolist() == model.generate(ids[:1, :4], max_new_tokens=8)[0].tolist()
    # transformers' Trainer on the loaded model: the loss falls
    rows = (torch.randint(0, 23, (32, 1)) + torch.arange(12)) % 23 + 3
    data = [{"input_ids": r, "labels": r} for r in rows]
    args = transformers.TrainingArguments(str(tmp_path / "t"), per_device_train_batch_size=8, max_steps=24,
                                          learning_rate=1e-2, logging_steps=4, report_to=[], save_strategy="no",
                                          use_cpu=True, disable_tqdm=True)
    trainer = transformers.Trainer(model=hf.train(), args=args, train_dataset=data)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert losses[-1] < 0.7 * losses[0]


def test_peft_adds_lora_adapters_to_a_model_loaded_through_the_modeling_file(tmp_path):
    """archc's projections are `nn.Linear`s under transformers' names, so PEFT's LoRA finds them:
    the wrapped model computes the base model's logits (B starts at zero) and trains only the
    adapters."""
    peft = pytest.importorskip("peft")
    assert archc.export_hf(str(_spec(tmp_path)), out=str(tmp_path / "x")) == "archc"
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "x", trust_remote_code=True)
    ids = torch.randint(0, 96, (2, 12))
    with torch.no_grad():
        base = hf(ids).logits
    lora = peft.get_peft_model(hf, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    out = lora(input_ids=ids, labels=ids)
    torch.testing.assert_close(out.logits, base)
    out.loss.backward()
    trained = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trained and all("lora_" in n for n in trained)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in lora.named_parameters() if "lora_B" in n)


def _spec(tmp_path):
    path = tmp_path / "hybrid.arch"
    path.write_text(HYBRID)
    return path


def test_the_api_exports_a_hand_written_spec_as_its_family(tmp_path):
    """specs/llama-tiny.arch, written by hand, is exactly a Llama: transformers loads it as one."""
    assert archc.export_hf("specs/llama-tiny.arch", out=str(tmp_path / "x")) == "llama"
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "x")
    assert type(hf).__name__ == "LlamaForCausalLM" and hf.num_parameters() == 3_819_776
    assert archc.export_hf("specs/llama-tiny.arch", out=str(tmp_path / "y"), remote=True) == "archc"


def test_export_hf_refusals(tmp_path, capsys):
    assert main(["export-hf", "specs/lstm-tagger.arch", "-o", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err
    assert "ARC1402" in err and "not a causal language model" in err and "Traceback" not in err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    assert main(["export-hf", "specs/llama-tiny.arch", "-o", str(tmp_path / "full")]) == 1
    assert "ARC0903" in capsys.readouterr().err
    # --force replaces export-hf's own files and leaves the user's
    assert main(["export-hf", "specs/llama-tiny.arch", "-o", str(tmp_path / "full"), "--force"]) == 0
    assert (tmp_path / "full" / "notes.txt").read_text() == "mine"
    assert json.loads((tmp_path / "full" / "config.json").read_text())["model_type"] == "llama"
