"""`manage.py issue_dataplane_token NAME`: print a new data-plane token alone on the last line; `--revoke`."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from controlplane.core.actors import Actor
from controlplane.dataplanes.models import DataPlaneToken
from controlplane.dataplanes.services import dataplane_token_issue, dataplane_token_revoke


class Command(BaseCommand):
    help = "Issue a data-plane token (printed once, alone on the last line), or revoke one with --revoke."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="the token's name, e.g. the data plane's host (letters, digits, . _ -)")
        parser.add_argument("--revoke", action="store_true", help="delete the token and its service user")

    def handle(self, *args: Any, name: str, revoke: bool, **options: Any) -> None:
        actor = Actor.command("issue_dataplane_token")
        if revoke:
            try:
                dataplane_token_revoke(name=name, actor=actor)
            except DataPlaneToken.DoesNotExist:
                raise CommandError(f"no data-plane token named {name!r}") from None
            self.stdout.write(f"data-plane token {name} revoked")
            return
        try:
            _, secret = dataplane_token_issue(name=name, actor=actor)
        except ValueError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(f"data-plane token {name} issued; it is shown only now, store it as DATAPLANE_TOKEN:")
        self.stdout.write(secret)
