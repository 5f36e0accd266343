"""Run the whole gateway on one machine: migrate, make the first admin, start the processes.

Every process is a child of this one; Ctrl-C or SIGTERM stops them all, and if one dies the others
are stopped too, so nothing is left half running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from types import FrameType

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from controlplane.accounts.services import admin_create
from controlplane.core.actors import Actor
from controlplane.core.errors import ConfigValidationError


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None


class Command(BaseCommand):
    help = "Migrate, create the first admin from GATEWAY_ADMIN_PASSWORD, and run the gateway's processes."

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

    def handle(self, *args: object, **options: str) -> None:
        host, _, port = options["listen"].rpartition(":")
        if not host or not port.isdigit():
            raise CommandError(f"--listen must be HOST:PORT, not {options['listen']!r}")
        call_command("migrate", interactive=False, verbosity=0)
        self.stdout.write("database migrated")
        self._ensure_admin(options["admin_username"])

        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", settings.SETTINGS_MODULE),
        }
        children = [
            Child(
                "web",
                [
                    sys.executable,
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
                    # Long-polls park for up to 60 s; don't make a stop wait for them.
                    "--timeout-graceful-shutdown",
                    "5",
                ],
            ),
        ]
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

    def _supervise(self, children: list[Child], env: dict[str, str]) -> None:
        stopping = False

        def stop(signum: int, frame: FrameType | None) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        for child in children:
            child.process = subprocess.Popen(child.argv, env=env)  # noqa: S603 - our own argv
            self.stdout.write(f"started {child.name} (pid {child.process.pid}): {' '.join(child.argv[1:])}")
        self.stdout.flush()
        try:
            while not stopping:
                for child in children:
                    assert child.process is not None
                    code = child.process.poll()
                    if code is not None:
                        self.stderr.write(f"{child.name} exited with {code}; stopping the others")
                        stopping = True
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
