"""The shared training loop (sidflow.train.loop) and the one class-balanced sampler."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sidflow.thresholds import calibrate_threshold
from sidflow.train.common import balanced_epoch, balanced_resample, balanced_subset
from sidflow.train.loop import (
    THRESHOLD_SOURCE,
    Checkpoint,
    LoopState,
    card_fields,
    fit,
    train_one_epoch,
)

VAL_Y = np.array([0, 0, 1, 1])


def _scores(ap_rank: int) -> np.ndarray:
    """Validation scores whose AP grows with ``ap_rank`` (0..3)."""
    return [
        np.array([0.9, 0.8, 0.2, 0.1]),  # all fakes ranked last
        np.array([0.9, 0.2, 0.8, 0.1]),
        np.array([0.1, 0.9, 0.8, 0.2]),
        np.array([0.1, 0.2, 0.8, 0.9]),  # perfect
    ][ap_rank]


class Scripted:
    """A trainee whose validation AP follows a script; its weight is the epoch number."""

    name = "scripted"

    def __init__(self, ranks):
        self.model, self.ranks, self.epoch = torch.nn.Linear(1, 1), ranks, -1

    def train_epoch(self, epoch):
        self.epoch = epoch
        with torch.no_grad():
            self.model.weight.fill_(epoch + 1)
        return {"loss": 1.0 / (epoch + 1)}

    def predict_val(self):
        return {"p_fake": _scores(self.ranks[self.epoch])}

    def val_columns(self, preds):
        return {"n_val": len(preds["p_fake"])}


def test_best_epoch_is_kept_and_loaded():
    task = Scripted([0, 2, 1, 3, 1])
    state = fit(task, LoopState(), epochs=5, val_labels=VAL_Y)
    assert state.epoch == 5 and [h["epoch"] for h in state.history] == [1, 2, 3, 4, 5]
    assert state.best_epoch == 4 and state.best_ap == 1.0
    assert state.best_ap == max(h["val_ap"] for h in state.history)
    assert task.model.weight.item() == 4.0  # the best epoch's weights, not the last
    assert state.p_val == _scores(3).tolist()
    assert list(state.history[0]) == ["epoch", "loss", "val_ap", "n_val"]
    card = card_fields(state, VAL_Y, train_images=10)
    assert card["threshold"] == calibrate_threshold(VAL_Y, _scores(3))
    assert card["threshold_source"] == THRESHOLD_SOURCE
    assert (card["best_epoch"], card["val_ap"], card["train_images"]) == (4, 1.0, 10)
    assert card["history"] is state.history


def test_early_stopping_after_patience_epochs_without_improvement():
    task = Scripted([1, 2, 0, 1, 3, 3])
    state = fit(task, LoopState(), epochs=6, val_labels=VAL_Y, patience=2)
    assert len(state.history) == 4 and state.best_epoch == 2  # epochs 3 and 4 were no better
    assert task.model.weight.item() == 2.0
    ties = fit(Scripted([2, 2, 2, 2]), LoopState(), epochs=4, val_labels=VAL_Y, patience=3)
    assert len(ties.history) == 4 and ties.best_epoch == 1  # an equal AP is no improvement
    full = fit(Scripted([1, 2, 0, 1, 3, 3]), LoopState(), epochs=6, val_labels=VAL_Y)
    assert len(full.history) == 6 and full.best_epoch == 5  # patience 0: every epoch


class Tiny:
    """A real trainee: dropout (torch RNG never reseeded) + Adam, balanced epochs."""

    name = "tiny"

    def __init__(self):
        torch.manual_seed(0)
        rng = np.random.default_rng(0)
        self.y = np.array([0] * 30 + [1] * 10)
        self.x = torch.from_numpy((rng.normal(size=(40, 3)) + self.y[:, None]).astype(np.float32))
        self.model = torch.nn.Sequential(torch.nn.Dropout(0.3), torch.nn.Linear(3, 1))
        self.opt = torch.optim.Adam(self.model.parameters(), lr=0.05)

    def _step(self, idx):
        logit = self.model(self.x[idx])[:, 0]
        y = torch.from_numpy(self.y[idx]).float()
        return {"loss": torch.nn.functional.binary_cross_entropy_with_logits(logit, y)}

    def train_epoch(self, epoch):
        order = balanced_epoch(self.y, 1, epoch)
        batches = ((order[lo : lo + 8], len(order[lo : lo + 8])) for lo in range(0, len(order), 8))
        sums, n = train_one_epoch(self.model, self._step, batches, self.opt)
        return {"loss": sums["loss"] / n}

    def predict_val(self):
        self.model.eval()
        with torch.no_grad():
            return {"p_fake": torch.sigmoid(self.model(self.x[::2])[:, 0]).numpy()}

    def val_columns(self, preds):
        return {}


class Killed(Exception):
    pass


def _run(ckpt_dir, stop_after=None):
    task = Tiny()
    ckpt = Checkpoint(ckpt_dir, {"model": task.model}, {"optimizer": task.opt})
    state = ckpt.resume(LoopState(fingerprint="run-a"))

    def hook(epoch):
        if epoch == stop_after:
            raise Killed

    state = fit(task, state, epochs=5, val_labels=task.y[::2], checkpoint=ckpt, on_epoch_end=hook)
    return task, state


def test_state_round_trips_through_the_checkpoint(tmp_path):
    full_task, full = _run(tmp_path / "full")
    with pytest.raises(Killed):
        _run(tmp_path / "ckpt", stop_after=2)
    saved = json.loads((tmp_path / "ckpt" / "state.json").read_text())
    assert saved["epoch"] == 2 and saved["fingerprint"] == "run-a"
    task = Tiny()
    ckpt = Checkpoint(tmp_path / "ckpt", {"model": task.model}, {"optimizer": task.opt})
    back = ckpt.resume(LoopState(fingerprint="run-a"))
    assert back.to_json() == saved and back.best_state is not None
    assert set(back.best_state) == set(task.model.state_dict())
    other = Checkpoint(tmp_path / "ckpt", {"model": Tiny().model}, {}).resume(
        LoopState(fingerprint="b")
    )
    assert other.epoch == 0 and other.history == []  # another run's checkpoint is ignored
    resumed_task, resumed = _run(tmp_path / "ckpt")  # resumes after epoch 2
    assert resumed.to_json() == full.to_json()  # history, best epoch, p_val: bit for bit
    for k, v in full_task.model.state_dict().items():
        assert torch.equal(v, resumed_task.model.state_dict()[k])
    Checkpoint(tmp_path / "ckpt", {}, {}, write=False).remove()
    assert (tmp_path / "ckpt").exists()  # only the writer (rank 0) removes it
    Checkpoint(tmp_path / "ckpt", {}, {}).remove()
    assert not (tmp_path / "ckpt").exists()


def test_one_balanced_sampler_depends_only_on_seed_and_epoch():
    labels = np.array([0] * 23 + [1] * 7)
    a = balanced_epoch(labels, 4, 2)
    np.random.seed(99)  # the global generators play no part
    torch.manual_seed(99)
    np.random.random(5)
    b = balanced_epoch(labels, 4, 2)
    assert np.array_equal(a, b) and len(a) == 30
    assert (labels[a] == 0).sum() == (labels[a] == 1).sum() == 15
    assert not np.array_equal(a, balanced_epoch(labels, 4, 3))
    assert not np.array_equal(a, balanced_epoch(labels, 5, 2))
    r = balanced_resample(labels, 3)
    assert np.array_equal(r, balanced_resample(labels, 3)) and len(r) == 30
    assert (labels[r] == 1).sum() == 15
    idx = np.arange(2, 30)
    s = balanced_subset(idx, labels, 8, 0)
    assert np.array_equal(s, np.sort(s)) and (labels[s] == 1).sum() == (labels[s] == 0).sum() == 4
    assert set(s) <= set(idx) and np.array_equal(balanced_subset(idx, labels, 0, 0), idx)
    with pytest.raises(ValueError, match="both classes"):
        balanced_resample(np.ones(6, int), 0)


def test_progress_lines_report_step_speed_loss_and_eta(monkeypatch, caplog):
    import logging

    from sidflow.train import progress as progress_mod

    now = [100.0]
    monkeypatch.setattr(progress_mod, "_clock", lambda: now[0])
    p = progress_mod.Progress("student epoch 1", total_steps=4, every_s=30.0, bar=False)
    with caplog.at_level(logging.INFO, logger="sidflow.train.progress"):
        now[0] = 110.0
        p.update(images=64, loss=torch.tensor(0.5))  # 10 s: no line yet
        assert not caplog.records
        now[0] = 130.0
        p.update(images=64, loss=torch.tensor(0.25))  # 30 s after the start: one line
    assert [r.getMessage() for r in caplog.records] == [
        "student epoch 1: step 2/4, 4.3 img/s, loss 0.2500, ETA 00:00:30"
    ]
    assert p.line(160.0) == "student epoch 1: step 2/4, 2.1 img/s, loss 0.2500, ETA 00:01:00"


def test_train_one_epoch_sums_weighted_terms_and_feeds_progress():
    from sidflow.train.progress import Progress

    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.0)  # lr 0: every step sees the same weights
    x = torch.randn(10, 3)
    batches = [((x[:4],), 4), ((x[4:],), 6)]

    def step(batch):
        return {"loss": net(batch[0]).pow(2).mean()}

    p = Progress("t", total_steps=2, every_s=1e9, bar=False)
    sums, total = train_one_epoch(net, step, batches, opt, progress=p, images=lambda b: len(b[0]))
    with torch.no_grad():
        want = float(net(x[:4]).pow(2).mean()) * 4 + float(net(x[4:]).pow(2).mean()) * 6
    assert total == 10 and sums["loss"] == pytest.approx(want, rel=1e-12)
    assert (p.step, p.images) == (2, 10)
    assert float(p._loss) == pytest.approx(float(net(x[4:]).pow(2).mean()))  # the last step's


def test_elastic_threads_grow_into_idle_cores_and_give_them_back(monkeypatch):
    from sidflow import devices

    clock = {"busy": 0.0, "total": 0.0, "own": 0.0}
    monkeypatch.setattr(devices, "_cpu_times", lambda: (clock["busy"], clock["total"]))
    monkeypatch.setattr(devices.os, "times", lambda: (clock["own"], 0.0, 0, 0, 0))
    monkeypatch.setattr(devices.os, "getloadavg", lambda: (0.3, 0.3, 0.3))
    monkeypatch.setattr(devices.os, "sysconf", lambda name: 100)
    before = torch.get_num_threads()
    try:
        devices.set_threads(1, max_threads=64)
        elastic = devices._ELASTIC
        elastic.cores = 4
        # first call: no interval yet, the load average (0.3 busy cores) -> 4 - 0.3 free -> 4
        assert devices.adjust_threads() == 4 == torch.get_num_threads()
        # 10 s on 4 cores = 4000 jiffies; the machine was busy 3000 of them, 2000 of which were
        # this process (20 s of CPU) -> others kept 1 core busy -> 3 threads
        clock.update(busy=3000.0, total=4000.0, own=20.0)
        assert devices.adjust_threads() == 3
        # others now keep all 4 cores busy: back to the job's own thread, never below it
        clock.update(busy=7000.0, total=8000.0, own=20.0)
        assert devices.adjust_threads() == 1 == torch.get_num_threads()
        # max_threads caps the growth
        devices.set_threads(1, max_threads=2)
        devices._ELASTIC.cores = 4
        assert devices.adjust_threads() == 2
        # fixed threads (no max_threads): adjust leaves the count alone
        devices.set_threads(1)
        assert devices._ELASTIC is None and devices.adjust_threads() == 1
    finally:
        devices.set_threads(before)


def test_train_one_epoch_rereads_idle_cores_during_the_epoch(monkeypatch):
    """Elastic jobs adjust their threads at the start and every ADJUST_EVERY_S while training,
    not only between epochs (a long epoch that starts while other jobs run would stay small)."""
    from sidflow.train import loop

    calls = []
    monkeypatch.setattr(loop, "adjust_threads", lambda: calls.append(1) or 1)
    net = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    batches = [((torch.randn(2, 3),), 2)] * 5

    def step(batch):
        return {"loss": net(batch[0]).pow(2).mean()}

    monkeypatch.setattr(loop, "ADJUST_EVERY_S", 1e9)
    train_one_epoch(net, step, batches, opt)
    assert len(calls) == 1  # only at the start
    calls.clear()
    monkeypatch.setattr(loop, "ADJUST_EVERY_S", 0.0)
    train_one_epoch(net, step, batches, opt)
    assert len(calls) == 6  # the start and after each of the 5 steps
