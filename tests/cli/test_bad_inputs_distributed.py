"""Bad inputs of distributed training (B250–B269), checked like the main catalogue (tests/cli/test_bad_inputs.py):
exit status 2, one line naming the problem and the fix, no traceback, nothing on disk changed, under 30 s.
A resume under another number of processes is not among them: it is supported (each global batch is the same
whatever the number of processes; docs/distributed.md)."""
from __future__ import annotations

import pytest

import helpers

CASES = [
    ("B250", "--nproc larger than the CPU cores (or GPUs) of this machine", lambda t: ["run", "--nproc", "4096", "--set", "train.batch_size=8192"], "asks for more processes than this machine has"),
    ("B251", "--nproc of 0", lambda t: ["run", "--nproc", "0"], "--nproc must be at least 1"),
    ("B252", "--nproc larger than the batch", lambda t: ["run", "--nproc", "4096", "--set", "train.batch_size=8"], "more than train.batch_size (8)"),
    ("B253", "NCCL asked for on a machine without CUDA", lambda t: ["run", "--set", "train.backend=nccl", "--set", "train.device=cpu"], "train.backend is 'nccl' but"),
    ("B254", "SyncBatchNorm with the gloo backend", lambda t: ["run", "--set", "train.sync_batchnorm=true", "--set", "train.device=cpu"], "train.sync_batchnorm needs the NCCL backend"),
    ("B255", "SyncBatchNorm with --nproc on the CPU", lambda t: ["run", "--nproc", "1", "--set", "train.sync_batchnorm=true", "--set", "train.device=cpu"], "drop --set train.sync_batchnorm=true"),
    ("B256", "a precision replearn does not train in", lambda t: ["run", "--set", "train.precision=fp16"], "train.precision"),
    ("B257", "a collective timeout of zero", lambda t: ["run", "--set", "train.collective_timeout=0"], "train.collective_timeout"),
    ("B258", "--nproc with --resume of a directory that is not a run", lambda t: ["run", "--nproc", "2", "--resume", str(t / "nothing")], "nothing"),
    ("B259", "--nproc with data too small for the analyses (checked once, before the processes start)", lambda t: ["run", "--nproc", "2", "--set", "data.train_subset=300"], "analysis.label_counts asks for"),
]


@pytest.mark.parametrize("case_id, what, build, fragment", CASES, ids=[c[0] for c in CASES])
def test_distributed_bad_input_answers_in_one_line(case_id, what, build, fragment, tmp_path, capsys, monkeypatch):
    helpers.assert_refused_in_one_line(case_id, what, build, fragment, tmp_path, capsys, monkeypatch)


def test_distributed_case_ids_are_unique_in_order_and_in_range():
    ids = [case_id for case_id, *_ in CASES]
    assert ids == sorted(set(ids), key=lambda i: int(i[1:])) and all(250 <= int(i[1:]) <= 269 for i in ids)
