"""Mixture-of-experts' grouped matmul: `naive.py` a matmul per expert (the reference), `triton.py`
one launch for all experts."""
