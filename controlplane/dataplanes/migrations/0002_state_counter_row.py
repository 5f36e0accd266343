"""The state counter's single row."""

from django.db import migrations


def create_state_counter(apps, schema_editor):
    apps.get_model("dataplanes", "StateCounter").objects.get_or_create(id=1, defaults={"state_seq": 0})


class Migration(migrations.Migration):
    dependencies = [("dataplanes", "0001_initial")]

    operations = [migrations.RunPython(create_state_counter, migrations.RunPython.noop)]
