"""The language-model head and its cross-entropy fused: `naive.py` the reference (F.linear and
F.cross_entropy over the whole [tokens, vocab] logits), `triton.py` the kernel that never forms
them whole."""
