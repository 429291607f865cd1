"""Bad image folders, decode caches and file-system tricks (issue 22): each case ends with one line naming the
problem and the fix, exit status 2, no traceback, no control character, and nothing on disk created, changed
or removed, within 30 s (60 s for a fresh process); the catalogue in docs/reliability.md lists them beside test_bad_inputs.py's.

Cases whose input is a permission (an unreadable file, folder or root, a cache folder that cannot be written)
run the command in a fresh process; when the tests run as root, that process drops the capabilities that let
root read and write anything (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), so the permissions bite as they do for
a user. A few cases shrink a limit (memory available, free disk, the largest image file, the entries a walk
examines) for the test, through ``PATCHES``, so that they need no gigabytes.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import stat
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from replearn.cli.main import main
from replearn.config.sections import DataConfig
from replearn.data import load_dataset

from helpers import folder_run, png_tree



def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` (links not followed): its type and permission bits, and a regular file's
    SHA-256 or a link's target. Like ``test_bad_inputs.fingerprint``, but it never reads through a link (a
    link to /dev/zero stays harmless) and it also sees a change of permissions."""
    state: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            info = os.lstat(path)
            content = ""
            if stat.S_ISREG(info.st_mode):
                try:
                    content = hashlib.sha256(path.read_bytes()).hexdigest()
                except OSError:
                    content = f"unreadable, {info.st_size} bytes, {info.st_mtime_ns}"
            elif stat.S_ISLNK(info.st_mode):
                content = os.readlink(path)
            state[str(path.relative_to(root))] = (info.st_mode, content)
    return state


# ---------------------------------------------------------------- builders


def dangling_link(t: Path) -> list[str]:
    root = png_tree(t)
    (root / "class1" / "gone.png").symlink_to(t / "nowhere" / "gone.png")
    return folder_run(t, root)


def without_permission(t: Path, where: str) -> list[str]:
    """A tree with one entry made unreadable: a file, a sub-folder of a class, a class folder or the root."""
    root = png_tree(t)
    if where == "sub-folder":
        sub = root / "class2" / "more"
        sub.mkdir()
        (root / "class2" / "00002.png").rename(sub / "00002.png")
        target = sub
    else:
        target = {"file": root / "class0" / "00003.png", "class": root / "class1", "root": root}[where]
    target.chmod(0)
    return folder_run(t, root)


def named_class(t: Path, name: bytes) -> list[str]:
    """A tree with an extra, empty class folder of the given (raw) name."""
    root = png_tree(t)
    os.mkdir(os.fsencode(root) + b"/" + name)
    return folder_run(t, root)


def decompression_bomb(t: Path) -> list[str]:
    from PIL import Image

    root = png_tree(t)
    Image.new("1", (10_000, 10_000)).save(root / "class0" / "bomb.png")  # 100 Mpixel, a few kB on disk
    return folder_run(t, root)


def noisy_png(t: Path) -> list[str]:
    """A tree with one 64×64 noise PNG (about 4 kB) among its 8×8 ones."""
    from PIL import Image

    root = png_tree(t)
    noise = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    Image.fromarray(noise).save(root / "class2" / "noise.png")
    return folder_run(t, root, "--set", "data.image_size=8")


def linked_big_folder(t: Path) -> list[str]:
    root = png_tree(t)
    big = t / "elsewhere"
    big.mkdir()
    for i in range(100):
        (big / f"note{i}.txt").write_text("x")
    (root / "class0" / "linked").symlink_to(big)
    return folder_run(t, root)


def cache_dir_run(t: Path, cache: Path) -> list[str]:
    return folder_run(t, png_tree(t), "--set", f"data.cache_dir={cache}")


def a_file(path: Path) -> Path:
    path.write_text("not a folder")
    return path


def read_only_folder(path: Path) -> Path:
    path.mkdir()
    path.chmod(0o555)
    return path


def damaged_read_only_cache(t: Path) -> list[str]:
    """A cache made by a first load, one of its arrays cut short, in a folder that cannot be written."""
    root = png_tree(t)
    load_dataset(DataConfig(name="folder", root=str(root), val_fraction=0.2,
                            plugin_options={"cache_dir": str(t / "cache")}))
    (x_file,) = (t / "cache").glob("folder-*/all_x.npy")
    x_file.write_bytes(x_file.read_bytes()[:-100])
    for folder in (x_file.parent, t / "cache"):
        folder.chmod(0o555)
    return folder_run(t, root)


def split_linked_to_split(t: Path) -> list[str]:
    root = png_tree(t, n=30)
    (root.parent / "tree").mkdir()
    root.rename(root.parent / "tree" / "train")
    (root.parent / "tree" / "test").symlink_to("train")
    return folder_run(t, root.parent / "tree")


# (id, what is wrong, builder(tmp) -> argv, fragment the one-line message must contain)
CASES = [
    ("B130", "an image file that is a link to a file that does not exist", dangling_link, "which does not exist"),
    ("B131", "an image file that cannot be read (no permission)", lambda t: without_permission(t, "file"), "00003.png' (Permission denied)"),
    ("B132", "a sub-folder of a class that cannot be read", lambda t: without_permission(t, "sub-folder"), "more' (a folder: Permission denied)"),
    ("B133", "a class folder that cannot be read", lambda t: without_permission(t, "class"), "class1' cannot be read (Permission denied)"),
    ("B134", "a folder dataset root that cannot be read", lambda t: without_permission(t, "root"), "images' cannot be read (Permission denied)"),
    ("B135", "a class folder whose name holds a terminal escape sequence (printed escaped)", lambda t: named_class(t, b"\x1b[31mred"), "\\x1b[31mred' holds no images"),
    ("B136", "a class folder whose name is not UTF-8 (printed escaped)", lambda t: named_class(t, b"\xffbad"), "\\xffbad' holds no images"),
    ("B137", "a PNG whose header claims 100 million pixels (a decompression bomb)", decompression_bomb, "bomb.png' (Image size (100000000 pixels) exceeds limit"),
    ("B138", "an image file larger than any image file (limit lowered to 2,000 bytes for the test)", noisy_png, "larger than an image file may be (2.0 KiB)"),
    ("B139", "a link to a folder with more entries than a walk examines (limit lowered to 60)", linked_big_folder, "holds more than 60 entries"),
    ("B140", "data.cache_dir that is a file", lambda t: cache_dir_run(t, a_file(t / "cachefile")), "cachefile' is a file, not a folder"),
    ("B141", "data.cache_dir below a file", lambda t: cache_dir_run(t, a_file(t / "cachefile") / "sub"), "cachefile' is a file, not a folder"),
    ("B142", "data.cache_dir that cannot be written", lambda t: cache_dir_run(t, read_only_folder(t / "ro")), "ro' cannot be written"),
    ("B143", "a damaged decode cache in a folder that cannot be written", damaged_read_only_cache, "is damaged (all_x.npy holds"),
    ("B144", "images at data.image_size=1024 that would not fit in memory (256 MiB available for the test)", lambda t: folder_run(t, png_tree(t), "--set", "data.image_size=1024"), "of memory available"),
    ("B145", "a decode cache that would not fit on the disk (1 MiB free for the test)", lambda t: folder_run(t, png_tree(t), "--set", "data.image_size=256"), "is free in"),
    ("B146", "a train/ and a test/ folder that are the same folder (a link)", split_linked_to_split, "cannot be used as a split"),
    ("B147", "images decoded to 2×2, too small for the encoder (the cache made for them is removed again)", lambda t: folder_run(t, png_tree(t, n=60), "--set", "data.image_size=2", "--quiet"), "too many for 2×2 images"),
]
PERMISSION_CASES = {"B131", "B132", "B133", "B134", "B142", "B143"}
PATCHES = {
    "B138": {"replearn.data.imagefolder.walk.MAX_FILE_BYTES": 2_000},
    "B139": {"replearn.data.imagefolder.walk.MAX_TREE_ENTRIES": 60},
    "B144": {"replearn.data.imagefolder.cache.available_memory": lambda: 256 << 20},
    "B145": {"replearn.data.imagefolder.cache.free_space": lambda folder: 1 << 20},
}


def _drop_override() -> None:
    """In the child, before exec: take CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH out of the bounding set, so
    that root, after exec, is refused what file permissions refuse."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            os._exit(97)


def run_unprivileged(argv: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """``replearn ARGV`` in a fresh process that file permissions apply to, even when the tests run as root."""
    preexec = _drop_override if os.geteuid() == 0 else None
    return subprocess.run([sys.executable, "-m", "replearn.cli", *argv], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, preexec_fn=preexec)


@pytest.fixture(scope="session")
def permissions_bite(tmp_path_factory) -> None:
    """Skip the permission cases where even a fresh process cannot be refused a read (root without the
    right to drop capabilities)."""
    probe = tmp_path_factory.mktemp("perm") / "secret"
    probe.write_text("x")
    probe.chmod(0)
    preexec = _drop_override if os.geteuid() == 0 else None
    result = subprocess.run([sys.executable, "-c", f"open({str(probe)!r}).read()"], capture_output=True,
                            preexec_fn=preexec)
    if result.returncode == 0 or result.returncode == 97:
        pytest.skip("file permissions cannot be made to apply here")


def restore_permissions(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            if not path.is_symlink():
                path.chmod(0o755)
    root.chmod(0o755)


@pytest.mark.parametrize("case_id, what, build, fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_folder_input_answers_in_one_line(case_id, what, build, fragment, tmp_path, capsys, monkeypatch,
                                              request):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.setattr("replearn.runtime.log._quiet", False)  # restored afterwards: --quiet must not leak into other tests
    if case_id in PERMISSION_CASES:
        request.getfixturevalue("permissions_bite")
    for target, value in PATCHES.get(case_id, {}).items():
        monkeypatch.setattr(target, value)
    try:
        argv = build(tmp_path)
        capsys.readouterr()
        before = snapshot(tmp_path)
        started = time.monotonic()
        if case_id in PERMISSION_CASES:
            result = run_unprivileged(argv, tmp_path)
            code, err = result.returncode, result.stderr.strip()
        else:
            code = main(argv)
            err = capsys.readouterr().err.strip()
        seconds = time.monotonic() - started
        after = snapshot(tmp_path)
    finally:
        restore_permissions(tmp_path)
    assert code == 2, f"{case_id} {what}: exit {code}, stderr {err!r}"
    limit = 60 if case_id in PERMISSION_CASES else 30  # a fresh process also imports torch (as B61-B70's do)
    assert seconds < limit, f"{case_id}: took {seconds:.1f}s to refuse"
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("replearn: error: ") and " — fix: " in err, err
    assert not any(unicodedata.category(c) in ("Cc", "Cs") for c in err), f"{case_id}: raw control bytes in {err!r}"
    assert fragment in err, f"{case_id}: {fragment!r} not in {err!r}"
    assert after == before, f"{case_id}: files on disk changed"


def test_catalogue_ids_are_unique_in_order_and_in_this_module_s_range():
    ids = [case_id for case_id, *_ in CASES]
    assert len(ids) == len(set(ids)) and ids == sorted(ids, key=lambda i: int(i[1:]))
    assert all(130 <= int(i[1:]) <= 159 for i in ids)
    assert set(PATCHES) | PERMISSION_CASES <= set(ids)


@pytest.mark.parametrize("build", [noisy_png, linked_big_folder], ids=["B138", "B139"])
def test_the_shrunken_limits_are_what_refuses_B138_and_B139(build, tmp_path, monkeypatch):
    """With the real limits the same trees load: every image, once (the linked folder holds no image)."""
    monkeypatch.chdir(tmp_path)
    build(tmp_path)
    data = load_dataset(DataConfig(name="folder", root=str(tmp_path / "images"), val_fraction=0.2,
                                   plugin_options={"cache_dir": str(tmp_path / "cache"), "image_size": 8}))
    extra = 1 if build is noisy_png else 0
    assert len(data.train_y) + len(data.val_y) + len(data.test_y) == 30 + extra
