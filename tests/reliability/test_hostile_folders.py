"""Hostile image folders (issue 22, items 2, 3 and 9): the folder loader does not trust the file system.

Link loops, links to ``/``, to devices and fifos end quickly in a fresh process with bounded memory and give
each image once; a dataset assembled with links loads as a copy would; names are printed escaped; SIGTERM
while images are decoded ends the workers and the half-made cache and exits 130; a worker that dies is
reported instead of waited for; a streamed cache deleted mid-run is named, and the resume it suggests works.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import signal
import shutil
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from helpers import make_blob_images, tiny_config
from replearn.runtime import threads as parallel
from replearn.cli.main import main
from replearn.config.sections import DataConfig
from replearn.data import ImageStore, load_dataset
from replearn.data.imagedecode import decode as real_decode
from replearn.data.imagefolder import cache as folder_cache
from replearn.data.imagefolder import decode as folder_decode
from replearn.errors import DataError

LOADER = """
import hashlib, json, resource, sys
import torch
from replearn.config.sections import DataConfig
from replearn.data import load_dataset

data = load_dataset(DataConfig(name="folder", root=sys.argv[1], val_fraction=0.2,
                               plugin_options=json.loads(sys.argv[2])))

def keys(x):
    pixels = (data.to_unit_range(x[:]) * 255).round().to(torch.uint8).numpy()
    return [hashlib.sha1(image.tobytes()).hexdigest() for image in pixels]

print(json.dumps({"splits": {s: keys(getattr(data, s + "_x")) for s in ("train", "val", "test")},
                  "class_names": data.class_names, "skipped": data.skipped,
                  "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def blob_tree(root: Path, n: int = 90, size: int = 8, seed: int = 5) -> list[str]:
    """``n`` distinct grey PNGs in three class folders under ``root``; returns their pixels' hashes."""
    x, y = make_blob_images(n, size=size, seed=seed)
    for i, (image, label) in enumerate(zip(x, y)):
        folder = root / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:03d}.png")
    keys = [hashlib.sha1(image.tobytes()).hexdigest() for image in x]
    assert len(set(keys)) == n
    return keys


def _drop_override() -> None:
    """Before exec: root loses the capabilities that override file permissions (see test_bad_inputs_folders)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            os._exit(97)


def load_in_fresh_process(root: Path, cache: Path, timeout: float = 90, **options: object) -> tuple[dict, str, float]:
    """Load the folder dataset in a new Python process (one that file permissions apply to, even as root):
    what it holds, its stderr and the seconds it took."""
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", LOADER, str(root), json.dumps({"cache_dir": str(cache), **options})],
                            capture_output=True, text=True, timeout=timeout,
                            preexec_fn=_drop_override if os.geteuid() == 0 else None)
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr, seconds


def assert_each_image_once(loaded: dict, expected: list[str]) -> None:
    splits = loaded["splits"]
    every = splits["train"] + splits["val"] + splits["test"]
    assert sorted(every) == sorted(expected)  # every image, none twice
    assert not set(splits["train"] + splits["val"]) & set(splits["test"])


TRAPS = {
    "a link to the root": lambda root: (root / "class0" / "back").symlink_to(root),
    "two loops": lambda root: [(root / "class0" / "up").symlink_to(".."), (root / "class1" / "self").symlink_to(".")],
    "a link to /": lambda root: (root / "class2" / "everything").symlink_to("/"),
    "a link to another class": lambda root: (root / "class0" / "dup").symlink_to(root / "class1"),
}


@pytest.mark.parametrize("trap", sorted(TRAPS))
def test_link_loops_end_quickly_and_count_each_image_once(trap, tmp_path):
    """A loop once turned 90 files into 1,290 images (train and test sharing them); two loops or a link to
    / never ended. Now each is left out, named in the log, in a fresh process within seconds."""
    root = tmp_path / "images"
    expected = blob_tree(root)
    TRAPS[trap](root)
    loaded, stderr, seconds = load_in_fresh_process(root, tmp_path / "cache")
    assert_each_image_once(loaded, expected)
    assert seconds < 60 and loaded["maxrss_mib"] < 1500, (seconds, loaded["maxrss_mib"])
    assert "left out" in stderr and ("a loop" in stderr or "already read" in stderr), stderr
    assert any("a loop" in s or "already read" in s for s in loaded["skipped"])


def test_devices_fifos_and_dangling_links_are_never_read(tmp_path):
    """A link to /dev/zero or /dev/urandom and a fifo, all named .png, once hung or exhausted memory while
    hashing; a dangling link gave a traceback. Only regular files are read; the rest is named."""
    root = tmp_path / "images"
    expected = blob_tree(root)
    (root / "class0" / "zero.png").symlink_to("/dev/zero")
    (root / "class1" / "random.png").symlink_to("/dev/urandom")
    os.mkfifo(root / "class2" / "fifo.png")
    (root / "class2" / "notes").symlink_to(tmp_path / "missing")  # not an image: left out, named
    loaded, stderr, seconds = load_in_fresh_process(root, tmp_path / "cache", timeout=60)
    assert_each_image_once(loaded, expected)
    assert seconds < 60 and loaded["maxrss_mib"] < 1500, (seconds, loaded["maxrss_mib"])
    reasons = "\n".join(loaded["skipped"])
    assert "zero.png: not a regular file but a character device" in reasons
    assert "fifo.png: not a regular file but a fifo" in reasons
    assert "notes: a link to" in reasons and "which does not exist" in reasons


def test_an_unreadable_sub_folder_is_named_and_with_skip_bad_images_left_out(tmp_path):
    """An unreadable sub-folder was dropped silently. Now it stops the load (test_bad_inputs_folders, B132),
    or, with data.skip_bad_images=true, is left out and named in the log and in dataset.json."""
    root = tmp_path / "images"
    expected = blob_tree(root)
    hidden = root / "class2" / "more"
    hidden.mkdir()
    (root / "class2" / "002.png").rename(hidden / "002.png")
    hidden.chmod(0)
    try:
        loaded, stderr, _ = load_in_fresh_process(root, tmp_path / "cache", skip_bad_images=True)
    finally:
        hidden.chmod(0o755)
    if "class2/more" not in "".join(loaded["skipped"]):
        pytest.skip("file permissions do not apply to this process")
    assert sorted(k for split in loaded["splits"].values() for k in split) == sorted(expected[:2] + expected[3:])
    assert "class2/more: a folder: Permission denied" in loaded["skipped"]
    assert "left out class2/more: a folder: Permission denied" in stderr


def _keys(data, split: str) -> list[str]:
    pixels = (data.to_unit_range(getattr(data, f"{split}_x")[:]) * 255).round().byte().numpy()
    return [hashlib.sha1(image.tobytes()).hexdigest() + f":{int(label)}"
            for image, label in zip(pixels, getattr(data, f"{split}_y").numpy())]


def test_a_dataset_assembled_with_links_loads_as_a_copy_would(tmp_path):
    """Class folders that are links, files that are links, and one file linked twice: every image once,
    with the label of the folder it was found in, the same as a tree of copies."""
    store = tmp_path / "store"
    blob_tree(store)
    linked, copied = tmp_path / "linked", tmp_path / "copied"
    shutil.copytree(store, copied)
    linked.mkdir()
    (linked / "class0").symlink_to(store / "class0")
    (linked / "class1").symlink_to(store / "class1")
    (linked / "class2").mkdir()
    for file in sorted((store / "class2").iterdir()):
        (linked / "class2" / file.name).symlink_to(file)
    (linked / "class2" / "zz-again.png").symlink_to(store / "class2" / "002.png")  # the same file twice
    via_links, via_copies = (  # each with a cache of its own: the copies' images are decoded, not looked up
        load_dataset(DataConfig(name="folder", root=str(tmp_path / name), val_fraction=0.2,
                                plugin_options={"cache_dir": str(tmp_path / f"cache-{name}")}))
        for name in ("linked", "copied"))
    for split in ("train", "val", "test"):
        assert _keys(via_links, split) == _keys(via_copies, split)
    assert any(s.startswith("class2/zz-again.png: the same file as") for s in via_links.skipped)
    assert via_links.summary()["skipped_files"] == via_links.skipped


def test_train_and_test_never_share_a_linked_file(tmp_path):
    """A test image that is a link to a training image is the same file: it is read once, for train."""
    root = tmp_path / "tree"
    blob_tree(root / "train", n=60, seed=1)
    blob_tree(root / "test", n=30, seed=2)
    shutil.rmtree(root / "test" / "class0")
    (root / "test" / "class0").mkdir()
    first = sorted((root / "train" / "class0").iterdir())
    for file in first[:3]:
        (root / "test" / "class0" / file.name).symlink_to(file)
    Image.fromarray(np.full((8, 8), 7, np.uint8)).save(root / "test" / "class0" / "own.png")
    data = load_dataset(DataConfig(name="folder", root=str(root), val_fraction=0.2,
                                   plugin_options={"cache_dir": str(tmp_path / "cache")}))
    train_keys = set(_keys(data, "train") + _keys(data, "val"))
    assert not train_keys & set(_keys(data, "test"))
    assert len(data.train_y) + len(data.val_y) == 60 and np.bincount(data.test_y.numpy()).tolist() == [1, 10, 10]
    assert sum("the same file as" in s for s in data.skipped) == 3


def test_names_with_escape_sequences_are_printed_escaped(tmp_path, capsys, monkeypatch):
    """A class folder named with terminal escape sequences (retitle the window, clear the screen) and a bidi
    override: class names and every line printed show them as escapes."""
    monkeypatch.setattr("replearn.runtime.log._quiet", False)  # another test's --quiet may still be in force
    root = tmp_path / "images"
    blob_tree(root)
    evil = "\x1b]0;pwned\x07\x1b[2J\u202eevil"
    (root / "class1").rename(root / evil)
    (root / evil / "loop").symlink_to(root)  # so that the warning line prints the name too
    data = load_dataset(DataConfig(name="folder", root=str(root), val_fraction=0.2,
                                   plugin_options={"cache_dir": str(tmp_path / "cache")}))
    err = capsys.readouterr().err
    shown = "\\x1b]0;pwned\\x07\\x1b[2J\\u202eevil"
    assert data.class_names == [shown, "class0", "class2"]  # sorted by the folders' real names
    assert f"{shown}/loop: a link back to a folder that holds the dataset (a loop)" in err
    assert not any(unicodedata.category(c) in ("Cc", "Cf") for c in err.replace("\n", "").replace("\r", ""))
    json.dumps(data.summary())


# ---------------------------------------------------------------- signals and workers

SLOW_RUN = """
import sys, time
from replearn.data import imagedecode
from replearn.data.imagefolder import decode as folder_decode

def slow_decode(paths, size, colour):
    time.sleep(0.25)
    return imagedecode.decode(paths, size, colour)

folder_decode.decode = slow_decode
folder_decode.CHUNK = 8
from replearn.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def children_of(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found.update(int(c) for c in (task / "children").read_text().split())
        except OSError:
            pass
    return found


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def folder_config(tmp: Path, root: Path, **data: object) -> Path:
    raw = tiny_config(tmp / "unused.npz")
    raw["data"] = {"name": "folder", "root": str(root), "val_fraction": 0.2, "cache_dir": str(tmp / "cache"), **data}
    path = tmp / "exp.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc")
@pytest.mark.parametrize("target", ["the process", "its process group"])
def test_sigterm_while_decoding_ends_workers_and_the_half_made_cache(target, tmp_path):
    """SIGTERM during decoding once exited 143 silently, leaving worker processes alive and a .partial-*
    folder on disk. Now: the interrupted line, exit 130, no process of the run left, nothing on disk."""
    if parallel.available_cores() < 2:
        pytest.skip("one core: images are decoded without worker processes")
    root = tmp_path / "images"
    blob_tree(root, n=240)
    config = folder_config(tmp_path, root)
    env = {k: v for k, v in os.environ.items() if k != "REPLEARN_THREADS"}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_RUN, "run", str(config), "--out", str(tmp_path / "run")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    workers: set[int] = set()
    while time.monotonic() < deadline and proc.poll() is None:
        workers = children_of(proc.pid)
        if workers and list((tmp_path / "cache").glob("*.partial-*")):
            break
        time.sleep(0.02)
    assert workers and proc.poll() is None, "decoding never started in worker processes"
    time.sleep(0.3)
    if target == "the process":
        proc.send_signal(signal.SIGTERM)
    else:
        os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "replearn: interrupted" and "Traceback" not in err, err
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(gone(pid) for pid in workers):
        time.sleep(0.05)
    assert all(gone(pid) for pid in workers), "a worker process outlived the run"
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)  # nothing of the run's process group is left


def dying_decode(paths: list[str], size: int, colour: bool) -> list:
    """A decode that kills the worker process it runs in (as the OOM killer would)."""
    if os.getpid() != PARENT_PID:
        os._exit(9)
    return real_decode(paths, size, colour)


PARENT_PID = os.getpid()


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc")
def test_a_worker_that_dies_is_reported_not_waited_for(tmp_path, monkeypatch):
    """A decoding worker killed mid-task (the OOM killer, say) ends the load in one line, not a hang."""
    monkeypatch.setattr(parallel, "task_workers", lambda tasks, phase=None: 2)
    root = tmp_path / "images"
    blob_tree(root, n=60)
    monkeypatch.setattr(folder_decode, "CHUNK", 4)
    monkeypatch.setattr(folder_decode, "decode", dying_decode)
    before = children_of(os.getpid())
    started = time.monotonic()
    with pytest.raises(DataError, match="an image-decoding worker process ended unexpectedly"):
        load_dataset(DataConfig(name="folder", root=str(root), val_fraction=0.2,
                                plugin_options={"cache_dir": str(tmp_path / "cache")}))
    assert time.monotonic() - started < 30
    assert not (tmp_path / "cache").exists()
    assert children_of(os.getpid()) <= before


def test_half_made_caches_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    root = tmp_path / "images"
    blob_tree(root, n=30)
    cache = tmp_path / "cache"
    cache.mkdir()
    host = folder_cache._host()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = cache / f"folder-0123.partial-{host}-{dead.pid}"
    aside = cache / f"folder-0123.stale-{host}-{dead.pid}"
    live = cache / f"folder-0123.partial-{host}-{os.getppid()}"
    other_host = cache / f"folder-0123.partial-elsewhere-{dead.pid}"
    for folder in (left, aside, live, other_host):
        folder.mkdir()
    load_dataset(DataConfig(name="folder", root=str(root), val_fraction=0.2, plugin_options={"cache_dir": str(cache)}))
    # a live process's, and another machine's (a cache shared over the network), are not this run's to remove
    assert not left.exists() and not aside.exists() and live.exists() and other_host.exists()


# ---------------------------------------------------------------- streaming


@pytest.mark.slow
def test_a_streamed_cache_deleted_mid_run_is_named_and_the_resume_works(tmp_path, capsys, monkeypatch):
    """Deleting the streamed cache mid-run was reported as a full disk, and the resume it suggested gave a
    traceback. Now the file is named, the run is left resumable, and the resume decodes again and finishes."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("replearn.runtime.log._quiet", False)  # restored afterwards: --quiet must not leak
    root = tmp_path / "images"
    blob_tree(root, n=300, size=40)  # 1.8 MiB as normalised float32: streamed under a 1 MiB budget
    config = folder_config(tmp_path, root, memory_budget_mb=1)
    out = tmp_path / "run"
    original = ImageStore.read
    deleted: list[Path] = []

    def read_then_delete(self, rows):
        if not deleted and (out / "status.json").exists():  # the run has started: its cache disappears
            (cache,) = (tmp_path / "cache").glob("folder-*")
            shutil.rmtree(cache)
            deleted.append(cache)
        return original(self, rows)

    monkeypatch.setattr(ImageStore, "read", read_then_delete)
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert deleted and last.startswith(f"replearn: error: the image file '{deleted[0]}/") and "Traceback" not in last
    assert "was deleted while the run was reading it" in last and "replearn run --resume" in last
    assert "disk" not in last
    assert json.loads((out / "status.json").read_text())["state"] == "failed"
    monkeypatch.setattr(ImageStore, "read", original)
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    assert json.loads((out / "status.json").read_text())["state"] == "complete"
    assert (deleted[0] / "meta.json").is_file()  # decoded again, under the same name
