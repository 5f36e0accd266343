from django.apps import AppConfig


class BreakersConfig(AppConfig):
    name = "controlplane.breakers"
    label = "breakers"
    default_auto_field = "django.db.models.BigAutoField"
