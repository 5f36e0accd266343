"""docs/api.md's walkthrough "a key and a JWT, end to end", run as written: one bash running the block
against a real uvicorn control plane on the test database and a real `python -m dataplane` following it,
with a real upstream, all on 127.0.0.1. Only the addresses differ from the page ($API, $GW, the
upstream's port); each status code the block prints must be the one its comment says."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.auth.models import Group

from controlplane.core.actors import Actor
from controlplane.dataplanes.services import dataplane_token_issue
from controlplane.routing.services import endpoint_create
from tests.conftest import PASSWORD, endpoint_body
from tests.dataplane.processes import dataplane, upstream
from tests.e2e.servers import ROOT, clean_env, eventually
from tests.e2e.test_sync_longpoll import control_plane

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ACTOR = Actor.command("test")
DOC = ROOT / "docs" / "api.md"
HEADING = "### Walkthrough: a key and a JWT, end to end\n"
DOC_UPSTREAM = "http://127.0.0.1:8010"
SECRET = "walkthrough-hs256-secret-0123456789abcdef"


def walkthrough_block() -> str:
    section = DOC.read_text(encoding="utf-8").split(HEADING, 1)[1].split("\n## ", 1)[0]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


def test_the_consumers_walkthrough_of_the_api_docs_runs_as_written(tmp_path: Path) -> None:
    block = walkthrough_block()
    expected = re.findall(r"#\s*(\d{3})\s*$", block, re.MULTILINE)
    assert expected == ["401", "200", "401", "200", "401"], expected
    _, node_secret = dataplane_token_issue(name="edge-1", actor=ACTOR)
    operator = get_user_model().objects.create_user(username="olga", is_staff=True)
    hasher = PBKDF2PasswordHasher()  # as the control plane process checks it
    operator.password = hasher.encode(PASSWORD, hasher.salt())
    operator.save(update_fields=["password"])
    operator.groups.set(Group.objects.filter(name="operator"))
    with ExitStack() as stack:
        origin = stack.enter_context(upstream(tmp_path, "origin"))
        endpoint_create(data=endpoint_body("plain", targets=[{"url": origin.url}]), actor=ACTOR)
        base, _ = stack.enter_context(control_plane(tmp_path))
        env = {
            "DATAPLANE_CONTROL_PLANE_URL": base,
            "DATAPLANE_TOKEN": node_secret,
            "DATAPLANE_CACHE_DIR": str(tmp_path),
            "MOBILE_JWT_SECRET": SECRET,
        }
        node = stack.enter_context(dataplane(tmp_path, None, **env))
        eventually(lambda: httpx.get(f"{node.url}/plain/1").status_code == 200, "the node serving")
        login = httpx.post(f"{base}/api/v1/auth/token/", json={"username": "olga", "password": PASSWORD})
        assert login.status_code == 200, login.text

        shell = clean_env(
            API=f"{base}/api/v1",
            GW=node.url,
            TOKEN=login.json()["access"],
            MOBILE_JWT_SECRET=SECRET,  # the reader's shell signs its test token with it
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # python3 with PyJWT
        )
        script = block.replace(DOC_UPSTREAM, origin.url)
        ran = subprocess.run(  # noqa: S603 - bash running the docs' own lines
            ["bash", "-euo", "pipefail", "-c", script],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
            env=shell,
        )
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.split() == expected, ran.stdout
