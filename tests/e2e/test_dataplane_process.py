"""`python -m dataplane` as an operator starts it: what it says when it starts and stops, which flags
it takes, and that a standalone node on a bad seed refuses to start instead of living on, never ready."""

from __future__ import annotations

import collections
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.servers import ROOT, clean_env, free_port, running

pytestmark = pytest.mark.e2e

GOOD = """\
format_version: 1
endpoints:
  - name: users
    version: v1
    targets: [{url: "http://127.0.0.1:9/api"}]
"""
BAD = """\
format_version: 1
endpoints:
  - name: users
    version: v1
    timeout: 9999
    targets: [{url: "ftp://127.0.0.1/api"}]
"""
# A log line without its timestamp: "INFO dataplane proxy listening on 127.0.0.1:8080".
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")


def dataplane(*args: str, seed: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "seed.yaml"
    path.write_text(seed)
    return subprocess.run(  # noqa: S603 - our own argv
        [sys.executable, "-m", "dataplane", "--seed", str(path), *args],
        cwd=ROOT,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_standalone_node_on_an_invalid_seed_exits_with_every_problem_and_its_line(
    tmp_path: Path, workers: str
) -> None:
    listen = f"127.0.0.1:{free_port()}"
    result = dataplane("--workers", workers, "--listen", listen, seed=BAD, tmp_path=tmp_path)
    assert result.returncode == 2
    assert "endpoints[0].timeout (line 5): must be at least 1 and at most 300, not 9999" in result.stderr
    assert "endpoints[0].targets[0].url (line 6): 'ftp://127.0.0.1/api' must be an http:// or https:// URL" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr
    # Each problem is said once (not also in a log line before the exit message).
    assert result.stderr.count("endpoints[0].timeout") == 1


def test_a_standalone_node_whose_seed_is_missing_exits_naming_the_file(tmp_path: Path) -> None:
    result = subprocess.run(  # noqa: S603 - our own argv
        [sys.executable, "-m", "dataplane", "--seed", str(tmp_path / "nowhere.yaml")],
        cwd=ROOT,
        env=clean_env(DATAPLANE_LISTEN=f"127.0.0.1:{free_port()}"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "nowhere.yaml could not be read" in result.stderr and "No such file" in result.stderr


def test_a_standalone_node_without_any_seed_exits_saying_what_it_needs(tmp_path: Path) -> None:
    result = subprocess.run(  # noqa: S603 - our own argv
        [sys.executable, "-m", "dataplane"],
        cwd=ROOT,
        env={k: v for k, v in clean_env(DATAPLANE_LISTEN=f"127.0.0.1:{free_port()}").items() if k != "DATAPLANE_SEED"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "no seed file is configured (DATAPLANE_SEED or --seed)" in result.stderr


def test_with_a_control_plane_a_node_on_a_bad_seed_waits_unready_for_it(tmp_path: Path) -> None:
    """§4: with a control plane, a node without config keeps waiting for it (here: none answers)."""
    seed = tmp_path / "seed.yaml"
    seed.write_text(BAD)
    proxy, ops = free_port(), free_port()
    env = clean_env(
        DATAPLANE_CONTROL_PLANE_URL=f"http://127.0.0.1:{free_port()}",
        DATAPLANE_TOKEN="gwdp_nobody",  # noqa: S106 - no control plane listens there
        DATAPLANE_CACHE_DIR=str(tmp_path / "cache"),
        DATAPLANE_SEED=str(seed),
        DATAPLANE_LISTEN=f"127.0.0.1:{proxy}",
    )
    argv = [sys.executable, "-m", "dataplane", "--admin-listen", f"127.0.0.1:{ops}"]
    with running(argv, env=env, ready_url=f"http://127.0.0.1:{ops}/-/livez", log=tmp_path / "dp.log") as process:
        assert httpx.get(f"http://127.0.0.1:{ops}/-/readyz").json() == {"status": "no_config"}
        assert process.poll() is None
    assert "seed rejected, waiting for the control plane" in (tmp_path / "dp.log").read_text()


def test_the_admin_listen_flag_moves_the_ops_listener_and_each_lifecycle_line_comes_once(tmp_path: Path) -> None:
    seed = tmp_path / "seed.yaml"
    seed.write_text(GOOD)
    proxy, ops = free_port(), free_port()
    env = clean_env(DATAPLANE_ADMIN_LISTEN=f"127.0.0.1:{free_port()}", DATAPLANE_DRAIN_DELAY="0")
    argv = [sys.executable, "-m", "dataplane", "--seed", str(seed), "--listen", f"127.0.0.1:{proxy}"]
    argv += ["--admin-listen", f"127.0.0.1:{ops}"]
    log = tmp_path / "dp.log"
    with running(argv, env=env, ready_url=f"http://127.0.0.1:{ops}/-/readyz", log=log) as process:
        assert httpx.get(f"http://127.0.0.1:{ops}/-/readyz").json()["status"] == "ready"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    lines = [TIMESTAMP.sub("", line) for line in log.read_text().splitlines()]
    assert f"INFO dataplane proxy listening on 127.0.0.1:{proxy}" in lines
    assert f"INFO dataplane ops listening on 127.0.0.1:{ops}" in lines
    assert any(re.fullmatch(r"INFO dataplane data plane \S+ started \(pid \d+\)", line) for line in lines)
    assert any(re.fullmatch(r"INFO dataplane data plane \S+ stopped \(pid \d+\)", line) for line in lines)
    # Two servers run in the process; none of its lines may come twice (uvicorn's own lifecycle lines
    # did, once per server: if uvicorn renames one, it is no longer filtered and this fails).
    repeated = [line for line, count in collections.Counter(lines).items() if count > 1]
    assert repeated == []
    assert not [line for line in lines if "uvicorn" in line], lines
