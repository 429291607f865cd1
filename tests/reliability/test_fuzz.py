"""Fuzzing the two inputs a user hands replearn: config files and npz datasets. Whatever hypothesis generates,
loading must end in a valid result or a one-line ``ReplearnError``, never another exception, and within a
bounded time (so no hang, no runaway allocation)."""
from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replearn.config.sections import DataConfig, field_docs, load_config
from replearn.data import load_dataset
from replearn.errors import ReplearnError

from helpers import make_blob_images, tiny_config

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
SECONDS_PER_EXAMPLE = 5.0

KEYS = sorted({key for key, *_ in field_docs()})
SECTIONS = sorted({key.split(".")[0] for key in KEYS}) + ["name", "selection"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                    st.text(max_size=30), st.sampled_from(["adam", "cosine", "npz", "supervised", "1e-3", "[1, 2]"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=10), inner, max_size=4)),
                      max_leaves=12)
sections = st.dictionaries(st.sampled_from(SECTIONS + ["trian", ""]), st.one_of(
    st.dictionaries(st.sampled_from([k.split(".", 1)[-1] for k in KEYS] + ["epoch", "x"]), values, max_size=5),
    values), max_size=5)


def _valid_yaml() -> str:
    return yaml.safe_dump(tiny_config(Path("blobs.npz")))


def _mutate(text: str, edits: list[tuple[int, int, str]]) -> str:
    for position, cut, insert in edits:
        position %= max(1, len(text))
        text = text[:position] + insert + text[position + cut:]
    return text


def _check_clean(call) -> None:
    started = time.perf_counter()
    try:
        call()
    except ReplearnError as exc:
        line = exc.one_line()
        assert "\n" not in line and len(line) < 2000, line
    assert time.perf_counter() - started < SECONDS_PER_EXAMPLE


@FUZZ
@given(raw=sections)
def test_generated_configs_load_or_fail_cleanly(raw, tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "exp.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    _check_clean(lambda: load_config(path))


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 5),
                                st.sampled_from(["", ":", " ", "\n", "-", "&a ", "*a", "[", "{", "'", "\t", "!!python/object:os.system ", "\x00", "é", "- - -", "<<: *a"])),
                      min_size=1, max_size=6))
def test_mutated_config_text_loads_or_fails_cleanly(edits, tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "exp.yaml"
    path.write_text(_mutate(_valid_yaml(), edits), encoding="utf-8")
    _check_clean(lambda: load_config(path))


dtypes = st.sampled_from([np.uint8, np.int64, np.float32, np.float64, np.bool_, np.int8, np.complex64, "U3"])
shapes = st.lists(st.integers(0, 9), min_size=0, max_size=5).map(tuple)


@st.composite
def arrays(draw, shape=shapes):
    dtype, shape = draw(dtypes), draw(shape)
    n = int(np.prod(shape)) if shape else 1
    kind = draw(st.sampled_from(["small", "pixels", "huge", "nan", "neg"]))
    rng = np.random.RandomState(draw(st.integers(0, 1000)))
    base = {"small": rng.randint(0, 3, n), "pixels": rng.randint(0, 256, n), "huge": rng.uniform(-1e300, 1e300, n),
            "nan": np.where(rng.rand(n) < 0.1, np.nan, rng.rand(n)), "neg": -rng.randint(0, 5, n)}[kind]
    with np.errstate(all="ignore"):
        return np.asarray(base).astype(dtype).reshape(shape) if shape else np.asarray(base[:1]).astype(dtype)


def _blob_arrays() -> dict[str, np.ndarray]:
    x, y = make_blob_images(48, seed=1)
    tx, ty = make_blob_images(18, seed=2)
    return {"train_x": x, "train_y": y, "test_x": tx, "test_y": ty}


@FUZZ
@given(replace=st.dictionaries(st.sampled_from(["train_x", "train_y", "test_x", "test_y", "class_names"]), arrays(),
                               max_size=3),
       drop=st.sets(st.sampled_from(["train_x", "train_y", "test_x", "test_y"]), max_size=1),
       layout=st.sampled_from(["auto", "channels-first", "channels-last"]))
def test_generated_npz_datasets_load_or_fail_cleanly(replace, drop, layout, tmp_path_factory):
    arrays_ = {k: v for k, v in {**_blob_arrays(), **replace}.items() if k not in drop}
    path = tmp_path_factory.mktemp("npz") / "data.npz"
    np.savez(path, **arrays_)
    _check_clean(lambda: load_dataset(DataConfig(name="npz", root=str(path), val_fraction=0.2, layout=layout)))


@FUZZ
@given(cuts=st.lists(st.tuples(st.integers(0, 100_000), st.integers(0, 255)), min_size=1, max_size=8),
       truncate=st.one_of(st.none(), st.integers(0, 100_000)), compressed=st.booleans())
def test_corrupted_npz_bytes_load_or_fail_cleanly(cuts, truncate, compressed, tmp_path_factory):
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **_blob_arrays())
    data = bytearray(buffer.getvalue())
    for position, value in cuts:
        data[position % len(data)] = value
    if truncate is not None:
        data = data[:truncate % (len(data) + 1)]
    path = tmp_path_factory.mktemp("npz") / "data.npz"
    path.write_bytes(bytes(data))
    _check_clean(lambda: load_dataset(DataConfig(name="npz", root=str(path), val_fraction=0.2)))


def test_fuzz_strategies_reach_both_outcomes(tmp_path):
    """The generators are not vacuous: the unchanged inputs load, and a known-bad one is refused."""
    np.savez(tmp_path / "ok.npz", **_blob_arrays())
    assert load_dataset(DataConfig(name="npz", root=str(tmp_path / "ok.npz"), val_fraction=0.2)).num_classes == 3
    (tmp_path / "ok.yaml").write_text(_valid_yaml())
    assert load_config(tmp_path / "ok.yaml").name == "tiny"
    with zipfile.ZipFile(tmp_path / "bad.npz", "w") as zf:
        zf.writestr("train_x.npy", b"\x93NUMPY garbage")
    with pytest.raises(ReplearnError):
        load_dataset(DataConfig(name="npz", root=str(tmp_path / "bad.npz")))
