from django.apps import AppConfig


class RoutingConfig(AppConfig):
    name = "controlplane.routing"
    label = "routing"
    default_auto_field = "django.db.models.BigAutoField"
