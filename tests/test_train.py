import pandas as pd
import pytest
import torch

from replearn.config import config_from_dict
from replearn.data import load_dataset
from replearn.errors import TrainingDiverged, TrainingInterrupted
from replearn.encoders import build_encoder
from replearn.regimes import make_regime
from replearn.run import build_head
from replearn.train import Stopper, epoch_order, evaluate, make_optimizer, train_regime

from conftest import tiny_config

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


def run(cfg, regime, tmp_path, tag, stopper=None):
    regime = make_regime(regime)
    data, enc, head = setup(cfg, regime)
    out = train_regime(regime, enc, head, data, cfg, 0, torch.device("cpu"), tmp_path / f"{tag}.state.pt",
                       tmp_path / f"{tag}.csv", stopper, data.test_x[:3], progress=False)
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
    train_regime(sup, enc, head, data, cfg, 0, torch.device("cpu"), tmp_path / "s.pt", tmp_path / "m.csv",
                 progress=False)
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
            train_regime(sup, enc, head, data, cfg, 0, torch.device("cpu"), tmp_path / "d.pt",
                         tmp_path / "d.csv", progress=False)
    line = info.value.one_line()
    assert "diverged at epoch" in line and "step" in line and "lower train.lr" in line
    assert "layer" in line or "loss became" in line


def test_epoch_order_is_a_pure_function():
    assert torch.equal(epoch_order(10, 1, 2), epoch_order(10, 1, 2))
    assert not torch.equal(epoch_order(10, 1, 2), epoch_order(10, 1, 3))
    assert sorted(epoch_order(10, 1, 2).tolist()) == list(range(10))


def test_schedule_warms_up_and_decays(tiny_cfg):
    params = [torch.nn.Parameter(torch.zeros(1))]
    opt, sched = make_optimizer(params, tiny_cfg, total_steps=100)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    peak = tiny_cfg.train.lr
    assert lrs[0] < peak and max(lrs) == pytest.approx(peak) and lrs[-1] < 0.01 * peak
