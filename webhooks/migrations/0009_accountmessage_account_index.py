import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

# The index Django made for the foreign key: redundant with one_view_per_account
# and account_message_page_idx, which both lead with the account. Only the index
# goes; altering the field itself would drop and re-check the foreign key on
# every row.
INDEX = "webhooks_accountmessage_account_id_b08843a5"


class Migration(migrations.Migration):
    dependencies = [
        ("webhooks", "0008_recovery_jobs"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="accountmessage",
                    name="account",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="messages",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    f'DROP INDEX IF EXISTS "{INDEX}"',
                    reverse_sql=f'CREATE INDEX "{INDEX}" ON "webhooks_accountmessage" ("account_id")',
                ),
            ],
        ),
    ]
