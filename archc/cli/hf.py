"""`archc import-hf`: a Hugging Face checkpoint folder as an archc spec and its weights
(docs/hf.md). The spec and the weights are each written whole or not at all; an existing file is
refused unless `--force`."""

from __future__ import annotations

import argparse

from archc.cli.common import EXIT_OK
from archc.cli.flags import output
from archc.cli.model import _fail, _run


def _cmd_import_hf(args: argparse.Namespace, sources: dict[str, str]) -> int:
    from archc.files.output import check_file
    from archc.hf import HFImportError, import_hf, save

    check_file(args.output, args.force)  # before the import's work, not after
    if args.weights:
        check_file(args.weights, args.force, "--weights")
    try:
        imported = import_hf(args.source)
        n = save(imported, args.output, args.weights, args.force)
    except HFImportError as e:
        raise _fail("ARC1401", str(e), e.hint) from None
    print(f"wrote {args.output} ({imported.plan.family}, {imported.plan.layers} layers)")
    if args.weights:
        print(f"wrote {args.weights} ({n} tensors)")
    return EXIT_OK


def cmd_import_hf(args: argparse.Namespace) -> int:
    return _run(_cmd_import_hf, args)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    i = sub.add_parser("import-hf", help="a Hugging Face checkpoint folder as an archc spec and its weights")
    i.add_argument("source", help="a folder written by save_pretrained (config.json, safetensors), or a config.json")
    i.add_argument("-o", "--output", required=True, type=output, help="the spec to write (.arch)")
    i.add_argument("--weights", type=output, help="also write the weights under archc's names (.safetensors)")
    i.add_argument("--force", action="store_true", help="replace existing outputs")
    i.set_defaults(fn=cmd_import_hf)
