"""Bad inputs whose errors were not replearn's own (issue 22, items 4, 5 and 8), in the catalogue's format:
each must end in one line naming the problem and the fix, exit status 2, no traceback, and no file on disk
created, changed or removed — checked by the same harness as ``test_bad_inputs.py``.

Plug-ins that return what the trainer cannot use or declare attributes of the wrong kind, plug-in modules
that exit while being imported, models too large to train, batches of one image under batch norm, and CIFAR
files whose labels, data or size do not match the format.
"""
from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # docs/generate.py imports this file by path
    sys.path.insert(0, str(HERE))

from helpers import plugin_module, tiny, write_yaml  # noqa: E402
from helpers import assert_refused_in_one_line as catalogue_case  # noqa: E402

CIFAR10_PY = [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]
CIFAR10_BIN = [f"data_batch_{k}.bin" for k in range(1, 6)] + ["test_batch.bin"]
PER_BATCH = 20


def regime_source(name: str, stats: str = "{}", attributes: str = "", returns: str | None = None) -> str:
    """A regime plug-in module: a latent-norm loss returning ``stats``, with extra class attributes."""
    result = returns or f"z.square().mean(), {stats}"
    return f"""
import torch
from replearn.regimes import Regime

class Plug(Regime):
    name = "{name}"
{attributes}
    def build_head(self, encoder, data):
        return torch.nn.Identity()

    def loss(self, encoder, head, x, y, generator):
        z = encoder(x)
        return {result}
"""


def regime_run(tmp: Path, module: str, source: str, **train: object) -> list[str]:
    path = plugin_module(tmp, module, source)
    raw = tiny(tmp, train={"regimes": [f"{path}:Plug"], **train})
    return ["run", write_yaml(tmp, raw), "--out", str(tmp / "o")]


EXITS_AT_IMPORT = "import sys\nsys.exit(0)\n"
ARGPARSE_AT_IMPORT = """
import argparse
parser = argparse.ArgumentParser()
parser.add_argument("--plugin-level", required=True)
settings = parser.parse_args()
"""


def cifar_python(tmp: Path, batch: dict | None = None, raw: bytes | None = None) -> list[str]:
    """The CIFAR-10 Python layout (20 images per batch), with data_batch_1 replaced by ``batch`` (or by the
    bytes ``raw``); the command runs the default experiment on it."""
    folder = tmp / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.RandomState(0)
    for name in CIFAR10_PY:
        good = {b"data": rng.randint(0, 256, (PER_BATCH, 3072)).astype(np.uint8),
                b"labels": [i % 10 for i in range(PER_BATCH)]}
        (folder / name).write_bytes(pickle.dumps(good, protocol=2))
    if batch is not None:
        full = {b"data": rng.randint(0, 256, (PER_BATCH, 3072)).astype(np.uint8),
                b"labels": [i % 10 for i in range(PER_BATCH)], **batch}
        (folder / "data_batch_1").write_bytes(pickle.dumps(full, protocol=2))
    if raw is not None:
        (folder / "data_batch_1").write_bytes(raw)
    return ["run", "--set", "data.name=cifar10", "--set", f"data.root={tmp / 'cifar'}", "--out", str(tmp / "o")]


def labels_with(bad: object) -> dict:
    return {b"labels": [bad] + [i % 10 for i in range(1, PER_BATCH)]}


def nested(depth: int) -> list:
    value: list = [0]
    for _ in range(depth):
        value = [value]
    return value


def shared_reference_labels(rows: int = 20_000) -> dict:
    """Labels that are one list referenced ``rows`` times: a ~100 kB pickle that NumPy would expand to
    rows² int64 values (3.2 GB at 20,000)."""
    inner = [0] * rows
    return {b"labels": [inner] * rows}


def cifar_binary(tmp: Path, records: int | None = None, label: int | None = None) -> list[str]:
    """The CIFAR-10 binary layout (20 records per batch); data_batch_1.bin made a sparse file of ``records``
    records, or given a first label byte of ``label``."""
    folder = tmp / "cifar" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    rng = np.random.RandomState(0)
    for name in CIFAR10_BIN:
        rows = rng.randint(0, 256, (PER_BATCH, 3073)).astype(np.uint8)
        rows[:, 0] = np.arange(PER_BATCH) % 10
        (folder / name).write_bytes(rows.tobytes())
    target = folder / "data_batch_1.bin"
    if records is not None:
        with open(target, "r+b") as fh:
            fh.truncate(records * 3073)
    if label is not None:
        data = bytearray(target.read_bytes())
        data[0] = label
        target.write_bytes(bytes(data))
    return ["run", "--set", "data.name=cifar10", "--set", f"data.root={tmp / 'cifar'}", "--out", str(tmp / "o")]


def unreadable_cifar(tmp: Path) -> list[str]:
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their permissions")
    argv = cifar_binary(tmp)
    (tmp / "cifar" / "cifar-10-batches-bin" / "data_batch_3.bin").chmod(0)
    return argv


RESNET_TO_1X1 = {"name": "resnet", "width": 4}  # on 8×8 images its last stage's batch norm sees 1×1 maps


def batch_norm_on_one_image(tmp: Path) -> list[str]:
    raw = tiny(tmp, train={"batch_size": 1})
    raw["model"] = {**RESNET_TO_1X1, "latent_dim": 6}
    return ["run", write_yaml(tmp, raw), "--out", str(tmp / "o")]


# (id, what is wrong, builder(tmp) -> argv, fragment the one-line message must contain)
CASES = [
    ("B160", "--model-kwargs nested 100,000 deep", lambda t: ["probe", str(t / "m.pt"), "--dataset", "digits", "--model", "torch.nn:Identity", "--model-kwargs", "[" * 100_000], "--model-kwargs must be a JSON object"),
    ("B161", "a ResNet of width 100,000 (terabytes of weights)", lambda t: ["run", "--set", "model.name=resnet", "--set", "model.width=100000", "--out", str(t / "o")], "more than the"),
    ("B162", "batches of one image under batch norm (train.batch_size=1)", batch_norm_on_one_image, "set train.batch_size to 2 or more"),
    ("B163", "a plug-in regime whose statistics are floats", lambda t: regime_run(t, "plug_b163", regime_source("floatstats", "{'agreement': 0.5}")), "returned the statistic 'agreement' as a float"),
    ("B164", "a plug-in regime whose statistics are None", lambda t: regime_run(t, "plug_b164", regime_source("nonestats", "None")), "returned its statistics as None, not a dict"),
    ("B165", "a plug-in regime whose loss returns no statistics", lambda t: regime_run(t, "plug_b165", regime_source("bare", returns="z.square().mean()")), "not a (loss, stats) pair"),
    ("B166", "a plug-in regime colour that is not a colour", lambda t: regime_run(t, "plug_b166", regime_source("badcolour", attributes="    color = 'sky-ish'")), "declares the colour 'sky-ish', which is not a colour"),
    ("B167", "a plug-in regime label that is not text", lambda t: regime_run(t, "plug_b167", regime_source("badlabel", attributes="    label = 42")), "declares label = 42, which is not a string"),
    ("B168", "a plug-in regime needs_labels that is not a boolean", lambda t: regime_run(t, "plug_b168", regime_source("badflag", attributes="    needs_labels = 'yes'")), "needs_labels = 'yes', which is not True or False"),
    ("B169", "a plug-in regime name that cannot name files", lambda t: regime_run(t, "plug_b169", regime_source("two words")), "has the name 'two words', which cannot name files"),
    ("B170", "a plug-in regime whose Options are not a dataclass", lambda t: regime_run(t, "plug_b170", regime_source("badoptions", attributes="    Options = dict")), "declares Options that are not a dataclass"),
    ("B171", "a plug-in module that calls sys.exit(0) when imported", lambda t: ["run", "--set", f"train.regimes=[{plugin_module(t, 'plug_b171', EXITS_AT_IMPORT)}:Plug]"], "plug-in module 'plug_b171' (from 'plug_b171:Plug') called sys.exit(0) while being imported"),
    ("B172", "a plug-in module whose own argparse fails when imported", lambda t: ["run", "--set", f"train.regimes=[{plugin_module(t, 'plug_b172', ARGPARSE_AT_IMPORT)}:Plug]"], "sys.exit(2) while being imported; the plug-in printed: "),
    ("B173", "CIFAR pickle labels that are text", lambda t: cifar_python(t, labels_with("cat")), "'labels'[0] is 'cat' (str), not a class index"),
    ("B174", "CIFAR pickle labels that are nested lists", lambda t: cifar_python(t, labels_with([1, 2, 3])), "'labels'[0] is a list of 3 items, not a class index"),
    ("B175", "CIFAR pickle labels that are None", lambda t: cifar_python(t, labels_with(None)), "'labels'[0] is None (NoneType)"),
    ("B176", "CIFAR pickle labels beyond int64", lambda t: cifar_python(t, labels_with(2**70)), "includes the label 1180591620717411303424"),
    ("B177", "CIFAR pickle labels that are NaN", lambda t: cifar_python(t, labels_with(float("nan"))), "'labels'[0] is nan (float)"),
    ("B178", "CIFAR pickle labels that are fractional", lambda t: cifar_python(t, labels_with(2.5)), "'labels'[0] is 2.5 (float)"),
    ("B179", "CIFAR pickle labels that are not a list", lambda t: cifar_python(t, {b"labels": b"0123456789" * 2}), "is b'01234567890123456789' (bytes), not a list"),
    ("B180", "CIFAR pickle data nested 100 deep", lambda t: cifar_python(t, {b"data": nested(100)}), "'data' is a list, not a NumPy array"),
    ("B181", "CIFAR pickle data of the wrong type", lambda t: cifar_python(t, {b"data": np.zeros((PER_BATCH, 3072), np.float64)}), "'data' is float64 (20, 3072), not N×3072 bytes"),
    ("B182", "CIFAR pickle label list sharing references (expands to 3.2 GB)", lambda t: cifar_python(t, shared_reference_labels()), "'labels'[0] is a list of 20000 items"),
    ("B183", "CIFAR pickle with fewer labels than images", lambda t: cifar_python(t, {b"labels": [1, 2, 3]}), "holds 3 labels for 20 images"),
    ("B184", "CIFAR pickle calling a codec other than Latin-1", lambda t: cifar_python(t, raw=b"\x80\x02c_codecs\nencode\nq\x00X\x03\x00\x00\x00abcX\x06\x00\x00\x00base64\x86R."), "_codecs.encode with encoding 'base64' is not allowed"),
    ("B185", "CIFAR binary batch with more records than the format holds", lambda t: cifar_binary(t, records=10_001), "holds 10,001 records of 3073 bytes; a CIFAR file of that name holds at most 10,000"),
    ("B186", "CIFAR binary label byte beyond the classes", lambda t: cifar_binary(t, label=200), "a label byte is 200, but the labels are class indices 0..9"),
    ("B187", "CIFAR batch file that cannot be read", unreadable_cifar, "cannot be read (Permission denied)"),
    ("B188", "a plug-in regime reporting 'sq_error' without reconstructing", lambda t: regime_run(t, "plug_b188", regime_source("sqerror", "{'sq_error': z.detach().square().sum()}")), "reads as the squared error of the reconstruction of the clean input"),
]


@pytest.mark.parametrize("case_id, what, build, fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input_answers_in_one_line(case_id, what, build, fragment, tmp_path, capsys, monkeypatch):
    """The catalogue's harness: exit 2, one line with the fragment, no traceback, nothing on disk changed."""
    catalogue_case(case_id, what, build, fragment, tmp_path, capsys, monkeypatch)


def test_case_ids_are_unique_in_order_and_in_this_files_range():
    ids = [int(case_id[1:]) for case_id, *_ in CASES]
    assert ids == sorted(set(ids)) and 160 <= ids[0] and ids[-1] <= 199
