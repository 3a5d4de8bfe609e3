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


def _cmd_export_hf(args: argparse.Namespace, sources: dict[str, str]) -> int:
    import sys
    from pathlib import Path

    from archc.cli.model import _build_model, _load_weights, text_tokenizer
    from archc.files.output import check_folder
    from archc.hf import HFImportError
    from archc.hf.exporter import EXPORTED_HF, export_hf

    check_folder(args.output, EXPORTED_HF, args.force)  # before building, not after
    model, prog = _build_model(args.file, args.seed, sources, args, pipeline="O0")
    if args.weights:
        _load_weights(model, args.weights, "--weights")
    else:
        print(f"warning: no --weights: exporting a random init of {prog.graph.name}", file=sys.stderr)
    tokenizer = text_tokenizer(args, prog.graph, model.out_type_vocab(), args.weights)
    try:
        out = export_hf(model, Path(args.file).read_text(), Path(args.file).name, args.output, args.force,
                        tokenizer=tokenizer, as_remote=args.remote)
    except HFImportError as e:
        raise _fail("ARC1402", str(e), e.hint) from None
    if out.model_type == "archc":
        print(f"wrote {args.output}: {prog.graph.name} through archc's modeling file ({out.why_not_family}); "
              f"load it with AutoModelForCausalLM.from_pretrained({str(args.output)!r}, trust_remote_code=True)")
    else:
        print(f"wrote {args.output}: {prog.graph.name} as a `{out.model_type}` model, {out.tensors} tensors; "
              f"{out.auto_class}.from_pretrained({str(args.output)!r}) loads it without archc")
    return EXIT_OK


def cmd_export_hf(args: argparse.Namespace) -> int:
    return _run(_cmd_export_hf, args)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    i = sub.add_parser("import-hf", help="a Hugging Face checkpoint folder as an archc spec and its weights")
    from archc.cli.flags import input_path

    i.add_argument("source", type=input_path,
                   help="a folder written by save_pretrained (config.json, safetensors), or a config.json")
    i.add_argument("-o", "--output", required=True, type=output, help="the spec to write (.arch)")
    i.add_argument("--weights", type=output, help="also write the weights under archc's names (.safetensors)")
    i.add_argument("--force", action="store_true", help="replace existing outputs")
    i.set_defaults(fn=cmd_import_hf)

    from archc.cli.common import add_limit_flags
    from archc.cli.data import add_tokenizer_flag
    from archc.cli.flags import seed

    x = sub.add_parser("export-hf", help="a spec and its weights as a folder transformers loads "
                                         "(its family's, or with archc's modeling file)")
    x.add_argument("file", metavar="FILE", help="spec file (.arch)")
    x.add_argument("--weights", help=".safetensors from `archc train` / `import-hf` (default: random init)")
    x.add_argument("-o", "--output", required=True, metavar="DIR", type=output, help="the folder to write")
    x.add_argument("--force", action="store_true", help="replace the files export-hf writes in an existing folder")
    x.add_argument("--remote", action="store_true",
                   help="write archc's modeling file even when the spec is a Hugging Face family")
    x.add_argument("--seed", type=seed, default=0, help="seed of the init without --weights (0)")
    add_tokenizer_flag(x)
    add_limit_flags(x)
    x.set_defaults(fn=cmd_export_hf)
