"""Document-level settings that belong to no endpoint or policy (ARCHITECTURE §3)."""

from __future__ import annotations

from django.db import models


class DocumentDefaults(models.Model):
    """The single row holding the document's own `health_check` defaults and global `plugins` (canonical, sparse).

    Endpoints and breaker policies are rows of their own; the defaults every endpoint inherits are
    not, so they live here. `canonical` is their canonical JSON text (`""` when nothing is set) so
    the live document is still joined from stored fragments (core.revisions.current_document_bytes).
    Written only by snapshots.services inside `config_write`, recorded as kind `health_check`.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    health_check = models.JSONField(default=dict, blank=True)
    canonical = models.TextField(blank=True, default="")
    # The document's global plugins (§11; name -> canonical sparse config) and their canonical JSON text
    # (`""` when none): recorded as kind `plugins`. Any of them makes the document format 2.
    plugins = models.JSONField(default=dict, blank=True)
    plugins_canonical = models.TextField(blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "document defaults"
        constraints = [models.CheckConstraint(condition=models.Q(id=1), name="snapshots_documentdefaults_single_row")]

    def __str__(self) -> str:
        return f"document defaults {self.canonical or '{}'}"


class GlobalPlugins(DocumentDefaults):
    """The document's global plugins, as the admin shows them: a page of their own (the one row)."""

    class Meta:
        proxy = True
        verbose_name = "global plugins"
        verbose_name_plural = "global plugins"

    def __str__(self) -> str:
        return "global plugins"
