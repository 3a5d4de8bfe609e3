"""Memorizing Transformers' kNN-augmented attention (Wu et al. 2022): `naive.py` query by query
(the ground truth), `chunk.py` a whole sequence (local attention per segment, exact top-k search
over the earlier segments by `torch.topk` or a faiss index), `step.py` new tokens against the
cached keys and values."""

from archc.backends.torch.kernels.knn_attention.chunk import knn_attention, retrieve
from archc.backends.torch.kernels.knn_attention.naive import naive_knn_attention
from archc.backends.torch.kernels.knn_attention.step import knn_attention_step

__all__ = ["knn_attention", "knn_attention_step", "naive_knn_attention", "retrieve"]
