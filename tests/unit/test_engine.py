import math

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from orchestrator import engine
from orchestrator.config import MLPConfig, OptimConfig
from orchestrator.models import build_model

CPU = torch.device("cpu")


def _data(n=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long() + (x[:, 2] > 1).long()
    return x, y


def _model(seed=0):
    torch.manual_seed(seed)
    return build_model(MLPConfig(name="mlp", hidden_sizes=[32], dropout=0.0), (8,), 3)


def test_lr_schedule_warmup_cosine_step_constant():
    cos = OptimConfig(lr=1.0, warmup_epochs=2, schedule="cosine", min_lr_ratio=0.1)
    assert engine.lr_at(1, cos, 10) == 0.5 and engine.lr_at(2, cos, 10) == 1.0
    assert math.isclose(engine.lr_at(6, cos, 10), 0.55) and math.isclose(engine.lr_at(10, cos, 10), 0.1)
    step = OptimConfig(lr=1.0, schedule="step", step_size_epochs=3, gamma=0.5)
    assert [engine.lr_at(e, step, 10) for e in (0, 2.9, 3, 6)] == [1.0, 1.0, 0.5, 0.25]
    assert engine.lr_at(7, OptimConfig(lr=0.3, schedule="constant"), 10) == 0.3


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop"])
def test_every_optimizer_trains_and_decays_only_weights(name):
    cfg = OptimConfig(name=name, lr=0.01 if name != "sgd" else 0.1, weight_decay=0.01, schedule="constant")
    model = _model()
    opt = engine.make_optimizer(model, cfg)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]
    assert all(p.ndim >= 2 for p in opt.param_groups[0]["params"]) and all(p.ndim == 1 for p in opt.param_groups[1]["params"])
    x, y = _data()
    first = engine.train_epoch(model, engine.batches_from_tensors(x, y, 32), opt, cfg, 0, 5, 16, CPU)
    for epoch in range(1, 5):
        last = engine.train_epoch(model, engine.batches_from_tensors(x, y, 32), opt, cfg, epoch, 5, 16, CPU)
    assert last["loss"] < 0.6 * first["loss"] and last["num_samples"] == 512


def test_gradient_accumulation_equals_the_big_batch():
    x, y = _data(64)
    plain = OptimConfig(name="sgd", lr=0.1, momentum=0.0, schedule="constant")
    accum = plain.model_copy(update={"grad_accum_steps": 4})
    a, b = _model(), _model()
    engine.train_epoch(a, engine.batches_from_tensors(x, y, 64), engine.make_optimizer(a, plain), plain, 0, 1, 1, CPU)
    engine.train_epoch(b, engine.batches_from_tensors(x, y, 16), engine.make_optimizer(b, accum), accum, 0, 1, 4, CPU)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


def test_l1_shrinks_weights_and_clipping_bounds_the_step():
    x, y = _data()
    l1 = OptimConfig(name="sgd", lr=0.05, momentum=0.0, l1=0.01, schedule="constant")
    a, b = _model(), _model()
    for m, cfg in ((a, l1), (b, l1.model_copy(update={"l1": 0.0}))):
        opt = engine.make_optimizer(m, cfg)
        for e in range(3):
            engine.train_epoch(m, engine.batches_from_tensors(x, y, 32), opt, cfg, e, 3, 16, CPU)
    assert engine.l1_penalty(a) < 0.9 * engine.l1_penalty(b)

    clip = OptimConfig(name="sgd", lr=1.0, momentum=0.0, grad_clip_norm=1e-3, schedule="constant")
    m = _model()
    before = [p.detach().clone() for p in m.parameters()]
    engine.train_epoch(m, iter([(x * 100, y)]), engine.make_optimizer(m, clip), clip, 0, 1, 1, CPU)
    moved = torch.sqrt(sum(((p - q) ** 2).sum() for p, q in zip(m.parameters(), before)))
    assert moved <= 1e-3 + 1e-6


def test_metrics_match_scikit_learn():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 4, 300)
    y_pred = np.where(rng.random(300) < 0.7, y_true, rng.integers(0, 4, 300))
    cm = torch.zeros(4, 4, dtype=torch.int64)
    for t, p in zip(y_true, y_pred):
        cm[t, p] += 1
    m = engine.metrics_from_stats({"confusion": cm, "loss_sum": torch.tensor(30.0)}, prefix="val_")
    assert math.isclose(m["val_accuracy"], accuracy_score(y_true, y_pred))
    assert math.isclose(m["val_precision"], precision_score(y_true, y_pred, average="macro"))
    assert math.isclose(m["val_recall"], recall_score(y_true, y_pred, average="macro"))
    assert math.isclose(m["val_f1"], f1_score(y_true, y_pred, average="macro"))
    assert math.isclose(m["val_loss"], 0.1)


def test_evaluate_counts_every_sample_once():
    x, y = _data(100)
    stats = engine.evaluate(_model(), engine.batches_from_tensors(x, y, 7), 3, CPU)
    assert stats["confusion"].sum() == 100 and torch.equal(stats["confusion"].sum(1), torch.bincount(y, minlength=3))


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_workers_share_a_split_equally_and_disjointly(world):
    x = np.arange(103, dtype=np.float32)[:, None].repeat(3, axis=1)
    x.flags.writeable = False  # as it comes from the object store
    shares = [engine.worker_share(x, np.arange(103), rank, world) for rank in range(world)]
    assert len({len(ys) for _, ys in shares}) == 1  # the same number of batches on every worker
    rows = np.concatenate([ys.numpy() for _, ys in shares])
    assert len(set(rows)) == len(rows) >= 103 - world + 1  # every row once, but the remainder under world
    for xs, ys in shares:
        assert torch.equal(xs[:, 0], ys.float())  # features stay with their labels


def test_shuffling_is_seeded():
    x, y = _data(50)
    order = lambda seed: torch.cat([b[1] for b in engine.batches_from_tensors(x, y, 8, torch.Generator().manual_seed(seed))])  # noqa: E731
    assert torch.equal(order(1), order(1)) and not torch.equal(order(1), order(2))


def test_resumed_optimizer_keeps_its_moments_but_takes_the_configs_hyperparameters():
    from orchestrator.loop import _load_optimizer_state

    model = build_model(MLPConfig(name="mlp", hidden_sizes=[8]), [4], 3)
    before = engine.make_optimizer(model, OptimConfig(name="sgd", lr=0.1, momentum=0.9, weight_decay=1e-3))
    model(torch.ones(2, 4)).sum().backward()
    before.step()
    # a resumed run (or a PBT clone) with other values: they win; the momentum buffers carry over
    after = engine.make_optimizer(model, OptimConfig(name="sgd", lr=0.01, momentum=0.5, weight_decay=1e-4))
    _load_optimizer_state(after, before.state_dict())
    assert [(g["momentum"], g["weight_decay"]) for g in after.param_groups] == [(0.5, 1e-4), (0.5, 0.0)]
    buffers = [after.state[p]["momentum_buffer"] for g in after.param_groups for p in g["params"]]
    assert len(buffers) == len(list(model.parameters())) and all(b.abs().sum() > 0 for b in buffers)


def test_balanced_class_weights_make_a_rare_class_count_as_much_as_a_common_one():
    assert engine.balanced_class_weights([90, 10]).tolist() == pytest.approx([100 / 180, 100 / 20])
    assert engine.balanced_class_weights([5, 0, 5]).tolist() == [1.0, 0.0, 1.0]  # a class never seen: no weight
    # 1 row in 20 of class 1, which the features separate only in part: unweighted, the model learns to answer
    # the common class; weighted, it finds most of the rare one
    g = torch.Generator().manual_seed(0)
    y = (torch.rand(2000, generator=g) < 0.05).long()
    x = torch.randn(2000, 8, generator=g) + y[:, None] * torch.tensor([1.5, 1.0] + [0.0] * 6)
    cfg = OptimConfig(name="adam", lr=0.01, schedule="constant")
    recalls = []
    for weight in (None, engine.balanced_class_weights(torch.bincount(y, minlength=3).tolist())):  # 3 outputs
        model = _model()
        opt = engine.make_optimizer(model, cfg)
        for epoch in range(5):
            engine.train_epoch(model, engine.batches_from_tensors(x, y, 64), opt, cfg, epoch, 5, 32, CPU,
                               class_weight=weight)
        with torch.no_grad():
            predicted = model.eval()(x).argmax(1)
        recalls.append(float((predicted[y == 1] == 1).float().mean()))
    assert recalls[1] > 0.7 and recalls[1] > recalls[0] + 0.4, recalls  # here 0.90 against 0.29
