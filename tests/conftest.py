import os

import pytest

pytest_plugins = ["choreo.testing"]


def pytest_configure(config: pytest.Config) -> None:
    # pytest-xdist's workers start with COLUMNS=80 and LINES=24 set (by execnet), where a
    # serial run has neither: the CLI's tests read what a pipe gets either way (a test that
    # wants a narrow terminal sets COLUMNS itself).
    if os.environ.get("PYTEST_XDIST_WORKER"):
        for name in ("COLUMNS", "LINES"):
            os.environ.pop(name, None)
