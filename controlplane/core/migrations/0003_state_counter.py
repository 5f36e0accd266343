"""The operational-state counter moves here from the dataplanes app (health, breakers and the sync all
use it). Its table and single row are kept: core takes over the model in the migration state only, then
renames the table and its constraint to core's names."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("core", "0002_counter_and_append_only_audit"),
        ("dataplanes", "0003_node_token_name"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="StateCounter",
                    fields=[
                        ("id", models.PositiveSmallIntegerField(default=1, primary_key=True, serialize=False)),
                        ("state_seq", models.PositiveBigIntegerField(default=0)),
                    ],
                    options={
                        "db_table": "dataplanes_statecounter",
                        "constraints": [
                            models.CheckConstraint(
                                condition=models.Q(("id", 1)), name="dataplanes_statecounter_single_row"
                            )
                        ],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.AlterModelTable(name="statecounter", table=None),
        migrations.RemoveConstraint(model_name="statecounter", name="dataplanes_statecounter_single_row"),
        migrations.AddConstraint(
            model_name="statecounter",
            constraint=models.CheckConstraint(condition=models.Q(("id", 1)), name="core_statecounter_single_row"),
        ),
    ]
