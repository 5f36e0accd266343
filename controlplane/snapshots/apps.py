from django.apps import AppConfig


class SnapshotsConfig(AppConfig):
    """The config document as a whole: YAML/JSON import and export, revision diff and rollback."""

    name = "controlplane.snapshots"
    label = "snapshots"
    default_auto_field = "django.db.models.BigAutoField"
