"""TOTP seeds move out of django-otp's key column into an encrypted one (conduit/crypto.py)."""

import django.db.models.deletion
from django.db import migrations, models

import conduit.fields


def move_keys_to_seeds(apps, schema_editor):
    TOTPDevice = apps.get_model("otp_totp", "TOTPDevice")
    TotpSeed = apps.get_model("accounts", "TotpSeed")
    for device in TOTPDevice.objects.exclude(key="").iterator():
        TotpSeed.objects.create(device_id=device.pk, key=device.key)  # encrypted by the field
        TOTPDevice.objects.filter(pk=device.pk).update(key="")


def move_seeds_to_keys(apps, schema_editor):
    TOTPDevice = apps.get_model("otp_totp", "TOTPDevice")
    TotpSeed = apps.get_model("accounts", "TotpSeed")
    for seed in TotpSeed.objects.iterator():
        TOTPDevice.objects.filter(pk=seed.device_id).update(key=seed.key)
    TotpSeed.objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_two_factor"),
        ("otp_totp", "0003_add_timestamps"),
    ]

    operations = [
        migrations.CreateModel(
            name="TotpSeed",
            fields=[
                (
                    "device",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="seed",
                        serialize=False,
                        to="otp_totp.totpdevice",
                    ),
                ),
                ("key", conduit.fields.EncryptedTextField()),
            ],
            options={"verbose_name": "TOTP seed"},
        ),
        migrations.RunPython(move_keys_to_seeds, move_seeds_to_keys),
    ]
