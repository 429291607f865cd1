"""`replearn --help`, `--version` and argument errors answer at once: they import no plug-in, no plotting and
no numerical library (each would cost seconds on a loaded machine); only `replearn run --help`, which lists
every plug-in's config keys, imports the plug-ins."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ["captum", "matplotlib", "sklearn", "torch", "numpy", "pandas", "scipy"]
PROBE = """
import json, sys
from replearn.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "heavy": sorted({m.split('.')[0] for m in sys.modules} & set(%r))}))
""" % HEAVY


def _imports(*argv: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["datasets", "--bogus"], ["run", "--seeds", "many"],
                                  ["compare", "--help"], ["sweep", "--help"]])
def test_help_version_and_argument_errors_import_nothing_heavy(argv):
    result = _imports(*argv)
    assert result["heavy"] == [], f"replearn {' '.join(argv)} imported {result['heavy']}"
    assert result["code"] in (0, 2)


def test_run_help_lists_the_plugins_config_keys():
    done = subprocess.run([sys.executable, "-m", "replearn.cli", "run", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0
    assert "config keys" in done.stdout and "train.epochs" in done.stdout
