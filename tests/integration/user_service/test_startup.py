"""Start-up refusals, as an operator meets them: `python -m user_service.main` exits at once
with a message saying what to set, and never repeats a secret."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from choreo.testing import free_port, repository_root

SHORT_PASSWORD = "only-11-chr"


def start(**environment: str) -> subprocess.CompletedProcess[str]:
    unrelated = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("USER_", "CHOREO_", "JWT_"))
    }
    return subprocess.run(
        [sys.executable, "-m", "user_service.main"],
        env={
            **unrelated,
            # Nothing listens there: the service must refuse before it needs a database.
            "USER_DATABASE_URL": f"postgresql://127.0.0.1:{free_port()}/users",
            "USER_PORT": str(free_port()),
            **environment,
        },
        cwd=repository_root(),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ({"CHOREO_ENV": "prod"}, "no token signing key: set USER_JWT_PRIVATE_KEY"),
        (
            {
                "CHOREO_ENV": "test",
                "CHOREO_ADMIN_EMAIL": "root@example.com",
                "CHOREO_ADMIN_PASSWORD": SHORT_PASSWORD,
            },
            "CHOREO_ADMIN_PASSWORD is refused",
        ),
        (
            {
                "CHOREO_ENV": "test",
                "CHOREO_ADMIN_EMAIL": "root@example.com",
                "CHOREO_ADMIN_PASSWORD": "choreo-admin",
            },
            "the dev default password is refused outside CHOREO_ENV=dev",
        ),
    ],
)
def test_the_service_refuses_to_start_and_says_why(
    environment: dict[str, str], message: str
) -> None:
    finished = start(**environment)
    output = finished.stdout + finished.stderr
    assert finished.returncode != 0
    assert message in output
    assert SHORT_PASSWORD not in output
    assert "choreo-admin" not in output
