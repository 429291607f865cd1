"""The thread policy: cores available, threads per phase, fixed settings, task parallelism, and that
results do not depend on the thread setting where the numerics allow it."""
import os
import threading

import numpy as np
import pytest
import torch

from replearn.runtime import threads as parallel
from replearn.errors import ConfigError
from replearn.metrics.probes import knn_probe, label_efficiency, linear_probe


@pytest.fixture(autouse=True)
def automatic(monkeypatch):
    monkeypatch.delenv("REPLEARN_THREADS", raising=False)
    parallel.set_threads(None)
    yield
    parallel.set_threads(None)


def test_available_cores_respects_affinity_and_cgroup_quota(monkeypatch, tmp_path):
    read_quota = parallel._cgroup_cpu_quota
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(parallel, "_cgroup_cpu_quota", lambda: None)
    assert parallel.available_cores() == 4
    monkeypatch.setattr(parallel, "_cgroup_cpu_quota", lambda: 1.5)
    assert parallel.available_cores() == 2
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert read_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert read_quota(tmp_path) is None
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert read_quota(tmp_path) == 0.5


def test_small_work_runs_on_one_thread_large_on_every_core(monkeypatch):
    monkeypatch.setattr(parallel, "available_cores", lambda: 6)
    assert parallel.threads_for(1e6, phase="tiny") == 1
    assert parallel.threads_for(1e10, phase="big") == 6
    assert parallel.decisions()["tiny"] == 1 and parallel.decisions()["big"] == 6
    assert parallel.task_workers(3) == 3 and parallel.task_workers(50) == 6


def test_a_fixed_setting_overrides_the_choice(monkeypatch):
    monkeypatch.setattr(parallel, "available_cores", lambda: 6)
    monkeypatch.setenv("REPLEARN_THREADS", "2")
    assert parallel.threads_for(1e6) == 2 and parallel.threads_for(1e12) == 2 and parallel.task_workers(9) == 2
    parallel.set_threads(3)  # the --threads flag wins over the environment
    assert parallel.threads_for(1e6) == 3
    assert parallel.record()["setting"] == 3


def test_library_defaults_reproduce_the_old_behaviour(monkeypatch):
    monkeypatch.setattr(parallel, "available_cores", lambda: 4)
    monkeypatch.setenv("REPLEARN_THREADS", "library")
    assert parallel.threads_for(1.0) == 4 and parallel.task_workers(10) == 1
    assert parallel.record()["setting"] == "library"


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_bad_thread_settings_are_config_errors(value, monkeypatch):
    with pytest.raises(ConfigError, match="REPLEARN_THREADS"):
        parallel.parse_threads(value, "REPLEARN_THREADS")
    monkeypatch.setenv("REPLEARN_THREADS", value)
    with pytest.raises(ConfigError):
        parallel.thread_setting()
    assert parallel.parse_threads("auto", "--threads") is None


def test_use_threads_sets_torch_and_blas_and_restores_them():
    from threadpoolctl import threadpool_info

    before = torch.get_num_threads()
    blas_before = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    with parallel.use_threads(1):
        assert torch.get_num_threads() == 1
        assert all(p["num_threads"] == 1 for p in threadpool_info() if p["user_api"] == "blas")
    assert torch.get_num_threads() == before
    assert [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"] == blas_before


def test_map_tasks_runs_side_by_side_keeps_order_and_reraises():
    both_running = threading.Barrier(2, timeout=20)

    def task(i):
        both_running.wait()  # only returns if two tasks run at the same time
        return i * i, torch.get_num_threads()

    out = parallel.map_tasks(task, [1, 2], workers=2)
    assert [v for v, _ in out] == [1, 4] and all(t == 1 for _, t in out)
    assert parallel.map_tasks(lambda i: -i, range(5), workers=2) == [0, -1, -2, -3, -4]

    def fail(i):
        if i == 3:
            raise ValueError("task 3")
        return i

    with pytest.raises(ValueError, match="task 3"):
        parallel.map_tasks(fail, range(6), workers=2)


def test_forward_flops_match_torchs_flop_counter():
    from torch.utils.flop_counter import FlopCounterMode

    from replearn.config.sections import model_config
    from replearn.encoders import build_encoder

    enc = build_encoder(model_config(channels=[4, 8], latent_dim=6), (1, 16, 16), 0).eval()
    x = torch.randn(3, 1, 16, 16)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        enc(x)
    assert parallel.forward_flops(enc, x) == counter.get_total_flops()
    deconv = torch.nn.ConvTranspose2d(4, 2, 3, stride=2)
    z = torch.randn(2, 4, 5, 5)
    with torch.no_grad(), FlopCounterMode(display=False) as c2:
        deconv(z)
    assert parallel.forward_flops(deconv, z) == c2.get_total_flops()


def test_probes_give_the_same_answers_at_any_thread_setting():
    """Analyses of the same features do not depend on the thread setting (every probe, exactly)."""
    rng = np.random.RandomState(0)
    centres = rng.randn(4, 40) * 2
    def split(n, seed):
        r = np.random.RandomState(seed)
        y = r.randint(0, 4, n)
        return torch.from_numpy((centres[y] + r.randn(n, 40)).astype(np.float32)), torch.from_numpy(y)
    train, val, test = split(3000, 1), split(500, 2), split(700, 3)
    results = []
    for threads in (1, 2):
        with parallel.use_threads(threads):
            lin = linear_probe(train, val, test, [1e-4, 1e-2])
            knn = knn_probe(train, val, test, [5, 10])
            eff = label_efficiency(train, val, test, [1, 5], 2, [1e-3, 1e-1], seed=0)
        results.append((lin, knn, eff))
    (l1, k1, e1), (l2, k2, e2) = results
    assert torch.equal(l1.test_predictions, l2.test_predictions) and l1.chosen == l2.chosen
    assert torch.equal(k1.test_predictions, k2.test_predictions) and k1.chosen == k2.chosen
    assert e1.equals(e2)


def test_bad_replearn_threads_in_the_environment_is_one_line(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "replearn.cli", "run"], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "REPLEARN_THREADS": "lots"})
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "REPLEARN_THREADS must be a whole number" in done.stderr and not list(tmp_path.iterdir())
