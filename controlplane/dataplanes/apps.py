from django.apps import AppConfig


class DataplanesConfig(AppConfig):
    name = "controlplane.dataplanes"
    label = "dataplanes"
    default_auto_field = "django.db.models.BigAutoField"
