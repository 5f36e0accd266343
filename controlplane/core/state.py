"""The operational-state counter: `state_seq` versions what is not config (health, breaker overrides),
as revision numbers version the config. The data-plane snapshot's ETag carries it (docs/sync-api.md)."""

from __future__ import annotations

from django.db import transaction
from django.db.models import F

from .models import StateCounter


def bump_state_seq() -> int:
    """Advance `state_seq` by one and return it. Call inside the transaction that changes operational state,
    so the bump commits (and waiting data planes wake) together with the change."""
    with transaction.atomic():
        updated = StateCounter.objects.filter(pk=1).update(state_seq=F("state_seq") + 1)
        if not updated:
            # The data migration makes the row; a flushed test database may not have it.
            StateCounter.objects.get_or_create(pk=1, defaults={"state_seq": 0})
            StateCounter.objects.filter(pk=1).update(state_seq=F("state_seq") + 1)
        return StateCounter.objects.get(pk=1).state_seq
