"""`manage.py rungateway --dataplanes 2` in a terminal: each child's lines say whose they are, and a
Ctrl-C stops the data planes first, so requests still in their drain reach the demo upstream.

A terminal's Ctrl-C sends SIGINT to its whole foreground process group; the test sends it the same
way, to the group rungateway leads (`running` starts it in a session of its own).
"""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path

import httpx
import pytest
from django.db import connection

from tests.e2e.servers import clean_env, eventually, free_port, free_ports, running

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

WAIT = 90.0


def test_ctrl_c_drains_the_data_planes_before_the_upstreams_stop_and_every_line_names_its_process(
    tmp_path: Path,
) -> None:
    port, proxy, ops = free_port(), free_ports(2), free_ports(2)
    database = connection.settings_dict
    env = clean_env(
        DATABASE_URL=f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
        GATEWAY_VAR_DIR=str(tmp_path / "var"),
        GATEWAY_ADMIN_PASSWORD="rungateway-admin-password-42",
        GATEWAY_LISTEN=f"127.0.0.1:{port}",
        GATEWAY_DEMO="1",
        DATAPLANE_LISTEN=f"127.0.0.1:{proxy}",
        DATAPLANE_ADMIN_LISTEN=f"127.0.0.1:{ops}",
        DATAPLANE_DRAIN_DELAY="4",
    )
    env.pop("CELERY_BROKER_URL", None)
    log = tmp_path / "run.log"
    argv = [sys.executable, "manage.py", "rungateway", "--dataplanes", "2"]
    with running(argv, env=env, ready_url=f"http://127.0.0.1:{port}/healthz", log=log) as process:
        for node in (0, 1):
            eventually(
                lambda node=node: httpx.get(f"http://127.0.0.1:{proxy + node}/users/42").status_code == 200,
                f"data plane {node + 1} serves the demo",
                WAIT,
            )
        os.killpg(process.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        # The data planes drain for 4 s (readyz 503, still serving): the demo upstream must still be there.
        eventually(lambda: httpx.get(f"http://127.0.0.1:{ops}/-/readyz").status_code == 503, "draining", 10)
        for node in (0, 1):
            answer = httpx.get(f"http://127.0.0.1:{proxy + node}/users/42", timeout=10)
            assert answer.status_code == 200, answer.text
            assert answer.json()["service"] == "demo"
        assert process.wait(timeout=WAIT) == 0

    lines = log.read_text().splitlines()
    # Every line a child wrote carries its name; both data planes can be told apart.
    assert any(re.match(r"dataplane   \| .* INFO dataplane proxy listening on ", line) for line in lines), lines
    assert any(re.match(r"dataplane-2 \| .* INFO dataplane proxy listening on ", line) for line in lines), lines
    assert any(line.startswith("web         | ") for line in lines)
    # Stopped in order: the data planes (and their drain) first, the upstreams last.
    stops = [line for line in lines if line.startswith("stopping ")]
    assert stops == ["stopping dataplane, dataplane-2", "stopping web, worker, beat", "stopping demo:8010, demo:8011"]
    drained = max(i for i, line in enumerate(lines) if re.match(r"dataplane(-2)? +\| .* data plane \S+ stopped", line))
    assert drained < lines.index("stopping web, worker, beat")
    assert lines[-1] == "stopped"
