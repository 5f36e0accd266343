"""Accounts are Django's own users and groups; this app only anchors the gateway's permissions."""

from django.db import models


class GatewayPermission(models.Model):
    """No table: the content type that the gateway's permission strings (roles.PERMISSIONS) hang on."""

    class Meta:
        managed = False
        default_permissions = ()

    def __str__(self) -> str:
        return "gateway permission"
