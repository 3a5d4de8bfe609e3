"""The op catalog. `REGISTRY` maps op names to records; each module in this folder (but the
registry itself and private ones) is a family file, found by file name, so adding a family is
adding a file (the way tinygrad finds its runtimes). Family files are imported on first use of
one of their ops (see `Registry`)."""

from archc.ops.registry import REGISTRY, OpDef

__all__ = ["REGISTRY", "OpDef"]
