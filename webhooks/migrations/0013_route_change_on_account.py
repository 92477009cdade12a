"""A webhook moved to another account notifies the ingress too.

The ingress's cached routes carry each webhook's account (the one whose list
shows the message, written in the statement that stores it), so moving a
webhook (the admin can) must empty the cache like a change of its address,
active flag or policy (migration 0002). PostgreSQL only, as there.
"""

from django.db import migrations

from webhooks.storage import on_postgresql

_TRIGGER = """
DROP TRIGGER IF EXISTS conduit_routes_webhook_update ON webhooks_webhook;
CREATE TRIGGER conduit_routes_webhook_update
    AFTER UPDATE ON webhooks_webhook FOR EACH ROW
    WHEN (OLD.address IS DISTINCT FROM NEW.address
          OR OLD.active IS DISTINCT FROM NEW.active
          OR OLD.smtp_security_policy_id IS DISTINCT FROM NEW.smtp_security_policy_id{extra})
    EXECUTE FUNCTION conduit_notify_routes();
"""
CREATE = _TRIGGER.format(extra="\n          OR OLD.account_id IS DISTINCT FROM NEW.account_id")
REVERSE = _TRIGGER.format(extra="")


def _run(sql: str):
    def run(apps, schema_editor):
        if on_postgresql(schema_editor.connection):
            schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [("webhooks", "0012_webhook_consecutive_failures_and_more")]

    operations = [migrations.RunPython(_run(CREATE), _run(REVERSE))]
