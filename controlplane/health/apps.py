from django.apps import AppConfig


class HealthConfig(AppConfig):
    name = "controlplane.health"
    label = "health"
    default_auto_field = "django.db.models.BigAutoField"
