"""The catalogue of bad inputs (docs/reliability.md, generated from CASES by docs/generate.py): each case must end with one line naming the problem and
the fix, exit status 2, no traceback, and no file on disk created, changed or removed.

Each case builds its inputs under ``tmp_path`` and returns the command line; the whole directory tree is
fingerprinted before and after the command.
"""
from __future__ import annotations

import gzip
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from replearn.cli.main import main

from helpers import make_blob_images
from helpers import write_yaml, blobs_npz, tiny, idx_dir, idx_run, finished_run, checkpoint, replearn_payload, Exploit, plugin_module, png_tree, folder_run, fingerprint, assert_refused_in_one_line


def case_malicious_checkpoint(tmp: Path) -> list[str]:
    path = tmp / "evil.pt"
    torch.save({"format": "replearn-checkpoint", "encoder": Exploit(str(tmp / "pwned"))}, path)
    return ["probe", str(path), "--dataset", "digits"]


def case_unwritable_out(tmp: Path) -> list[str]:
    blocker = tmp / "a-file"
    blocker.write_text("not a directory")
    return ["run", write_yaml(tmp, tiny(tmp)), "--out", str(blocker / "run")]


NAN_REGIME = """
import torch
from replearn.regimes import Regime

class NanLoss(Regime):
    name = "nanloss"
    def build_head(self, encoder, data):
        return torch.nn.Identity()
    def loss(self, encoder, head, x, y, generator):
        return encoder(x).mean() * float("nan"), {}
"""
NOT_AN_ENCODER = """
import torch.nn as nn

def linear(in_shape, latent_dim):
    return nn.Linear(3, latent_dim)
"""

PLAIN_NET = """
import torch.nn as nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        return self.pool(self.conv(x)).flatten(1)
"""

BILLION_LAUGHS = "train: {epochs: &l0 [1, 1, 1, 1, 1, 1, 1, 1, 1]}\n" + "".join(
    f"l{i}: &l{i} [*l{i - 1}, *l{i - 1}, *l{i - 1}, *l{i - 1}, *l{i - 1}, *l{i - 1}, *l{i - 1}, *l{i - 1}, *l{i - 1}]\n"
    for i in range(1, 9))


def npz_claiming(tmp: Path, shape: tuple[int, ...], name: str = "claims.npz") -> Path:
    """An .npz whose train_x header declares ``shape`` (float64) but whose data is a few bytes."""
    import io
    import zipfile

    path = blobs_npz(tmp, name=name)
    arrays = dict(np.load(path))
    header = io.BytesIO()
    np.lib.format.write_array_header_2_0(header, {"descr": "<f8", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w") as zf:
        for key, value in arrays.items():
            if key == "train_x":
                zf.writestr("train_x.npy", header.getvalue() + b"\0" * 64)
            else:
                buffer = io.BytesIO()
                np.save(buffer, value)
                zf.writestr(f"{key}.npy", buffer.getvalue())
    return path


def zip_bomb_npz(tmp: Path) -> Path:
    """A 100-kB .npz whose train_x inflates to 64 MB of zeros (ratio ~1000)."""
    path = tmp / "bomb.npz"
    _, y = make_blob_images(96, seed=1)
    tx, ty = make_blob_images(30, seed=2)
    np.savez_compressed(path, train_x=np.zeros((96, 1, 409, 409), np.float32), train_y=y, test_x=tx, test_y=ty)
    return path


def damaged_npz(tmp: Path, how: str) -> Path:
    path = blobs_npz(tmp, name=f"{how}.npz")
    data = bytearray(path.read_bytes())
    if how == "truncated":
        data = data[:len(data) // 2]
    else:  # flip bytes inside the stored train_x array: its CRC-32 no longer matches
        data[200:216] = bytes(b ^ 0xFF for b in data[200:216])
    path.write_bytes(bytes(data))
    return path


def npz_run(tmp: Path, path: Path, *extra: str) -> list[str]:
    return ["run", "--set", "data.name=npz", "--set", f"data.root={path}", *extra]


def edited_resume(tmp: Path, key: str, value: object) -> list[str]:
    """A finished run made resumable (status back to interrupted), then its config.yaml edited."""
    run_dir = finished_run(tmp)
    (run_dir / "status.json").write_text('{"state": "interrupted", "message": ""}')
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    section, name = key.split(".")
    config[section][name] = value
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    return ["run", "--resume", str(run_dir)]


def resume_on_changed_data(tmp: Path) -> list[str]:
    run_dir = finished_run(tmp, fresh=True)  # its data is tmp/blobs.npz, changed below
    (run_dir / "status.json").write_text('{"state": "interrupted", "message": ""}')
    x, y = make_blob_images(96, seed=7)  # same shapes and config, other images
    arrays = dict(np.load(tmp / "blobs.npz"))
    arrays.update(train_x=x, train_y=y)
    np.savez(tmp / "blobs.npz", **arrays)
    return ["run", "--resume", str(run_dir)]


def complete_without_report(tmp: Path) -> list[str]:
    run_dir = finished_run(tmp)
    (run_dir / "report.html").unlink()
    return ["run", "--resume", str(run_dir)]


def symlinked_run(tmp: Path) -> list[str]:
    target = finished_run(tmp)
    (tmp / "link").symlink_to(target)
    return ["run", write_yaml(tmp, tiny(tmp)), "--out", str(tmp / "link"), "--force"]


def altered_checkpoint(tmp: Path, **fields: object) -> list[str]:
    payload = replearn_payload()
    payload.update(fields)
    return ["probe", str(checkpoint(tmp, payload)), "--dataset", "digits"]


def ambiguous_layout(tmp: Path) -> Path:
    return blobs_npz(tmp, train_x=np.zeros((96, 3, 8, 3), np.uint8), test_x=np.zeros((30, 3, 8, 3), np.uint8),
                     name="ambiguous.npz")


# (id, what is wrong, builder(tmp) -> argv, fragment the one-line message must contain)
CASES = [
    ("B01", "malformed YAML", lambda t: ["run", write_yaml(t, "train:\n  epochs: 3\n   lr: 1\n")], "not valid YAML at line 3"),
    ("B02", "config file that is a list, not a mapping", lambda t: ["run", write_yaml(t, "- 1\n- 2\n")], "must hold a mapping"),
    ("B03", "config file missing", lambda t: ["run", str(t / "nope.yaml")], "does not exist"),
    ("B04", "unknown key (nearest valid one suggested)", lambda t: ["run", write_yaml(t, {"train": {"epoch": 2}})], "did you mean 'train.epochs'"),
    ("B05", "unknown section", lambda t: ["run", write_yaml(t, {"trian": {"epochs": 2}})], "unknown config key 'trian'"),
    ("B06", "unknown --set key", lambda t: ["run", "--set", "model.latent=3"], "did you mean 'model.latent_dim'"),
    ("B07", "wrong type", lambda t: ["run", "--set", "train.epochs=three"], "must be of type int"),
    ("B08", "wrong type inside a list", lambda t: ["run", "--set", "model.channels=[8, wide]"], "must be of type int"),
    ("B09", "negative epochs", lambda t: ["run", "--set", "train.epochs=-1"], "must be >= 0"),
    ("B10", "zero batch size", lambda t: ["run", "--set", "train.batch_size=0"], "must be >= 1"),
    ("B11", "learning rate <= 0", lambda t: ["run", "--set", "train.lr=0"], "must be > 0.0"),
    ("B12", "NaN learning rate", lambda t: ["run", "--set", "train.lr=.nan"], "must be finite"),
    ("B13", "unknown choice", lambda t: ["run", "--set", "train.optimizer=adagrad"], "choose one of"),
    ("B14", "even kernel size", lambda t: ["run", "--set", "model.kernel_size=4"], "must be odd"),
    ("B15", "latent dimension larger than the input", lambda t: ["run", "--set", "model.latent_dim=65", "--out", str(t / "o")], "larger than the input"),
    ("B16", "more stages than the image size allows", lambda t: ["run", "--set", "model.channels=[4,4,4,4]", "--out", str(t / "o")], "too many for 8×8"),
    ("B17", "unknown dataset", lambda t: ["run", "--set", "data.name=cifar"], "unknown dataset 'cifar'"),
    ("B18", "missing IDX files", lambda t: ["run", "--set", "data.name=mnist", "--data-root", str(t / "empty")], "IDX files not found; looked in"),
    ("B19", "some IDX files missing", lambda t: (lambda r: ((r / "t10k-labels-idx1-ubyte.gz").unlink(), idx_run(t, r))[1])(idx_dir(t)), "missing t10k-labels"),
    ("B20", "truncated IDX file", lambda t: (lambda r: ((r / "train-images-idx3-ubyte.gz").write_bytes((r / "train-images-idx3-ubyte.gz").read_bytes()[:60]), idx_run(t, r))[1])(idx_dir(t)), "truncated"),
    ("B21", "corrupted (non-gzip) IDX file", lambda t: (lambda r: ((r / "train-labels-idx1-ubyte.gz").write_bytes(b"garbage" * 10), idx_run(t, r))[1])(idx_dir(t)), "not a readable"),
    ("B22", "IDX file with a bad magic number", lambda t: (lambda r: ((r / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x01\x02\x08\x01" + b"\0" * 8)), idx_run(t, r))[1])(idx_dir(t)), "bad magic"),
    ("B23", "image/label count mismatch", lambda t: idx_run(t, idx_dir(t, n_labels=39)), "40 images but"),
    ("B24", "images of the wrong rank", lambda t: ["run", "--set", "data.name=npz", "--set", f"data.root={blobs_npz(t, train_x=np.zeros((96, 1, 1, 8, 8)))}"], "rank 5"),
    ("B25", "images too small for the encoder", lambda t: ["run", write_yaml(t, tiny(t, data={"root": str(blobs_npz(t, train_x=np.zeros((96, 1, 1)), test_x=np.zeros((30, 1, 1)), name="small.npz"))}))], "too small"),
    ("B26", "single-class dataset", lambda t: ["run", "--set", "data.name=npz", "--set", f"data.root={blobs_npz(t, train_y=np.zeros(96, int))}"], "single class"),
    ("B27", "empty dataset", lambda t: ["run", "--set", "data.name=npz", "--set", f"data.root={blobs_npz(t, train_x=np.zeros((0, 8, 8)), train_y=np.zeros(0, int))}"], "empty"),
    ("B28", "NaN pixels", lambda t: ["run", "--set", "data.name=npz", "--set", f"data.root={blobs_npz(t, train_x=np.full((96, 8, 8), np.nan))}"], "NaN"),
    ("B29", "train and test images of different sizes", lambda t: ["run", "--set", "data.name=npz", "--set", f"data.root={blobs_npz(t, test_x=np.zeros((30, 9, 9)))}"], "same shape"),
    ("B30", "npz file without the expected arrays", lambda t: (np.savez(t / "x.npz", a=np.zeros(3)), ["run", "--set", "data.name=npz", "--set", f"data.root={t / 'x.npz'}"])[1], "lacks the arrays"),
    ("B31", "dataset smaller than the label-efficiency settings need", lambda t: ["run", write_yaml(t, tiny(t, analysis={"label_counts": [1, 500]}))], "label_counts asks for 500"),
    ("B32", "checkpoint from another architecture", lambda t: ["probe", str(checkpoint(t, replearn_payload(channels=(4, 8), weights_from=(8, 16)))), "--dataset", "digits"], "shape differs for stages.stage1"),
    ("B33", "checkpoint that is not replearn's", lambda t: ["probe", str(checkpoint(t, {"weights": torch.zeros(3)})), "--dataset", "digits"], "not a replearn checkpoint"),
    ("B34", "checkpoint whose unpickling would run code", case_malicious_checkpoint, "was refused"),
    ("B35", "truncated checkpoint", lambda t: (lambda p: (p.write_bytes(p.read_bytes()[:100]), ["probe", str(p), "--dataset", "digits"])[1])(checkpoint(t, replearn_payload())), "not a readable PyTorch file"),
    ("B36", "checkpoint probed on images of another size", lambda t: ["probe", str(checkpoint(t, replearn_payload(in_shape=(1, 16, 16), channels=(4, 8), weights_from=(4, 8)))), "--dataset", "digits"], "expects 1×16×16 images"),
    ("B37", "probe of an unknown layer", lambda t: ["probe", str(checkpoint(t, replearn_payload())), "--dataset", "digits", "--layer", "stage7"], "unknown layer 'stage7'"),
    ("B38", "nonexistent run directory given to report", lambda t: ["report", str(t / "missing")], "does not exist"),
    ("B39", "foreign directory given to report", lambda t: ((t / "foreign").mkdir(), (t / "foreign" / "notes.txt").write_text("x"), ["report", str(t / "foreign")])[2], "not a replearn run directory"),
    ("B40", "nonexistent run directory given to --resume", lambda t: ["run", "--resume", str(t / "missing")], "does not exist"),
    ("B41", "foreign directory given to --resume", lambda t: ((t / "foreign").mkdir(), ["run", "--resume", str(t / "foreign")])[1], "not a replearn run directory"),
    ("B42", "--resume of a finished run", lambda t: ["run", "--resume", str(finished_run(t))], "already complete"),
    ("B43", "--resume combined with other options", lambda t: ["run", "--resume", str(t), "--set", "train.epochs=1"], "cannot be combined"),
    ("B44", "output directory that exists (needs --force)", lambda t: ((t / "taken").mkdir(), (t / "taken" / "keep.txt").write_text("x"), ["run", "--out", str(t / "taken")])[2], "pass --force"),
    ("B45", "--force on a directory that is not a replearn run", lambda t: ((t / "taken").mkdir(), (t / "taken" / "keep.txt").write_text("x"), ["run", "--out", str(t / "taken"), "--force"])[2], "will not delete it"),
    ("B46", "unwritable output directory", case_unwritable_out, "not a writable directory"),
    ("B47", "--seeds 0", lambda t: ["run", "--seeds", "0"], "--seeds must be at least 1"),
    ("B48", "duplicated seeds", lambda t: ["run", "--set", "train.seeds=[1, 1]"], "lists a seed twice"),
    ("B49", "unknown regime", lambda t: ["run", "--set", "train.regimes=[supervised, autoencodr]"], "unknown regime 'autoencodr'"),
    ("B50", "unknown encoder", lambda t: ["run", "--set", "model.name=resnet9000"], "unknown encoder 'resnet9000'"),
    ("B51", "import path that does not import", lambda t: ["run", "--set", "train.regimes=[no_such_module_b51:Thing]"], "could not be imported"),
    ("B52", "import path that names something that is not a Regime", lambda t: ["run", "--set", f"train.regimes=[{plugin_module(t, 'plug_b52', 'THING = 3')}:THING]"], "not a Regime"),
    ("B53", "import path that names something that is not an Encoder", lambda t: ["run", "--set", f"model.name={plugin_module(t, 'plug_b53', NOT_AN_ENCODER)}:linear", "--out", str(t / "o")], "not an Encoder"),
    ("B54", "a regime whose loss becomes NaN", lambda t: ["run", write_yaml(t, tiny(t, train={"regimes": [f"{plugin_module(t, 'plug_b54', NAN_REGIME)}:NanLoss"]})), "--out", str(t / "o")], "non-finite loss"),
    ("B55", "VAE beta <= 0", lambda t: ["run", "--set", "train.regimes=[vae]", "--set", "regimes.vae.beta=0"], "regimes.vae.beta' must be > 0"),
    ("B57", "--threads 0", lambda t: ["run", "--threads", "0"], "--threads must be at least 1"),
    ("B58", "--threads that is not a number", lambda t: ["run", "--threads", "many"], "--threads must be a whole number"),
    ("B60", "selection notes for a regime that is not trained", lambda t: ["run", "--set", "selection.vae=by hand"], "describes 'vae', which train.regimes does not train"),
    ("B56", "contrastive temperature <= 0", lambda t: ["run", "--set", "train.regimes=[contrastive]", "--set", "regimes.contrastive.temperature=-1"], "regimes.contrastive.temperature' must be > 0"),
    ("B61", "YAML aliases that expand to billions of values", lambda t: ["run", write_yaml(t, BILLION_LAUGHS)], "expands to more than 100,000 values"),
    ("B62", "a section given twice in the YAML file", lambda t: ["run", write_yaml(t, "train:\n  epochs: 3\ntrain:\n  lr: 0.1\n")], "gives the key 'train' twice"),
    ("B63", "config path that is a directory", lambda t: ["run", str(t)], "is a directory, not a YAML file"),
    ("B64", "run name with shell characters", lambda t: ["run", "--set", "name=x$(touch pwned)"], "must be a plain name"),
    ("B65", "run name longer than a file name may be", lambda t: ["run", "--set", f"name={'n' * 300}"], "at most 80 characters"),
    ("B66", "model seed of 2^32 or more", lambda t: ["run", "--set", "train.seeds=[4294967296]"], "train.seeds' must be <= 2147483647"),
    ("B67", "split seed of 2^32 or more", lambda t: ["run", "--set", "data.split_seed=4294967296"], "data.split_seed' must be <= 2147483647"),
    ("B68", "npz array header claiming 512 TiB", lambda t: npz_run(t, npz_claiming(t, (2**23, 2**23, 1024))), "more than the"),
    ("B69", "npz member that inflates ~1000× (zip bomb)", lambda t: npz_run(t, zip_bomb_npz(t)), "more than real images do"),
    ("B70", "npz labels up to 10^12", lambda t: npz_run(t, blobs_npz(t, train_y=np.arange(96) % 2 * 10**12)), "labels go up to 1000000000000 but only"),
    ("B71", "truncated npz file", lambda t: npz_run(t, damaged_npz(t, "truncated")), "not a readable .npz file (BadZipFile"),
    ("B72", "npz file with a bad CRC", lambda t: npz_run(t, damaged_npz(t, "crc")), "not a readable .npz file"),
    ("B73", "text labels in an npz", lambda t: npz_run(t, blobs_npz(t, train_y=np.array(["cat", "dog", "owl"] * 32))), "labels are text"),
    ("B74", "labels shaped (N, 1)", lambda t: npz_run(t, blobs_npz(t, train_y=(np.arange(96) % 3)[:, None])), "a column rather than one label per image"),
    ("B75", "pixel values too wide to normalise", lambda t: npz_run(t, blobs_npz(t, train_x=np.where(np.arange(96 * 64).reshape(96, 8, 8) % 2, 1e308, -1e308))), "too wide a range"),
    ("B76", "colour images whose channel axis is ambiguous", lambda t: npz_run(t, ambiguous_layout(t)), "set data.layout=channels-first"),
    ("B77", "probe --json pointing at a directory", lambda t: ["probe", str(checkpoint(t, replearn_payload())), "--dataset", "digits", "--json", str(t)], "is a directory"),
    ("B78", "probe --json in a folder that does not exist", lambda t: ["probe", str(checkpoint(t, replearn_payload())), "--dataset", "digits", "--json", str(t / "no" / "r.json")], "does not exist"),
    ("B79", "report --out pointing at a directory", lambda t: ["report", str(finished_run(t)), "--out", str(t)], "is a directory"),
    ("B80", "--force on a symbolic link to a run", symlinked_run, "is a symbolic link"),
    ("B81", "--out with a name longer than the file system allows", lambda t: ["run", "--out", str(t / ("d" * 300))], "longer than file systems allow"),
    ("B82", "checkpoint whose in_shape has the wrong type", lambda t: altered_checkpoint(t, in_shape="abc"), "malformed 'in_shape'"),
    ("B83", "checkpoint whose config is not a mapping", lambda t: altered_checkpoint(t, config=[1, 2]), "malformed 'config'"),
    ("B84", "checkpoint whose weights are not tensors", lambda t: altered_checkpoint(t, encoder={"w": [1, 2]}), "malformed 'encoder'"),
    ("B85", "test subset too small for the analyses", lambda t: ["run", write_yaml(t, tiny(t, data={"test_subset": 3}))], "set data.test_subset to at least 10"),
    ("B86", "--resume after config.yaml's model was edited", lambda t: edited_resume(t, "model.latent_dim", 5), "model.latent_dim was 6, now 5"),
    ("B87", "--resume after config.yaml's data section was edited", lambda t: edited_resume(t, "data.val_fraction", 0.3), "data.val_fraction was 0.2, now 0.3"),
    ("B88", "--resume after the dataset's files changed", resume_on_changed_data, "the dataset differs from the one"),
    ("B89", "--resume of a complete run whose report is missing", complete_without_report, "report.html is missing"),
    ("B90", "a corrupt PNG among thousands of images", lambda t: folder_run(t, png_tree(t, n=2100, corrupt=1234)), "1 of 2,100 image files cannot be decoded: '"),
    ("B91", "an image-folder class with no images", lambda t: folder_run(t, png_tree(t, empty_class=True)), "holds no images"),
    ("B92", "image files of mixed sizes without data.image_size", lambda t: folder_run(t, png_tree(t, sizes={7: (8, 12)})), "images differ in size"),
    ("B93", "folder dataset without class folders", lambda t: (lambda r: folder_run(t, r / "class0"))(png_tree(t)), "has no class folders (10 images lie directly in it)"),
    ("B94", "folder dataset root that does not exist", lambda t: folder_run(t, t / "nowhere"), "is not a directory"),
    ("B95", "model.layers naming a layer the module does not have", lambda t: ["run", write_yaml(t, tiny(t, model={"name": f"{plugin_module(t, 'plainnet', PLAIN_NET)}:Net", "layers": ["conv", "blocks.9"]}))], "the module has no layer 'blocks.9'"),
    ("B96", "model.layers with a registered encoder name", lambda t: ["run", write_yaml(t, tiny(t, model={"layers": ["stage1"]}))], "model.name must be an import path"),
]


def test_catalogue_ids_are_unique():
    """docs/reliability.md's catalogue is generated from CASES (docs/generate.py; checked by test_docs)."""
    ids = [case_id for case_id, *_ in CASES]
    assert len(ids) == len(set(ids)) >= 30 and all(i[0] == "B" and i[1:].isdigit() for i in ids)


def test_cli_error_has_no_traceback_in_a_real_process(tmp_path):
    result = subprocess.run([sys.executable, "-m", "replearn.cli", "run", "--set", "train.epoch=3"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]


def test_umap_learn_backend_without_umap_learn_is_refused_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)  # as if umap-learn were not installed
    before = fingerprint(tmp_path)
    assert main(["run", "--set", "analysis.umap_backend=umap-learn", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "umap-learn is not installed" in err and "replearn[umap]" in err
    assert fingerprint(tmp_path) == before


BOUNDED = ["B61", "B68", "B69", "B70"]  # inputs that once hung or exhausted memory


@pytest.mark.parametrize("case_id", BOUNDED)
def test_hostile_inputs_are_refused_in_seconds_with_bounded_memory(case_id, tmp_path):
    """In a fresh process: the refusal comes within seconds and the process's peak memory stays near that of
    importing replearn, whatever size the input claims or expands to."""
    build = next(c[2] for c in CASES if c[0] == case_id)
    argv = build(tmp_path)
    probe = ("import resource, sys\nfrom replearn.cli.main import main\ncode = main(sys.argv[1:])\n"
             "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\nsys.exit(code)")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, cwd=tmp_path,
                            timeout=120, env={**os.environ, "REPLEARN_DATA": str(tmp_path / "none")})
    seconds = time.monotonic() - started
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    peak_mib = int(result.stdout.split()[-1]) / 1024
    assert seconds < 60 and peak_mib < 1500, (seconds, peak_mib)


@pytest.mark.parametrize("case_id, what, build, fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input_answers_in_one_line(case_id, what, build, fragment, tmp_path, capsys, monkeypatch):
    assert_refused_in_one_line(case_id, what, build, fragment, tmp_path, capsys, monkeypatch)
