"""archc's Mamba and transformers' MambaForCausalLM from the same init, trained side by side on the
same selective-copying batches with the same AdamW: whether a plateau (docs/results.md) is the
setting's or archc's. Prints, first, every parameter's gradient on the first batch side by side
(relative difference), then both losses every 50 steps.

    .venv/bin/python tools/mamba_twin_training.py [--steps 400]
"""

from __future__ import annotations

import argparse
import math
import shutil

import torch
import transformers

import archc
from archc.backends.torch import build
from archc.backends.torch.tasks import make_task
from archc.hf.exporter import export_hf

SPEC = """model m(tokens) {
  vocab = 16
  d = 64

  block layer(x) {
    return x + mamba(rmsnorm(x), d_state=16, expand=2, d_conv=4)
  }

  x = embed(tokens, vocab, d)
  x = repeat(2, layer)(x)
  return lm_head(rmsnorm(x), tied=true)
}
"""
ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--steps", type=int, default=400)
args = ap.parse_args()
torch.manual_seed(0)
ours = build(archc.loads(SPEC, "m.arch").graph, seed=0)
shutil.rmtree("/tmp/mamba_hf", ignore_errors=True)
export_hf(ours, SPEC, "m", "/tmp/mamba_hf", force=True)
theirs = transformers.AutoModelForCausalLM.from_pretrained("/tmp/mamba_hf")
task = make_task("selective_copy", 16)
gen = torch.Generator().manual_seed(0)
opts = [torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.0) for m in (ours, theirs)]
named = dict(theirs.named_parameters())
for step in range(args.steps):
    ids, labels = task.batch(32, 128, gen)
    losses = []
    for m, opt in zip((ours, theirs), opts, strict=True):
        m.train()
        loss = m(ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        if step == 0 and m is theirs:  # the first batch's gradients, before either optimizer moves
            for name, p in ours.named_parameters():
                ref = named.get({"embed.weight": "backbone.embeddings.weight",
                                 "norm.weight": "backbone.norm_f.weight"}.get(name, "backbone." + name))
                if ref is not None:
                    print(f"grad {name:32s} |g| {float(p.grad.norm()):.3e}  rel. diff "
                          f"{float((p.grad - ref.grad).norm() / p.grad.norm()):.1e}", flush=True)
        opt.step()
        losses.append(loss.item())
    if step % 50 == 0 or step == args.steps - 1:
        print(step, [round(v, 3) for v in losses], "ln 13 =", round(math.log(13), 3), flush=True)
