"""The op catalog. Importing this package registers every op (one family per file)."""

from archc.ops import (  # noqa: F401  (imported for their registrations)
    arith,
    attention,
    conv,
    embeddings,
    ffn,
    heads,
    memory,
    moe,
    norms,
    positions,
    recurrent,
    retention,
    routing,
    rwkv,
    ssm,
)
from archc.ops.registry import REGISTRY, OpDef, get

__all__ = ["REGISTRY", "OpDef", "get"]
