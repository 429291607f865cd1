import pandas as pd
import pytest
import torch

from replearn.config.sections import config_from_dict
from replearn.data import load_dataset
from replearn.errors import TrainingDiverged, TrainingInterrupted
from replearn.encoders import build_encoder
from replearn.regimes import make_regime
from replearn.rundir.io import load_checkpoint
from replearn.experiment.experiment import build_head
from replearn.training import (Callback, Checkpoint, EpochProbe, MetricsCSV, SignalStop, Snapshots, Stopper, Trainer,
                               TrainSettings, epoch_order, evaluate, make_optimizer)

from helpers import tiny_config

TIMING = ("train_seconds", "train_images_per_s")


class StopAfter(Stopper):
    """A stopper that asks to stop once the loop has checked it ``steps`` times (as a SIGINT would)."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.left = steps

    @property
    def requested(self):
        self.left -= 1
        return "SIGINT" if self.left < 0 else None

    @requested.setter
    def requested(self, value):
        pass


def setup(cfg, regime, seed=0):
    data = load_dataset(cfg.data)
    enc = build_encoder(cfg.model, data.image_shape, seed)
    regime = make_regime(regime) if isinstance(regime, str) else regime
    return data, enc, build_head(regime, enc, data, seed)


def train_regime(regime, enc, head, data, cfg, tmp_path, tag, stopper=None, snapshot_images=None, extra=()):
    """The trainer with the callbacks a run gives it (checkpoint, metrics CSV, epoch probe, snapshots, stop)."""
    callbacks = [EpochProbe(cfg.train.probe_train_images), *([Snapshots(snapshot_images)] if snapshot_images is not None
                                                             else []),
                 MetricsCSV(tmp_path / f"{tag}.csv"), Checkpoint(tmp_path / f"{tag}.state.pt"), *extra,
                 *([SignalStop(stopper, str(tmp_path / f"{tag}.state.pt"))] if stopper is not None else [])]
    settings = TrainSettings.from_config(cfg.train, cfg.train.epochs)
    return Trainer(regime, enc, head, data, settings, seed=0, callbacks=callbacks).fit()


def run(cfg, regime, tmp_path, tag, stopper=None):
    regime = make_regime(regime)
    data, enc, head = setup(cfg, regime)
    out = train_regime(regime, enc, head, data, cfg, tmp_path, tag, stopper, data.test_x[:3])
    return out, enc, head, data


def metrics(path):
    return pd.read_csv(path).drop(columns=list(TIMING))


@pytest.mark.parametrize("regime", ["supervised", "autoencoder"])
def test_interrupted_then_resumed_equals_uninterrupted(blob_npz, tmp_path, regime):
    cfg = config_from_dict(tiny_config(blob_npz, epochs=3))
    full, enc_full, _, _ = run(cfg, regime, tmp_path, "full")
    with pytest.raises(TrainingInterrupted):
        run(cfg, regime, tmp_path, "cut", StopAfter(8))  # mid-epoch 2 (5 steps per epoch, then the end-of-epoch check)
    assert (tmp_path / "cut.state.pt").exists()
    saved = load_checkpoint(tmp_path / "cut.state.pt")  # weights only: the epoch probe's warm start is tensors
    assert saved["extras"]["epoch_probe"]["coef"].shape[1] == 3  # blobs: 3 classes; the warm start resumes too
    resumed, enc_resumed, _, _ = run(cfg, regime, tmp_path, "cut")
    assert resumed.resumed_from == {"epoch": 1, "step": 3}
    pd.testing.assert_frame_equal(metrics(tmp_path / "full.csv"), metrics(tmp_path / "cut.csv"))
    for a, b in zip(enc_full.state_dict().values(), enc_resumed.state_dict().values()):
        assert torch.equal(a, b)
    if regime == "autoencoder":
        assert torch.equal(torch.from_numpy(full.snapshots), torch.from_numpy(resumed.snapshots))


def test_training_learns_and_records_gradients(blob_npz, tmp_path):
    cfg = config_from_dict(tiny_config(blob_npz, epochs=6))
    sup = make_regime("supervised")
    data, enc, head = setup(cfg, sup)
    before = evaluate(sup, enc, head, data.val_x, data.val_y, torch.device("cpu"))
    train_regime(sup, enc, head, data, cfg, tmp_path, "m")
    after = evaluate(sup, enc, head, data.val_x, data.val_y, torch.device("cpu"))
    assert after["loss"] < before["loss"] and after["accuracy"] >= 0.9
    frame = pd.read_csv(tmp_path / "m.csv")
    grads = [c for c in frame if c.startswith("grad_norm_") and not c.startswith("grad_norm_max")]
    assert grads == ["grad_norm_stage1", "grad_norm_stage2", "grad_norm_latent", "grad_norm_head"]
    assert (frame[grads] > 0).all().all() and len(frame) == 6
    assert frame["val_latent_probe_accuracy"].iloc[-1] >= 0.8


def test_same_seed_same_metrics(blob_npz, tmp_path):
    cfg = config_from_dict(tiny_config(blob_npz))
    run(cfg, "autoencoder", tmp_path, "a")
    run(cfg, "autoencoder", tmp_path, "b")
    pd.testing.assert_frame_equal(metrics(tmp_path / "a.csv"), metrics(tmp_path / "b.csv"))


def test_divergence_names_epoch_step_and_layer(blob_npz, tmp_path):
    cfg = config_from_dict(tiny_config(blob_npz, optimizer="sgd", lr=9.0, schedule="constant"))
    sup = make_regime("supervised")
    data, enc, head = setup(cfg, sup)
    with pytest.raises(TrainingDiverged) as info:
        for _ in range(20):  # the huge learning rate blows up within a few steps
            train_regime(sup, enc, head, data, cfg, tmp_path, "d")
    line = info.value.one_line()
    assert "diverged at epoch" in line and "step" in line and "lower train.lr" in line
    assert "layer" in line or "loss became" in line


def test_epoch_order_is_a_pure_function():
    assert torch.equal(epoch_order(10, 1, 2), epoch_order(10, 1, 2))
    assert not torch.equal(epoch_order(10, 1, 2), epoch_order(10, 1, 3))
    assert sorted(epoch_order(10, 1, 2).tolist()) == list(range(10))


def test_schedule_warms_up_and_decays(tiny_cfg):
    params = [torch.nn.Parameter(torch.zeros(1))]
    opt, sched = make_optimizer(params, tiny_cfg.train, total_steps=100)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    peak = tiny_cfg.train.lr
    assert lrs[0] < peak and max(lrs) == pytest.approx(peak) and lrs[-1] < 0.01 * peak


class Recorder(Callback):
    """Records the hooks the trainer calls, in order, and adds a column to every epoch's row."""

    def __init__(self):
        self.calls = []

    def on_train_start(self, trainer):
        self.calls.append("start")

    def on_epoch_start(self, trainer):
        self.calls.append(f"epoch{trainer.state.epoch}")

    def on_step_end(self, trainer, loss):
        self.calls.append("step")

    def on_validation(self, trainer, row):
        row["my_column"] = trainer.state.epoch * 10.0

    def on_epoch_end(self, trainer, row):
        self.calls.append(f"end{len(trainer.state.history)}")

    def on_train_end(self, trainer):
        self.calls.append("finish")


def test_callbacks_see_every_hook_in_order_and_can_add_columns(blob_npz, tmp_path):
    cfg = config_from_dict(tiny_config(blob_npz, epochs=2))
    sup = make_regime("supervised")
    data, enc, head = setup(cfg, sup)
    recorder = Recorder()
    out = train_regime(sup, enc, head, data, cfg, tmp_path, "r", extra=[recorder])
    steps = -(-len(data.train_y) // cfg.train.batch_size)
    assert recorder.calls == ["start", "epoch0", *["step"] * steps, "end1", "epoch1", *["step"] * steps, "end2",
                              "finish"]
    assert [row["my_column"] for row in out.history] == [0.0, 10.0]
    assert list(pd.read_csv(tmp_path / "r.csv")["my_column"]) == [0.0, 10.0]


def test_trainer_runs_without_any_callback_and_writes_nothing(blob_npz, tmp_path, monkeypatch):
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    cfg = config_from_dict(tiny_config(blob_npz, epochs=1))
    sup = make_regime("supervised")
    data, enc, head = setup(cfg, sup)
    out = Trainer(sup, enc, head, data, TrainSettings(epochs=1, batch_size=16)).fit()
    assert len(out.history) == 1 and "val_accuracy" in out.history[0]
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_label_free_regimes_train_on_the_unlabelled_split_and_labelled_ones_never_see_it(blob_npz):
    import dataclasses

    from replearn.regimes import Regime

    seen = {}

    class Recorder(Regime):
        """Records whether a batch holds unlabelled images (all pixels 7.0) and returns a trivial loss."""

        def __init__(self, name, needs_labels):
            super().__init__()
            self.name, self.needs_labels = name, needs_labels

        def build_head(self, encoder, data):
            return torch.nn.Linear(encoder.latent_dim, 1)

        def loss(self, encoder, head, x, y, generator):
            if encoder.training:  # training batches only (validation runs in eval mode)
                marked = (x == 7.0).flatten(1).all(1)
                seen.setdefault(self.name, []).append((int(marked.sum()), len(x), y is None))
            return head(encoder(x)).square().mean(), {}

    cfg = config_from_dict(tiny_config(blob_npz, epochs=1, probe_every_epoch=False))
    data = load_dataset(cfg.data)
    unlabelled = torch.full((40, *data.image_shape), 7.0)
    data = dataclasses.replace(data, unlabelled_x=unlabelled)
    for name, needs_labels in (("labelled", True), ("label_free", False)):
        regime = Recorder(name, needs_labels)
        enc = build_encoder(cfg.model, data.image_shape, 0)
        trainer = Trainer(regime, enc, build_head(regime, enc, data, 0), data, TrainSettings(epochs=1, batch_size=16))
        out = trainer.fit()
        assert len(out.history) == 1
    n = len(data.train_y)
    assert sum(m for m, _, _ in seen["labelled"]) == 0 and sum(b for _, b, _ in seen["labelled"]) == n
    assert all(not y_none for _, _, y_none in seen["labelled"])
    assert sum(m for m, _, _ in seen["label_free"]) == 40 and sum(b for _, b, _ in seen["label_free"]) == n + 40
    assert all(y_none for _, _, y_none in seen["label_free"])
