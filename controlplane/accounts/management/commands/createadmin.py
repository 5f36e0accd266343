import os

from django.core.management.base import BaseCommand, CommandError, CommandParser

from controlplane.accounts.services import admin_create
from controlplane.core.actors import Actor
from controlplane.core.errors import ConfigValidationError, ConflictError


class Command(BaseCommand):
    help = "Create a user with the admin role. The password comes from --password or GATEWAY_ADMIN_PASSWORD."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", help="the new admin's username")
        parser.add_argument("--password", help="the password (default: the GATEWAY_ADMIN_PASSWORD variable)")
        parser.add_argument("--email", default="", help="the admin's email address (optional)")

    def handle(self, *args: object, **options: str) -> None:
        password = options["password"] or os.environ.get("GATEWAY_ADMIN_PASSWORD", "")
        if not password:
            raise CommandError("give a password with --password or the GATEWAY_ADMIN_PASSWORD variable")
        try:
            user = admin_create(
                username=options["username"],
                password=password,
                email=options["email"],
                actor=Actor.command("createadmin"),
            )
        except ConflictError as exc:
            raise CommandError(exc.message) from None
        except ConfigValidationError as exc:
            raise CommandError("password refused: " + " ".join(p.message for p in exc.problems)) from None
        self.stdout.write(f"admin {user.username} created")
