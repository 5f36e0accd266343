"""The `default` breaker policy, and revision 1: the document it makes (with a full checkpoint)."""

import hashlib
import zlib

from django.db import migrations
from django.utils import timezone

# Frozen canonical forms (configdoc's rules at the time of writing): a policy with every field at
# its default is just its name.
POLICY = {"name": "default"}
POLICY_TEXT = '{"name":"default"}'
DOCUMENT = b'{"breaker_policies":[' + POLICY_TEXT.encode() + b'],"endpoints":[],"format_version":1}'


def create_default(apps, schema_editor):
    BreakerPolicy = apps.get_model("breakers", "BreakerPolicy")
    RevisionCounter = apps.get_model("core", "RevisionCounter")
    ConfigRevision = apps.get_model("core", "ConfigRevision")
    AuditEvent = apps.get_model("core", "AuditEvent")
    if BreakerPolicy.objects.filter(name="default").exists():
        return
    BreakerPolicy.objects.create(name="default", document=POLICY, canonical=POLICY_TEXT)
    counter = RevisionCounter.objects.select_for_update().get(id=1)
    number = counter.last_number + 1
    ConfigRevision.objects.create(
        number=number,
        config_sha256=hashlib.sha256(DOCUMENT).hexdigest(),
        changes=[{"kind": "breaker_policy", "key": "default", "before": None, "after": POLICY}],
        checkpoint=zlib.compress(DOCUMENT, 6),
        actor_label="system:migration",
        summary="create the default breaker policy",
        created_at=timezone.now(),
    )
    counter.last_number = number
    counter.save()
    AuditEvent.objects.create(
        actor_label="system:migration",
        action="breaker_policy.create",
        object_type="breaker_policy",
        object_key="default",
        after=POLICY,
        revision_number=number,
        created_at=timezone.now(),
    )


class Migration(migrations.Migration):
    dependencies = [("breakers", "0001_initial"), ("core", "0002_counter_and_append_only_audit")]

    operations = [migrations.RunPython(create_default, migrations.RunPython.noop)]
