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

Each child's output comes through this process, every line prefixed with the child's name (`web`,
`dataplane-2`, …), so the logs of several data planes can be told apart. The children run in process
groups of their own: a Ctrl-C in the terminal reaches only this process, which stops them in order —
the data planes first (they drain: in-flight requests still reach the upstreams), then the control
plane, worker and beat, the demo upstreams last. A second Ctrl-C kills whatever is left at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
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


# The order children are stopped in, by `Child.stage`: whoever sends traffic stops before what it sends
# it to, so a draining data plane still reaches the control plane and the demo upstreams.
STAGE_DATAPLANE, STAGE_CONTROL_PLANE, STAGE_UPSTREAM = 0, 1, 2
# How long one stage may take to stop before what is left is killed: a data plane drains for its drain
# delay (5 s by default) and then lets in-flight requests finish for up to 30 s.
STOP_TIMEOUT = 40.0


@dataclass
class Child:
    name: str
    argv: list[str]
    essential: bool = True
    extra_env: dict[str, str] | None = None
    stage: int = STAGE_CONTROL_PLANE
    process: subprocess.Popen[bytes] | None = None


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that asks Linux to SIGTERM the child when this process dies (even by SIGKILL):
    in a process group of its own a child no longer gets the terminal's signals, so this keeps a killed
    rungateway from leaving its children running. None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up now: the child only calls it
    pr_set_pdeathsig = 1

    def set_pdeathsig() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)

    return set_pdeathsig


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
                        stage=STAGE_UPSTREAM,
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
                children.append(
                    Child(
                        f"dataplane{suffix}",
                        [python, "-m", "dataplane"],
                        extra_env=dataplane_env,
                        stage=STAGE_DATAPLANE,
                    )
                )
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
        signals = 0

        def stop(signum: int, frame: FrameType | None) -> None:
            nonlocal signals
            signals += 1

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        width = max(len(child.name) for child in children)
        output = threading.Lock()
        preexec = _die_with_parent()
        # Every child is started before any relay thread: no fork happens while a thread of ours runs.
        for child in children:
            child_env = {**env, "PYTHONUNBUFFERED": "1", **(child.extra_env or {})}
            child.process = subprocess.Popen(  # noqa: S603 - our own argv
                child.argv,
                env=child_env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                process_group=0,
                preexec_fn=preexec,  # no thread of ours runs yet (see above)
            )
            self._say(output, f"started {child.name} (pid {child.process.pid}): {' '.join(child.argv[1:])}")
        relays = [
            threading.Thread(target=self._relay, args=(child, width, output), name=f"relay-{child.name}", daemon=True)
            for child in children
        ]
        for relay in relays:
            relay.start()
        reported: set[str] = set()
        try:
            while not signals:
                for child in children:
                    assert child.process is not None
                    code = child.process.poll()
                    if code is None or child.name in reported:
                        continue
                    reported.add(child.name)
                    if child.essential:
                        self._say(output, f"{child.name} exited with {code}; stopping the others", error=True)
                        signals = max(signals, 1)
                    else:
                        message = f"{child.name} exited with {code} (is its port taken?); going on without it"
                        self._say(output, message, error=True)
                time.sleep(0.2)
        finally:
            for stage in sorted({child.stage for child in children}):
                group = [c for c in children if c.stage == stage and c.process is not None and c.process.poll() is None]
                if not group:
                    continue
                self._say(output, "stopping " + ", ".join(c.name for c in group))
                for child in group:
                    assert child.process is not None
                    child.process.terminate()
                deadline = time.monotonic() + STOP_TIMEOUT
                while any(c.process is not None and c.process.poll() is None for c in group):
                    if signals > 1 or time.monotonic() > deadline:  # a second Ctrl-C: no more waiting
                        for child in group:
                            if child.process is not None and child.process.poll() is None:
                                child.process.kill()
                    time.sleep(0.1)
            for relay in relays:
                relay.join(timeout=5)
            self._say(output, "stopped")

    def _relay(self, child: Child, width: int, output: threading.Lock) -> None:
        """Copy a child's output line by line, each prefixed with its name."""
        assert child.process is not None and child.process.stdout is not None
        prefix = f"{child.name:<{width}} | "
        for line in iter(child.process.stdout.readline, b""):
            self._say(output, prefix + line.decode("utf-8", errors="replace").rstrip("\r\n"))
        child.process.stdout.close()

    def _say(self, output: threading.Lock, line: str, *, error: bool = False) -> None:
        stream = self.stderr if error else self.stdout
        with output:
            stream.write(line)
            stream.flush()


def argparse_bool() -> type:
    import argparse

    return argparse.BooleanOptionalAction
