"""`manage.py export_config [-o FILE] [--format yaml|json]`: the live config document."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from controlplane.snapshots.formats import render_document
from controlplane.snapshots.services import config_export


class Command(BaseCommand):
    help = "Write the live config document (canonical, sparse, no secrets) to stdout or a file."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
        parser.add_argument(
            "--format", choices=["yaml", "json"], default="yaml", help="yaml (default, for people) or canonical json"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        text = render_document(config_export(), options["format"])
        if options["output"]:
            try:
                Path(options["output"]).write_text(text, encoding="utf-8")
            except OSError as exc:
                raise CommandError(f"cannot write {options['output']}: {exc.strerror}") from exc
        else:
            self.stdout.write(text, ending="")
