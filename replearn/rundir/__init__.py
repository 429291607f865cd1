"""The run directory: where each artifact lives (layout), reading and writing it safely (io), and RunDir itself."""
from replearn.rundir.directory import RunDir, first_difference  # noqa: F401
