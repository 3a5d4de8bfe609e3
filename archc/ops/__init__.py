"""The op catalog. Importing this package registers every op: each module in this folder (but
the registry itself) is a family file and is imported by file name, so adding a family is adding
a file (the way tinygrad finds its runtimes)."""

import importlib
import pkgutil

from archc.ops.registry import REGISTRY, OpDef

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name != "registry":
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["REGISTRY", "OpDef"]
