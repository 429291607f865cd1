"""Modules moved by the 0.2 layout keep working under their old names for one release, with a warning."""
from __future__ import annotations

import importlib
import sys

import pytest

from replearn._moved import MOVED


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_module_name_gives_the_moved_module_with_a_warning(old):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=MOVED[old].replace(".", r"\.")):
        module = importlib.import_module(old)
    assert module is importlib.import_module(MOVED[old])
    assert module.__spec__.name == MOVED[old]


def test_old_from_imports_of_the_documented_functions_work():
    sys.modules.pop("replearn.probes", None)  # warned once per process: forget an earlier import
    with pytest.warns(DeprecationWarning):
        from replearn.probes import linear_probe  # noqa: F401
    from replearn.config import Config, load_config  # noqa: F401  (a package now, re-exporting its names)
    from replearn.metrics.probes import linear_probe as moved
    assert linear_probe is moved
