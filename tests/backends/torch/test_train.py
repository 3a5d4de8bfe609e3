"""The training loop and the synthetic tasks."""

from __future__ import annotations

import pytest
import torch

from archc.backends.torch import build
from archc.backends.torch.checkpoint import load_weights
from archc.backends.torch.tasks import BLANK, IGNORE, QUERY, SEP, make_task
from archc.backends.torch.train import TrainConfig, config_from_section, lr_at, train
from tests.conftest import tiny_lm_spec

TINY = tiny_lm_spec(vocab=300)


@pytest.fixture
def model():
    import archc

    return build(archc.loads(TINY, "t.arch").graph, seed=0)


@pytest.mark.parametrize("name", ["copy", "selective_copy", "mqar", "induction", "induction_heads", "facts", "chars"])
def test_tasks_are_deterministic_and_well_formed(name):
    task = make_task(name, 300)
    a = task.batch(4, 64, torch.Generator().manual_seed(0))
    b = task.batch(4, 64, torch.Generator().manual_seed(0))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    ids, labels = a
    assert ids.shape == labels.shape == (4, 64)
    assert int(ids.max()) < task.vocab
    scored = labels != IGNORE
    assert scored.any()
    assert torch.equal(labels[scored], ids[scored])  # labels sit at the predicted token's position


def test_induction_heads_asks_for_what_followed_the_marker():
    ids, labels = make_task("induction_heads", 16).batch(64, 40, torch.Generator().manual_seed(3))
    assert (labels[:, :-1] == IGNORE).all() and (ids[:, -2] == QUERY).all()
    for row in range(64):
        first = int((ids[row, :-2] == QUERY).nonzero()[0, 0])
        assert (ids[row, :-2] == QUERY).sum() == 1 and int(ids[row, first + 1]) == int(labels[row, -1])


def test_facts_puts_the_retrieved_fact_before_the_question():
    """BM25's best passage for (entity, relation) is the asked fact: its value is the answer; a
    closed-book question has no context."""
    ids, labels = make_task("facts", 64, passages=2).batch(16, 12, torch.Generator().manual_seed(4))
    assert (ids[:, 3] == SEP).all() and (ids[:, 10] == QUERY).all()
    assert torch.equal(ids[:, :2], ids[:, 8:10]) and torch.equal(ids[:, 2], labels[:, 11])
    ids, labels = make_task("facts", 64, passages=0).batch(4, 4, torch.Generator().manual_seed(4))
    assert (ids[:, 2] == QUERY).all() and torch.equal(ids[:, 3], labels[:, 3])


def test_retrieval_beats_the_same_model_without_it():
    """The facts task's corpus is new for every question, so only the retrieved passage can tell
    the value: with one passage in context a 2-layer attention model answers, closed book it
    stays at chance (1/37 values)."""
    import archc

    spec = tiny_lm_spec(vocab=64, d=64, heads=4, hidden=128)
    scores = {}
    for passages, seq in ((1, 8), (0, 4)):
        model = build(archc.loads(spec, "t.arch").graph, seed=0)
        task = make_task("facts", 64, passages=passages)
        train(model, task, TrainConfig(steps=150, batch=32, seq=seq, lr=3e-3, warmup=15), progress=False)
        ids, labels = task.batch(256, seq, torch.Generator().manual_seed(99))
        with torch.no_grad():
            pred = model(ids).logits[:, :-1].argmax(-1)
        scored = labels[:, 1:] != IGNORE
        scores[passages] = float((pred[scored] == labels[:, 1:][scored]).float().mean())
    assert scores[1] > 0.9 and scores[0] < 0.15, scores


def test_copy_and_mqar_targets_are_recoverable_from_context():
    ids, labels = make_task("copy", 64).batch(2, 21, torch.Generator().manual_seed(1))
    assert torch.equal(ids[:, 11:21], ids[:, :10]) and (ids[:, 10] == SEP).all()
    ids, labels = make_task("mqar", 64).batch(2, 32, torch.Generator().manual_seed(2))
    for row in range(2):
        pairs = dict(zip(ids[row, 0:16:2].tolist(), ids[row, 1:16:2].tolist(), strict=True))
        for j in range(17, 32, 2):
            assert pairs[int(ids[row, j - 1])] == int(labels[row, j])


def test_mqar_with_fewer_pairs_puts_the_queries_among_blanks():
    """Zoology's layout: 4 pairs up front, each key asked once in a two-token slot of the rest,
    the other slots blank and unscored."""
    ids, labels = make_task("mqar", 64, pairs=4).batch(8, 64, torch.Generator().manual_seed(5))
    for row in range(8):
        pairs = dict(zip(ids[row, 0:8:2].tolist(), ids[row, 1:8:2].tolist(), strict=True))
        scored = (labels[row] != IGNORE).nonzero()[:, 0]
        assert len(scored) == 4 and (scored >= 9).all() and (scored % 2 == 1).all()
        assert sorted(int(ids[row, j - 1]) for j in scored) == sorted(pairs)
        assert all(pairs[int(ids[row, j - 1])] == int(labels[row, j]) for j in scored)
        assert int((ids[row, 8:] != BLANK).sum()) == 8
    with pytest.raises(ValueError, match="pairs"):
        make_task("mqar", 64, pairs=20).batch(1, 64, torch.Generator())
    with pytest.raises(ValueError, match="mqar"):
        make_task("copy", 64, pairs=4)


def test_schedule_warmup_and_cosine():
    cfg = TrainConfig(steps=100, warmup=10, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(55, cfg) == pytest.approx(0.55) and lr_at(100, cfg) == pytest.approx(0.1)


def test_train_section_becomes_config():
    import archc

    section = archc.load("specs/llama-tiny.arch").graph.sections["train"]
    cfg = config_from_section(section, steps=7)
    assert (cfg.lr, cfg.weight_decay, cfg.warmup, cfg.batch, cfg.seq, cfg.steps) == (3e-4, 0.1, 100, 16, 256, 7)


def test_training_learns_induction(model):
    res = train(model, make_task("induction", 300, 16), TrainConfig(steps=60, batch=16, seq=32, lr=3e-3, warmup=5),
                progress=False)
    assert sum(res.losses[-5:]) / 5 < 0.5 * sum(res.losses[:5]) / 5


def test_resume_continues_exactly(tmp_path, model):
    import archc

    task = make_task("copy", 300, 16)
    cfg = TrainConfig(steps=6, batch=4, seq=16, lr=1e-3, warmup=2, save_every=3)
    whole = build(archc.loads(TINY, "t.arch").graph, seed=0)
    train(whole, task, cfg, out_dir=tmp_path / "a", progress=False)
    half = build(archc.loads(TINY, "t.arch").graph, seed=0)
    train(half, task, TrainConfig(**{**cfg.__dict__, "steps": 3}), out_dir=tmp_path / "b", progress=False)
    resumed = build(archc.loads(TINY, "t.arch").graph, seed=5)  # weights come from the checkpoint
    res = train(resumed, task, cfg, out_dir=tmp_path / "b", resume=True, progress=False)
    assert len(res.losses) == 6
    for (n, p), q in zip(whole.named_parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5, msg=n)
    assert (tmp_path / "b" / "loss.png").stat().st_size > 1000


def test_a_run_resumes_only_under_the_pipeline_that_wrote_it(tmp_path):
    """Adam's moments follow the build's parameters (packed at O1), so a resume under another
    pipeline is refused, naming the pipeline to pass; the weights
    themselves (canonical) load into any build."""
    import archc
    from archc.backends.torch.checkpoint import CheckpointError

    graph = archc.loads(TINY, "t.arch").graph
    cfg = TrainConfig(steps=2, batch=2, seq=8, lr=1e-3, warmup=1)
    train(build(graph, seed=0, pipeline="O1"), make_task("copy", 300, 16), cfg, out_dir=tmp_path, progress=False)
    plain = build(graph, seed=1, pipeline="O0")
    with pytest.raises(CheckpointError, match=r"built at O1.*resume with --pipeline O1"):
        train(plain, make_task("copy", 300, 16), TrainConfig(**{**cfg.__dict__, "steps": 3}), out_dir=tmp_path,
              resume=True, progress=False)
    assert load_weights(plain, tmp_path / "last.safetensors")["pipeline"] == "O1"


def test_accumulation_and_checkpointing_give_the_same_gradients(model):
    ids = torch.randint(0, 300, (4, 16))
    model.zero_grad()
    model(ids, labels=ids).loss.backward()
    ref = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.gradient_checkpointing = True
    for half in (ids[:2], ids[2:]):
        (model(half, labels=half).loss / 2).backward()
    model.gradient_checkpointing = False
    for p, r in zip(model.parameters(), ref, strict=True):
        torch.testing.assert_close(p.grad, r, atol=1e-6, rtol=1e-4)


def test_bf16_autocast_trains(model):
    res = train(model, make_task("copy", 300, 16), TrainConfig(steps=3, batch=2, seq=16, bf16=True), progress=False)
    assert all(torch.isfinite(torch.tensor(res.losses)))


def test_weights_round_trip_and_mismatch(tmp_path, model):
    from archc.backends.torch.checkpoint import save_weights

    save_weights(model, tmp_path / "w.safetensors", {"spec": "t"})
    other = build("specs/llama-tiny.arch", seed=1)
    with pytest.raises(ValueError, match="does not match"):
        load_weights(other, tmp_path / "w.safetensors")
    import archc

    again = build(archc.loads(TINY, "t.arch").graph, seed=9)
    assert load_weights(again, tmp_path / "w.safetensors")["spec"] == "t"
    for p, q in zip(model.parameters(), again.parameters(), strict=True):
        assert torch.equal(p, q)


def test_distillation_loss_is_the_tempered_kl_over_scored_positions():
    """Hinton et al.'s soft loss, T²·Σ p_T (log p_T − log q_T), written out by hand: over the
    positions a causal model is scored on (the last position predicts nothing; ignored labels)."""
    from archc.backends.torch.train import distillation_loss

    gen = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 5, 7, generator=gen), torch.randn(2, 5, 7, generator=gen)
    labels = torch.randint(0, 7, (2, 5), generator=gen)
    labels[1, 3] = -100
    temp = 2.5
    kl, n = 0.0, 0
    for b in range(2):
        for i in range(4):  # causal: position i predicts labels[i + 1]
            if labels[b, i + 1] == -100:
                continue
            p = torch.softmax(t[b, i] / temp, -1)
            q = torch.softmax(s[b, i] / temp, -1)
            kl += float((p * (p.log() - q.log())).sum())
            n += 1
    assert float(distillation_loss(s, t, labels, True, temp)) == pytest.approx(temp ** 2 * kl / n, rel=1e-5)
    assert float(distillation_loss(t, t, labels, True, temp)) == pytest.approx(0.0, abs=1e-6)


def test_distillation_pulls_the_student_towards_the_teacher():
    """A few steps of pure distillation (alpha 1) lower the KL between a fresh student and a
    teacher of another architecture (attention into Mamba), in the ordinary training loop."""
    from archc.backends.torch.tasks import make_task
    from archc.backends.torch.train import Distill, TrainConfig, distillation_loss, train
    from archc.frontend import loads

    teacher = build(loads("model t(tokens) {\n  x = embed(tokens, 300, 32)\n  x = x + attention(rmsnorm(x), heads=2, "
                          "causal=true)\n  return lm_head(rmsnorm(x))\n}\n", "t.arch").graph, seed=1).eval()
    student = build(loads("model s(tokens) {\n  x = embed(tokens, 300, 32)\n  x = x + mamba(rmsnorm(x), d_state=4)\n"
                          "  return lm_head(rmsnorm(x))\n}\n", "s.arch").graph, seed=2)
    ids = make_task("chars", 300).batch(4, 32, torch.Generator().manual_seed(9))[0]

    def kl() -> float:
        with torch.no_grad():
            return float(distillation_loss(student(ids).logits, teacher(ids).logits, ids, True, 1.0))

    before = kl()
    train(student, make_task("chars", 300), TrainConfig(steps=30, batch=4, seq=32, lr=3e-3, warmup=1), progress=False,
          distill=Distill(teacher, temperature=1.0, alpha=1.0))
    assert kl() < 0.5 * before
