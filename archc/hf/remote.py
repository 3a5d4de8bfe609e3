"""The two Python files `archc export-hf` writes beside a spec that is no Hugging Face family (a
new hybrid): with them, `AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)`
builds the spec with archc and loads its weights, and `Trainer`, PEFT and `generate` work on it.

They are templates, not code run here: the spec travels in `config.json` (`archc_spec`), the
weights in `model.safetensors` under `model.` + archc's own names. The model needs archc (with
its torch extra) where it is loaded. `generate` recomputes the whole sequence each step (the
model declares no transformers cache; archc's own cached decoding is `archc generate` and the
ONNX export); its inputs are therefore never cut to the last token.
"""

from __future__ import annotations

MODEL_TYPE = "archc"
CONFIG_FILE = "configuration_archc.py"
MODELING_FILE = "modeling_archc.py"
AUTO_MAP = {"AutoConfig": "configuration_archc.ArchcConfig",
            "AutoModelForCausalLM": "modeling_archc.ArchcForCausalLM"}
ARCHITECTURE = "ArchcForCausalLM"

CONFIGURATION = '''"""The configuration of an archc spec as a transformers model (written by `archc export-hf`)."""

from transformers import PretrainedConfig


class ArchcConfig(PretrainedConfig):
    """The spec's text (`archc_spec`) is the model; the sizes are copied out of it for tools that
    read them (the vocabulary, the width, the layers)."""

    model_type = "archc"

    def __init__(self, archc_spec: str = "", archc_spec_name: str = "model.arch", vocab_size: int = 0,
                 hidden_size: int = 0, num_hidden_layers: int = 0, **kwargs):
        self.archc_spec = archc_spec
        self.archc_spec_name = archc_spec_name
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        kwargs.setdefault("tie_word_embeddings", False)  # archc ties inside the spec (lm_head(tied=true))
        super().__init__(**kwargs)
'''

MODELING = '''"""An archc spec as a transformers causal LM (written by `archc export-hf`; needs archc:
pip install "archc[torch]")."""

import torch
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from .configuration_archc import ArchcConfig


class ArchcForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = ArchcConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = False

    def __init__(self, config: ArchcConfig):
        super().__init__(config)
        import archc
        from archc.backends.torch import build

        # O0: the parameters are the checkpoint's tensors one for one (fused builds pack some);
        # on the meta device when transformers builds the model before loading the weights
        meta = torch.empty(0).device.type == "meta"
        graph = archc.loads(config.archc_spec, config.archc_spec_name).graph
        self.model = build(graph, seed=0, device="meta" if meta else "cpu", pipeline="O0")
        self.post_init()

    def _init_weights(self, module):
        """archc initializes its own ops (docs/ops.md); a checkpoint replaces every weight."""

    def get_input_embeddings(self):
        """The spec's token embedding (archc's `embed` op: its table is `.weight`, as nn.Embedding's)."""
        return self.model.get_submodule(next(n.id for n in self.model.graph.walk() if n.op == "embed"))

    def forward(self, input_ids=None, attention_mask=None, labels=None, num_items_in_batch=None, **kwargs):
        out = self.model(input_ids, attention_mask=attention_mask, labels=labels,
                         num_items_in_batch=num_items_in_batch)
        return CausalLMOutput(loss=out.loss, logits=out.logits)

    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, **kwargs):
        """The whole sequence every step: this model keeps no transformers cache."""
        return {"input_ids": input_ids, "attention_mask": attention_mask}
'''
