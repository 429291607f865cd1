"""Untrusted model files and output paths (issue 22, items 1 and 7) beyond the one-line catalogue
(tests/cli/test_bad_inputs_models.py, B100–B129):

* the hostile inputs that once exhausted memory are refused in a fresh process within seconds and with
  bounded peak memory;
* what the opt-in means: with --trust-model-code a TorchScript file's code does run, and torch.export.load
  runs code from a .pt2 (why .pt2 files need the opt-in too);
* a checkpoint's embedded config chooses nowhere to write (not the cache images are decoded into), while
  its dataset root and numeric settings are still reused to reproduce the run's split;
* output files: --force replaces a regular file with a correct result, each command's own default output is
  re-written without it, and a path that turns into a fifo while the command works is still refused.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

CLI_TESTS = Path(__file__).resolve().parents[1] / "cli"
if str(CLI_TESTS) not in sys.path:
    sys.path.insert(0, str(CLI_TESTS))

from replearn.rundir.io import check_output_file, write_output  # noqa: E402
from replearn.cli.main import main  # noqa: E402
from replearn.errors import RunDirError  # noqa: E402

from helpers import checkpoint, fingerprint, png_tree, replearn_payload  # noqa: E402
from test_bad_inputs_models import (claiming_checkpoint, enormous_checkpoint, inflating_state_dict,  # noqa: E402
                                    pickling_program, torchscript_file)

PEAK_MIB = 1500
MEASURE = ("import resource, sys\nfrom replearn.cli.main import main\ncode = main(sys.argv[1:])\n"
           "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\nsys.exit(code)")


def refused_in_fresh_process(argv: list[str], cwd: Path) -> tuple[float, float, str]:
    """Run the CLI in a new interpreter: (seconds, peak MiB, stderr); it must refuse with exit status 2."""
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", MEASURE, *argv], capture_output=True, text=True, cwd=cwd,
                            timeout=120, env={**os.environ, "REPLEARN_DATA": str(cwd / "none")})
    seconds = time.monotonic() - started
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return seconds, int(result.stdout.split()[-1]) / 1024, result.stderr


@pytest.mark.parametrize("how", ["state_dict", "checkpoint", "claims", "enormous"])
def test_model_files_that_would_exhaust_memory_are_refused_in_seconds(how, tmp_path):
    """A 3-MB state_dict whose record inflates to 3 GiB (read as a state_dict, and as a would-be checkpoint), a
    checkpoint whose directory declares 256 GiB, and one whose encoder arguments ask for terabytes of weights:
    each refused in a fresh process in under a minute with a peak under 1.5 GB (before: 2.3 GB and rising)."""
    if how in ("state_dict", "checkpoint"):
        path = inflating_state_dict(tmp_path, 3 << 30, exact_crc=False)
        assert path.stat().st_size < 8 << 20
        argv = ["probe", str(path), "--dataset", "digits", *(["--model", "torch.nn:Identity"] if how == "state_dict" else [])]
        fragment = "inflates from"
    else:
        path = claiming_checkpoint(tmp_path) if how == "claims" else enormous_checkpoint(tmp_path)
        argv = ["probe", str(path), "--dataset", "digits"]
        fragment = "of memory available" if how == "claims" else "shape differs for"
    before = fingerprint(tmp_path)
    seconds, peak_mib, err = refused_in_fresh_process(argv, tmp_path)
    assert fragment in err
    assert seconds < 60 and peak_mib < PEAK_MIB, (seconds, peak_mib)
    assert fingerprint(tmp_path) == before


def test_trusting_a_torchscript_file_runs_its_code(tmp_path, capsys):
    """The refusal guards against something real: with --trust-model-code, loading the B100 file runs its
    __setstate__, which creates tmp/pwned; the probe then succeeds (the user asked for exactly this)."""
    path = torchscript_file(tmp_path)
    assert main(["probe", str(path), "--dataset", "digits", "--json", str(tmp_path / "r.json")]) == 2
    assert not (tmp_path / "pwned").exists()
    assert main(["probe", str(path), "--dataset", "digits", "--trust-model-code",
                 "--json", str(tmp_path / "r.json")]) == 0, capsys.readouterr().err
    assert (tmp_path / "pwned").exists()
    assert json.loads((tmp_path / "r.json").read_text())["trusted_code"] is True


def test_torch_export_load_runs_code_from_the_file(tmp_path):
    """Why a .pt2 needs the opt-in as well: in torch 2.13, torch.export.load reads a weight marked as pickled
    with torch.load(weights_only=False), so the B103 file runs `touch pwned` when loaded. (If torch makes
    loading safe, this test fails, and .pt2 files could be read without --trust-model-code.)"""
    path = pickling_program(tmp_path)
    code = (f"import torch\ntry:\n    torch.export.load({str(path)!r})\nexcept Exception:\n    pass\n")
    subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120, cwd=tmp_path)
    assert (tmp_path / "pwned").exists()


def folder_checkpoint(tmp: Path, **data: object) -> Path:
    """A replearn checkpoint trained (so its config says) on an image folder, with ``data`` settings."""
    payload = replearn_payload()
    payload["config"]["data"] = {"name": "folder", **data}
    return checkpoint(tmp, payload)


def test_a_checkpoints_config_chooses_no_cache_but_its_root_and_split_are_reused(tmp_path, monkeypatch, capsys):
    """A checkpoint whose config names data.cache_dir: probing decodes the images into the caller's cache
    ($REPLEARN_CACHE), never into the folder the file names (before: it created and filled it). The run's
    dataset root (read, not written) and validation fraction are reused, so the run's split is reproduced
    without --data-root."""
    images = png_tree(tmp_path)
    chosen_cache = tmp_path / "chosen-by-the-file"
    path = folder_checkpoint(tmp_path, root=str(images), cache_dir=str(chosen_cache), val_fraction=0.3)
    monkeypatch.setenv("REPLEARN_CACHE", str(tmp_path / "my-cache"))
    out = tmp_path / "r.json"
    assert main(["probe", str(path), "--dataset", "folder", "--json", str(out)]) == 0, capsys.readouterr().err
    assert not chosen_cache.exists()
    assert any(p.is_file() for p in (tmp_path / "my-cache").rglob("*"))
    result = json.loads(out.read_text())
    assert result["protocol"]["val_fraction"] == 0.3 and result["dataset"]
    splits = result["protocol"]["splits"]
    assert splits["train"] + splits["val"] + splits["test"] == 30


def test_force_replaces_a_file_and_default_outputs_need_no_force(tmp_path, capsys):
    """features --out FILE --force replaces an existing file with the features; probe's default result name
    and report's default report.html are the commands' own outputs and are re-written without --force."""
    path = checkpoint(tmp_path, replearn_payload())
    out = tmp_path / "feats.npz"
    out.write_text("old")
    assert main(["features", str(path), "--dataset", "digits", "--out", str(out)]) == 2
    assert out.read_text() == "old"
    assert main(["features", str(path), "--dataset", "digits", "--out", str(out), "--force"]) == 0
    assert set(np.load(out)["layers"]) == {"stage1", "stage2", "latent"}
    for _ in range(2):
        assert main(["probe", str(path), "--dataset", "digits", "--layer", "latent"]) == 0, capsys.readouterr().err
    assert (tmp_path / "model.probe-digits-latent.json").is_file()


def test_report_rerenders_its_own_default_without_force(tmp_path, capsys):
    from helpers import finished_run

    run = finished_run(tmp_path)
    assert main(["report", str(run)]) == 0
    assert main(["report", str(run), "--out", str(run / "report.html")]) == 0
    assert main(["report", str(run), "--out", str(run / "copy.html")]) == 0  # a new file in the run: allowed
    assert main(["report", str(run), "--out", str(run / "copy.html")]) == 2  # but never replaced
    assert "is a file of the replearn run" in capsys.readouterr().err


def test_an_output_path_that_becomes_a_fifo_while_working_is_refused(tmp_path):
    """check_output_file runs before the work; write_output checks again just before writing."""
    out = tmp_path / "feats.npz"
    check_output_file(out, "--out")
    os.mkfifo(out)  # appears while the command works
    with pytest.raises(RunDirError, match="is not a regular file"):
        write_output(out, "--out", lambda: out.write_bytes(b"x"))
    assert not out.is_file() and out.exists()

