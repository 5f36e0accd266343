"""Consumers: who calls the APIs through the gateway, and what identifies them (ARCHITECTURE §11).

Credential storage follows "secrets never enter the control plane's database": a key is kept as its
sha256, a basic-auth password as a PBKDF2 hash, a symmetric JWT secret as a reference `{env: NAME}`.
"""

from django.db import models


class Consumer(models.Model):
    """One consumer, keyed by `username` everywhere.

    `document` is the consumer's canonical sparse form (configdoc.normalize_consumers), credentials
    included (hashes and env references only), and the source of truth; `canonical` is its canonical
    JSON text. The other columns are copies kept for constraints, filtering and the admin, written by
    the services together with `document`.
    """

    username = models.CharField(max_length=64, unique=True)
    custom_id = models.CharField(max_length=128, blank=True, default="")  # "" when unset
    groups = models.JSONField(default=list, blank=True)
    document = models.JSONField()
    canonical = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["username"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(username__regex=r"^[A-Za-z0-9_.@-]{1,64}$"),
                name="consumers_consumer_username_format",
            ),
        ]

    def __str__(self) -> str:
        return self.username

    @property
    def key(self) -> str:
        return self.username


class IdentityKind(models.TextChoices):
    """What selects a consumer at request time, each unique across all consumers (configdoc's rule)."""

    CUSTOM_ID = "custom_id", "custom_id"
    KEY_SHA256 = "key_sha256", "API key hash"
    JWT_ISSUER = "jwt_issuer", "JWT issuer"
    BASIC_USERNAME = "basic_username", "basic-auth username"


class ConsumerIdentity(models.Model):
    """A value that selects one consumer (a key hash, a JWT issuer, a basic-auth username, a custom_id).

    Unique per kind in the database, like routing.RouteKey for paths: two writers claiming the same
    value cannot both commit, whatever the services checked before.
    """

    consumer = models.ForeignKey(Consumer, on_delete=models.CASCADE, related_name="identities")
    kind = models.CharField(max_length=16, choices=IdentityKind.choices)
    value = models.CharField(max_length=512)

    class Meta:
        ordering = ["kind", "value"]
        constraints = [
            models.UniqueConstraint(fields=["kind", "value"], name="consumers_identity_unique_value"),
        ]

    def __str__(self) -> str:
        # A key hash is not shown: it is credential material (§11).
        shown = "(hash)" if self.kind == IdentityKind.KEY_SHA256 else self.value
        return f"{self.kind} {shown}"
