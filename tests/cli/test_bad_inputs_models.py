"""Untrusted model files and output paths (issue 22, items 1 and 7), in the catalogue's format: B100–B129.

Each case must end in one line naming the problem and the fix, exit status 2, no traceback, and no file on
disk created, changed or removed (``test_bad_inputs.py``'s harness, which also checks that no ``pwned`` file
appeared). The model files here are hostile: TorchScript archives whose loading or forward writes a file,
a torch.export program whose loading unpickles code, a checkpoint that names an import path to run, files
whose records inflate to gigabytes; the output paths are a run's own files, fifos, devices and links.
The builders are shared with tests/reliability/test_untrusted_models.py and tests/cli/test_foreign_models.py.
"""
import io
import json
import os
import stat
import struct
import subprocess
import sys
import warnings
import zipfile
import zlib
from pathlib import Path

import pytest
import torch
import torch.nn as nn

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # docs/generate.py imports this file by path
    sys.path.insert(0, str(HERE))

import helpers
from helpers import Exploit, checkpoint, finished_run, replearn_payload  # noqa: E402


# ---------------------------------------------------------------- TorchScript files that run code

class SetstateWrites(nn.Module):
    """Loading this TorchScript module runs its ``__setstate__``, which maps ``target`` with
    ``torch.from_file(shared=True)``: that creates the file, or resizes and zeroes part of an existing one."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target
        self.buf = torch.zeros(1)
        self.lin = nn.Linear(64, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.flatten(1))

    @torch.jit.export
    def __getstate__(self) -> tuple[str, nn.Linear, bool, torch.Tensor]:
        return (self.target, self.lin, self.training, self.buf)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, nn.Linear, bool, torch.Tensor]) -> None:
        self.target = state[0]
        self.lin = state[1]
        self.training = state[2]
        self.buf = torch.from_file(self.target, True, 16)


class ForwardWrites(nn.Module):
    """A TorchScript module whose ``forward`` creates ``target`` (the features of it would be exported)."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target
        self.lin = nn.Linear(64, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mapped = torch.from_file(self.target, True, 16)
        return self.lin(x.flatten(1)) + mapped.float().sum() * 0


def torchscript_file(tmp: Path, module_class: type = SetstateWrites, name: str = "model.pt") -> Path:
    """A TorchScript archive of ``module_class`` aimed at ``tmp/pwned``, saved with a .pt suffix like a checkpoint.
    Scripted in this process when torch can; once another test has scripted an ``nn.Linear`` of other settings,
    torch renames that type and scripting the ``__getstate__`` annotation fails, so then in a fresh interpreter."""
    path = tmp / name
    target = str(tmp / "pwned")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated as of torch 2.13
        try:
            torch.jit.save(torch.jit.script(module_class(target)), str(path))
            return path
        except RuntimeError:
            pass
    here = Path(__file__).resolve().parent
    code = (f"import sys, warnings; sys.path[:0] = {[str(here), str(here.parent)]!r}; "
            "warnings.simplefilter('ignore'); import torch, test_bad_inputs_models as m; "
            f"torch.jit.save(torch.jit.script(m.{module_class.__name__}({target!r})), {str(path)!r})")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300, capture_output=True)
    return path


# ---------------------------------------------------------------- torch.export programs

class SmallNet(nn.Module):
    """Digits-sized: a convolution, a ReLU, a linear output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4 * 64, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).flatten(1))


def exported_program(tmp: Path, name: str = "net.pt2", free_batch: bool = True, net: nn.Module | None = None) -> Path:
    """``net`` (default SmallNet) exported in eval mode for 1×8×8 images, with a free batch size unless told."""
    torch.manual_seed(0)
    net = (net or SmallNet()).eval()
    shapes = ({0: torch.export.Dim("batch")},) if free_batch else None
    program = torch.export.export(net, (torch.zeros(2, 1, 8, 8),), dynamic_shapes=shapes)
    path = tmp / name
    torch.export.save(program, str(path))
    return path


def rewrite_zip(path: Path, replace: dict) -> None:
    """Rewrite the archive at ``path`` with the members whose names end with a key of ``replace`` given new bytes."""
    with zipfile.ZipFile(path) as zf:
        members = [(info.filename, zf.read(info.filename)) for info in zf.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members:
            new = next((v for k, v in replace.items() if name.endswith(k)), data)
            zf.writestr(name, new)


def damaged_program(tmp: Path) -> Path:
    """A .pt2 whose graph description is not JSON."""
    path = exported_program(tmp, "damaged.pt2")
    rewrite_zip(path, {"models/model.json": b"{not json"})
    return path


def pickling_program(tmp: Path) -> Path:
    """A .pt2 whose first weight is marked as pickled and holds a pickle that runs ``touch tmp/pwned``:
    torch.export.load reads pickled weights with torch.load(weights_only=False)."""
    path = exported_program(tmp, "evil.pt2")
    with zipfile.ZipFile(path) as zf:
        config_name = next(n for n in zf.namelist() if n.endswith("model_weights_config.json"))
        config = json.loads(zf.read(config_name))
    first = next(iter(config["config"].values()))
    first["use_pickle"] = True
    buffer = io.BytesIO()
    torch.save(Exploit(str(tmp / "pwned")), buffer)
    rewrite_zip(path, {"model_weights_config.json": json.dumps(config).encode(),
                       f"data/weights/{first['path_name']}": buffer.getvalue()})
    return path


# ---------------------------------------------------------------- archives that inflate or claim too much

def _zip_entry(name: str, data: bytes, method: int, crc: int, size: int, offset: int) -> tuple[bytes, bytes]:
    """A zip member's local header with its data, and its central-directory record."""
    raw = name.encode()
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0, crc, len(data), size, len(raw), 0)
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0, crc, len(data), size,
                          len(raw), 0, 0, 0, 0, 0, offset)
    return local + raw + data, central + raw


def write_zip(path: Path, members: list[tuple[str, bytes, int, int, int]]) -> Path:
    """A zip archive of (name, stored bytes, method, CRC-32, declared size) members, written by hand so that
    a member may be pre-compressed or declare any size."""
    body, directory, offset = [], [], 0
    for name, data, method, crc, size in members:
        local, central = _zip_entry(name, data, method, crc, size, offset)
        body.append(local)
        directory.append(central)
        offset += len(local)
    count = min(len(members), 0xFFFF)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, sum(map(len, directory)), offset, 0)
    path.write_bytes(b"".join(body) + b"".join(directory) + end)
    return path


def _deflated_zeros(nbytes: int, chunk: int = 16 << 20) -> bytes:
    """A raw deflate stream of ``nbytes`` zero bytes (~1000× smaller), from one compressed chunk repeated."""
    assert nbytes % chunk == 0 or nbytes < chunk
    chunk = min(chunk, nbytes)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    segment = compressor.compress(bytes(chunk)) + compressor.flush(zlib.Z_FULL_FLUSH)
    return segment * (nbytes // chunk) + zlib.compressobj(9, zlib.DEFLATED, -15).flush()


def inflating_state_dict(tmp: Path, nbytes: int, name: str = "bomb.pt", exact_crc: bool = True) -> Path:
    """A torch.save state_dict {'w': float32 tensor of ``nbytes``} whose tensor record is deflated: torch's reader
    accepts that, and would allocate all ``nbytes`` while inflating. (``exact_crc=False`` skips computing the
    CRC of gigabytes: nothing may read the record before refusing it.)"""
    numel = nbytes // 4
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(16)}, buffer)
    with zipfile.ZipFile(buffer) as zf:
        members = [(info.filename, zf.read(info.filename)) for info in zf.infolist()]
    entries = []
    for member, data in members:
        if member.endswith("data.pkl"):  # BININT1 16 (numel and size) becomes BININT numel
            data = data.replace(b"K\x10", b"J" + struct.pack("<i", numel))
        if member.endswith("data/0"):
            crc = 0
            if exact_crc:
                for _ in range(nbytes // (1 << 20)):
                    crc = zlib.crc32(bytes(1 << 20), crc)
            entries.append((member, _deflated_zeros(nbytes), zipfile.ZIP_DEFLATED, crc, nbytes))
        else:
            entries.append((member, data, zipfile.ZIP_STORED, zlib.crc32(data), len(data)))
    return write_zip(tmp / name, entries)


def claiming_checkpoint(tmp: Path, records: int = 64) -> Path:
    """A replearn checkpoint whose zip directory declares ``records`` extra 4-GiB records (256 GiB in all)."""
    good = checkpoint(tmp, replearn_payload(), name="good.pt")
    with zipfile.ZipFile(good) as zf:
        members = [(info.filename, zf.read(info.filename)) for info in zf.infolist()]
    prefix = members[0][0].split("/")[0]
    entries = [(n, d, zipfile.ZIP_STORED, zlib.crc32(d), len(d)) for n, d in members]
    entries += [(f"{prefix}/data/x{i}", b"\0" * 64, zipfile.ZIP_STORED, 0, 0xFFFFFFF0) for i in range(records)]
    good.unlink()
    return write_zip(tmp / "claims.pt", entries)


def crowded_archive(tmp: Path, members: int = 400_000) -> Path:
    """A 31-MB zip of 400,000 empty members: zipfile would build a Python object for each (~400 bytes)."""
    return write_zip(tmp / "crowded.pt", [(f"m/{i}", b"", zipfile.ZIP_STORED, 0, 0) for i in range(members)])


def legacy_checkpoint(tmp: Path) -> Path:
    path = tmp / "legacy.pt"
    torch.save(replearn_payload(), path, _use_new_zipfile_serialization=False)
    return path


# ---------------------------------------------------------------- checkpoints that choose code or sizes

def spec_checkpoint(tmp: Path, spec: dict, name: str = "spec.pt") -> Path:
    payload = replearn_payload()
    payload["encoder_spec"] = spec
    return checkpoint(tmp, payload, name)


def import_path_checkpoint(tmp: Path) -> Path:
    """A checkpoint whose encoder_spec names subprocess:run with arguments that would touch tmp/pwned."""
    return spec_checkpoint(tmp, {"name": "subprocess:run", "kwargs": {"args": ["touch", str(tmp / "pwned")]},
                                 "in_shape": [1, 8, 8], "layers": ["stdout"]})


def enormous_checkpoint(tmp: Path) -> Path:
    """A conv-encoder checkpoint whose recorded arguments ask for 2^20-channel stages (terabytes of weights)."""
    return spec_checkpoint(tmp, {"name": "conv", "kwargs": {"in_shape": [1, 8, 8], "latent_dim": 6,
                                                            "channels": [1 << 20, 1 << 20], "kernel_size": 3}})


# ---------------------------------------------------------------- output paths

def features_to(tmp: Path, out: Path, *extra: str) -> list[str]:
    return ["features", str(checkpoint(tmp, replearn_payload())), "--dataset", "digits", "--out", str(out), *extra]


def existing_file(tmp: Path, name: str = "keep.npz") -> Path:
    path = tmp / name
    path.write_text("a file the user keeps")
    return path


def fifo(tmp: Path) -> Path:
    path = tmp / "pipe"
    os.mkfifo(path)
    return path


def device_node(tmp: Path) -> Path:
    """A character device like /dev/null, made here (needs root; skipped otherwise)."""
    path = tmp / "null-device"
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except (PermissionError, OSError) as exc:
        pytest.skip(f"cannot make a device node here ({exc})")
    return path


def link_to_file(tmp: Path) -> Path:
    target = existing_file(tmp, "target.npz")
    (tmp / "link.npz").symlink_to(target)
    return tmp / "link.npz"


def model_fifo(tmp: Path) -> list[str]:
    path = tmp / "model-pipe.pt"
    os.mkfifo(path)
    return ["probe", str(path), "--dataset", "digits"]


def trusted(tmp: Path, path: Path, *extra: str) -> list[str]:
    return ["probe", str(path), "--dataset", "digits", "--trust-model-code", "--json", str(tmp / "r.json"), *extra]


REFUSED = "add --trust-model-code if you trust the file's author"

# (id, what is wrong, builder(tmp) -> argv, fragment the one-line message must contain)
CASES = [
    ("B100", "TorchScript file whose loading runs code (its __setstate__ writes a file), without the opt-in", lambda t: ["probe", str(torchscript_file(t)), "--dataset", "digits"], REFUSED),
    ("B101", "TorchScript file whose forward writes a file, given to features without the opt-in", lambda t: ["features", str(torchscript_file(t, ForwardWrites)), "--dataset", "digits", "--out", str(t / "f.npz")], "is a TorchScript archive; loading it runs code the file contains"),
    ("B102", "TorchScript file given with --model (the weights-only path), even with the opt-in", lambda t: ["probe", str(torchscript_file(t)), "--dataset", "digits", "--model", "torch.nn:Identity", "--trust-model-code"], "--model reads weights only"),
    ("B103", "torch.export program whose loading would unpickle code, without the opt-in", lambda t: ["probe", str(pickling_program(t)), "--dataset", "digits"], "is a torch.export program; loading it runs code"),
    ("B104", "torch.export program given with --model", lambda t: ["features", str(pickling_program(t)), "--dataset", "digits", "--model", "torch.nn:Identity", "--out", str(t / "f.npz")], "is a torch.export program, not a state_dict"),
    ("B105", "state_dict whose tensor record inflates ~1000× (a zip bomb)", lambda t: ["probe", str(inflating_state_dict(t, 64 << 20)), "--dataset", "digits", "--model", "torch.nn:Identity"], "inflates from"),
    ("B106", "checkpoint whose zip directory declares 256 GiB of records", lambda t: ["probe", str(claiming_checkpoint(t)), "--dataset", "digits"], "of memory available"),
    ("B107", "checkpoint in torch.save's pre-1.6 format (not a zip archive)", lambda t: ["probe", str(legacy_checkpoint(t)), "--dataset", "digits"], "not a complete zip archive"),
    ("B108", "checkpoint that names its encoder by an import path (importing runs code)", lambda t: ["probe", str(import_path_checkpoint(t)), "--dataset", "digits"], "names its encoder by import path 'subprocess:run'"),
    ("B109", "checkpoint whose encoder arguments ask for terabytes of weights", lambda t: ["probe", str(enormous_checkpoint(t)), "--dataset", "digits"], "shape differs for"),
    ("B110", "--model naming another encoder than the checkpoint's", lambda t: ["probe", str(checkpoint(t, replearn_payload())), "--dataset", "digits", "--model", "torch.nn:Identity"], "holds the encoder 'conv'"),
    ("B111", "model file that is a fifo (reading it would block)", model_fifo, "is not a regular file"),
    ("B112", "report --out naming the run's own config.yaml", lambda t: (lambda r: ["report", str(r), "--out", str(r / "config.yaml")])(finished_run(t)), "is a file of the replearn run"),
    ("B113", "report --out naming a run's status.json, with --force", lambda t: (lambda r: ["report", str(r), "--out", str(r / "status.json"), "--force"])(finished_run(t)), "a run's files are never replaced"),
    ("B114", "features --out naming an existing file, without --force", lambda t: features_to(t, existing_file(t)), "exists — fix: pass --force to replace it"),
    ("B115", "probe --json naming an existing file, without --force", lambda t: ["probe", str(checkpoint(t, replearn_payload())), "--dataset", "digits", "--json", str(existing_file(t, "r.json"))], "pass --force to replace it"),
    ("B116", "report --out naming an existing file, without --force", lambda t: (lambda r: ["report", str(r), "--out", str(existing_file(t, "page.html"))])(finished_run(t)), "pass --force to replace it"),
    ("B117", "features --out naming a fifo, with --force", lambda t: features_to(t, fifo(t), "--force"), "is not a regular file"),
    ("B118", "features --out naming a device node, with --force", lambda t: features_to(t, device_node(t), "--force"), "is not a regular file"),
    ("B119", "features --out naming a symbolic link, with --force", lambda t: features_to(t, link_to_file(t), "--force"), "is a symbolic link"),
    ("B120", "features --layer labels (the .npz keeps the class labels as labels.<split>)", lambda t: features_to(t, t / "f.npz", "--layer", "labels"), "would be written as 'labels.<split>'"),
    ("B121", "torch.export program exported for one batch size only", lambda t: trusted(t, exported_program(t, free_batch=False)), "with a free batch size"),
    ("B122", "--layer naming a node the exported graph does not have", lambda t: trusted(t, exported_program(t), "--layer", "conv"), "the exported program has no node 'conv' — fix: choose node names such as conv2d"),
    ("B123", "--layer on a TorchScript file (only its output can be read)", lambda t: trusted(t, torchscript_file(t, ForwardWrites), "--layer", "lin"), "exposes only its output"),
    ("B124", "trusted torch.export program whose graph description is damaged", lambda t: trusted(t, damaged_program(t)), "is not a loadable torch.export program"),
    ("B125", "--model-kwargs given for a replearn checkpoint", lambda t: ["probe", str(checkpoint(t, replearn_payload())), "--dataset", "digits", "--model-kwargs", '{"width": 8}'], "drop --model-kwargs"),
    ("B126", "checkpoint whose pickle is 20 MiB (a pickle can build structures many times its size)", lambda t: ["probe", str(checkpoint(t, {**replearn_payload(), "notes": "x" * (20 << 20)})), "--dataset", "digits"], "more than the 16 MiB a model's index needs"),
    ("B127", "model file listing 400,000 records", lambda t: ["probe", str(crowded_archive(t)), "--dataset", "digits"], "more than the 16 MiB any saved model needs"),
]


@pytest.mark.parametrize("case_id, what, build, fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_model_input_answers_in_one_line(case_id, what, build, fragment, tmp_path, capsys, monkeypatch):
    """The catalogue's harness: exit 2, one line with the fragment, no traceback, nothing on disk changed."""
    helpers.assert_refused_in_one_line(case_id, what, build, fragment, tmp_path, capsys, monkeypatch)


def test_case_ids_are_unique_in_order_and_in_this_files_range():
    ids = [int(case_id[1:]) for case_id, *_ in CASES]
    assert ids == sorted(set(ids)) and 100 <= ids[0] and ids[-1] <= 129


def test_the_hostile_archives_are_what_they_claim(tmp_path):
    """The builders make real attacks: torch itself reads the deflated record (allocating all it declares),
    and the claiming checkpoint's directory declares what its name says."""
    state = torch.load(inflating_state_dict(tmp_path, 8 << 20), weights_only=True)
    assert state["w"].shape == (2 << 20,) and not state["w"].any()
    with zipfile.ZipFile(claiming_checkpoint(tmp_path)) as zf:
        assert sum(i.file_size for i in zf.infolist()) > 250 << 30
