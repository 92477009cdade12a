"""Webhook secrets encrypted in place (conduit/crypto.py).

The column becomes text (a Fernet token is longer than 200 characters), each
stored secret is encrypted with the current first key, and only then does the
field become the encrypting one, so that no step reads plaintext through it.
"""

from django.db import migrations, models

import conduit.fields
from conduit import crypto


def encrypt_secrets(apps, schema_editor):
    Webhook = apps.get_model("webhooks", "Webhook")
    for pk, secret in Webhook.objects.values_list("pk", "secret").iterator():
        Webhook.objects.filter(pk=pk).update(secret=crypto.encrypt(secret))


def decrypt_secrets(apps, schema_editor):
    Webhook = apps.get_model("webhooks", "Webhook")
    for pk, token in Webhook.objects.values_list("pk", "secret").iterator():
        Webhook.objects.filter(pk=pk).update(secret=crypto.decrypt(token))


class Migration(migrations.Migration):
    dependencies = [("webhooks", "0002_route_change_notifications")]

    operations = [
        migrations.AlterField(
            model_name="webhook", name="secret", field=models.TextField()
        ),
        migrations.RunPython(encrypt_secrets, decrypt_secrets),
        migrations.AlterField(
            model_name="webhook", name="secret", field=conduit.fields.EncryptedTextField()
        ),
    ]
