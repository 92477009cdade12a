"""PostgreSQL tells the ingress when what a recipient routes to may have changed.

The ingress keeps recipient lookups in memory and LISTENs on ``conduit_routes``
(ingress.routes). These triggers NOTIFY on every change that can alter a
lookup: a webhook added or removed, its address, active flag or policy changed,
any change to a policy. NOTIFY is transactional: the ingress hears it on commit.
Other databases (SQLite for local runs) get no triggers; the ingress does not
cache there.
"""

from django.db import migrations

from webhooks.storage import on_postgresql

CHANNEL = "conduit_routes"

CREATE = f"""
CREATE FUNCTION conduit_notify_routes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{CHANNEL}', '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER conduit_routes_webhook_rows
    AFTER INSERT OR DELETE OR TRUNCATE ON webhooks_webhook
    FOR EACH STATEMENT EXECUTE FUNCTION conduit_notify_routes();
CREATE TRIGGER conduit_routes_webhook_update
    AFTER UPDATE ON webhooks_webhook FOR EACH ROW
    WHEN (OLD.address IS DISTINCT FROM NEW.address
          OR OLD.active IS DISTINCT FROM NEW.active
          OR OLD.smtp_security_policy_id IS DISTINCT FROM NEW.smtp_security_policy_id)
    EXECUTE FUNCTION conduit_notify_routes();
CREATE TRIGGER conduit_routes_policy
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON policies_smtpsecuritypolicy
    FOR EACH STATEMENT EXECUTE FUNCTION conduit_notify_routes();
"""

DROP = """
DROP TRIGGER IF EXISTS conduit_routes_policy ON policies_smtpsecuritypolicy;
DROP TRIGGER IF EXISTS conduit_routes_webhook_update ON webhooks_webhook;
DROP TRIGGER IF EXISTS conduit_routes_webhook_rows ON webhooks_webhook;
DROP FUNCTION IF EXISTS conduit_notify_routes();
"""


def _run(sql: str):
    # The triggers are PostgreSQL's; whether the database migrated is PostgreSQL
    # is decided where every other such choice is, in the pipeline's storage.
    def run(apps, schema_editor):
        if on_postgresql(schema_editor.connection):
            schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("webhooks", "0001_initial"),
        ("policies", "0001_initial"),
    ]

    operations = [migrations.RunPython(_run(CREATE), _run(DROP))]
