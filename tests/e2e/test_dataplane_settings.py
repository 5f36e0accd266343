"""`python -m dataplane` with a bad setting: a one-line error naming it and exit status 2, no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.e2e.servers import ROOT, clean_env, free_port

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    "variable, value",
    [
        ("DATAPLANE_MAX_CONCURRENCY", "inf"),
        ("DATAPLANE_LOG_LEVEL", "bogus"),  # read before the settings were, once
        ("DATAPLANE_SEND_TIMEOUT", "0"),
    ],
)
def test_a_bad_setting_stops_the_data_plane_at_start_with_its_name(variable: str, value: str) -> None:
    env = clean_env(
        DATAPLANE_LISTEN=f"127.0.0.1:{free_port()}",
        DATAPLANE_ADMIN_LISTEN=f"127.0.0.1:{free_port()}",
        **{variable: value},
    )
    finished = subprocess.run(
        [sys.executable, "-m", "dataplane"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert finished.returncode == 2
    assert variable in finished.stderr
    assert "Traceback" not in finished.stderr
