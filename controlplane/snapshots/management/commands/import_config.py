"""`manage.py import_config FILE [--dry-run] [--prune]`: apply a config document (v1 or seed format)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from configdoc import LATEST_FORMAT_VERSION, load_document
from controlplane.core.actors import Actor
from controlplane.core.errors import ConfigValidationError
from controlplane.snapshots.services import config_import


class Command(BaseCommand):
    help = "Validate a config document and apply it as one revision; --dry-run shows the field-by-field diff."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", metavar="FILE", help="the document: YAML or JSON, v1 or the seed's config.yaml")
        parser.add_argument("--dry-run", action="store_true", help="show what would change, change nothing")
        parser.add_argument("--prune", action="store_true", help="delete endpoints and policies FILE does not name")

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(options["file"])
        try:
            text = path.read_bytes()
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror}") from exc
        result = load_document(
            text,
            allow_link_local=settings.GATEWAY_ALLOW_LINK_LOCAL_TARGETS,
            max_format_version=LATEST_FORMAT_VERSION,
        )
        for warning in result.warnings:
            self.stderr.write(f"warning: {warning}")
        if result.problems:
            raise CommandError(_listing(path, result.problems))
        endpoints, policies = len(result.document["endpoints"]), len(result.document["breaker_policies"])
        self.stderr.write(f"{path}: valid, {endpoints} endpoints and {policies} breaker policies; comparing…")
        try:
            plan = config_import(
                document=result.document,
                actor=Actor.command("import_config"),
                prune=options["prune"],
                dry_run=options["dry_run"],
                summary=f"import_config {path.name}{' --prune' if options['prune'] else ''}",
                progress=lambda done, total: self.stderr.write(f"  {done}/{total} endpoints"),
            )
        except ConfigValidationError as exc:
            raise CommandError(_listing(path, exc.problems)) from exc
        self.stdout.write(plan.as_text(), ending="")


def _listing(path: Path, problems: list[Any]) -> str:
    shown = "\n".join(f"  {problem}" for problem in problems)
    return (
        f"{path} is not valid ({len(problems)} problem{'s' if len(problems) != 1 else ''}); nothing changed:\n{shown}"
    )
