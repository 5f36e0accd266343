"""Run the whole gateway on one machine: migrate, make the first admin, start every process.

Processes (ARCHITECTURE §10), each a child of this one:

    web        uvicorn config.asgi:application (httptools)        the API, the admin, the sync API
    worker     celery -A config worker                              health checks
    beat       celery -A config beat                                the schedule
    dataplane  python -m dataplane                                  the proxy, pulling from `web`
    demo       uvicorn demo.upstream:app on 127.0.0.1:8010 and :8011 (embedded demo only)

On the embedded defaults (no DATABASE_URL) the first start also imports config/examples/gateway.yaml,
whose endpoints point at the demo upstream, so a new user can send traffic at once. Ctrl-C or SIGTERM
stops everything; if an essential process dies the others are stopped too, so nothing is left half
running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from controlplane.accounts.services import admin_create
from controlplane.core.actors import Actor
from controlplane.core.errors import ConfigValidationError

EXAMPLE = Path(settings.BASE_DIR) / "config" / "examples" / "gateway.yaml"
DEMO_PORTS = (8010, 8011)
DATAPLANE_TOKEN_NAME = "rungateway-local"  # noqa: S105 - a name, not a secret


@dataclass
class Child:
    name: str
    argv: list[str]
    essential: bool = True
    extra_env: dict[str, str] | None = None
    process: subprocess.Popen[bytes] | None = None


def _host_port(value: str, option: str) -> tuple[str, str]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise CommandError(f"{option} must be HOST:PORT, not {value!r}")
    return host, port


class Command(BaseCommand):
    help = "Migrate, create the first admin, and run the control plane, worker, beat and data plane."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--listen",
            default=os.environ.get("GATEWAY_LISTEN", "127.0.0.1:8000"),
            help="HOST:PORT of the control plane (default GATEWAY_LISTEN or 127.0.0.1:8000)",
        )
        parser.add_argument(
            "--admin-username",
            default=os.environ.get("GATEWAY_ADMIN_USERNAME", "admin"),
            help="the first admin's username, created when GATEWAY_ADMIN_PASSWORD is set (default admin)",
        )
        parser.add_argument(
            "--demo",
            action=argparse_bool(),
            default=os.environ.get("GATEWAY_DEMO", "1" if not os.environ.get("DATABASE_URL") else "0") == "1",
            help="start the demo upstream and import the example config on first start "
            "(default GATEWAY_DEMO, on for the embedded default database)",
        )
        parser.add_argument("--no-dataplane", action="store_true", help="run the control plane, worker and beat only")
        parser.add_argument(
            "--dataplanes",
            type=int,
            default=int(os.environ.get("GATEWAY_DATAPLANES", "1")),
            help="how many data planes to start (default GATEWAY_DATAPLANES or 1); the i-th listens on the "
            "proxy and admin ports of DATAPLANE_LISTEN / DATAPLANE_ADMIN_LISTEN plus i-1",
        )

    def handle(self, *args: object, **options: object) -> None:
        host, port = _host_port(str(options["listen"]), "--listen")
        call_command("migrate", interactive=False, verbosity=0)
        self.stdout.write("database migrated")
        self._ensure_admin(str(options["admin_username"]))
        demo = bool(options["demo"])
        if demo:
            self._import_example()

        var = Path(settings.VAR_DIR)
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", settings.SETTINGS_MODULE),
        }
        python = sys.executable
        children = [
            Child(
                "web",
                [
                    python,
                    "-m",
                    "uvicorn",
                    "config.asgi:application",
                    "--host",
                    host,
                    "--port",
                    port,
                    "--http",
                    "httptools",
                    "--no-access-log",
                    # The client address is the peer: uvicorn would otherwise take X-Forwarded-For from any
                    # local process, which could then dodge the login lockout. GATEWAY_TRUSTED_PROXIES is
                    # where proxies are trusted (accounts/lockout.py).
                    "--no-proxy-headers",
                    # Long-polls park for up to 60 s; don't make a stop wait for them.
                    "--timeout-graceful-shutdown",
                    "5",
                ],
            ),  # fmt: skip
            Child(
                "worker",
                [
                    python,
                    "-m",
                    "celery",
                    "-A",
                    "config",
                    "worker",
                    "--pool",
                    "threads",
                    "--concurrency",
                    "4",
                    "--loglevel",
                    "WARNING",
                    "--without-mingle",
                    "--without-gossip",
                    "--without-heartbeat",
                ],
            ),  # fmt: skip
            Child("beat", [python, "-m", "celery", "-A", "config", "beat", "--loglevel", "WARNING"]),
        ]
        if demo:
            for demo_port in DEMO_PORTS:
                children.append(
                    Child(
                        f"demo:{demo_port}",
                        [python, "-m", "uvicorn", "demo.upstream:app", "--host", "127.0.0.1", "--port",
                         str(demo_port), "--no-access-log", "--log-level", "warning"],
                        essential=False,
                    )
                )  # fmt: skip
        count = int(options["dataplanes"])  # type: ignore[call-overload]
        if count < 0 or count > 16:
            raise CommandError(f"--dataplanes must be 0-16, not {count}")
        if not options["no_dataplane"] and count:
            token = self._dataplane_token()
            proxy_host, proxy_port = _host_port(
                os.environ.get("DATAPLANE_LISTEN", "127.0.0.1:8080"), "DATAPLANE_LISTEN"
            )
            admin_host, admin_port = _host_port(
                os.environ.get("DATAPLANE_ADMIN_LISTEN", "127.0.0.1:9901"), "DATAPLANE_ADMIN_LISTEN"
            )
            node = os.environ.get("DATAPLANE_NODE_ID", "local")
            cache = Path(os.environ.get("DATAPLANE_CACHE_DIR", str(var / "dataplane")))
            for index in range(count):
                # The first node keeps the plain names; the others get "-<n>" and the next ports.
                suffix = "" if index == 0 else f"-{index + 1}"
                dataplane_env = {
                    "DATAPLANE_CONTROL_PLANE_URL": f"http://{host}:{port}",
                    "DATAPLANE_TOKEN": token,
                    "DATAPLANE_CACHE_DIR": str(cache.with_name(cache.name + suffix)),
                    "DATAPLANE_NODE_ID": node + suffix,
                    "DATAPLANE_LISTEN": f"{proxy_host}:{int(proxy_port) + index}",
                    "DATAPLANE_ADMIN_LISTEN": f"{admin_host}:{int(admin_port) + index}",
                }
                if demo and "DATAPLANE_SEED" not in os.environ:
                    dataplane_env["DATAPLANE_SEED"] = str(EXAMPLE)
                children.append(Child(f"dataplane{suffix}", [python, "-m", "dataplane"], extra_env=dataplane_env))
        self._supervise(children, env)

    def _ensure_admin(self, username: str) -> None:
        password = os.environ.get("GATEWAY_ADMIN_PASSWORD", "")
        if get_user_model().objects.filter(username=username).exists():
            return
        if not password:
            self.stdout.write("no admin yet: set GATEWAY_ADMIN_PASSWORD, or run `manage.py createadmin NAME`")
            return
        try:
            admin_create(username=username, password=password, actor=Actor.command("rungateway"))
        except ConfigValidationError as exc:
            raise CommandError("GATEWAY_ADMIN_PASSWORD refused: " + " ".join(p.message for p in exc.problems)) from None
        self.stdout.write(f"admin {username} created")

    def _import_example(self) -> None:
        """The example document, once: only while the config is still the empty first revision."""
        from controlplane.core.revisions import latest_revision
        from controlplane.routing.models import Endpoint

        revision = latest_revision()
        if Endpoint.objects.exists() or (revision is not None and revision.number > 1):
            return
        call_command("import_config", str(EXAMPLE), stdout=self.stdout, stderr=self.stderr)

    def _dataplane_token(self) -> str:
        """A fresh token for the local data plane each start (a secret is never stored to reuse)."""
        from controlplane.dataplanes.models import DataPlaneToken
        from controlplane.dataplanes.services import dataplane_token_issue, dataplane_token_revoke

        actor = Actor.command("rungateway")
        if DataPlaneToken.objects.filter(name=DATAPLANE_TOKEN_NAME).exists():
            dataplane_token_revoke(name=DATAPLANE_TOKEN_NAME, actor=actor)
        _, secret = dataplane_token_issue(name=DATAPLANE_TOKEN_NAME, actor=actor)
        return secret

    def _supervise(self, children: list[Child], env: dict[str, str]) -> None:
        stopping = False

        def stop(signum: int, frame: FrameType | None) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        for child in children:
            child_env = {**env, **(child.extra_env or {})}
            child.process = subprocess.Popen(child.argv, env=child_env)  # noqa: S603 - our own argv
            self.stdout.write(f"started {child.name} (pid {child.process.pid}): {' '.join(child.argv[1:])}")
        self.stdout.flush()
        reported: set[str] = set()
        try:
            while not stopping:
                for child in children:
                    assert child.process is not None
                    code = child.process.poll()
                    if code is None or child.name in reported:
                        continue
                    reported.add(child.name)
                    if child.essential:
                        self.stderr.write(f"{child.name} exited with {code}; stopping the others")
                        stopping = True
                    else:
                        self.stderr.write(f"{child.name} exited with {code} (is its port taken?); going on without it")
                time.sleep(0.2)
        finally:
            for child in children:
                if child.process and child.process.poll() is None:
                    child.process.terminate()
            deadline = time.monotonic() + 35
            for child in children:
                if child.process is None:
                    continue
                try:
                    child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.process.kill()
            self.stdout.write("stopped")


def argparse_bool() -> type:
    import argparse

    return argparse.BooleanOptionalAction
