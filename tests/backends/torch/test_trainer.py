"""transformers' `Trainer` trains an archc model as it trains its own (part 5 of the Hugging
Face issue): the forward's keyword arguments, the loss at `outputs[0]`, `num_items_in_batch` under
gradient accumulation, `num_parameters(exclude_embeddings=True)` for its FLOP count."""

from __future__ import annotations

import pytest
import torch

import archc
from archc.backends.torch import build
from tests.conftest import tiny_lm_spec

pytest.importorskip("transformers")
pytest.importorskip("accelerate")


class _Counting(torch.utils.data.Dataset):
    """Counting from a random start (mod 29): the next token is a function of the current one."""

    def __init__(self) -> None:
        start = torch.randint(0, 29, (64, 1), generator=torch.Generator().manual_seed(0))
        self.ids = (start + torch.arange(16)) % 29 + 3

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]), "labels": self.ids[i]}


def test_transformers_trainer_trains_an_archc_model(tmp_path):
    from transformers import Trainer, TrainingArguments

    model = build(archc.loads(tiny_lm_spec(vocab=32), "t.arch").graph, seed=0)
    args = TrainingArguments(str(tmp_path), per_device_train_batch_size=4, gradient_accumulation_steps=2,
                             max_steps=40, learning_rate=1e-2, logging_steps=5, report_to=[], save_strategy="no",
                             use_cpu=True, disable_tqdm=True, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=_Counting())
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 8 and losses[-1] < 0.5 * losses[0]
    assert trainer.state.total_flos > 0


def test_num_items_in_batch_sums_the_loss_over_the_accumulated_tokens():
    model = build(archc.loads(tiny_lm_spec(vocab=32), "t.arch").graph, seed=0)
    ids = torch.randint(0, 32, (2, 9), generator=torch.Generator().manual_seed(1))
    mean = model(ids, labels=ids).loss
    scored = 2 * 8  # the last position of each row predicts nothing
    summed = model(ids, labels=ids, num_items_in_batch=40).loss
    torch.testing.assert_close(summed, mean * scored / 40)
    emb = model.get_submodule(next(n for n, m in model.op_modules() if m.__class__.__name__.lower().startswith("embed")))
    assert model.num_parameters(exclude_embeddings=True) == model.num_parameters() - sum(p.numel() for p in emb.parameters())
