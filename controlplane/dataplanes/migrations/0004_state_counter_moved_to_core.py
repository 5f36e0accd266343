"""The operational-state counter now belongs to core (core 0003 took over its table and row): it leaves
this app's migration state only, nothing is dropped."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("dataplanes", "0003_node_token_name"),
        ("core", "0003_state_counter"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="StateCounter")],
            database_operations=[],
        ),
    ]
