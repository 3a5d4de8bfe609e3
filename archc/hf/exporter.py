"""`archc export-hf`: a spec and its weights as a folder transformers loads.

A spec that is exactly a Hugging Face family (`match.py`: a config proposed from the spec's IR,
imported back by the family's own rule and compared node by node) is written as that family:
its `config.json` and `model.safetensors` under its names, the import's name map run backwards
(fused tensors reassembled, transposes undone) — `AutoModelForCausalLM.from_pretrained(DIR)`
loads it without archc (a BERT encoder, with its classification or masked-LM head, through
`AutoModelForSequenceClassification` / `AutoModelForMaskedLM`). Any other causal LM spec (a new hybrid) is written with a small modeling
file that builds the spec with archc (`remote.py`): `from_pretrained(DIR, trust_remote_code=True)`.

The folder is written as every archc output is: built in a transaction and swapped in whole
(`archc.files.output`); `force` replaces only the files export-hf writes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from archc.data.tokenizer import COMPANIONS, TOKENIZER_FILE, write_tokenizer_files
from archc.files.output import Owned, output_folder, write_text
from archc.hf.config import HFImportError
from archc.hf.remote import (
    ARCHITECTURE,
    AUTO_MAP,
    CONFIG_FILE,
    CONFIGURATION,
    MODEL_TYPE,
    MODELING,
    MODELING_FILE,
)

WEIGHTS = "model.safetensors"
#: what export-hf writes: the only paths `force` replaces (config.json is the commit marker)
EXPORTED_HF = Owned(("config.json", WEIGHTS, CONFIG_FILE, MODELING_FILE, TOKENIZER_FILE, *COMPANIONS),
                    marker="config.json", refuse="any", what="Hugging Face export")


@dataclass
class ExportedHF:
    folder: Path
    #: the family's `model_type`, or "archc" (the spec through the modeling file)
    model_type: str
    tensors: int
    #: why the spec is not a family (the first difference found), when written as "archc"
    why_not_family: str | None = None
    #: the transformers Auto class that loads the folder
    auto_class: str = "AutoModelForCausalLM"


def export_hf(model: Any, spec_text: str, spec_name: str, out: str | os.PathLike[str], force: bool = False,
              tokenizer: Any = None, as_remote: bool = False) -> ExportedHF:
    """Write `model` (an `ArchModel` built from `spec_text`, weights loaded) into `out`; as its
    family when the spec is exactly one (unless `as_remote`), else with archc's modeling file."""
    from archc.hf.match import match_family

    causal_lm = model.head_loss == "lm" and model.causal and len(model.input_names) == 1
    match, why = (None, "asked for (--remote)") if as_remote or (not causal_lm and model.causal) \
        else match_family(model.canonical_graph)
    if match is None and not causal_lm:
        raise HFImportError(f"{model.graph.name} is not a causal language model, and not a family export-hf "
                            f"writes as itself ({why}); export-hf writes other specs as AutoModelForCausalLM "
                            "folders", "export specs that end in lm_head with causal mixers, or a BERT encoder")
    with output_folder(out, EXPORTED_HF, force) as txn:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        if match is not None:
            config, tensors = match.config, match.to_hf(state)
        else:
            config = _remote_config(model, spec_text, spec_name)
            tensors = {f"model.{k}": v for k, v in state.items()}
            write_text(txn.stage / CONFIG_FILE, CONFIGURATION)
            write_text(txn.stage / MODELING_FILE, MODELING)
        dtypes = {t.dtype for t in tensors.values()}
        config.pop("torch_dtype", None)
        config["dtype"] = str(next(iter(dtypes))).removeprefix("torch.") if len(dtypes) == 1 else "float32"
        # archc's vocabularies have no special ids of their own: none, unless a tokenizer names its
        # end token (a family's defaults, as Phi-3's 32000, may lie outside the vocabulary)
        config.update(bos_token_id=None, eos_token_id=None, pad_token_id=None)
        if tokenizer is not None and write_tokenizer_files(tokenizer, txn.stage):
            config.update(eos_token_id=tokenizer.eos_id, bos_token_id=tokenizer.eos_id)
        _save(tensors, txn.stage / WEIGHTS)
        write_text(txn.stage / "config.json", json.dumps(config, indent=2) + "\n")
    return ExportedHF(Path(out), config["model_type"], len(tensors), None if match is not None else why,
                      AUTO_CLASS.get(config["architectures"][0], "AutoModelForCausalLM"))


#: the Auto class of the architectures that are not causal LMs
AUTO_CLASS = {"BertForMaskedLM": "AutoModelForMaskedLM",
              "BertForSequenceClassification": "AutoModelForSequenceClassification"}


def _remote_config(model: Any, spec_text: str, spec_name: str) -> dict[str, Any]:
    from archc.passes.facts import count_role

    embed = next((n for n in model.graph.walk() if n.op == "embed"), None)
    return {"architectures": [ARCHITECTURE], "auto_map": dict(AUTO_MAP), "model_type": MODEL_TYPE,
            "archc_spec": spec_text, "archc_spec_name": spec_name, "vocab_size": model.out_type_vocab(),
            "hidden_size": int(embed.type.width) if embed is not None else 0,
            "num_hidden_layers": count_role(model.graph, "mixer"), "tie_word_embeddings": False}


def _save(tensors: dict[str, Any], path: Path) -> None:
    """safetensors under transformers' names: a tensor shared by two names (tied) is stored once
    per name, each its own copy, as `save_file` requires."""
    from safetensors.torch import save_file

    seen: set[int] = set()
    out = {}
    for k, t in tensors.items():
        ptr = t.untyped_storage().data_ptr()
        out[k] = t.clone() if ptr in seen or t.untyped_storage().nbytes() != t.numel() * t.element_size() else t
        seen.add(ptr)
    save_file(out, str(path), metadata={"format": "pt"})
